//! The fetch side of the range engine: which byte ranges to ask for, in the order the writer needs them, and
//! the thread that asks for them and hands each frame or delta to the pipeline.

use std::sync::mpsc::SyncSender;

use ota_bundle_format::chunked::Span;

use super::flow::Flow;
use crate::client::ClientError;
use crate::source::ranges::RangeSource;
use crate::source::SourceError;

pub use ota_bundle_format::chunked::COALESCE_GAP;
// At most this many ranges per request (the server's multi-range limit).
use ota_bundle_format::chunked::RANGES_PER_REQUEST as MAX_RANGES;
/// At most this many bytes per request (the fetch's share of the memory budget).
const MAX_REQUEST: u64 = 4 << 20;

/// Reads `ranges` (ascending, disjoint) of `source` into one buffer each. A source that hands over other
/// lengths than asked is refused, naming `origin`.
pub fn fetch(
    source: &mut dyn RangeSource,
    origin: &str,
    ranges: &[Span],
) -> Result<Vec<Vec<u8>>, ClientError> {
    let mut parts: Vec<Vec<u8>> = ranges
        .iter()
        .map(|r| Vec::with_capacity(r.len as usize))
        .collect();
    source.read_ranges(ranges, &mut |i, bytes| {
        let part = &mut parts[i];
        if part.len() + bytes.len() > ranges[i].len as usize {
            return Err(SourceError::CannotResume {
                url: origin.to_string(),
                detail: format!(
                    "it answered more bytes than asked for range {}-{}",
                    ranges[i].offset,
                    ranges[i].end() - 1
                ),
            });
        }
        part.extend_from_slice(bytes);
        Ok(())
    })?;
    if let Some((r, p)) = ranges
        .iter()
        .zip(&parts)
        .find(|(r, p)| p.len() as u64 != r.len)
    {
        return Err(SourceError::CannotResume {
            url: origin.to_string(),
            detail: format!(
                "it answered {} bytes for range {}-{} ({} asked)",
                p.len(),
                r.offset,
                r.end() - 1,
                r.len
            ),
        }
        .into());
    }
    Ok(parts)
}

/// One request: the ranges to ask for, and the items (frames, deltas) cut out of them, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Ranges of the bundle file.
    pub ranges: Vec<Span>,
    /// Each item's span (inside one of the ranges), in the order the pipeline consumes them.
    pub items: Vec<Span>,
}

/// Groups `items` (in consumption order) into requests: neighbours in the file within [`COALESCE_GAP`] share
/// a range, a request holds at most [`MAX_RANGES`] ranges and about [`MAX_REQUEST`] bytes. Order is kept, so
/// the fetch never runs ahead of the writer by more than one request.
pub fn requests(items: &[Span]) -> Vec<Request> {
    let mut out: Vec<Request> = Vec::new();
    let mut bytes = 0u64;
    for &item in items {
        let fits = out.last().is_some_and(|r| {
            let last = r.ranges.last().expect("requests are never empty");
            if item.offset < last.end() {
                // A source reads ascending ranges only.
                return false;
            }
            let merge = item.offset <= last.end() + COALESCE_GAP;
            let grow = if merge {
                item.end() - last.end()
            } else {
                item.len
            };
            bytes + grow <= MAX_REQUEST && (merge || r.ranges.len() < MAX_RANGES)
        });
        if !fits {
            out.push(Request {
                ranges: vec![item],
                items: vec![item],
            });
            bytes = item.len;
            continue;
        }
        let r = out.last_mut().expect("checked above");
        let last = r.ranges.last_mut().expect("requests are never empty");
        if item.offset >= last.end() && item.offset <= last.end() + COALESCE_GAP {
            bytes += item.end() - last.end();
            last.len = item.end() - last.offset;
        } else {
            bytes += item.len;
            r.ranges.push(item);
        }
        r.items.push(item);
    }
    out
}

/// Runs the requests one after the other and sends each item's bytes, in order. Before each request it takes
/// its items' `costs` from the input budget of `flow` (the workers give them back), so fetched bytes never pile
/// up ahead of the decoders. Stops at the first error (sent on), when the pipeline hung up or the run stopped.
/// Returns the bytes fetched.
pub fn run(
    source: &mut dyn RangeSource,
    origin: &str,
    requests: &[Request],
    costs: &[u64],
    flow: &Flow,
    items: &SyncSender<Result<Vec<u8>, ClientError>>,
) -> u64 {
    let mut fetched = 0;
    let mut costs = costs.iter();
    for r in requests {
        let cost: u64 = costs.by_ref().take(r.items.len()).sum();
        if !flow.take_input(cost) {
            return fetched;
        }
        let mut parts = match fetch(source, origin, &r.ranges) {
            Ok(parts) => parts,
            Err(e) => {
                let _ = items.send(Err(e));
                return fetched;
            }
        };
        fetched += r.ranges.iter().map(|s| s.len).sum::<u64>();
        let mut at = 0;
        for item in &r.items {
            while r.ranges[at].end() < item.end() {
                at += 1;
            }
            let range = r.ranges[at];
            // A range that is one item (a large frame) is handed over as it is, not copied.
            let bytes = if range == *item {
                std::mem::take(&mut parts[at])
            } else {
                let start = (item.offset - range.offset) as usize;
                parts[at][start..start + item.len as usize].to_vec()
            };
            if items.send(Ok(bytes)).is_err() {
                return fetched;
            }
        }
    }
    fetched
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(offset: u64, len: u64) -> Span {
        Span { offset, len }
    }

    #[test]
    fn neighbours_share_a_range_and_order_is_kept() {
        let items = [span(0, 10), span(100, 10), span(5000, 10), span(50, 5)];
        let r = requests(&items);
        assert_eq!(r.len(), 2, "a range behind the last one starts a request");
        assert_eq!(r[0].ranges, vec![span(0, 110), span(5000, 10)]);
        assert_eq!(r[0].items, items[..3].to_vec());
        assert_eq!(r[1].ranges, vec![span(50, 5)]);
    }

    #[test]
    fn requests_stay_under_the_limits() {
        let items: Vec<Span> = (0..200).map(|i| span(i * 10_000, 100)).collect();
        let r = requests(&items);
        assert!(r.iter().all(|r| r.ranges.len() <= MAX_RANGES));
        assert_eq!(r.iter().map(|r| r.items.len()).sum::<usize>(), 200);
        let big: Vec<Span> = (0..5).map(|i| span(i * (3 << 20), 3 << 20)).collect();
        let r = requests(&big);
        assert!(r
            .iter()
            .all(|r| r.ranges.iter().map(|s| s.len).sum::<u64>() <= MAX_REQUEST));
        assert_eq!(r.iter().map(|r| r.items.len()).sum::<usize>(), 5);
    }
}
