//! Hostile and malformed frontend messages, sent byte by byte to the real
//! binary: an Execute whose row limit once made the server try to allocate
//! 85 GB, Binds that do not match their statement, and text that is not
//! UTF-8. Each is answered as PostgreSQL 15 answers it, the session goes on,
//! and a second session never notices.

mod common;

use std::time::Duration;

use common::{scratch_dir, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One backend message: its type byte and body.
#[derive(Debug)]
struct Msg {
    tag: u8,
    body: Vec<u8>,
}

impl Msg {
    /// An ErrorResponse's field `code` (`b'C'` SQLSTATE, `b'M'` message).
    fn field(&self, code: u8) -> Option<String> {
        let mut rest = self.body.as_slice();
        while let Some((&c, tail)) = rest.split_first() {
            if c == 0 {
                break;
            }
            let end = tail.iter().position(|b| *b == 0)?;
            if c == code {
                return Some(String::from_utf8_lossy(&tail[..end]).into_owned());
            }
            rest = &tail[end + 1..];
        }
        None
    }

    /// The text of every column of a DataRow (NULL as `None`).
    fn columns(&self) -> Vec<Option<String>> {
        let b = &self.body;
        let n = i16::from_be_bytes([b[0], b[1]]) as usize;
        let mut at = 2;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let len = i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
            at += 4;
            if len < 0 {
                out.push(None);
            } else {
                let len = len as usize;
                out.push(Some(String::from_utf8_lossy(&b[at..at + len]).into_owned()));
                at += len;
            }
        }
        out
    }
}

/// A frontend speaking the protocol by hand, so that it can send what no
/// driver would.
struct Raw {
    stream: TcpStream,
}

/// `tag`, length, `body`: one frontend message.
fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![tag];
    m.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    m.extend_from_slice(body);
    m
}

fn cstr(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(s);
    out.push(0);
}

fn parse(name: &str, sql: &[u8], types: &[u32]) -> Vec<u8> {
    let mut b = Vec::new();
    cstr(&mut b, name.as_bytes());
    cstr(&mut b, sql);
    b.extend_from_slice(&(types.len() as u16).to_be_bytes());
    for t in types {
        b.extend_from_slice(&t.to_be_bytes());
    }
    message(b'P', &b)
}

fn bind(statement: &str, formats: &[i16], params: &[Option<&[u8]>], results: &[i16]) -> Vec<u8> {
    let mut b = Vec::new();
    cstr(&mut b, b"");
    cstr(&mut b, statement.as_bytes());
    b.extend_from_slice(&(formats.len() as u16).to_be_bytes());
    for f in formats {
        b.extend_from_slice(&f.to_be_bytes());
    }
    b.extend_from_slice(&(params.len() as u16).to_be_bytes());
    for p in params {
        match p {
            Some(v) => {
                b.extend_from_slice(&(v.len() as i32).to_be_bytes());
                b.extend_from_slice(v);
            }
            None => b.extend_from_slice(&(-1i32).to_be_bytes()),
        }
    }
    b.extend_from_slice(&(results.len() as u16).to_be_bytes());
    for r in results {
        b.extend_from_slice(&r.to_be_bytes());
    }
    message(b'B', &b)
}

/// Execute of the unnamed portal with a row limit.
fn execute(max_rows: i32) -> Vec<u8> {
    let mut b = Vec::new();
    cstr(&mut b, b"");
    b.extend_from_slice(&max_rows.to_be_bytes());
    message(b'E', &b)
}

fn sync() -> Vec<u8> {
    message(b'S', &[])
}

fn query(sql: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    cstr(&mut b, sql);
    message(b'Q', &b)
}

impl Raw {
    /// Connects and logs in (the test server trusts every user).
    async fn connect(server: &TestServer) -> Raw {
        let stream = TcpStream::connect(("127.0.0.1", server.port))
            .await
            .expect("connect");
        let mut raw = Raw { stream };
        let mut body = Vec::new();
        body.extend_from_slice(&196608u32.to_be_bytes()); // protocol 3.0
        cstr(&mut body, b"user");
        cstr(&mut body, b"tester");
        cstr(&mut body, b"database");
        cstr(&mut body, b"millrace");
        body.push(0);
        let mut startup = ((body.len() + 4) as u32).to_be_bytes().to_vec();
        startup.extend_from_slice(&body);
        raw.send(&startup).await;
        let msgs = raw.until_ready().await;
        assert!(
            msgs.iter().any(|m| m.tag == b'R'),
            "no authentication reply: {msgs:?}"
        );
        raw
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("send");
    }

    async fn recv(&mut self) -> Msg {
        let read = async {
            let tag = self.stream.read_u8().await?;
            let len = self.stream.read_u32().await? as usize;
            let mut body = vec![0; len.saturating_sub(4)];
            self.stream.read_exact(&mut body).await?;
            Ok::<_, std::io::Error>(Msg { tag, body })
        };
        tokio::time::timeout(Duration::from_secs(30), read)
            .await
            .expect("the server answered within 30 s")
            .expect("the server kept the connection open")
    }

    /// Every message up to and including ReadyForQuery.
    async fn until_ready(&mut self) -> Vec<Msg> {
        let mut out = Vec::new();
        loop {
            let m = self.recv().await;
            let done = m.tag == b'Z';
            out.push(m);
            if done {
                return out;
            }
        }
    }

    /// Sends `bytes`, then reads up to ReadyForQuery.
    async fn exchange(&mut self, bytes: &[u8]) -> Vec<Msg> {
        self.send(bytes).await;
        self.until_ready().await
    }

    /// The rows of a simple query (which must succeed).
    async fn rows(&mut self, sql: &str) -> Vec<Vec<Option<String>>> {
        let msgs = self.exchange(&query(sql.as_bytes())).await;
        assert!(
            !msgs.iter().any(|m| m.tag == b'E'),
            "{sql}: {:?}",
            errors(&msgs)
        );
        msgs.iter()
            .filter(|m| m.tag == b'D')
            .map(Msg::columns)
            .collect()
    }
}

/// `(SQLSTATE, message)` of every ErrorResponse.
fn errors(msgs: &[Msg]) -> Vec<(String, String)> {
    msgs.iter()
        .filter(|m| m.tag == b'E')
        .map(|m| {
            (
                m.field(b'C').unwrap_or_default(),
                m.field(b'M').unwrap_or_default(),
            )
        })
        .collect()
}

fn tags(msgs: &[Msg]) -> String {
    msgs.iter().map(|m| m.tag as char).collect()
}

/// The first column of every DataRow.
fn firsts(msgs: &[Msg]) -> Vec<String> {
    msgs.iter()
        .filter(|m| m.tag == b'D')
        .map(|m| m.columns()[0].clone().unwrap_or_default())
        .collect()
}

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
