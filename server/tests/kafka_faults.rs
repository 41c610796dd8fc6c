//! Broker-side faults against the real binary and the real tansu broker:
//! a topic that a source consumes is deleted (and later recreated) under
//! it. The server must stay up, the source must say what happened, the
//! other sources must keep going, and the recreated topic must be read
//! from its own offsets.

mod common;

use std::time::{Duration, Instant};

use common::kafka::{TestBroker, TestProducer};
use common::{scratch_dir, TestServer};
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;

fn create_source_sql(name: &str, topic: &str, bootstrap: &str) -> String {
    format!(
        "CREATE SOURCE {name} (n BIGINT)
         WITH (connector = 'kafka', topic = '{topic}', properties.bootstrap.server = '{bootstrap}',
               scan.startup.mode = 'earliest')
         FORMAT PLAIN ENCODE JSON"
    )
}

fn produce(producer: &TestProducer, topic: &str, range: std::ops::Range<i64>) {
    for i in range {
        producer.send(
            topic,
            (i % 2) as i32,
            None,
            format!(r#"{{"n": {i}}}"#).as_bytes(),
        );
    }
    producer.flush();
}

async fn delete_topic(bootstrap: &str, topic: &str) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin client");
    let results = admin
        .delete_topics(
            &[topic],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .expect("delete topic");
    for r in results {
        r.expect("topic deleted");
    }
}

/// `(state, last_error)` of every partition of `source`, by partition.
async fn source_state(
    client: &tokio_postgres::Client,
    source: &str,
) -> Vec<(i32, String, Option<String>, i64)> {
    client
        .query(
            "SELECT partition, state, last_error, committed_offset FROM millrace_catalog.source_partitions \
             WHERE source = $1 ORDER BY partition",
            &[&source],
        )
        .await
        .expect("read source_partitions")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect()
}

async fn count(client: &tokio_postgres::Client, view: &str) -> i64 {
    client
        .query_one(&format!("SELECT n FROM {view}"), &[])
        .await
        .expect("read count view")
        .get(0)
}

/// Deleting the topic of a running source: the server stays up, the
/// source shows `error` with `topic … does not exist`, a second source on
/// another topic keeps ingesting, and a topic recreated under the same
/// name is consumed from its new beginning, which the status table shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_topic_is_reported_and_recreated_topic_is_read() {
    let dir = scratch_dir("kafka-delete-topic");
    let broker = TestBroker::start(&dir);
    // The other source reads from a second broker: tansu 0.6's topic
    // deletion deletes every topic of its cluster (its `topic_delete_by.sql`
    // matches on the cluster only), so an unrelated topic on the same
    // broker would vanish too.
    let other_dir = dir.join("other-broker");
    std::fs::create_dir_all(&other_dir).expect("second broker's directory");
    let other_broker = TestBroker::start(&other_dir);
    let (doomed, other) = ("doomed_topic", "other_topic");
    broker.create_topic(doomed, 2).await;
    other_broker.create_topic(other, 2).await;
    let producer = TestProducer::new(&broker.addr);
    let other_producer = TestProducer::new(&other_broker.addr);
    produce(&producer, doomed, 0..10);
    produce(&other_producer, other, 0..10);

    let server = TestServer::start(&dir);
    let client = server.connect().await;
    client
        .batch_execute(&create_source_sql("doomed", doomed, &broker.addr))
        .await
        .expect("CREATE SOURCE doomed");
    client
        .batch_execute(&create_source_sql("other", other, &other_broker.addr))
        .await
        .expect("CREATE SOURCE other");
    client
        .batch_execute(
            "CREATE MATERIALIZED VIEW doomed_count AS SELECT count(*) AS n FROM doomed;
             CREATE MATERIALIZED VIEW other_count AS SELECT count(*) AS n FROM other;
             FLUSH;",
        )
        .await
        .expect("views and FLUSH");
    assert_eq!(count(&client, "doomed_count").await, 10);
    assert_eq!(count(&client, "other_count").await, 10);

    delete_topic(&broker.addr, doomed).await;

    // The other source is unaffected.
    produce(&other_producer, other, 10..20);
    let deadline = Instant::now() + Duration::from_secs(60);
    while count(&client, "other_count").await != 20 {
        assert!(
            Instant::now() < deadline,
            "the other source stopped ingesting after an unrelated topic was deleted"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // The source reports the deletion; the server answers all along.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let rows = source_state(&client, "doomed").await;
        let reported = !rows.is_empty()
            && rows.iter().all(|(_, state, error, _)| {
                state == "error"
                    && error
                        .as_deref()
                        .is_some_and(|e| e.contains(&format!("topic \"{doomed}\" does not exist")))
            });
        if reported {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the source never reported the deleted topic: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Its rows so far stay queryable.
    assert_eq!(count(&client, "doomed_count").await, 10);

    // A second session works.
    let second = server.connect().await;
    second
        .query_one("SELECT 1", &[])
        .await
        .expect("second session");

    // Recreated under the same name: read from its new offsets (0 again),
    // not from the old topic's committed offsets (5 per partition).
    broker.create_topic(doomed, 2).await;
    produce(&producer, doomed, 100..104);
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let n = count(&client, "doomed_count").await;
        let rows = source_state(&client, "doomed").await;
        if n == 14
            && rows
                .iter()
                .all(|(_, s, _, off)| s == "running" && *off == 2)
        {
            // The status shows why the offsets went back.
            assert!(
                rows.iter().all(|(_, _, e, _)| e
                    .as_deref()
                    .is_some_and(|e| e.contains("deleted and created again"))),
                "the status says that the topic was recreated: {rows:?}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the recreated topic was not read from its new offsets: count {n}, {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // The new offsets are what was committed: a restart neither reads the
    // new topic again nor skips any of it.
    drop((client, second));
    assert_eq!(server.stop(), Some(0), "clean shutdown");
    let server = TestServer::start(&dir);
    let client = server.connect().await;
    produce(&producer, doomed, 104..106);
    client
        .batch_execute("FLUSH")
        .await
        .expect("FLUSH after restart");
    assert_eq!(count(&client, "doomed_count").await, 16);
    drop(server);
    drop(broker);
    drop(other_broker);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A topic deleted and created again while the server was down: its
/// partitions now end before the committed offsets, which cannot be the
/// same topic. The source reads the new topic from its beginning and says
/// so, rather than waiting for offsets the new topic may never reach (or,
/// had the new topic grown past them, skipping its first messages).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_recreated_while_down_is_read_from_its_beginning() {
    let dir = scratch_dir("kafka-recreate-down");
    let broker = TestBroker::start(&dir);
    let topic = "replaced_topic";
    broker.create_topic(topic, 2).await;
    let producer = TestProducer::new(&broker.addr);
    produce(&producer, topic, 0..10);

    let server = TestServer::start(&dir);
    let client = server.connect().await;
    client
        .batch_execute(&create_source_sql("replaced", topic, &broker.addr))
        .await
        .expect("CREATE SOURCE");
    client
        .batch_execute(
            "CREATE MATERIALIZED VIEW replaced_count AS SELECT count(*) AS n FROM replaced; FLUSH;",
        )
        .await
        .expect("view and FLUSH");
    assert_eq!(count(&client, "replaced_count").await, 10);
    drop(client);
    assert_eq!(server.stop(), Some(0), "clean shutdown");

    delete_topic(&broker.addr, topic).await;
    broker.create_topic(topic, 2).await;
    produce(&producer, topic, 100..104);

    let server = TestServer::start(&dir);
    let client = server.connect().await;
    client.batch_execute("FLUSH").await.expect("FLUSH");
    assert_eq!(count(&client, "replaced_count").await, 14);
    let rows = source_state(&client, "replaced").await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    for (p, state, error, committed) in &rows {
        assert_eq!(state, "running", "partition {p}: {rows:?}");
        assert_eq!(*committed, 2, "partition {p}: {rows:?}");
        let error = error.as_deref().unwrap_or_default();
        assert!(
            error.contains(&format!(
                "partition {p} ends at offset 2, before offset 5 this source had read"
            )),
            "partition {p} says why it starts over: {error}"
        );
    }
    drop(server);
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A partition that cannot progress: messages of 10 MB on a topic that
/// allows them. tansu 0.6 accepts them but returns no batch for them in a
/// fetch (an empty message set, no error, whatever the fetch sizes), so
/// the Kafka client retries at that offset forever and the partition looks
/// `running` with no error. The status table shows it as stalled with the
/// cause, a FLUSH of all sources names it instead of waiting for its
/// timeout, and `FLUSH other` waits for the other source only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_partition_is_reported_and_flush_names_its_source() {
    let dir = scratch_dir("kafka-stalled");
    let broker = TestBroker::start(&dir);
    let (big, small) = ("big_topic", "small_topic");
    broker
        .create_topic_with(big, 1, &[("max.message.bytes", "20000000")])
        .await;
    broker.create_topic(small, 2).await;
    let producer = TestProducer::with(&broker.addr, &[("message.max.bytes", "20000000")]);
    producer.send(big, 0, None, br#"{"n": 0}"#);
    let pad = "x".repeat(10_000_000);
    for i in 1..4 {
        producer.send(
            big,
            0,
            None,
            format!(r#"{{"n": {i}, "pad": "{pad}"}}"#).as_bytes(),
        );
    }
    producer.flush();
    produce(&producer, small, 0..5);

    let server = TestServer::start(&dir);
    let client = server.connect().await;
    for sql in [
        create_source_sql("big", big, &broker.addr),
        create_source_sql("small", small, &broker.addr),
        "CREATE MATERIALIZED VIEW big_count AS SELECT count(*) AS n FROM big".into(),
        "CREATE MATERIALIZED VIEW small_count AS SELECT count(*) AS n FROM small".into(),
    ] {
        client.batch_execute(&sql).await.expect("DDL");
    }

    // The other source is flushed on its own, while the big one is stuck.
    client
        .batch_execute("FLUSH small")
        .await
        .expect("FLUSH small");
    assert_eq!(count(&client, "small_count").await, 5);

    // The stuck partition is shown as stalled, with its cause.
    let deadline = Instant::now() + Duration::from_secs(120);
    let (error, lag) = loop {
        let row = client
            .query_one(
                "SELECT state, last_error, lag FROM millrace_catalog.source_partitions \
                 WHERE source = 'big'",
                &[],
            )
            .await
            .expect("read source_partitions");
        let (state, error, lag): (String, Option<String>, Option<i64>) =
            (row.get(0), row.get(1), row.get(2));
        if state == "stalled" {
            break (error.unwrap_or_default(), lag);
        }
        assert!(
            Instant::now() < deadline,
            "the stuck partition was never shown as stalled: {state} {error:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(
        error.contains("at offset 1 while it ends at offset 4")
            && error.contains("the broker returns no messages for it"),
        "the status says where and why: {error}"
    );
    assert_eq!(lag, Some(3), "lag from the broker's end");

    // FLUSH of every source fails at once, naming the stalled one.
    let started = Instant::now();
    let err = client
        .batch_execute("FLUSH")
        .await
        .expect_err("FLUSH cannot finish while a partition is stalled");
    let db = err.as_db_error().expect("a server error");
    assert_eq!(db.code().code(), "57014", "{db:?}");
    assert!(
        db.message().contains("held up by source \"big\""),
        "{}",
        db.message()
    );
    assert!(
        db.detail().is_some_and(|d| d.contains("stalled")),
        "{:?}",
        db.detail()
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "FLUSH gave up on the stalled partition rather than at its 120 s timeout"
    );
    // The session is usable, and FLUSH of the other source still works.
    client
        .batch_execute("FLUSH small")
        .await
        .expect("FLUSH small");
    let err = client
        .batch_execute("FLUSH nosuch")
        .await
        .expect_err("unknown source");
    assert_eq!(err.code().map(|c| c.code()), Some("42P01"));

    drop(client);
    drop(server);
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
}
