//! Range reads of a bundle over HTTP: against the real server (many ranges, split over several
//! multi-range requests, every byte compared with the file) and against a tiny scripted server that lies
//! in its range answers (parts out of order, another Content-Range, ranges ignored, the file changed) or
//! drops the connection mid-part (the retry asks only for what was not delivered yet).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ota_client::config::HttpConfig;
use ota_client::source::ranges::{FileRanges, HttpRanges, RangeSource, Span};
use ota_client::source::SourceError;
use ota_testkit::robot::{bundle_with, noise, release_key};
use ota_testkit::server::{ServerHandle, ServerOptions};

fn quick_http() -> HttpConfig {
    HttpConfig {
        connect_timeout: Duration::from_secs(2),
        read_timeout: Duration::from_secs(5),
        retries: 3,
        retry_delay: Duration::from_millis(20),
        ..HttpConfig::default()
    }
}

fn span(offset: u64, len: u64) -> Span {
    Span { offset, len }
}

/// Reads `ranges` from `source`, each range's bytes gathered.
fn read_all(source: &mut dyn RangeSource, ranges: &[Span]) -> Result<Vec<Vec<u8>>, SourceError> {
    let mut parts = vec![Vec::new(); ranges.len()];
    source.read_ranges(ranges, &mut |i, b| {
        parts[i].extend_from_slice(b);
        Ok(())
    })?;
    Ok(parts)
}

fn assert_parts(parts: &[Vec<u8>], ranges: &[Span], file: &[u8]) {
    for (i, (p, r)) in parts.iter().zip(ranges).enumerate() {
        assert_eq!(
            &p[..],
            &file[r.offset as usize..r.end() as usize],
            "range {i}"
        );
    }
}

#[test]
fn many_ranges_from_the_real_server_and_a_file_match_the_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let trust = ota_testkit::release::trust_root(&[release_key()], 1);
    let server =
        ServerHandle::start(&ServerOptions::new(&dir.path().join("server"), trust)).unwrap();
    let bytes = bundle_with(
        release_key(),
        "1.1.0",
        "acme-robot-v2",
        &[("rootfs", noise(7, 300_000))],
    );
    let id = server
        .admin()
        .publish_bytes(bytes.clone())
        .unwrap()
        .bundle_id;
    let url = format!("{}/api/bundles/{id}/download", server.base);
    let auth = vec![(
        "authorization".to_string(),
        format!("Bearer {}", server.admin_token),
    )];
    let mut http = HttpRanges::open(&url, &auth, &quick_http(), None)
        .unwrap()
        .expect("the server answers ranges");
    assert_eq!(http.len(), bytes.len() as u64);
    let probe = http.wire_bytes();
    assert!(probe > 1, "the probe's answer is counted");

    // 150 ranges: three requests of at most 64.
    let ranges: Vec<Span> = (0..150u64).map(|i| span(i * 1500 + 7, 700 + i)).collect();
    let parts = read_all(&mut http, &ranges).unwrap();
    assert_parts(&parts, &ranges, &bytes);
    let payload: u64 = ranges.iter().map(|r| r.len).sum();
    let wire = http.wire_bytes() - probe;
    assert!(
        wire > payload && wire < payload + 150 * 200 + 3 * 1000,
        "wire {wire} for {payload} bytes of ranges"
    );
    // One range, and the same from the file.
    let one = [span(100, bytes.len() as u64 - 100)];
    assert_parts(&read_all(&mut http, &one).unwrap(), &one, &bytes);
    let path = dir.path().join("b.otab");
    std::fs::write(&path, &bytes).unwrap();
    let mut file = FileRanges::open(&path).unwrap();
    assert_parts(&read_all(&mut file, &ranges).unwrap(), &ranges, &bytes);

    // No token: the server's refusal, at open.
    let err = HttpRanges::open(&url, &[], &quick_http(), None)
        .err()
        .unwrap();
    assert!(
        matches!(err, SourceError::Permanent { status: 401, .. }),
        "{err}"
    );
}

/// How the scripted server answers a range request after the probe.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Lie {
    /// Multi-range parts in reverse order.
    Reversed,
    /// Every part one byte further than asked.
    Shifted,
    /// 200 with the whole file.
    Ignored,
    /// Another ETag (the file changed).
    Changed,
    /// No ETag, and another Last-Modified date (the file changed).
    ChangedDate,
    /// The first data answer stops halfway through its body.
    DropOnce,
    /// No ranges at all (200 to the probe).
    NoRanges,
    /// Data answers trickle a byte every 20 ms.
    Trickle,
}

struct Scripted {
    url: String,
    ranges_seen: Arc<Mutex<Vec<String>>>,
}

fn parse_range(value: &str) -> Vec<(u64, u64)> {
    value
        .strip_prefix("bytes=")
        .unwrap()
        .split(',')
        .map(|s| {
            let (a, b) = s.split_once('-').unwrap();
            let a: u64 = a.parse().unwrap();
            (a, b.parse::<u64>().unwrap() - a + 1)
        })
        .collect()
}

/// The raw answer to a request for `asked` of `file`.
fn answer(file: &[u8], asked: &[(u64, u64)], etag: &str, shift: u64) -> Vec<u8> {
    // An ETag, or a date standing in for one.
    let validator = match etag.strip_prefix("date:") {
        Some(date) => format!("Last-Modified: {date}"),
        None => format!("ETag: {etag}"),
    };
    let total = file.len();
    let part = |o: u64, l: u64| &file[(o + shift) as usize..(o + shift + l) as usize];
    let cr = |o: u64, l: u64| format!("bytes {}-{}/{total}", o + shift, o + shift + l - 1);
    if let [(o, l)] = asked {
        let mut out = format!(
            "HTTP/1.1 206 Partial Content\r\nContent-Length: {l}\r\nContent-Range: {}\r\n{validator}\r\nConnection: close\r\n\r\n",
            cr(*o, *l)
        )
        .into_bytes();
        out.extend_from_slice(part(*o, *l));
        return out;
    }
    let mut body = Vec::new();
    for (i, (o, l)) in asked.iter().enumerate() {
        if i > 0 {
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(format!("--XB\r\nContent-Range: {}\r\n\r\n", cr(*o, *l)).as_bytes());
        body.extend_from_slice(part(*o, *l));
    }
    body.extend_from_slice(b"\r\n--XB--\r\n");
    let mut out = format!(
        "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Type: multipart/byteranges; boundary=XB\r\n{validator}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    out
}

impl Scripted {
    fn start(file: Vec<u8>, lie: Lie) -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/b.otab", listener.local_addr().unwrap());
        let ranges_seen = Arc::new(Mutex::new(Vec::new()));
        let seen = ranges_seen.clone();
        std::thread::spawn(move || {
            for (n, stream) in listener.incoming().enumerate() {
                let Ok(mut stream) = stream else { return };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut range = String::new();
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some((name, value)) = line.split_once(':') {
                        if name.eq_ignore_ascii_case("range") {
                            range = value.trim().to_string();
                        }
                    }
                }
                seen.lock().unwrap().push(range.clone());
                let mut asked = parse_range(&range);
                let probe = n == 0;
                let out = match lie {
                    Lie::NoRanges => {
                        let mut out = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            file.len()
                        )
                        .into_bytes();
                        out.extend_from_slice(&file);
                        out
                    }
                    Lie::Ignored if !probe => {
                        let mut out = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nETag: \"v1\"\r\nConnection: close\r\n\r\n",
                            file.len()
                        )
                        .into_bytes();
                        out.extend_from_slice(&file);
                        out
                    }
                    Lie::Changed if !probe => answer(&file, &asked, "\"v2\"", 0),
                    Lie::ChangedDate if probe => {
                        answer(&file, &asked, "date:Sat, 05 Dec 2026 10:00:00 GMT", 0)
                    }
                    Lie::ChangedDate => {
                        answer(&file, &asked, "date:Sat, 05 Dec 2026 11:00:00 GMT", 0)
                    }
                    Lie::Shifted if !probe => answer(&file, &asked, "\"v1\"", 1),
                    Lie::Reversed if !probe => {
                        asked.reverse();
                        answer(&file, &asked, "\"v1\"", 0)
                    }
                    Lie::DropOnce if n == 1 => {
                        let out = answer(&file, &asked, "\"v1\"", 0);
                        out[..out.len() / 2].to_vec()
                    }
                    _ => answer(&file, &asked, "\"v1\"", 0),
                };
                if lie == Lie::Trickle && !probe {
                    // Headers at once, then the body a byte at a time until the client hangs up.
                    let head = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                    let _ = stream.write_all(&out[..head]);
                    for b in &out[head..] {
                        std::thread::sleep(Duration::from_millis(20));
                        if stream
                            .write_all(&[*b])
                            .and_then(|_| stream.flush())
                            .is_err()
                        {
                            break;
                        }
                    }
                    continue;
                }
                let _ = stream.write_all(&out);
            }
        });
        Scripted { url, ranges_seen }
    }

    fn ranges_seen(&self) -> Vec<String> {
        self.ranges_seen.lock().unwrap().clone()
    }
}

fn ranges_of_the_test() -> Vec<Span> {
    vec![span(10, 1000), span(5000, 20_000), span(60_000, 30_000)]
}

/// Opens the scripted server and reads the test's ranges: the error text, or the parts.
fn read_scripted(lie: Lie) -> (Scripted, Result<Vec<Vec<u8>>, String>) {
    let file = noise(3, 100_000);
    let server = Scripted::start(file, lie);
    let mut source = HttpRanges::open(&server.url, &[], &quick_http(), None)
        .unwrap()
        .expect("the probe is answered with a range");
    let result = read_all(&mut source, &ranges_of_the_test()).map_err(|e| e.to_string());
    (server, result)
}

#[test]
fn a_server_that_lies_in_its_range_answer_is_caught_and_named() {
    for (lie, says) in [
        (Lie::Reversed, "part 1 of 3"),
        (Lie::Shifted, "bytes 11-1010/100000"),
        (Lie::Ignored, "ignored the range request"),
        (Lie::Changed, "changed on the server"),
        (Lie::ChangedDate, "Last-Modified"),
    ] {
        let (server, result) = read_scripted(lie);
        let err = result.expect_err(&format!("{lie:?} passed"));
        assert!(err.contains(says), "{lie:?}: {err}");
        assert!(err.contains(&server.url), "{lie:?} names the server: {err}");
        assert_eq!(server.ranges_seen().len(), 2, "{lie:?}: no retry of a lie");
    }
    // A single range shifted: its Content-Range is checked too.
    let server = Scripted::start(noise(3, 100_000), Lie::Shifted);
    let mut source = HttpRanges::open(&server.url, &[], &quick_http(), None)
        .unwrap()
        .unwrap();
    let err = read_all(&mut source, &[span(10, 10)])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("Content-Range") && err.contains("bytes 11-20/100000"),
        "{err}"
    );
}

#[test]
fn a_dropped_answer_is_asked_again_only_for_what_is_missing() {
    let file = noise(3, 100_000);
    let (server, result) = read_scripted(Lie::DropOnce);
    let ranges = ranges_of_the_test();
    assert_parts(&result.unwrap(), &ranges, &file);
    let seen = server.ranges_seen();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert_eq!(seen[1], "bytes=10-1009,5000-24999,60000-89999");
    // The first answer stopped halfway through its body, inside the third range: the retry asks for the
    // rest of that one only.
    let retry = parse_range(&seen[2]);
    assert_eq!(retry.len(), 1, "{seen:?}");
    assert!(
        retry[0].0 > 60_000 && retry[0].0 + retry[0].1 == 90_000,
        "{seen:?}"
    );
}

#[test]
fn a_trickling_server_is_given_up_on() {
    let server = Scripted::start(noise(3, 100_000), Lie::Trickle);
    let http = HttpConfig {
        low_speed_limit: 1000,
        low_speed_time: Duration::from_millis(300),
        ..quick_http()
    };
    let mut source = HttpRanges::open(&server.url, &[], &http, None)
        .unwrap()
        .unwrap();
    let started = std::time::Instant::now();
    let err = read_all(&mut source, &ranges_of_the_test()).unwrap_err();
    assert!(
        matches!(err, SourceError::GaveUp { attempts: 4, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("low-speed limit"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn a_cancelled_read_stops_at_once() {
    let server = Scripted::start(noise(3, 100_000), Lie::Trickle);
    let cancel = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut source = HttpRanges::open(&server.url, &[], &quick_http(), Some(cancel.clone()))
        .unwrap()
        .unwrap();
    let flag = cancel.clone();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        flag.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    let started = std::time::Instant::now();
    let err = read_all(&mut source, &ranges_of_the_test()).unwrap_err();
    assert!(matches!(err, SourceError::Cancelled), "{err}");
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn a_server_without_ranges_is_reported_for_the_streaming_fallback() {
    let server = Scripted::start(noise(3, 10_000), Lie::NoRanges);
    assert!(HttpRanges::open(&server.url, &[], &quick_http(), None)
        .unwrap()
        .is_none());
}
