//! Reading a source's messages again, between two positions.
//!
//! A `CREATE SOURCE` keeps no rows (RisingWave's sources): the topic is the
//! log. So whatever needs rows the source consumed earlier reads them back
//! from Kafka: a view created later backfills from the source's start
//! position up to where the source is now, an ad-hoc `SELECT` on the source
//! reads the same span, and recovery reads each epoch logged after the
//! last checkpoint again, with the positions it logged, to push exactly
//! those rows through the views once more.
//!
//! The messages are decoded exactly as the ingest thread decodes them; a
//! message that does not decode is skipped (the ingest thread counted it and
//! sent it to the dead-letter topic the first time). Each row comes with its
//! partition and offset, so that the caller can leave out rows the source
//! turned away as late.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use super::{consumer, Batch, SourceConsumer, WATERMARK_TIMEOUT};
use crate::config::SourceConfig;
use crate::error::ConnectorError;

/// How long a read waits for the broker to deliver the next message of a
/// partition that is not through yet before it gives up.
const STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Decoded rows read again, with where each row lies.
#[derive(Debug)]
pub struct Rows {
    /// The rows, in the source's schema.
    pub batch: RecordBatch,
    /// The partition of each row.
    pub partitions: Vec<i32>,
    /// The offset of each row in its partition.
    pub offsets: Vec<i64>,
}

/// A consumer that reads spans of a source's partitions on demand.
pub struct RangeReader {
    config: SourceConfig,
    consumer: SourceConsumer,
}

impl std::fmt::Debug for RangeReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RangeReader({})", self.config.topic)
    }
}

impl RangeReader {
    /// A reader of `config`'s topic (no connection is made until a read).
    pub fn new(config: &SourceConfig) -> Result<Self, ConnectorError> {
        Ok(Self {
            config: config.clone(),
            consumer: consumer(config)?,
        })
    }

    /// Every message of each partition `p` of `to` from offset `from[p]`
    /// (the partition's beginning when `from` does not name it) up to, not
    /// including, `to[p]`, decoded in chunks of at most the source's batch
    /// size. Blocks until done.
    ///
    /// Fails when the topic no longer holds the first offset asked for
    /// (retention deleted it): rows would be missing without a word.
    pub fn read(
        &self,
        from: &BTreeMap<i32, i64>,
        to: &BTreeMap<i32, i64>,
    ) -> Result<Vec<Rows>, ConnectorError> {
        let topic = &self.config.topic;
        let mut tpl = TopicPartitionList::new();
        // The next offset wanted of every partition not read through yet.
        let mut wanted: BTreeMap<i32, i64> = BTreeMap::new();
        for (&p, &end) in to {
            let (low, _) = self
                .consumer
                .fetch_watermarks(topic, p, WATERMARK_TIMEOUT)
                .map_err(|source| ConnectorError::PartitionOffsets {
                    partition: p,
                    source,
                })?;
            let start = from.get(&p).copied().unwrap_or(low);
            if start >= end {
                continue;
            }
            if low > start {
                return Err(ConnectorError::Retention {
                    topic: topic.clone(),
                    partition: p,
                    wanted: start,
                    low,
                });
            }
            tpl.add_partition_offset(topic, p, Offset::Offset(start))?;
            wanted.insert(p, start);
        }
        let mut out = Vec::new();
        if wanted.is_empty() {
            return Ok(out);
        }
        self.consumer.assign(&tpl).map_err(ConnectorError::Assign)?;
        let result = self.consume(&mut wanted, to, &mut out);
        // Leave nothing assigned: the next read assigns its own span.
        let _ = self.consumer.unassign();
        result.map(|()| out)
    }

    fn consume(
        &self,
        wanted: &mut BTreeMap<i32, i64>,
        to: &BTreeMap<i32, i64>,
        out: &mut Vec<Rows>,
    ) -> Result<(), ConnectorError> {
        let mut batch = Batch::new(&self.config);
        let mut last_progress = Instant::now();
        while !wanted.is_empty() {
            match self.consumer.poll(Duration::from_millis(100)) {
                None => {}
                // The partition ends before the offset asked for: what lay
                // there is gone (the topic was compacted or created again),
                // or was a transaction marker. Nothing more to read.
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    wanted.remove(&p);
                }
                Some(Err(e)) => {
                    if last_progress.elapsed() > STALL_TIMEOUT {
                        return Err(e.into());
                    }
                }
                Some(Ok(m)) => {
                    let p = m.partition();
                    let (Some(&next), Some(&end)) = (wanted.get(&p), to.get(&p)) else {
                        continue;
                    };
                    // librdkafka may hand a message twice after a refetch.
                    if m.offset() < next {
                        continue;
                    }
                    last_progress = Instant::now();
                    if m.offset() >= end {
                        wanted.remove(&p);
                        continue;
                    }
                    batch.add(&self.config, &m);
                    if m.offset() + 1 >= end {
                        wanted.remove(&p);
                    } else {
                        wanted.insert(p, m.offset() + 1);
                    }
                    if batch.decoder.rows() >= self.config.max_batch_rows {
                        flush(&self.config, &mut batch, out)?;
                    }
                }
            }
            if !wanted.is_empty() && last_progress.elapsed() > STALL_TIMEOUT {
                let (p, at) = wanted.iter().next().map_or((0, 0), |(p, o)| (*p, *o));
                return Err(ConnectorError::ReadStalled {
                    topic: self.config.topic.clone(),
                    partition: p,
                    at,
                    seconds: STALL_TIMEOUT.as_secs(),
                });
            }
        }
        flush(&self.config, &mut batch, out)
    }
}

/// Moves the rows decoded so far into `out`.
fn flush(
    config: &SourceConfig,
    batch: &mut Batch,
    out: &mut Vec<Rows>,
) -> Result<(), ConnectorError> {
    let (rows, partitions, offsets) = batch.finish(config)?;
    // Undecodable messages were dead-lettered when first consumed.
    batch.discard();
    if let Some(batch) = rows {
        out.push(Rows {
            batch,
            partitions,
            offsets,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema};
    use rdkafka::config::ClientConfig;
    use rdkafka::mocking::MockCluster;
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    use std::sync::Arc;

    use crate::config::StartupMode;
    use crate::decode::Encoding;

    fn config(bootstrap: &str, max_batch_rows: usize) -> SourceConfig {
        SourceConfig {
            topic: "t".into(),
            // The engine always names a group (never committed to).
            kafka: BTreeMap::from([
                ("bootstrap.servers".into(), bootstrap.into()),
                ("group.id".into(), "millrace-test".into()),
            ]),
            startup: StartupMode::Earliest,
            encoding: Encoding::Json,
            schema: Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, true)])),
            metadata: vec![],
            json_columns: vec![false],
            connect_timeout: Duration::from_secs(5),
            max_message_bytes: 1 << 20,
            epoch_interval: Duration::from_millis(20),
            max_batch_rows,
            dead_letter_topic: None,
            event_time: None,
            idle_timeout: None,
        }
    }

    /// `(partition, offset, v)` of every row read.
    fn rows(read: Vec<Rows>) -> Vec<(i32, i64, i64)> {
        let mut out = Vec::new();
        for r in read {
            let v = r
                .batch
                .column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap();
            for i in 0..r.batch.num_rows() {
                out.push((r.partitions[i], r.offsets[i], v.value(i)));
            }
        }
        out.sort();
        out
    }

    #[test]
    fn reads_exactly_the_span_asked_for_skipping_what_does_not_decode() {
        let cluster = MockCluster::new(1).unwrap();
        cluster.create_topic("t", 2, 1).unwrap();
        let bootstrap = cluster.bootstrap_servers();
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .create()
            .unwrap();
        // Offsets 0..50 in each partition; v = 100 * partition + offset;
        // offset 7 of partition 1 does not decode.
        for p in 0..2 {
            for o in 0..50i64 {
                let payload = if p == 1 && o == 7 {
                    "not json".to_string()
                } else {
                    format!("{{\"v\": {}}}", 100 * i64::from(p) + o)
                };
                producer
                    .send(
                        BaseRecord::<(), str>::to("t")
                            .partition(p)
                            .payload(&payload),
                    )
                    .unwrap();
            }
        }
        producer.flush(Duration::from_secs(10)).unwrap();

        let reader = RangeReader::new(&config(&bootstrap, 8)).unwrap();
        let from = BTreeMap::from([(0, 10), (1, 5)]);
        let to = BTreeMap::from([(0, 20), (1, 10)]);
        let read = reader.read(&from, &to).unwrap();
        assert!(read.iter().all(|r| r.batch.num_rows() <= 8));
        let mut expected: Vec<(i32, i64, i64)> = (10..20).map(|o| (0, o, o)).collect();
        expected.extend([5, 6, 8, 9].map(|o| (1, o, 100 + o)));
        assert_eq!(rows(read), expected);

        // The same reader again, a partition from its beginning, one empty.
        let from = BTreeMap::from([(1, 49)]);
        let to = BTreeMap::from([(0, 3), (1, 49)]);
        assert_eq!(
            rows(reader.read(&from, &to).unwrap()),
            vec![(0, 0, 0), (0, 1, 1), (0, 2, 2)]
        );
    }
}
