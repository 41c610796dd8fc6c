//! A single-pass reader over the bytes of one JSON message, for the fast
//! path of `ENCODE JSON`.
//!
//! It accepts a subset of what serde_json accepts, with the same rules
//! (whitespace is space, tab, CR and LF; strings forbid control characters;
//! numbers follow the JSON grammar). At anything else it answers [`Unsure`]
//! and the caller leaves the message to serde_json, which decides and, for
//! a message that is not JSON, says why in its own words.
//!
//! Strings come in two strengths, as in serde_json: a string that becomes a
//! value ([`Scanner::string`]) must be valid UTF-8 with paired surrogate
//! escapes, while one that is only skipped ([`Scanner::skip_value`]) needs
//! valid escapes but is not checked further.

/// The scanner gave up on the message: it is not JSON, or not JSON this
/// reader vouches for. serde_json has the last word.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Unsure;

pub(super) type Scanned<T> = Result<T, Unsure>;

/// A string value as read.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Str<'p, 's> {
    /// Without escapes: borrowed from the message.
    Borrowed(&'p str),
    /// With escapes: decoded into the caller's scratch buffer.
    Unescaped(&'s str),
}

impl Str<'_, '_> {
    pub(super) fn as_str(&self) -> &str {
        match self {
            Str::Borrowed(s) | Str::Unescaped(s) => s,
        }
    }
}

pub(super) struct Scanner<'p> {
    bytes: &'p [u8],
    pos: usize,
}

const ONES: u64 = u64::MAX / 255;
const HIGH_BITS: u64 = ONES << 7;

/// Whether `b` ends the plain run of a string: a quote, a backslash or a
/// control character (which JSON forbids in strings).
fn is_special(b: u8) -> bool {
    b == b'"' || b == b'\\' || b < 0x20
}

/// The index of the first special byte (see [`is_special`]) at or after
/// `i`, or `bytes.len()`. Eight bytes at a time: a byte lower than 0x20,
/// or equal to `"` or `\`, sets its high bit in the mask; the lowest such
/// bit is exact (false positives only occur above a true one).
#[inline]
fn find_special(bytes: &[u8], mut i: usize) -> usize {
    while let Some(chunk) = bytes.get(i..i + 8) {
        let Ok(chunk) = <[u8; 8]>::try_from(chunk) else {
            break;
        };
        let x = u64::from_le_bytes(chunk);
        let control = x.wrapping_sub(ONES * 0x20) & !x;
        let quote = x ^ (ONES * u64::from(b'"'));
        let quote = quote.wrapping_sub(ONES) & !quote;
        let backslash = x ^ (ONES * u64::from(b'\\'));
        let backslash = backslash.wrapping_sub(ONES) & !backslash;
        let found = (control | quote | backslash) & HIGH_BITS;
        if found != 0 {
            return i + (found.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < bytes.len() && !is_special(bytes[i]) {
        i += 1;
    }
    i
}

/// Where [`Scanner::string_into`] writes a string's text: runs of the
/// message's bytes, which the receiver checks are UTF-8 (it may rely on
/// holding UTF-8 only), and the characters of escapes.
pub(super) trait TextOut {
    /// Appends a run of the message's bytes if it is UTF-8; says whether
    /// it was.
    fn push_run(&mut self, run: &[u8]) -> bool;
    fn push_char(&mut self, c: char);
}

/// Whether `bytes[at..]` starts with `word`, compared eight bytes at a
/// time (the words compared are short keys: a library call to compare them
/// costs more than the comparison).
#[inline]
fn starts_with_at(bytes: &[u8], at: usize, word: &[u8]) -> bool {
    let Some(bytes) = bytes.get(at..at + word.len()) else {
        return false;
    };
    let mut a = bytes.chunks_exact(8);
    let mut b = word.chunks_exact(8);
    for (x, y) in (&mut a).zip(&mut b) {
        let word = |c: &[u8]| c.try_into().ok().map(u64::from_ne_bytes);
        if word(x) != word(y) {
            return false;
        }
    }
    a.remainder().iter().zip(b.remainder()).all(|(x, y)| x == y)
}

fn hex_digit(b: u8) -> Option<u16> {
    match b {
        b'0'..=b'9' => Some(u16::from(b - b'0')),
        b'a'..=b'f' => Some(u16::from(b - b'a' + 10)),
        b'A'..=b'F' => Some(u16::from(b - b'A' + 10)),
        _ => None,
    }
}

impl<'p> Scanner<'p> {
    pub(super) fn new(bytes: &'p [u8]) -> Self {
        Self { bytes, pos: 0 }
    }

    pub(super) fn pos(&self) -> usize {
        self.pos
    }

    /// The bytes from `start` to the current position.
    pub(super) fn since(&self, start: usize) -> &'p [u8] {
        self.bytes.get(start..self.pos).unwrap_or_default()
    }

    pub(super) fn at_end(&self) -> bool {
        self.pos >= self.bytes.len()
    }

    pub(super) fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    /// Skips JSON whitespace.
    #[inline]
    pub(super) fn skip_ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    /// Consumes the byte `b`, which must be next.
    #[inline]
    pub(super) fn eat(&mut self, b: u8) -> Scanned<()> {
        if self.peek() == Some(b) {
            self.pos += 1;
            Ok(())
        } else {
            Err(Unsure)
        }
    }

    /// Consumes and returns the next byte.
    #[inline]
    pub(super) fn next_byte(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.pos += 1;
        Some(b)
    }

    /// Consumes `word` (`null`, `true`, `false`), which must be next.
    pub(super) fn literal(&mut self, word: &[u8]) -> Scanned<()> {
        if self.bytes.get(self.pos..self.pos + word.len()) == Some(word) {
            self.pos += word.len();
            Ok(())
        } else {
            Err(Unsure)
        }
    }

    /// Consumes `word` if it is next; says whether it was.
    #[inline]
    pub(super) fn eat_bytes(&mut self, word: &[u8]) -> bool {
        let found = starts_with_at(self.bytes, self.pos, word);
        if found {
            self.pos += word.len();
        }
        found
    }

    /// Reads a string that becomes a value, as [`Scanner::string`] does,
    /// into `out` (escapes decoded). On [`Unsure`], `out` may hold part of
    /// the string.
    pub(super) fn string_into(&mut self, out: &mut impl TextOut) -> Scanned<()> {
        self.eat(b'"')?;
        let mut run = self.pos;
        loop {
            let end = find_special(self.bytes, run);
            // Runs end before ASCII bytes and escapes decode to whole
            // characters, so the string is UTF-8 if each run is.
            if !out.push_run(self.bytes.get(run..end).ok_or(Unsure)?) {
                return Err(Unsure);
            }
            match self.bytes.get(end) {
                Some(b'"') => {
                    self.pos = end + 1;
                    return Ok(());
                }
                Some(b'\\') => {
                    self.pos = end + 1;
                    out.push_char(self.escaped()?);
                    run = self.pos;
                }
                // A control character, or the end of the message.
                _ => return Err(Unsure),
            }
        }
    }

    /// Reads a string that becomes a value or a key: the next byte must be
    /// its opening quote. Escapes are decoded into `scratch`; the text must
    /// be UTF-8 and `\u` escapes of surrogates must come in pairs.
    pub(super) fn string<'s>(&mut self, scratch: &'s mut Vec<u8>) -> Scanned<Str<'p, 's>> {
        self.eat(b'"')?;
        let start = self.pos;
        let end = find_special(self.bytes, start);
        match self.bytes.get(end) {
            Some(b'"') => {
                self.pos = end + 1;
                let text = self.bytes.get(start..end).ok_or(Unsure)?;
                std::str::from_utf8(text)
                    .map(Str::Borrowed)
                    .map_err(|_| Unsure)
            }
            Some(b'\\') => {
                scratch.clear();
                let mut run = start;
                let mut end = end;
                loop {
                    scratch.extend_from_slice(self.bytes.get(run..end).ok_or(Unsure)?);
                    match self.bytes.get(end) {
                        Some(b'"') => {
                            self.pos = end + 1;
                            break;
                        }
                        Some(b'\\') => {
                            self.pos = end + 1;
                            self.unescape(scratch)?;
                            run = self.pos;
                            end = find_special(self.bytes, run);
                        }
                        // A control character, or the end of the message.
                        _ => return Err(Unsure),
                    }
                }
                std::str::from_utf8(scratch)
                    .map(Str::Unescaped)
                    .map_err(|_| Unsure)
            }
            _ => Err(Unsure),
        }
    }

    /// Decodes the escape after a backslash into `scratch`.
    fn unescape(&mut self, scratch: &mut Vec<u8>) -> Scanned<()> {
        let c = self.escaped()?;
        let mut buf = [0; 4];
        scratch.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
        Ok(())
    }

    /// The character of the escape after a backslash.
    fn escaped(&mut self) -> Scanned<char> {
        let code = match self.next_byte() {
            Some(b'"') => u32::from(b'"'),
            Some(b'\\') => u32::from(b'\\'),
            Some(b'/') => u32::from(b'/'),
            Some(b'b') => 0x08,
            Some(b'f') => 0x0c,
            Some(b'n') => u32::from(b'\n'),
            Some(b'r') => u32::from(b'\r'),
            Some(b't') => u32::from(b'\t'),
            Some(b'u') => match self.hex4()? {
                // A trailing surrogate alone.
                0xDC00..=0xDFFF => return Err(Unsure),
                unit @ 0xD800..=0xDBFF => {
                    self.eat(b'\\')?;
                    self.eat(b'u')?;
                    let low = self.hex4()?;
                    if !(0xDC00..=0xDFFF).contains(&low) {
                        return Err(Unsure);
                    }
                    0x1_0000 + (((u32::from(unit) - 0xD800) << 10) | (u32::from(low) - 0xDC00))
                }
                unit => u32::from(unit),
            },
            _ => return Err(Unsure),
        };
        char::from_u32(code).ok_or(Unsure)
    }

    /// Four hex digits of a `\u` escape.
    fn hex4(&mut self) -> Scanned<u16> {
        let digits = self.bytes.get(self.pos..self.pos + 4).ok_or(Unsure)?;
        let mut n = 0;
        for &d in digits {
            n = (n << 4) | hex_digit(d).ok_or(Unsure)?;
        }
        self.pos += 4;
        Ok(n)
    }

    /// Skips a string whose text is not needed (the next byte is its
    /// opening quote): escapes must be well formed, nothing more, as
    /// serde_json checks skipped strings.
    fn skip_string(&mut self) -> Scanned<()> {
        self.eat(b'"')?;
        loop {
            let end = find_special(self.bytes, self.pos);
            self.pos = end + 1;
            match self.bytes.get(end) {
                Some(b'"') => return Ok(()),
                Some(b'\\') => match self.next_byte() {
                    Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {}
                    Some(b'u') => {
                        self.hex4()?;
                    }
                    _ => return Err(Unsure),
                },
                _ => return Err(Unsure),
            }
        }
    }

    /// Reads a number by the JSON grammar. Returns its value if it is an
    /// integer that serde_json reads as an `i64` too (no fraction, no
    /// exponent, at most 18 digits, not `-0`); `None` for any other number,
    /// whose text the caller takes from the position it started at.
    pub(super) fn number(&mut self) -> Scanned<Option<i64>> {
        let negative = self.peek() == Some(b'-');
        if negative {
            self.pos += 1;
        }
        let mut value: i64 = 0;
        let mut digits = 1;
        match self.next_byte() {
            Some(b'0') => {
                if let Some(b'0'..=b'9') = self.peek() {
                    return Err(Unsure);
                }
            }
            Some(d @ b'1'..=b'9') => {
                value = i64::from(d - b'0');
                while let Some(d @ b'0'..=b'9') = self.peek() {
                    self.pos += 1;
                    digits += 1;
                    if digits <= 18 {
                        value = value * 10 + i64::from(d - b'0');
                    }
                }
            }
            _ => return Err(Unsure),
        }
        let mut plain = digits <= 18 && !(negative && value == 0);
        if self.peek() == Some(b'.') {
            self.pos += 1;
            self.digits()?;
            plain = false;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            self.digits()?;
            plain = false;
        }
        Ok(plain.then_some(if negative { -value } else { value }))
    }

    /// One or more digits.
    fn digits(&mut self) -> Scanned<()> {
        let start = self.pos;
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
        if self.pos == start {
            Err(Unsure)
        } else {
            Ok(())
        }
    }

    /// Skips one value of any kind, nested or not, with `stack` for the
    /// arrays and objects it is inside. Returns how deep it nests (0 for a
    /// scalar). No depth limit: serde_json has none for skipped values.
    pub(super) fn skip_value(&mut self, stack: &mut Vec<u8>) -> Scanned<usize> {
        stack.clear();
        let mut deepest = 0;
        loop {
            // A value.
            self.skip_ws();
            match self.peek() {
                Some(b'"') => self.skip_string()?,
                Some(b'n') => self.literal(b"null")?,
                Some(b't') => self.literal(b"true")?,
                Some(b'f') => self.literal(b"false")?,
                Some(b'-' | b'0'..=b'9') => {
                    self.number()?;
                }
                Some(open @ (b'[' | b'{')) => {
                    self.pos += 1;
                    stack.push(open);
                    deepest = deepest.max(stack.len());
                    self.skip_ws();
                    let close = if open == b'[' { b']' } else { b'}' };
                    if self.peek() == Some(close) {
                        self.pos += 1;
                        stack.pop();
                    } else {
                        if open == b'{' {
                            self.skip_key()?;
                        }
                        continue;
                    }
                }
                _ => return Err(Unsure),
            }
            // After a value: a comma before the next, or closing brackets.
            loop {
                let Some(&inside) = stack.last() else {
                    return Ok(deepest);
                };
                self.skip_ws();
                match (self.next_byte(), inside) {
                    (Some(b','), b'{') => {
                        self.skip_ws();
                        self.skip_key()?;
                        break;
                    }
                    (Some(b','), _) => break,
                    (Some(b']'), b'[') | (Some(b'}'), b'{') => {
                        stack.pop();
                    }
                    _ => return Err(Unsure),
                }
            }
        }
    }

    /// A key of a skipped object and its colon.
    fn skip_key(&mut self) -> Scanned<()> {
        self.skip_string()?;
        self.skip_ws();
        self.eat(b':')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_bytes_are_found_in_every_lane() {
        for len in 0..20 {
            for at in 0..len {
                for special in [b'"', b'\\', 0x00, 0x1f] {
                    let mut bytes = vec![b'a'; len];
                    bytes[at] = special;
                    assert_eq!(find_special(&bytes, 0), at, "{len} {at} {special}");
                }
                // Bytes that look close to special ones are not.
                let bytes = vec![0x20, 0x21, 0x5b, 0x5d, 0x7f, 0x80, 0xa0, 0xff];
                assert_eq!(find_special(&bytes, 0), bytes.len());
            }
            assert_eq!(find_special(&vec![b'a'; len], 0), len);
        }
    }

    #[test]
    fn keys_are_recognised_by_their_bytes() {
        for key in [&b"\"x\""[..], b"\"date_time\"", b"\"a_long_column_name\""] {
            let mut json = key.to_vec();
            json.extend_from_slice(b": 1");
            let mut s = Scanner::new(&json);
            assert!(s.eat_bytes(key));
            assert_eq!(s.pos(), key.len());
            // The key cut short, another key.
            for other in [&key[..key.len() - 1], b"\"y\": 1"] {
                let mut s = Scanner::new(other);
                assert!(!s.eat_bytes(key));
                assert_eq!(s.pos(), 0);
            }
            // A longer key that starts with this one's name.
            let mut longer = key[..key.len() - 1].to_vec();
            longer.extend_from_slice(b"s\": 1");
            assert!(!Scanner::new(&longer).eat_bytes(key));
        }
    }

    impl TextOut for Vec<u8> {
        fn push_run(&mut self, run: &[u8]) -> bool {
            let utf8 = std::str::from_utf8(run).is_ok();
            if utf8 {
                self.extend_from_slice(run);
            }
            utf8
        }

        fn push_char(&mut self, c: char) {
            self.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
        }
    }

    /// [`Scanner::string_into`] appends what [`Scanner::string`] returns,
    /// and refuses what it refuses.
    fn string_into(json: &[u8]) -> Scanned<String> {
        let mut out = b"before".to_vec();
        let mut s = Scanner::new(json);
        s.string_into(&mut out)?;
        if !s.at_end() {
            return Err(Unsure);
        }
        let text = String::from_utf8(out).map_err(|_| Unsure)?;
        text.strip_prefix("before")
            .map(str::to_string)
            .ok_or(Unsure)
    }

    #[test]
    fn strings_read_into_a_buffer_as_strings_are_read() {
        for json in [
            &br#""plain""#[..],
            br#""""#,
            br#""q\" b\\ s\/ \b\f\n\r\t""#,
            br#""\u00e9\u4E2D\ud83d\ude00!""#,
            "\"é中😀 and a longer run of text\"".as_bytes(),
            "\"é\\n😀\"".as_bytes(),
            br#""\ud83d""#,
            br#""\ud83d\u0041""#,
            br#""\ude00""#,
            br#""\u12""#,
            br#""\x""#,
            b"\"a\nb\"",
            b"\"\xff\"",
            b"\"abcdefgh\xff\"",
            b"\"\\n\xc3\"",
            b"\"\xc3\\n\xa9\"",
            b"\"unterminated",
            b"\"ends in \\",
        ] {
            assert_eq!(
                string_into(json),
                string(json),
                "{}",
                String::from_utf8_lossy(json)
            );
        }
    }

    fn string(json: &[u8]) -> Scanned<String> {
        let mut scratch = Vec::new();
        let mut s = Scanner::new(json);
        let text = s.string(&mut scratch)?.as_str().to_string();
        if !s.at_end() {
            return Err(Unsure);
        }
        Ok(text)
    }

    #[test]
    fn strings_decode_escapes_and_refuse_what_serde_json_refuses() {
        assert_eq!(string(br#""plain""#), Ok("plain".into()));
        assert_eq!(
            string(br#""q\" b\\ s\/ \b\f\n\r\t""#),
            Ok("q\" b\\ s/ \u{8}\u{c}\n\r\t".into())
        );
        assert_eq!(
            string(br#""\u00e9\u4E2D\ud83d\ude00!""#),
            Ok("é中😀!".into())
        );
        assert_eq!(string("\"é\"".as_bytes()), Ok("é".into()));
        for bad in [
            &br#""\ud83d""#[..],
            br#""\ud83d\u0041""#,
            br#""\ude00""#,
            br#""\u12""#,
            br#""\u12g4""#,
            br#""\x""#,
            b"\"a\nb\"",
            b"\"\xff\"",
            b"\"\\n\xc3\"",
            b"\"unterminated",
            b"\"ends in \\",
        ] {
            assert_eq!(string(bad), Err(Unsure), "{}", String::from_utf8_lossy(bad));
        }
    }

    fn number(json: &[u8]) -> Scanned<Option<i64>> {
        let mut s = Scanner::new(json);
        let n = s.number()?;
        if !s.at_end() {
            return Err(Unsure);
        }
        Ok(n)
    }

    #[test]
    fn numbers_follow_the_json_grammar() {
        assert_eq!(number(b"0"), Ok(Some(0)));
        assert_eq!(number(b"-12"), Ok(Some(-12)));
        assert_eq!(
            number(b"999999999999999999"),
            Ok(Some(999_999_999_999_999_999))
        );
        // Left to serde_json for their value.
        for other in [
            &b"-0"[..],
            b"1.5",
            b"1e3",
            b"1E+3",
            b"2.0e-2",
            b"9223372036854775807",
        ] {
            assert_eq!(
                number(other),
                Ok(None),
                "{}",
                String::from_utf8_lossy(other)
            );
        }
        for bad in [&b"01"[..], b"-", b"1.", b".5", b"1e", b"1e+", b"+1", b"--1"] {
            assert_eq!(number(bad), Err(Unsure), "{}", String::from_utf8_lossy(bad));
        }
    }

    fn skip(json: &[u8]) -> Scanned<usize> {
        let mut s = Scanner::new(json);
        let depth = s.skip_value(&mut Vec::new())?;
        s.skip_ws();
        if !s.at_end() {
            return Err(Unsure);
        }
        Ok(depth)
    }

    #[test]
    fn skipped_values_are_checked_but_not_built() {
        assert_eq!(skip(b"1"), Ok(0));
        assert_eq!(skip(b" [ ] "), Ok(1));
        assert_eq!(
            skip(br#"{"a" : [1, {"b": null}, "x\u0000"], "c": {}}"#),
            Ok(3)
        );
        // Skipped strings are not checked for UTF-8 or surrogate pairs,
        // as serde_json does not check them.
        assert_eq!(skip(b"[\"\xff\", \"\\ud800\"]"), Ok(1));
        let deep = format!("{}{}", "[".repeat(1000), "]".repeat(1000));
        assert_eq!(skip(deep.as_bytes()), Ok(1000));
        for bad in [
            &b"[1,]"[..],
            b"[1 2]",
            b"{\"a\" 1}",
            b"{\"a\": 1,}",
            b"{1: 2}",
            b"[}",
            b"{]",
            b"[",
            b"nul",
            b"tru",
            b"\"\\q\"",
            b"[\"\\u12\"]",
        ] {
            assert_eq!(skip(bad), Err(Unsure), "{}", String::from_utf8_lossy(bad));
        }
    }
}
