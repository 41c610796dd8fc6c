//! Event-time progress of tables and sources: the watermark, what it is
//! computed from, and the late rows it turned away.
//!
//! A relation's watermark is the largest event time it has accepted minus
//! the declared delay. For a source the largest time is taken per Kafka
//! partition and the watermark follows the slowest partition, except that
//! partitions idle for longer than the source's idle timeout are left out
//! (when all are idle, the fastest counts): traffic stopping on one
//! partition must not hold every window open. The watermark never goes
//! back. Rows whose event time is below the watermark at arrival are late:
//! they are counted and dropped before storage and every view.

use std::collections::BTreeMap;

use arrow::array::{Array, BooleanArray, Int64Array};
use arrow::record_batch::RecordBatch;
use millrace_planner::event_time::EventTime;
use serde::{Deserialize, Serialize};

use crate::error::{SqlError, SqlResult};
pub use millrace_connectors::sink::Arrival;

/// The durable event-time progress of one relation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// The watermark (ns since the epoch), once there is one.
    pub watermark: Option<i64>,
    /// The largest event time accepted, per partition (tables use 0).
    pub max_by_partition: BTreeMap<i32, i64>,
    /// Rows dropped for arriving behind the watermark, ever.
    pub late_rows: u64,
}

impl Progress {
    /// Decodes a stored record.
    pub fn decode(bytes: &[u8]) -> SqlResult<Self> {
        serde_json::from_slice(bytes)
            .map_err(|e| SqlError::internal(format!("corrupt event-time record: {e}")))
    }

    /// The record to store.
    pub fn encode(&self) -> SqlResult<Vec<u8>> {
        serde_json::to_vec(self)
            .map_err(|e| SqlError::internal(format!("encoding an event-time record: {e}")))
    }

    /// Drops the late rows of `batch` (counting them) and takes the event
    /// times of the others into account. Returns the rows to keep (`None`:
    /// all of them) and the number dropped.
    pub fn admit(
        &mut self,
        event: &EventTime,
        batch: &RecordBatch,
        arrival: &Arrival,
    ) -> SqlResult<(Option<BooleanArray>, usize)> {
        let times: Int64Array = event.times(batch)?;
        let keep = match self.watermark {
            // NULL event times are kept: they belong to no window.
            Some(wm) => {
                let mask: BooleanArray = times
                    .iter()
                    .map(|t| Some(t.is_none_or(|t| t >= wm)))
                    .collect();
                Some(mask)
            }
            None => None,
        };
        let late = keep.as_ref().map_or(0, |k| k.false_count());
        self.late_rows += late as u64;
        let kept = match &keep {
            Some(k) if late > 0 => arrow::compute::filter(&times, k)?,
            _ => std::sync::Arc::new(times.clone()),
        };
        let kept = kept
            .as_any()
            .downcast_ref::<Int64Array>()
            .ok_or_else(|| SqlError::internal("event times did not filter to int64"))?;
        if arrival.row_partitions.is_empty() {
            // A table: one partition, one vectorised max.
            if let Some(t) = arrow::compute::max(kept) {
                self.observe(0, t);
            }
            return Ok((if late > 0 { keep } else { None }, late));
        }
        // A source: the largest time per partition, merged once per batch.
        let parts = arrival.row_partitions.iter().copied();
        let parts: Vec<i32> = match &keep {
            Some(k) if late > 0 => parts
                .zip(k.iter())
                .filter(|(_, k)| *k == Some(true))
                .map(|(p, _)| p)
                .collect(),
            _ => parts.collect(),
        };
        let mut maxima: Vec<(i32, i64)> = Vec::new();
        for (i, p) in parts.into_iter().enumerate() {
            if kept.is_null(i) {
                continue;
            }
            let t = kept.value(i);
            match maxima.iter_mut().find(|(q, _)| *q == p) {
                Some((_, m)) => *m = (*m).max(t),
                None => maxima.push((p, t)),
            }
        }
        for (p, t) in maxima {
            self.observe(p, t);
        }
        Ok((if late > 0 { keep } else { None }, late))
    }

    /// Takes event time `t` of partition `p` into account.
    fn observe(&mut self, p: i32, t: i64) {
        let max = self.max_by_partition.entry(p).or_insert(t);
        *max = (*max).max(t);
    }

    /// Recomputes the watermark from the partitions' largest times. Returns
    /// true when it moved.
    pub fn advance(&mut self, event: &EventTime, arrival: &Arrival) -> bool {
        let partitions: Vec<i32> = if arrival.partitions.is_empty() {
            self.max_by_partition.keys().copied().collect()
        } else {
            arrival.partitions.clone()
        };
        let active: Vec<i32> = partitions
            .iter()
            .copied()
            .filter(|p| !arrival.idle.contains(p))
            .collect();
        let front = if active.is_empty() {
            self.max_by_partition.values().copied().max()
        } else {
            // Every active partition must have shown a time.
            active
                .iter()
                .map(|p| self.max_by_partition.get(p).copied())
                .collect::<Option<Vec<i64>>>()
                .and_then(|v| v.into_iter().min())
        };
        let Some(front) = front else {
            return false;
        };
        let candidate = event.watermark_for(front);
        if self.watermark.is_some_and(|w| w >= candidate) {
            return false;
        }
        self.watermark = Some(candidate);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use arrow::array::TimestampNanosecondArray;
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};

    fn event() -> EventTime {
        EventTime {
            column: "ts".into(),
            index: 0,
            delay_ns: 10,
        }
    }

    fn batch(times: &[i64]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Nanosecond, None),
            true,
        )]));
        RecordBatch::try_new(
            schema,
            vec![Arc::new(TimestampNanosecondArray::from(times.to_vec()))],
        )
        .unwrap()
    }

    #[test]
    fn the_slowest_active_partition_holds_the_watermark() {
        let mut p = Progress::default();
        let e = event();
        let mut arrival = Arrival {
            row_partitions: vec![0, 0, 1],
            row_offsets: vec![],
            partitions: vec![0, 1, 2],
            idle: std::collections::BTreeSet::new(),
        };
        p.admit(&e, &batch(&[100, 200, 150]), &arrival).unwrap();
        // Partition 2 has shown nothing yet: no watermark.
        assert!(!p.advance(&e, &arrival));
        arrival.idle.insert(2);
        assert!(p.advance(&e, &arrival));
        assert_eq!(p.watermark, Some(140));
        // Everything idle: the fastest partition counts.
        arrival.idle.extend([0, 1]);
        assert!(p.advance(&e, &arrival));
        assert_eq!(p.watermark, Some(190));
        // Late rows are dropped and counted; the watermark never goes back.
        arrival.row_partitions = vec![2, 2];
        arrival.idle.clear();
        let (keep, late) = p.admit(&e, &batch(&[189, 190]), &arrival).unwrap();
        assert_eq!(late, 1);
        assert_eq!(
            keep.unwrap().iter().collect::<Vec<_>>(),
            vec![Some(false), Some(true)]
        );
        assert!(!p.advance(&e, &arrival));
        assert_eq!((p.watermark, p.late_rows), (Some(190), 1));
    }
}
