//! JSON decoding: Millrace's source decoder against serde_json's raw parse
//! of the same Nexmark bids, single-threaded, in-process.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use arrow::datatypes::{DataType, Field, TimeUnit};
use millrace_connectors::decode::{Decoder, Encoding};
use nexmark::event::Bid;

/// Messages per decoded batch, as a Kafka source commits them.
const BATCH_ROWS: usize = 100_000;

/// Decode rates, in messages per second.
pub struct Rates {
    pub messages: usize,
    pub bytes: usize,
    pub serde_struct: f64,
    pub serde_value: f64,
    pub millrace: f64,
}

fn rate(messages: usize, f: impl FnOnce()) -> f64 {
    let started = Instant::now();
    f();
    messages as f64 / started.elapsed().as_secs_f64().max(1e-9)
}

pub fn run(messages: usize) -> anyhow::Result<Rates> {
    let payloads: Vec<Vec<u8>> = crate::events::bids(1_767_225_600_000)
        .take(messages)
        .map(|b| crate::events::to_json(&b))
        .collect();
    let bytes = payloads.iter().map(Vec::len).sum();

    let serde_struct = rate(messages, || {
        for p in &payloads {
            let _ = black_box(serde_json::from_slice::<Bid>(black_box(p)));
        }
    });
    let serde_value = rate(messages, || {
        for p in &payloads {
            let _ = black_box(serde_json::from_slice::<serde_json::Value>(black_box(p)));
        }
    });

    let fields: Vec<Arc<Field>> = [
        ("auction", DataType::Int64),
        ("bidder", DataType::Int64),
        ("price", DataType::Int64),
        ("channel", DataType::Utf8),
        ("url", DataType::Utf8),
        ("date_time", DataType::Timestamp(TimeUnit::Nanosecond, None)),
        ("extra", DataType::Utf8),
    ]
    .into_iter()
    .map(|(name, t)| Arc::new(Field::new(name, t, true)))
    .collect();
    let mut decoder = Decoder::new(Encoding::Json, fields, Vec::new());
    let mut failed = None;
    let millrace = rate(messages, || {
        for chunk in payloads.chunks(BATCH_ROWS) {
            for p in chunk {
                if let Err(e) = decoder.push(p) {
                    failed = Some(e);
                }
            }
            match decoder.finish() {
                Ok(columns) => {
                    black_box(columns);
                }
                Err(e) => failed = Some(e),
            }
        }
    });
    if let Some(e) = failed {
        anyhow::bail!("Millrace's decoder refused a bid: {e}");
    }
    Ok(Rates {
        messages,
        bytes,
        serde_struct,
        serde_value,
        millrace,
    })
}
