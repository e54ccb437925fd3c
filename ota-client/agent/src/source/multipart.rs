//! Reading the body of a range answer strictly: a `multipart/byteranges` body must hold exactly the parts
//! asked, in the order asked, each with the `Content-Range` asked and exactly that many bytes, and nothing
//! else; a single-range body exactly the bytes asked. A server (or proxy) that lies about what it sends is
//! caught here, before any byte is handed on; wrong bytes inside a right range are the digests' business.
//!
//! Pure over any [`Read`]: no network, the caller says what was asked. Data is handed to a sink in pieces
//! as it arrives, so a part is never held whole in memory.

use std::io::{self, Read};

use super::error::SourceError;

/// Longest header block of one part: a hostile server cannot make the client buffer more.
const MAX_PART_HEAD: usize = 4096;

/// Read buffer (data pieces handed to the sink are at most this long).
const BUF: usize = 64 * 1024;

/// Where the bytes of range `i` go, piece by piece: `sink(i, bytes)`; an error stops the read.
pub type RangeSink<'a> = dyn FnMut(usize, &[u8]) -> Result<(), SourceError> + 'a;

/// Why a range body could not be read to its end.
#[derive(Debug)]
pub(super) enum BodyError {
    /// The connection failed or ended early: what was handed on stands, the rest may be asked again.
    Dropped(String),
    /// The body is not what was asked: the server is wrong, asking again cannot help.
    Wrong(String),
    /// The sink refused a piece.
    Sink(SourceError),
}

/// The boundary of a `multipart/byteranges` Content-Type, `None` for any other type.
pub(super) fn boundary(content_type: &str) -> Option<Result<String, String>> {
    let mut params = content_type.split(';');
    let media = params.next()?.trim();
    if !media.eq_ignore_ascii_case("multipart/byteranges") {
        return None;
    }
    let value = params.find_map(|p| {
        let (name, value) = p.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| value.trim())
    });
    let Some(value) = value else {
        return Some(Err("a multipart answer without a boundary".into()));
    };
    let value = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value);
    // RFC 2046: 1-70 characters of a restricted set.
    let valid = !value.is_empty()
        && value.len() <= 70
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"'()+_,-./:=? ".contains(&b))
        && !value.ends_with(' ');
    Some(if valid {
        Ok(value.to_string())
    } else {
        Err(format!("an invalid multipart boundary {value:?}"))
    })
}

/// The exact `Content-Range` of `len` bytes at `offset` of a `total`-byte file.
pub(super) fn content_range(offset: u64, len: u64, total: u64) -> String {
    format!("bytes {}-{}/{total}", offset, offset + len - 1)
}

/// A buffered reader that knows only what the parser needs.
struct Input<'a> {
    inner: &'a mut dyn Read,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl<'a> Input<'a> {
    fn new(inner: &'a mut dyn Read) -> Input<'a> {
        Input {
            inner,
            buf: vec![0; BUF],
            start: 0,
            end: 0,
        }
    }

    /// Makes buffered bytes available; `false` at the end of the body.
    fn fill(&mut self) -> Result<bool, BodyError> {
        if self.start < self.end {
            return Ok(true);
        }
        loop {
            match self.inner.read(&mut self.buf) {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    self.start = 0;
                    self.end = n;
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(BodyError::Dropped(error_text(&e))),
            }
        }
    }

    fn next_byte(&mut self, inside: &str) -> Result<u8, BodyError> {
        if !self.fill()? {
            return Err(BodyError::Dropped(format!(
                "the answer ended inside {inside}"
            )));
        }
        self.start += 1;
        Ok(self.buf[self.start - 1])
    }

    /// Consumes exactly `literal`.
    fn expect(&mut self, literal: &[u8], what: &str) -> Result<(), BodyError> {
        for &want in literal {
            let got = self.next_byte(what)?;
            if got != want {
                return Err(BodyError::Wrong(format!("{what} is malformed")));
            }
        }
        Ok(())
    }

    /// One CRLF-terminated header line (without the CRLF), charged to `budget`.
    fn line(&mut self, budget: &mut usize, what: &str) -> Result<Vec<u8>, BodyError> {
        let mut line = Vec::new();
        loop {
            let b = self.next_byte(what)?;
            *budget = budget.checked_sub(1).ok_or_else(|| {
                BodyError::Wrong(format!(
                    "{what} has headers longer than {MAX_PART_HEAD} bytes"
                ))
            })?;
            if b == b'\n' {
                return match line.pop() {
                    Some(b'\r') => Ok(line),
                    _ => Err(BodyError::Wrong(format!(
                        "{what} has a bare LF in its headers"
                    ))),
                };
            }
            line.push(b);
        }
    }

    /// Hands exactly `len` bytes to `sink(index, piece)`.
    fn data(
        &mut self,
        mut len: u64,
        index: usize,
        what: &str,
        sink: &mut RangeSink<'_>,
    ) -> Result<(), BodyError> {
        while len > 0 {
            if !self.fill()? {
                return Err(BodyError::Dropped(format!(
                    "the answer ended {len} bytes before the end of {what}"
                )));
            }
            let n = ((self.end - self.start) as u64).min(len) as usize;
            sink(index, &self.buf[self.start..self.start + n]).map_err(BodyError::Sink)?;
            self.start += n;
            len -= n as u64;
        }
        Ok(())
    }

    /// Whether the body has more bytes.
    fn more(&mut self) -> Result<bool, BodyError> {
        self.fill()
    }
}

fn error_text(e: &io::Error) -> String {
    match e.get_ref() {
        Some(inner) => inner.to_string(),
        None => e.to_string(),
    }
}

/// Reads a single-range body: exactly `len` bytes, handed to `sink(0, _)`, then its end.
pub(super) fn read_single(
    body: &mut dyn Read,
    len: u64,
    sink: &mut RangeSink<'_>,
) -> Result<(), BodyError> {
    let mut input = Input::new(body);
    input.data(len, 0, "the range", sink)?;
    if input.more()? {
        return Err(BodyError::Wrong(format!(
            "the answer has more than the {len} bytes asked"
        )));
    }
    Ok(())
}

/// Reads a `multipart/byteranges` body that must hold exactly the parts `asked` ((offset, len) of a
/// `total`-byte file), in that order; part `i`'s bytes go to `sink(i, _)` as they arrive.
pub(super) fn read_parts(
    body: &mut dyn Read,
    boundary: &str,
    asked: &[(u64, u64)],
    total: u64,
    sink: &mut RangeSink<'_>,
) -> Result<(), BodyError> {
    let mut input = Input::new(body);
    let delimiter = format!("--{boundary}");
    // An optional CRLF before the first delimiter (its CRLF belongs to the delimiter, RFC 2046).
    let first = input.next_byte("the first part")?;
    let rest = match first {
        b'\r' => {
            input.expect(b"\n", "the multipart preamble")?;
            delimiter.as_bytes()
        }
        b if Some(&b) == delimiter.as_bytes().first() => &delimiter.as_bytes()[1..],
        _ => {
            return Err(BodyError::Wrong(
                "the multipart answer does not start with its boundary".into(),
            ))
        }
    };
    input.expect(rest, "the first part's boundary")?;
    for (i, &(offset, len)) in asked.iter().enumerate() {
        let what = format!("part {} of {}", i + 1, asked.len());
        if i > 0 {
            input.expect(b"\r\n", &what)?;
            input.expect(delimiter.as_bytes(), &what)?;
        }
        match [input.next_byte(&what)?, input.next_byte(&what)?] {
            [b'\r', b'\n'] => {}
            [b'-', b'-'] => {
                return Err(BodyError::Wrong(format!(
                    "the answer has {i} parts, {} were asked",
                    asked.len()
                )))
            }
            _ => return Err(BodyError::Wrong(format!("{what}: bad boundary line"))),
        }
        let want = content_range(offset, len, total);
        let mut budget = MAX_PART_HEAD;
        let mut seen = None;
        loop {
            let line = input.line(&mut budget, &what)?;
            if line.is_empty() {
                break;
            }
            let line = String::from_utf8_lossy(&line);
            let Some((name, value)) = line.split_once(':') else {
                return Err(BodyError::Wrong(format!("{what} has a malformed header")));
            };
            if name.trim().eq_ignore_ascii_case("content-range") {
                if seen.is_some() {
                    return Err(BodyError::Wrong(format!(
                        "{what} has two Content-Range headers"
                    )));
                }
                seen = Some(value.trim().to_string());
            }
        }
        match seen {
            Some(got) if got == want => {}
            Some(got) => {
                return Err(BodyError::Wrong(format!(
                    "{what} is {got:?}, {want:?} was asked"
                )))
            }
            None => return Err(BodyError::Wrong(format!("{what} has no Content-Range"))),
        }
        input.data(len, i, &what, sink)?;
    }
    input.expect(b"\r\n", "the closing boundary")?;
    input.expect(delimiter.as_bytes(), "the closing boundary")?;
    match [
        input.next_byte("the closing boundary")?,
        input.next_byte("the closing boundary")?,
    ] {
        [b'-', b'-'] => {}
        [b'\r', b'\n'] => {
            return Err(BodyError::Wrong(format!(
                "the answer has more parts than the {} asked",
                asked.len()
            )))
        }
        _ => return Err(BodyError::Wrong("the closing boundary is malformed".into())),
    }
    // Only a final CRLF may follow.
    if input.more()? {
        input.expect(b"\r\n", "the end of the multipart answer")?;
        if input.more()? {
            return Err(BodyError::Wrong(
                "the answer has bytes after its closing boundary".into(),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const B: &str = "OTA-b0undary";

    /// The body an honest server sends for `asked` of `file`.
    fn honest(file: &[u8], asked: &[(u64, u64)]) -> Vec<u8> {
        let mut body = Vec::new();
        for (i, &(o, l)) in asked.iter().enumerate() {
            if i > 0 {
                body.extend_from_slice(b"\r\n");
            }
            body.extend_from_slice(
                format!(
                    "--{B}\r\nContent-Type: application/octet-stream\r\nContent-Range: {}\r\n\r\n",
                    content_range(o, l, file.len() as u64)
                )
                .as_bytes(),
            );
            body.extend_from_slice(&file[o as usize..(o + l) as usize]);
        }
        body.extend_from_slice(format!("\r\n--{B}--\r\n").as_bytes());
        body
    }

    /// Reads `body` for `asked`, returning each part's bytes.
    fn read(body: &[u8], asked: &[(u64, u64)], total: u64) -> Result<Vec<Vec<u8>>, BodyError> {
        let mut parts = vec![Vec::new(); asked.len()];
        let mut reader = body;
        read_parts(&mut reader, B, asked, total, &mut |i, b| {
            parts[i].extend_from_slice(b);
            Ok(())
        })?;
        Ok(parts)
    }

    fn wrong(r: Result<Vec<Vec<u8>>, BodyError>) -> String {
        match r {
            Err(BodyError::Wrong(w)) => w,
            other => panic!("expected a wrong answer, got {other:?}"),
        }
    }

    fn file() -> Vec<u8> {
        (0..1000u32).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[test]
    fn an_honest_answer_is_read_part_by_part() {
        let f = file();
        let asked = [(0, 10), (100, 1), (500, 500)];
        let parts = read(&honest(&f, &asked), &asked, 1000).unwrap();
        assert_eq!(parts[0], &f[0..10]);
        assert_eq!(parts[1], &f[100..101]);
        assert_eq!(parts[2], &f[500..]);
        // A leading CRLF and no final CRLF are fine too.
        let mut body = b"\r\n".to_vec();
        body.extend_from_slice(&honest(&f, &asked));
        body.truncate(body.len() - 2);
        assert_eq!(read(&body, &asked, 1000).unwrap()[2], &f[500..]);
    }

    #[test]
    fn hostile_answers_are_refused() {
        let f = file();
        let asked = [(0, 10), (100, 20)];
        let good = honest(&f, &asked);
        // Another boundary.
        let other = String::from_utf8_lossy(&good)
            .replace(B, "OTA-other")
            .into_bytes();
        assert!(wrong(read(&other, &asked, 1000)).contains("boundary"));
        // A part with another Content-Range than asked (same length, other place).
        let moved = honest(&f, &[(0, 10), (101, 20)]);
        let w = wrong(read(&moved, &asked, 1000));
        assert!(
            w.contains("part 2 of 2") && w.contains("bytes 101-120/1000"),
            "{w}"
        );
        // Parts out of order.
        let swapped = honest(&f, &[(100, 20), (0, 10)]);
        assert!(wrong(read(&swapped, &asked, 1000)).contains("part 1 of 2"));
        // Another total.
        let mut longer = f.clone();
        longer.push(0);
        assert!(wrong(read(&honest(&longer, &asked), &asked, 1000)).contains("/1001"));
        // A missing part, an extra part.
        let one = honest(&f, &asked[..1]);
        assert!(wrong(read(&one, &asked, 1000)).contains("1 parts, 2 were asked"));
        let three = honest(&f, &[(0, 10), (100, 20), (200, 5)]);
        assert!(wrong(read(&three, &asked, 1000)).contains("more parts"));
        // Bytes after the end.
        let mut trailing = good.clone();
        trailing.extend_from_slice(b"junk");
        assert!(wrong(read(&trailing, &asked, 1000)).contains("after"));
        // A part longer than its Content-Range says: the delimiter is not where it must be.
        let text = String::from_utf8_lossy(&honest(&f, &asked)).into_owned();
        let padded = text.replacen("\r\n--OTA-b0undary\r\n", "X\r\n--OTA-b0undary\r\n", 1);
        assert!(wrong(read(padded.as_bytes(), &asked, 1000)).contains("part 2"));
        // No Content-Range, two Content-Ranges.
        let none = text.replacen("Content-Range: bytes 0-9/1000\r\n", "", 1);
        assert!(wrong(read(none.as_bytes(), &asked, 1000)).contains("no Content-Range"));
        let two = text.replacen(
            "Content-Range: bytes 0-9/1000\r\n",
            "Content-Range: bytes 0-9/1000\r\ncontent-range: bytes 0-9/1000\r\n",
            1,
        );
        assert!(wrong(read(two.as_bytes(), &asked, 1000)).contains("two"));
        // Oversized headers.
        let huge = text.replacen(
            "Content-Type",
            &format!("X-Pad: {}\r\nContent-Type", "a".repeat(5000)),
            1,
        );
        assert!(wrong(read(huge.as_bytes(), &asked, 1000)).contains("longer than 4096"));
        // A preamble.
        let mut pre = b"hello\r\n".to_vec();
        pre.extend_from_slice(&good);
        assert!(wrong(read(&pre, &asked, 1000)).contains("start"));
    }

    #[test]
    fn a_truncated_answer_is_a_dropped_connection_and_what_came_stands() {
        let f = file();
        let asked = [(0, 10), (100, 20)];
        let good = honest(&f, &asked);
        for cut in 0..good.len() - 2 {
            let mut delivered = 0;
            let mut reader = &good[..cut];
            let r = read_parts(&mut reader, B, &asked, 1000, &mut |_, b| {
                delivered += b.len();
                Ok(())
            });
            assert!(
                matches!(r, Err(BodyError::Dropped(_))),
                "cut at {cut}: {r:?}"
            );
            assert!(delivered <= 30);
        }
    }

    #[test]
    fn single_range_bodies_are_exact() {
        let mut got = Vec::new();
        let mut body: &[u8] = b"0123456789";
        read_single(&mut body, 10, &mut |_, b| {
            got.extend_from_slice(b);
            Ok(())
        })
        .unwrap();
        assert_eq!(got, b"0123456789");
        let mut body: &[u8] = b"0123456789x";
        assert!(matches!(
            read_single(&mut body, 10, &mut |_, _| Ok(())),
            Err(BodyError::Wrong(_))
        ));
        let mut body: &[u8] = b"01234";
        assert!(matches!(
            read_single(&mut body, 10, &mut |_, _| Ok(())),
            Err(BodyError::Dropped(_))
        ));
        let mut body: &[u8] = b"01234";
        let refused = read_single(&mut body, 5, &mut |_, _| Err(SourceError::Cancelled));
        assert!(matches!(
            refused,
            Err(BodyError::Sink(SourceError::Cancelled))
        ));
    }

    #[test]
    fn boundaries() {
        assert_eq!(
            boundary("multipart/byteranges; boundary=abc")
                .unwrap()
                .unwrap(),
            "abc"
        );
        assert_eq!(
            boundary("Multipart/ByteRanges;charset=x; Boundary=\"a b\"")
                .unwrap()
                .unwrap(),
            "a b"
        );
        assert!(boundary("application/octet-stream").is_none());
        assert!(boundary("multipart/byteranges").unwrap().is_err());
        assert!(boundary("multipart/byteranges; boundary=")
            .unwrap()
            .is_err());
        assert!(boundary(&format!(
            "multipart/byteranges; boundary={}",
            "a".repeat(71)
        ))
        .unwrap()
        .is_err());
        assert!(boundary("multipart/byteranges; boundary=a\u{1}b")
            .unwrap()
            .is_err());
    }

    proptest! {
        /// Any honest answer, read through any read sizes, gives back exactly the asked bytes.
        #[test]
        fn honest_answers_round_trip(
            cuts in proptest::collection::btree_set(0u64..1000, 2..30),
            step in 1usize..300,
        ) {
            let f = file();
            let cuts: Vec<u64> = cuts.into_iter().collect();
            let asked: Vec<(u64, u64)> = cuts.chunks(2).filter(|c| c.len() == 2).map(|c| (c[0], c[1] - c[0])).collect();
            let body = honest(&f, &asked);
            let mut reader = Trickle { data: &body, step };
            let mut parts = vec![Vec::new(); asked.len()];
            read_parts(&mut reader, B, &asked, 1000, &mut |i, b| { parts[i].extend_from_slice(b); Ok(()) }).unwrap();
            for (p, &(o, l)) in parts.iter().zip(&asked) {
                prop_assert_eq!(&p[..], &f[o as usize..(o + l) as usize]);
            }
        }

        /// Changing any one byte of the framing (outside part data) is caught, unless the change is harmless:
        /// the case of a header name, whitespace around a value, the Content-Type line (not checked).
        #[test]
        fn any_framing_byte_changed_is_caught(at in any::<prop::sample::Index>(), with in any::<u8>()) {
            let f = file();
            let asked = [(10u64, 30u64), (600, 50)];
            let body = honest(&f, &asked);
            let at_all = |needle: &[u8]| -> Vec<usize> { body.windows(needle.len()).enumerate().filter(|(_, w)| *w == needle).map(|(i, _)| i).collect() };
            let heads = at_all(b"\r\n\r\n");
            let data_at = [heads[0] + 4, heads[heads.len() - 1] + 4];
            let i = at.index(body.len());
            let in_data = (data_at[0]..data_at[0] + 30).contains(&i) || (data_at[1]..data_at[1] + 50).contains(&i);
            // A final CRLF may be left out.
            prop_assume!(!in_data && body[i] != with && i < body.len() - 2);
            let line = "Content-Type: application/octet-stream";
            let in_ct = at_all(line.as_bytes()).into_iter().any(|s| (s..s + line.len()).contains(&i));
            let mut changed = body.clone();
            changed[i] = with;
            if let Ok(parts) = read(&changed, &asked, 1000) {
                prop_assert!(in_ct || body[i].eq_ignore_ascii_case(&with) || (body[i] == b' ' && (with as char).is_whitespace()),
                    "byte {} changed from {:?} to {:?} passed", i, body[i] as char, with as char);
                prop_assert_eq!(&parts[0][..], &f[10..40]);
            }
        }
    }

    /// Hands out at most `step` bytes per read.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.step.min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }
}
