//! Hostile and malformed frontend messages, sent byte by byte to the real
//! binary: an Execute whose row limit once made the server try to allocate
//! 85 GB, Binds that do not match their statement, and text that is not
//! UTF-8. Each is answered as PostgreSQL 15 answers it, the session goes on,
//! and a second session never notices.

mod common;

use common::wire::{bind, cstr, errors, execute, firsts, message, parse, query, sync, tags, Raw};
use common::{scratch_dir, TestServer};

/// A second session, through a real driver, is unaffected.
async fn second_session_works(server: &TestServer) {
    let other = server.connect().await;
    let v: i64 = other
        .query_one("SELECT 41::bigint + 1", &[])
        .await
        .expect("a second session still works")
        .get(0);
    assert_eq!(v, 42);
}

const FIVE_ROWS: &[u8] = b"SELECT x FROM generate_series(1, 5) AS g(x)";

/// `Execute` with `max_rows = 2147483647` made pgwire preallocate room for
/// that many rows (85 GB) and the server abort; a negative count became
/// `usize::MAX`. Now a count ≤ 0 means no limit, a positive one is a limit
/// as before, and no count sizes an allocation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn execute_row_limit_is_never_an_allocation_size() {
    let dir = scratch_dir("protocol-max-rows");
    let server = TestServer::start(&dir);
    let mut raw = Raw::connect(&server).await;

    // The 10-byte Execute of the report (with a Sync), on a bound portal.
    let mut batch = parse("", FIVE_ROWS, &[]);
    batch.extend(bind("", &[], &[], &[]));
    batch.extend(execute(i32::MAX));
    batch.extend(sync());
    let msgs = raw.exchange(&batch).await;
    assert_eq!(tags(&msgs), "12DDDDDCZ", "{:?}", errors(&msgs));
    assert_eq!(firsts(&msgs), ["1", "2", "3", "4", "5"]);
    second_session_works(&server).await;

    // Negative: no limit, as 0 is.
    for max_rows in [-1, i32::MIN, 0] {
        let mut batch = bind("", &[], &[], &[]);
        batch.extend(execute(max_rows));
        batch.extend(sync());
        let msgs = raw.exchange(&batch).await;
        assert_eq!(
            tags(&msgs),
            "2DDDDDCZ",
            "max_rows {max_rows}: {:?}",
            errors(&msgs)
        );
    }

    // A positive limit still suspends the portal, and the rest follows.
    let mut batch = bind("", &[], &[], &[]);
    batch.extend(execute(2));
    batch.extend(execute(2));
    batch.extend(execute(1_000_000_000));
    batch.extend(sync());
    let msgs = raw.exchange(&batch).await;
    assert_eq!(tags(&msgs), "2DDsDDsDCZ", "{:?}", errors(&msgs));
    assert_eq!(firsts(&msgs), ["1", "2", "3", "4", "5"]);

    // The same session goes on.
    assert_eq!(raw.rows("SELECT 1").await, [[Some("1".to_owned())]]);
    second_session_works(&server).await;
}

/// Binds that do not match their statement are refused as PostgreSQL's
/// `exec_bind_message` refuses them (08P01 for counts, 22023 for a format
/// code other than text or binary); after the Sync the session goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mismatched_binds_are_refused_like_postgresql() {
    let dir = scratch_dir("protocol-bind");
    let server = TestServer::start(&dir);
    let mut raw = Raw::connect(&server).await;
    let msgs = raw
        .exchange(&[parse("s1", b"SELECT $1::bigint + 1 AS n", &[]), sync()].concat())
        .await;
    assert_eq!(tags(&msgs), "1Z", "{:?}", errors(&msgs));

    let one: &[u8] = b"1";
    let cases: Vec<(&str, Vec<u8>, &str, String)> = vec![
        (
            "more parameters than the statement has",
            bind("s1", &[], &[Some(one), Some(one)], &[]),
            "08P01",
            "bind message supplies 2 parameters, but prepared statement \"s1\" requires 1".into(),
        ),
        (
            "fewer parameters",
            bind("s1", &[], &[], &[]),
            "08P01",
            "bind message supplies 0 parameters, but prepared statement \"s1\" requires 1".into(),
        ),
        (
            "more parameter format codes than parameters",
            bind("s1", &[0, 0], &[Some(one)], &[]),
            "08P01",
            "bind message has 2 parameter formats but 1 parameters".into(),
        ),
        (
            "a parameter format code that is neither text nor binary",
            bind("s1", &[2], &[Some(one)], &[]),
            "22023",
            "unsupported format code: 2".into(),
        ),
        (
            "more result format codes than columns",
            bind("s1", &[], &[Some(one)], &[0, 1]),
            "08P01",
            "bind message has 2 result formats but query has 1 columns".into(),
        ),
        (
            "a result format code that is neither text nor binary",
            bind("s1", &[], &[Some(one)], &[-1]),
            "22023",
            "unsupported format code: -1".into(),
        ),
    ];
    for (what, message, code, text) in cases {
        // The Execute after the refused Bind is skipped until the Sync.
        let msgs = raw.exchange(&[message, execute(0), sync()].concat()).await;
        assert_eq!(tags(&msgs), "EZ", "{what}");
        assert_eq!(errors(&msgs), [(code.to_owned(), text)], "{what}");
    }

    // A matching Bind, text or binary, works on the same session.
    let msgs = raw
        .exchange(&[bind("s1", &[0], &[Some(one)], &[0]), execute(0), sync()].concat())
        .await;
    assert_eq!(tags(&msgs), "2DCZ", "{:?}", errors(&msgs));
    assert_eq!(firsts(&msgs), ["2"]);
    let msgs = raw
        .exchange(
            &[
                bind("s1", &[1], &[Some(&7i64.to_be_bytes())], &[1]),
                execute(0),
                sync(),
            ]
            .concat(),
        )
        .await;
    assert_eq!(tags(&msgs), "2DCZ", "{:?}", errors(&msgs));
    let row = &msgs[1].body;
    assert_eq!(&row[2..6], &8i32.to_be_bytes(), "an 8-byte binary bigint");
    assert_eq!(&row[6..14], &8i64.to_be_bytes());
    second_session_works(&server).await;
}

/// Text that is not UTF-8 is refused with 22021 and PostgreSQL's message,
/// rather than run with U+FFFD in place of the bad bytes; a U+FFFD the
/// client really sent is kept. Nothing of a refused statement happens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_is_refused_with_22021() {
    let dir = scratch_dir("protocol-utf8");
    let server = TestServer::start(&dir);
    let mut raw = Raw::connect(&server).await;
    raw.rows("CREATE TABLE notes (s TEXT)").await;

    let cases: [(&[u8], &str); 3] = [
        (b"INSERT INTO notes VALUES ('\xff')", "0xff"),
        // PostgreSQL shows as many bytes as the first one announces.
        (
            b"INSERT INTO notes VALUES ('\xe2\x28\xa1')",
            "0xe2 0x28 0xa1",
        ),
        (b"INSERT INTO notes VALUES ('ok'), ('\xc3')", "0xc3 0x27"),
    ];
    for (sql, bytes) in cases {
        let expected = (
            "22021".to_owned(),
            format!("invalid byte sequence for encoding \"UTF8\": {bytes}"),
        );
        // Simple query protocol.
        let msgs = raw.exchange(&query(sql)).await;
        assert_eq!(tags(&msgs), "EZ", "{bytes}");
        assert_eq!(errors(&msgs), std::slice::from_ref(&expected), "{bytes}");
        // Extended: the Parse is refused, the rest skipped until Sync.
        let batch = [
            parse("", sql, &[]),
            bind("", &[], &[], &[]),
            execute(0),
            sync(),
        ]
        .concat();
        let msgs = raw.exchange(&batch).await;
        assert_eq!(tags(&msgs), "EZ", "{bytes}");
        assert_eq!(errors(&msgs), [expected], "{bytes}");
    }
    // An invalid statement name is refused too.
    let msgs = raw
        .exchange(
            &[
                {
                    let mut b = Vec::new();
                    cstr(&mut b, b"stmt\xfe");
                    cstr(&mut b, b"SELECT 1");
                    b.extend_from_slice(&0u16.to_be_bytes());
                    message(b'P', &b)
                },
                sync(),
            ]
            .concat(),
        )
        .await;
    assert_eq!(
        errors(&msgs),
        [(
            "22021".to_owned(),
            "invalid byte sequence for encoding \"UTF8\": 0xfe".to_owned()
        )]
    );

    // None of the refused INSERTs ran; a real U+FFFD is stored as sent.
    assert_eq!(
        raw.rows("SELECT count(*) FROM notes").await,
        [[Some("0".to_owned())]]
    );
    raw.rows("INSERT INTO notes VALUES ('\u{FFFD}')").await;
    assert_eq!(
        raw.rows("SELECT s FROM notes").await,
        [[Some("\u{FFFD}".to_owned())]]
    );
    second_session_works(&server).await;
}
