//! HTTP/1.1 on the upstream side, as bytes: the response head the proxy
//! reads (parsed with `httparse`) and the framing of the bodies both ways
//! (RFC 9112 §6 and §7.1). Pure logic, no I/O.

use actix_web::http::header::HeaderName;
use bytes::{Bytes, BytesMut};

/// The longest response head taken from an upstream.
pub const MAX_HEAD: usize = 64 * 1024;
/// The most header fields in a response head.
const MAX_HEADERS: usize = 128;
/// The longest chunk-size line (with extensions) or trailer line.
const MAX_LINE: usize = 4096;
/// The most bytes of trailers after the last chunk.
const MAX_TRAILERS: usize = 16 * 1024;

/// What is wrong with what an upstream sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("malformed response head ({0})")]
    Head(String),
    #[error("response head larger than {MAX_HEAD} bytes")]
    HeadTooLarge,
    #[error("conflicting or malformed Content-Length")]
    Length,
    #[error("malformed chunked body ({0})")]
    Chunked(&'static str),
}

/// How a response body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (1xx, 204, 304, or the answer to a HEAD).
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Everything until the upstream closes.
    Close,
}

/// A parsed response head. Header values are slices of `bytes` (the head
/// as received), so passing them on copies nothing.
#[derive(Debug)]
pub struct ResponseHead {
    pub status: u16,
    /// `(name, value range in bytes)` in order (names are lower case).
    pub headers: Vec<(HeaderName, std::ops::Range<usize>)>,
    pub bytes: Bytes,
    /// The `Content-Length`, if one (or a list of one repeated value).
    pub length: Option<u64>,
    pub framing: Framing,
    /// Whether the connection may carry another request after this one.
    pub keep_alive: bool,
}

impl ResponseHead {
    pub fn value(&self, range: &std::ops::Range<usize>) -> Bytes {
        self.bytes.slice(range.clone())
    }

    /// The first value of header `name` (lower case).
    pub fn get(&self, name: &str) -> Option<Bytes> {
        self.get_all(name).next()
    }

    /// Every value of header `name` (lower case).
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = Bytes> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.as_str() == name)
            .map(|(_, r)| self.value(r))
    }
}

/// Takes one response head off the front of `buf`: `Ok(None)` when more
/// bytes are needed. `head_request`: the request was a HEAD (no body).
pub fn parse_head(
    buf: &mut BytesMut,
    head_request: bool,
) -> Result<Option<ResponseHead>, WireError> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut fields);
    let len = match response.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => {
            return Err(WireError::HeadTooLarge)
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(WireError::Head(format!("more than {MAX_HEADERS} fields")))
        }
        Err(e) => return Err(WireError::Head(e.to_string())),
    };
    if len > MAX_HEAD {
        return Err(WireError::HeadTooLarge);
    }
    let status = response.code.unwrap_or(0);
    let minor = response.version.unwrap_or(0);
    let base = buf.as_ptr() as usize;
    let mut headers = Vec::with_capacity(response.headers.len());
    let (mut length, mut chunked, mut encoded) = (None::<u64>, false, false);
    let (mut close, mut keep_alive) = (false, false);
    for field in response.headers.iter() {
        // Standard names are matched without allocating; httparse has
        // checked the name's characters already.
        let name = HeaderName::from_bytes(field.name.as_bytes())
            .map_err(|_| WireError::Head(format!("bad header name {:?}", field.name)))?;
        let start = field.value.as_ptr() as usize - base;
        let value = field.value;
        match name.as_str() {
            "content-length" => {
                // A list of one repeated value is that value (RFC 9110
                // §8.6); anything but digits (`+5`, `-1`) is refused.
                for item in value.split(|b| *b == b',') {
                    let digits = item.trim_ascii();
                    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
                        return Err(WireError::Length);
                    }
                    let n = std::str::from_utf8(digits)
                        .ok()
                        .and_then(|v| v.parse::<u64>().ok())
                        .ok_or(WireError::Length)?;
                    if length.is_some_and(|l| l != n) {
                        return Err(WireError::Length);
                    }
                    length = Some(n);
                }
            }
            "transfer-encoding" => {
                encoded = true;
                // Chunked only counts as the last coding (RFC 9112 §6.3).
                chunked = value
                    .rsplit(|b| *b == b',')
                    .next()
                    .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            }
            "connection" => {
                for token in value.split(|b| *b == b',') {
                    let token = token.trim_ascii();
                    close |= token.eq_ignore_ascii_case(b"close");
                    keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
                }
            }
            _ => {}
        }
        headers.push((name, start..start + value.len()));
    }
    let framing = if (100..200).contains(&status) || status == 204 || status == 304 || head_request
    {
        Framing::Empty
    } else if encoded {
        if chunked {
            Framing::Chunked
        } else {
            Framing::Close
        }
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        Framing::Close
    };
    // A response framed both ways, or a chunked HTTP/1.0 one, is read as
    // the RFC says but its connection is not trusted again (RFC 9112 §6.3).
    let ambiguous = encoded && (length.is_some() || minor == 0);
    let persistent = !ambiguous
        && if minor >= 1 {
            !close
        } else {
            keep_alive && !close
        };
    Ok(Some(ResponseHead {
        status,
        headers,
        bytes: buf.split_to(len).freeze(),
        length,
        keep_alive: persistent && framing != Framing::Close,
        framing,
    }))
}

/// One step of reading a body.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// These bytes of the body.
    Data(Bytes),
    /// More bytes are needed.
    More,
    /// The body is whole.
    End,
}

/// Reads a body of a given framing out of the bytes received.
#[derive(Debug)]
pub struct Decoder {
    state: State,
}

#[derive(Debug, Clone, Copy)]
enum State {
    Length(u64),
    Close,
    /// Before a chunk-size line.
    Size,
    /// Inside a chunk, this many bytes left.
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer lines (this many bytes so far).
    Trailers(usize),
    Done,
}

impl Decoder {
    pub fn new(framing: Framing) -> Decoder {
        let state = match framing {
            Framing::Empty | Framing::Length(0) => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::Size,
            Framing::Close => State::Close,
        };
        Decoder { state }
    }

    /// Whether the body ends when the upstream closes (not an error then).
    pub fn ends_at_close(&self) -> bool {
        matches!(self.state, State::Close)
    }

    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// Takes what it can of the body off the front of `buf`.
    pub fn next(&mut self, buf: &mut BytesMut) -> Result<Step, WireError> {
        loop {
            match self.state {
                State::Done => return Ok(Step::End),
                State::Length(_) | State::Close | State::Data(_) if buf.is_empty() => {
                    return Ok(Step::More)
                }
                State::Close => return Ok(Step::Data(buf.split().freeze())),
                State::Length(left) => {
                    let n = take(left, buf.len());
                    let left = left - n as u64;
                    self.state = if left == 0 {
                        State::Done
                    } else {
                        State::Length(left)
                    };
                    return Ok(Step::Data(buf.split_to(n).freeze()));
                }
                State::Data(left) => {
                    let n = take(left, buf.len());
                    let left = left - n as u64;
                    self.state = if left == 0 {
                        State::DataEnd
                    } else {
                        State::Data(left)
                    };
                    return Ok(Step::Data(buf.split_to(n).freeze()));
                }
                State::Size => {
                    let Some(line) = line(buf)? else {
                        return Ok(Step::More);
                    };
                    let size = chunk_size(&line)?;
                    self.state = if size == 0 {
                        State::Trailers(0)
                    } else {
                        State::Data(size)
                    };
                }
                State::DataEnd => {
                    let Some(line) = line(buf)? else {
                        return Ok(Step::More);
                    };
                    if !line.is_empty() {
                        return Err(WireError::Chunked("no CRLF after a chunk"));
                    }
                    self.state = State::Size;
                }
                State::Trailers(seen) => {
                    let Some(line) = line(buf)? else {
                        return Ok(Step::More);
                    };
                    let seen = seen + line.len() + 2;
                    if seen > MAX_TRAILERS {
                        return Err(WireError::Chunked("trailers too large"));
                    }
                    // Trailers are dropped: the client's HTTP/1.1 gets none.
                    self.state = if line.is_empty() {
                        State::Done
                    } else {
                        State::Trailers(seen)
                    };
                }
            }
        }
    }
}

fn take(left: u64, available: usize) -> usize {
    usize::try_from(left).map_or(available, |l| l.min(available))
}

/// One line off the front of `buf` (without its CRLF or LF), if whole.
fn line(buf: &mut BytesMut) -> Result<Option<Bytes>, WireError> {
    match buf.iter().take(MAX_LINE).position(|b| *b == b'\n') {
        Some(end) => {
            let mut line = buf.split_to(end + 1);
            line.truncate(end);
            if line.last() == Some(&b'\r') {
                line.truncate(end - 1);
            }
            Ok(Some(line.freeze()))
        }
        None if buf.len() >= MAX_LINE => Err(WireError::Chunked("line too long")),
        None => Ok(None),
    }
}

/// The size on a chunk-size line (extensions after `;` are ignored).
fn chunk_size(line: &[u8]) -> Result<u64, WireError> {
    let digits = line
        .split(|b| *b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    if digits.is_empty() || digits.len() > 15 {
        return Err(WireError::Chunked("bad chunk size"));
    }
    let mut size: u64 = 0;
    for d in digits {
        let v = (*d as char)
            .to_digit(16)
            .ok_or(WireError::Chunked("bad chunk size"))?;
        size = size * 16 + u64::from(v);
    }
    Ok(size)
}

/// One chunk of a chunked request body, framed.
pub fn chunk(data: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(data.len() + 12);
    out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out.freeze()
}

/// The end of a chunked request body.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// Appends one header field to a request head.
pub fn field(out: &mut BytesMut, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use proptest::prelude::*;

    fn head(text: &str, head_request: bool) -> ResponseHead {
        let mut buf = BytesMut::from(text);
        parse_head(&mut buf, head_request).unwrap().unwrap()
    }

    #[test]
    fn framing_of_responses() {
        let h = head("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", false);
        assert_eq!((h.framing, h.keep_alive), (Framing::Length(5), true));
        let h = head(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            false,
        );
        assert_eq!(h.framing, Framing::Chunked);
        let h = head(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            false,
        );
        assert_eq!((h.framing, h.keep_alive), (Framing::Close, false));
        let h = head("HTTP/1.1 200 OK\r\n\r\n", false);
        assert_eq!((h.framing, h.keep_alive), (Framing::Close, false));
        let h = head(
            "HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
            false,
        );
        assert_eq!((h.framing, h.keep_alive), (Framing::Empty, true));
        let h = head("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", true);
        assert_eq!(h.framing, Framing::Empty);
        let h = head(
            "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n",
            false,
        );
        assert!(!h.keep_alive);
        let h = head("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", false);
        assert!(!h.keep_alive);
        let h = head(
            "HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 1\r\n\r\n",
            false,
        );
        assert!(h.keep_alive);
    }

    #[test]
    fn lengths_and_ambiguous_framing() {
        let h = head(
            "HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\nContent-Length: 5\r\n\r\n",
            false,
        );
        assert_eq!((h.framing, h.keep_alive), (Framing::Length(5), true));
        let h = head(
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            false,
        );
        assert_eq!((h.framing, h.keep_alive), (Framing::Chunked, false));
        let h = head(
            "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n",
            false,
        );
        assert_eq!((h.framing, h.keep_alive), (Framing::Chunked, false));
        let mut buf = BytesMut::from("HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n");
        assert_eq!(parse_head(&mut buf, false).unwrap_err(), WireError::Length);
        let h = head(
            "HTTP/1.1 200 OK\r\nConnection: x-a\r\nConnection: close\r\n\r\n",
            false,
        );
        assert_eq!(h.get_all("connection").count(), 2);
        assert!(!h.keep_alive);
    }

    #[test]
    fn header_values_are_slices_of_the_head() {
        let mut buf = BytesMut::from("HTTP/1.1 201 Created\r\nX-A: one\r\nx-b:  two \r\n\r\nrest");
        let h = parse_head(&mut buf, false).unwrap().unwrap();
        assert_eq!(h.status, 201);
        assert_eq!(h.get("x-a").unwrap(), "one");
        assert_eq!(h.get("x-b").unwrap(), "two");
        assert_eq!(&buf[..], b"rest", "the body's bytes stay");
    }

    #[test]
    fn bad_heads() {
        let mut buf =
            BytesMut::from("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n");
        assert_eq!(parse_head(&mut buf, false).unwrap_err(), WireError::Length);
        for bad in ["x", "+5", "-1", "5 5", ""] {
            let mut buf = BytesMut::from(
                format!("HTTP/1.1 200 OK\r\nContent-Length: {bad}\r\n\r\n").as_str(),
            );
            assert_eq!(
                parse_head(&mut buf, false).unwrap_err(),
                WireError::Length,
                "{bad}"
            );
        }
        let mut buf = BytesMut::from("SSH-2.0-OpenSSH\r\n\r\n");
        assert!(matches!(
            parse_head(&mut buf, false),
            Err(WireError::Head(_))
        ));
        let mut buf = BytesMut::from("HTTP/1.1 200 OK\r\n");
        assert!(parse_head(&mut buf, false).unwrap().is_none());
        let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\nX: "[..]);
        buf.extend_from_slice(&vec![b'a'; MAX_HEAD]);
        assert_eq!(
            parse_head(&mut buf, false).unwrap_err(),
            WireError::HeadTooLarge
        );
    }

    /// Decodes `wire` fed in pieces of `step` bytes.
    fn decode(framing: Framing, wire: &[u8], step: usize) -> Result<(Vec<u8>, bool), WireError> {
        let mut decoder = Decoder::new(framing);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut fed = 0;
        loop {
            match decoder.next(&mut buf)? {
                Step::Data(d) => out.extend_from_slice(&d),
                Step::End => return Ok((out, buf.is_empty())),
                Step::More if fed < wire.len() => {
                    let end = (fed + step.max(1)).min(wire.len());
                    buf.extend_from_slice(&wire[fed..end]);
                    fed = end;
                }
                Step::More => return Ok((out, false)),
            }
        }
    }

    #[test]
    fn chunked_bodies() {
        let wire = b"5;ext=1\r\nhello\r\n1\r\n \r\n6\nworld!\n0\r\nX-T: 1\r\n\r\n";
        assert_eq!(
            decode(Framing::Chunked, wire, 1000).unwrap(),
            (b"hello world!".to_vec(), true)
        );
        assert!(decode(Framing::Chunked, b"5\r\nhelloXX0\r\n\r\n", 100).is_err());
        assert!(decode(Framing::Chunked, b"g\r\n", 100).is_err());
        assert!(decode(Framing::Chunked, b"ffffffffffffffffff\r\n", 100).is_err());
        assert!(decode(Framing::Chunked, &[b'1'; MAX_LINE + 1], 100_000).is_err());
        // Cut short: not at its end.
        assert_eq!(
            decode(Framing::Chunked, b"5\r\nhel", 100).unwrap(),
            (b"hel".to_vec(), false)
        );
    }

    #[test]
    fn length_and_close_bodies() {
        assert_eq!(
            decode(Framing::Length(3), b"abc", 1).unwrap(),
            (b"abc".to_vec(), true)
        );
        let (body, _) = decode(Framing::Length(3), b"abcdef", 100).unwrap();
        assert_eq!(body, b"abc", "bytes past the length are not the body's");
        assert_eq!(decode(Framing::Empty, b"", 1).unwrap(), (vec![], true));
        assert_eq!(
            decode(Framing::Close, b"xyz", 2).unwrap(),
            (b"xyz".to_vec(), false)
        );
    }

    proptest! {
        /// Any body, cut into any chunks, fed in any pieces, comes out whole.
        #[test]
        fn chunked_round_trip(
            body in proptest::collection::vec(any::<u8>(), 0..3000),
            cuts in proptest::collection::vec(1usize..700, 1..8),
            step in 1usize..300,
        ) {
            let mut wire = Vec::new();
            let mut rest = &body[..];
            let mut i = 0;
            while !rest.is_empty() {
                let n = cuts[i % cuts.len()].min(rest.len());
                wire.extend_from_slice(&chunk(&rest[..n]));
                rest = &rest[n..];
                i += 1;
            }
            wire.extend_from_slice(LAST_CHUNK);
            prop_assert_eq!(decode(Framing::Chunked, &wire, step).unwrap(), (body, true));
        }

        /// Random bytes never panic the head parser or the decoder.
        #[test]
        fn random_bytes_never_panic(wire in proptest::collection::vec(any::<u8>(), 0..600), step in 1usize..64) {
            let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\n"[..]);
            buf.extend_from_slice(&wire);
            let _ = parse_head(&mut buf, false);
            let _ = decode(Framing::Chunked, &wire, step);
        }
    }
}
