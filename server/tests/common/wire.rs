//! A frontend that speaks the PostgreSQL protocol by hand, for tests that
//! send what no driver would (raw frames, odd counts, invalid UTF-8, huge
//! statements) and look at each backend message.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::TestServer;

/// One backend message: its type byte and body.
#[derive(Debug)]
pub struct Msg {
    pub tag: u8,
    pub body: Vec<u8>,
}

impl Msg {
    /// An ErrorResponse's field `code` (`b'C'` SQLSTATE, `b'M'` message).
    pub fn field(&self, code: u8) -> Option<String> {
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

    /// The number of columns of a DataRow or RowDescription, and of
    /// parameters of a ParameterDescription.
    pub fn count(&self) -> usize {
        u16::from_be_bytes([self.body[0], self.body[1]]) as usize
    }

    /// The first column of a DataRow, as text.
    pub fn first(&self) -> Option<String> {
        self.columns().into_iter().next().flatten()
    }

    /// The text of every column of a DataRow (NULL as `None`).
    pub fn columns(&self) -> Vec<Option<String>> {
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
pub struct Raw {
    pub stream: TcpStream,
}

/// `tag`, length, `body`: one frontend message.
pub fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![tag];
    m.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    m.extend_from_slice(body);
    m
}

pub fn cstr(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(s);
    out.push(0);
}

pub fn parse(name: &str, sql: &[u8], types: &[u32]) -> Vec<u8> {
    let mut b = Vec::new();
    cstr(&mut b, name.as_bytes());
    cstr(&mut b, sql);
    b.extend_from_slice(&(types.len() as u16).to_be_bytes());
    for t in types {
        b.extend_from_slice(&t.to_be_bytes());
    }
    message(b'P', &b)
}

pub fn bind(
    statement: &str,
    formats: &[i16],
    params: &[Option<&[u8]>],
    results: &[i16],
) -> Vec<u8> {
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
pub fn execute(max_rows: i32) -> Vec<u8> {
    let mut b = Vec::new();
    cstr(&mut b, b"");
    b.extend_from_slice(&max_rows.to_be_bytes());
    message(b'E', &b)
}

/// Describe of the unnamed statement.
pub fn describe() -> Vec<u8> {
    message(b'D', b"S\0")
}

pub fn sync() -> Vec<u8> {
    message(b'S', &[])
}

/// A simple Query of `sql` (bytes, so that a test can send invalid UTF-8).
pub fn query(sql: impl AsRef<[u8]>) -> Vec<u8> {
    let mut b = Vec::new();
    cstr(&mut b, sql.as_ref());
    message(b'Q', &b)
}

impl Raw {
    /// Connects and logs in (the test server trusts every user).
    pub async fn connect(server: &TestServer) -> Raw {
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

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("send");
    }

    pub async fn recv(&mut self) -> Msg {
        let read = async {
            let tag = self.stream.read_u8().await?;
            let len = self.stream.read_u32().await? as usize;
            let mut body = vec![0; len.saturating_sub(4)];
            self.stream.read_exact(&mut body).await?;
            Ok::<_, std::io::Error>(Msg { tag, body })
        };
        // Generous: a debug build on a loaded machine (a stall was minutes).
        tokio::time::timeout(Duration::from_secs(60), read)
            .await
            .expect("the server answered within 60 s")
            .expect("the server kept the connection open")
    }

    /// Every message up to and including ReadyForQuery.
    pub async fn until_ready(&mut self) -> Vec<Msg> {
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
    pub async fn exchange(&mut self, bytes: &[u8]) -> Vec<Msg> {
        self.send(bytes).await;
        self.until_ready().await
    }

    /// `SELECT 1` answers 1 on this session.
    pub async fn select_1_works(&mut self) {
        let msgs = self.exchange(&query("SELECT 1")).await;
        assert_eq!(tags(&msgs), "TDCZ", "{:?}", errors(&msgs));
        assert_eq!(msgs[1].first().as_deref(), Some("1"));
    }

    /// The rows of a simple query (which must succeed).
    pub async fn rows(&mut self, sql: &str) -> Vec<Vec<Option<String>>> {
        let msgs = self.exchange(&query(sql)).await;
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
pub fn errors(msgs: &[Msg]) -> Vec<(String, String)> {
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

pub fn tags(msgs: &[Msg]) -> String {
    msgs.iter().map(|m| m.tag as char).collect()
}

/// The first column of every DataRow.
pub fn firsts(msgs: &[Msg]) -> Vec<String> {
    msgs.iter()
        .filter(|m| m.tag == b'D')
        .map(|m| m.columns()[0].clone().unwrap_or_default())
        .collect()
}
