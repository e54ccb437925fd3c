//! The range engine's pipeline: work units in image order (a frame to decode, a run of local chunks to read and
//! verify, a delta to decode against the active slot), processed by one worker per core (three at most), their
//! output handed over in pieces and written in order to the standby slot under the byte budgets of [`flow`]; the
//! whole-image digest on its own thread.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Mutex;
use std::thread;

use ota_bundle_format::chunked::{
    ChunkIndex, ChunkSource, FetchPlan, FrameSpan, Span, FRAME_WINDOW_LOG_MAX,
};
use ota_bundle_format::write::decode_delta;
use ota_bundle_format::BundleError;
use sha2::{Digest, Sha256};
use zstd::zstd_safe::{DCtx, DParameter, InBuffer, OutBuffer};

use super::fetch;
use super::flow::{Flow, Out, INPUT_BUDGET, OUTPUT_BUDGET, PIECE};
use crate::client::ClientError;
use crate::source::ranges::RangeSource;

/// A run of local chunks is read as one unit up to this size.
const MAX_LOCAL_RUN: u64 = 4 << 20;
/// At most this many decoders: each holds one frame window (8 MiB at most) besides the budgets.
const MAX_WORKERS: usize = 3;

/// What one unit does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    /// Decode frame `frame`; keep its output from `skip` on (chunks before are already in the slot).
    Frame {
        /// Frame number.
        frame: usize,
        /// Output bytes to drop at the start.
        skip: u64,
    },
    /// Read `count` chunks from `first` on out of the active slot.
    Local {
        /// First chunk.
        first: usize,
        /// Number of chunks.
        count: usize,
    },
    /// Decode delta `delta` (of chunk `chunk`) against the active slot.
    Delta {
        /// Delta record.
        delta: usize,
        /// Its chunk.
        chunk: usize,
    },
}

/// One unit of work: its output is `len` bytes of the image at `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unit {
    /// What to do.
    pub work: Work,
    /// Image offset of its output.
    pub offset: u64,
    /// Output length.
    pub len: u64,
    /// The bundle bytes it needs fetched.
    pub fetch: Option<Span>,
}

/// The units for a plan, in image order (resumed chunks have none).
pub fn units(
    index: &ChunkIndex,
    plan: &FetchPlan,
    offsets: &[u64],
    frames: &[FrameSpan],
    payload: Span,
    delta: Option<Span>,
) -> Vec<Unit> {
    let delta_offsets = index.delta_offsets();
    let size = |i: usize| u64::from(index.chunks[i].size);
    let mut out = Vec::new();
    let mut i = 0;
    while i < plan.sources.len() {
        match plan.sources[i] {
            ChunkSource::Resumed => i += 1,
            ChunkSource::Frame(f) => {
                let span = frames[f];
                let end = span.image_offset + span.raw_size;
                out.push(Unit {
                    work: Work::Frame {
                        frame: f,
                        skip: offsets[i] - span.image_offset,
                    },
                    offset: offsets[i],
                    len: end - offsets[i],
                    fetch: Some(Span {
                        offset: payload.offset + span.payload_offset,
                        len: span.compressed_size,
                    }),
                });
                i = span.first_chunk + span.chunks;
            }
            ChunkSource::Local { .. } => {
                let first = i;
                let mut len = 0;
                while i < plan.sources.len()
                    && matches!(plan.sources[i], ChunkSource::Local { .. })
                    && (i == first || len + size(i) <= MAX_LOCAL_RUN)
                {
                    len += size(i);
                    i += 1;
                }
                out.push(Unit {
                    work: Work::Local {
                        first,
                        count: i - first,
                    },
                    offset: offsets[first],
                    len,
                    fetch: None,
                });
            }
            ChunkSource::Delta(d) => {
                let entry = delta.expect("deltas are planned only with a delta entry");
                out.push(Unit {
                    work: Work::Delta { delta: d, chunk: i },
                    offset: offsets[i],
                    len: size(i),
                    fetch: Some(Span {
                        offset: entry.offset + delta_offsets[d],
                        len: u64::from(index.deltas[d].compressed_size),
                    }),
                });
                i += 1;
            }
        }
    }
    out
}

/// What the workers read: the index, the active slot, names for messages.
pub struct Inputs<'a> {
    /// The verified index.
    pub index: &'a ChunkIndex,
    /// The plan's sources.
    pub sources: &'a [ChunkSource],
    /// Frame spans of the index.
    pub frames: &'a [FrameSpan],
    /// The active slot of the class (for local chunks and delta references).
    pub active: Option<&'a File>,
    /// Slot class (messages).
    pub class: &'a str,
    /// Image name (messages).
    pub image: &'a str,
    /// Where the bundle comes from (messages).
    pub origin: &'a str,
}

impl Inputs<'_> {
    fn corrupt(&self, detail: String) -> ClientError {
        ClientError::Bundle(BundleError::CorruptPayload {
            image: self.image.to_string(),
            detail: format!("{detail} (read from {})", self.origin),
        })
    }

    fn changed(&self, offset: u64) -> ClientError {
        ClientError::ActiveSlotChanged {
            class: self.class.to_string(),
            offset,
        }
    }

    fn read_active(&self, offset: u64, len: usize) -> Result<Vec<u8>, ClientError> {
        let file = self
            .active
            .expect("local work is planned only with an active slot");
        let mut buf = vec![0; len];
        file.read_exact_at(&mut buf, offset)
            .map_err(|_| self.changed(offset))?;
        Ok(buf)
    }

    /// Runs one unit, handing its output to `emit` in pieces (of at most [`PIECE`] bytes for frames, a chunk
    /// otherwise), each checked before it is handed over. Stops early, without error, when `emit` says the run
    /// stopped.
    pub fn process(
        &self,
        unit: &Unit,
        input: Option<Vec<u8>>,
        emit: &mut dyn FnMut(Vec<u8>) -> bool,
    ) -> Result<(), ClientError> {
        match unit.work {
            Work::Frame { frame, skip } => {
                let input = input.expect("frames are fetched");
                let record = &self.index.frames[frame];
                if Sha256::digest(&input).as_slice() != record.sha256 {
                    return Err(self.corrupt(format!(
                        "frame {frame} does not match its SHA-256 in the index"
                    )));
                }
                let raw = self.frames[frame].raw_size;
                decode_frame(&input, raw, skip, emit)
                    .map_err(|e| self.corrupt(format!("frame {frame} {e}")))
            }
            Work::Local { first, count } => {
                for i in first..first + count {
                    let ChunkSource::Local { offset } = self.sources[i] else {
                        unreachable!("local runs hold local chunks")
                    };
                    let chunk = &self.index.chunks[i];
                    let bytes = self.read_active(offset, chunk.size as usize)?;
                    if Sha256::digest(&bytes).as_slice() != chunk.sha256 {
                        return Err(self.changed(offset));
                    }
                    if !emit(bytes) {
                        return Ok(());
                    }
                }
                Ok(())
            }
            Work::Delta { delta, chunk } => {
                let input = input.expect("deltas are fetched");
                let record = &self.index.deltas[delta];
                let reference = self.read_active(record.ref_offset, record.ref_len as usize)?;
                let c = &self.index.chunks[chunk];
                let out = decode_delta(&input, &reference, c.size as usize);
                match out {
                    Ok(out)
                        if out.len() == c.size as usize
                            && Sha256::digest(&out).as_slice() == c.sha256 =>
                    {
                        emit(out);
                        Ok(())
                    }
                    _ => Err(self.corrupt(format!(
                        "delta {delta} (chunk {chunk}) decoded against the active slot {} does not match \
                         the chunk's SHA-256 in the index",
                        self.class
                    ))),
                }
            }
        }
    }
}

/// Decodes one plain frame (already checked against its digest) of exactly `raw` bytes in pieces of at most
/// [`PIECE`], dropping the first `skip` bytes; holds one window (at most [`FRAME_WINDOW_LOG_MAX`]), never the
/// frame's whole output. The error completes "frame N ...".
fn decode_frame(
    input: &[u8],
    raw: u64,
    skip: u64,
    emit: &mut dyn FnMut(Vec<u8>) -> bool,
) -> Result<(), String> {
    thread_local! {
        /// One decoder per worker thread, kept across frames: its window (up to 8 MiB) is allocated and faulted
        /// in once, not once per frame.
        static DCTX: std::cell::RefCell<Option<DCtx<'static>>> = const { std::cell::RefCell::new(None) };
    }
    DCTX.with(|cell| {
        let mut cell = cell.borrow_mut();
        let dctx = match cell.as_mut() {
            Some(dctx) => dctx,
            None => cell.insert(DCtx::create()),
        };
        decode_frame_with(dctx, input, raw, skip, emit)
    })
}

fn decode_frame_with(
    dctx: &mut DCtx<'static>,
    input: &[u8],
    raw: u64,
    skip: u64,
    emit: &mut dyn FnMut(Vec<u8>) -> bool,
) -> Result<(), String> {
    let name = |code| format!("does not decode: {}", zstd::zstd_safe::get_error_name(code));
    // A frame that failed or stopped early leaves the session mid-frame: always start clean.
    dctx.reset(zstd::zstd_safe::ResetDirective::SessionOnly)
        .map_err(name)?;
    dctx.set_parameter(DParameter::WindowLogMax(FRAME_WINDOW_LOG_MAX))
        .map_err(name)?;
    let mut from = InBuffer::around(input);
    let mut total = 0u64;
    loop {
        let mut piece = Vec::with_capacity(PIECE);
        let left = dctx
            .decompress_stream(&mut OutBuffer::around(&mut piece), &mut from)
            .map_err(name)?;
        let start = total;
        total += piece.len() as u64;
        if total > raw {
            return Err(format!(
                "decodes to more than {raw} bytes, the index says {raw}"
            ));
        }
        if total > skip {
            let keep = (skip.saturating_sub(start)) as usize;
            let piece = if keep == 0 {
                piece
            } else {
                piece[keep..].to_vec()
            };
            if !emit(piece) {
                return Ok(());
            }
        }
        if left == 0 {
            break;
        }
        if from.pos() == input.len() && total == start {
            return Err("does not decode: the frame is truncated".into());
        }
    }
    if from.pos() != input.len() {
        return Err(format!(
            "does not decode: {} bytes follow the frame",
            input.len() - from.pos()
        ));
    }
    if total != raw {
        return Err(format!("decodes to {total} bytes, the index says {raw}"));
    }
    Ok(())
}

/// Where the pipeline's output goes, in image order.
pub trait Sink {
    /// Writes the output of a unit ending at image offset `end`.
    fn write(&mut self, bytes: &[u8], end: u64) -> Result<(), ClientError>;
}

/// A job for a worker: the unit (number `seq` in order), its fetched bytes and what they count in the input
/// budget.
struct Job {
    seq: usize,
    unit: Unit,
    input: Option<Vec<u8>>,
    cost: u64,
}

/// What a unit's fetched bytes count in the input budget.
fn input_cost(unit: &Unit) -> u64 {
    unit.fetch.map_or(0, |f| f.len)
}

/// Runs the units: fetch on its own thread, one worker per core (at most [`MAX_WORKERS`]), fetched inputs and
/// decoded output within [`INPUT_BUDGET`] and [`OUTPUT_BUDGET`], output to `sink` in order and (with `hash`) into
/// the whole-image digest on its own thread. Returns the bytes fetched and the digest of everything hashed.
pub fn run(
    inputs: &Inputs,
    units: &[Unit],
    source: &mut dyn RangeSource,
    sink: &mut dyn Sink,
    hash: Option<Sha256>,
) -> Result<(u64, Option<[u8; 32]>), ClientError> {
    let flow = Flow::new(INPUT_BUDGET, OUTPUT_BUDGET);
    run_with(inputs, units, source, sink, hash, &flow)
}

/// [`run`] within the budgets of `flow`.
fn run_with(
    inputs: &Inputs,
    units: &[Unit],
    source: &mut dyn RangeSource,
    sink: &mut dyn Sink,
    hash: Option<Sha256>,
    flow: &Flow,
) -> Result<(u64, Option<[u8; 32]>), ClientError> {
    let workers = thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(MAX_WORKERS);
    let fetched: Vec<&Unit> = units.iter().filter(|u| u.fetch.is_some()).collect();
    let items: Vec<Span> = fetched.iter().filter_map(|u| u.fetch).collect();
    let costs: Vec<u64> = fetched.iter().map(|u| input_cost(u)).collect();
    let requests = fetch::requests(&items);
    let (job_tx, job_rx) = sync_channel::<Job>(workers);
    let job_rx = Mutex::new(job_rx);
    let job_rx = &job_rx;
    thread::scope(|scope| {
        let (item_tx, item_rx) = sync_channel::<Result<Vec<u8>, ClientError>>(1);
        let (requests, costs) = (&requests, &costs);
        let origin = inputs.origin;
        let fetcher =
            scope.spawn(move || fetch::run(source, origin, requests, costs, flow, &item_tx));
        for _ in 0..workers {
            scope.spawn(move || loop {
                let job = job_rx.lock().expect("no worker panics holding it").recv();
                let Ok(job) = job else { return };
                let seq = job.seq;
                let mut emit = |piece: Vec<u8>| flow.push(seq, Out::Piece(piece));
                let result = inputs.process(&job.unit, job.input, &mut emit);
                flow.release_input(job.cost);
                flow.push(seq, Out::End(result));
            });
        }
        let dispatcher = scope.spawn(move || dispatch(units, &item_rx, &job_tx, flow));
        let (hash_tx, hash_rx) = sync_channel::<Vec<u8>>(2);
        let hasher = hash.map(|h| scope.spawn(move || hash_all(h, hash_rx)));
        let hash_tx = hasher.is_some().then_some(hash_tx);

        let result = write_all(units, flow, sink, hash_tx.as_ref());
        flow.stop();
        drop(hash_tx);
        dispatcher.join().expect("the dispatcher does not panic");
        let fetched = fetcher.join().expect("the fetch thread does not panic");
        let digest = hasher.map(|h| h.join().expect("the hash thread does not panic"));
        result.map(|()| (fetched, digest))
    })
}

fn hash_all(mut hasher: Sha256, bytes: Receiver<Vec<u8>>) -> [u8; 32] {
    for b in bytes {
        hasher.update(&b);
    }
    hasher.finalize().into()
}

/// Hands units to the workers in order, each with its fetched bytes; a fetch error goes to the writer in the
/// unit's place. Returns when every unit is handed over, or the run stopped.
fn dispatch(
    units: &[Unit],
    items: &Receiver<Result<Vec<u8>, ClientError>>,
    jobs: &SyncSender<Job>,
    flow: &Flow,
) {
    for (seq, unit) in units.iter().enumerate() {
        if flow.stopped() {
            return;
        }
        let input = match unit.fetch {
            Some(_) => match items.recv() {
                Ok(Ok(bytes)) => Some(bytes),
                Ok(Err(e)) => {
                    flow.push(seq, Out::End(Err(e)));
                    return;
                }
                // The fetch stopped because the run did.
                Err(_) => return,
            },
            None => None,
        };
        let job = Job {
            seq,
            unit: *unit,
            cost: if input.is_some() { input_cost(unit) } else { 0 },
            input,
        };
        if jobs.send(job).is_err() {
            return;
        }
    }
}

/// Writes every unit's pieces in order, checking each unit's length.
fn write_all(
    units: &[Unit],
    flow: &Flow,
    sink: &mut dyn Sink,
    hash: Option<&SyncSender<Vec<u8>>>,
) -> Result<(), ClientError> {
    for (seq, unit) in units.iter().enumerate() {
        let mut at = unit.offset;
        loop {
            match flow.pop(seq) {
                Out::Piece(bytes) => {
                    at += bytes.len() as u64;
                    debug_assert!(at <= unit.offset + unit.len);
                    sink.write(&bytes, at)?;
                    if let Some(hash) = hash {
                        let _ = hash.send(bytes);
                    }
                }
                Out::End(result) => {
                    result?;
                    debug_assert_eq!(at, unit.offset + unit.len);
                    break;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::chunked::flow::HEAD_ALLOWANCE;

    /// The worker's decoder is reused across frames: a frame stopped early or refused as corrupt leaves nothing
    /// behind for the next frame on the same thread.
    #[test]
    fn a_reused_decoder_starts_every_frame_clean() {
        let a: Vec<u8> = (0..3 * PIECE as u32).map(|i| (i % 251) as u8).collect();
        let b: Vec<u8> = (0..2 * PIECE as u32).map(|i| (i % 13) as u8).collect();
        let (fa, fb) = (
            zstd::bulk::compress(&a, 3).unwrap(),
            zstd::bulk::compress(&b, 3).unwrap(),
        );
        let decode = |frame: &[u8], raw: usize, stop_after: usize| {
            let mut out = Vec::new();
            let mut pieces = 0;
            let result = decode_frame(frame, raw as u64, 0, &mut |p| {
                out.extend_from_slice(&p);
                pieces += 1;
                pieces < stop_after
            });
            result.map(|()| out)
        };
        // Stopped after one piece, mid-frame.
        assert_eq!(decode(&fa, a.len(), 1).unwrap().len(), PIECE);
        assert!(decode(&fb, b.len(), usize::MAX).unwrap() == b);
        // Refused mid-frame.
        let mut bad = fa.clone();
        bad.truncate(fa.len() / 2);
        assert!(decode(&bad, a.len(), usize::MAX).is_err());
        assert!(decode(&fa, a.len(), usize::MAX).unwrap() == a);
    }
    use crate::source::SourceError;
    use ota_bundle_format::chunked::{
        ChunkRecord, FrameRecord, DEFAULT_PARAMS, MAX_FRAME_RAW, NO_BASE,
    };
    use ota_bundle_format::write::frames::compress_capped;

    struct Memory(Vec<u8>);

    impl RangeSource for Memory {
        fn len(&self) -> u64 {
            self.0.len() as u64
        }
        fn read_ranges<'s>(
            &mut self,
            ranges: &[Span],
            sink: &'s mut crate::source::ranges::RangeSink<'s>,
        ) -> Result<(), SourceError> {
            for (i, r) in ranges.iter().enumerate() {
                sink(i, &self.0[r.offset as usize..r.end() as usize])?;
            }
            Ok(())
        }
        fn wire_bytes(&self) -> u64 {
            0
        }
    }

    struct Collect {
        out: Vec<u8>,
        largest_piece: usize,
    }

    impl Sink for Collect {
        fn write(&mut self, bytes: &[u8], end: u64) -> Result<(), ClientError> {
            self.out.extend_from_slice(bytes);
            self.largest_piece = self.largest_piece.max(bytes.len());
            assert_eq!(end, self.out.len() as u64, "pieces arrive in image order");
            Ok(())
        }
    }

    /// Frames of the largest size the format allows decode in pieces: the decoded bytes queued for the writer
    /// never pass the output budget plus one piece, and the image comes out whole and in order.
    #[test]
    fn frames_of_the_largest_size_decode_within_the_budget() {
        let chunk = DEFAULT_PARAMS.max;
        let per_frame = (MAX_FRAME_RAW / u64::from(chunk)) as u32;
        let mut x = 5u64;
        let image: Vec<u8> = (0..3 * MAX_FRAME_RAW)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if i % 4 == 0 {
                    x as u8
                } else {
                    (i >> 12) as u8
                }
            })
            .collect();
        let mut payload = Vec::new();
        let mut frames = Vec::new();
        for raw in image.chunks(MAX_FRAME_RAW as usize) {
            let bytes = compress_capped(raw, 1).unwrap();
            frames.push(FrameRecord {
                chunks: per_frame,
                compressed_size: bytes.len() as u32,
                sha256: Sha256::digest(&bytes).into(),
            });
            payload.extend_from_slice(&bytes);
        }
        let index = ChunkIndex {
            params: DEFAULT_PARAMS,
            frames,
            chunks: image
                .chunks(chunk as usize)
                .map(|c| ChunkRecord {
                    size: c.len() as u32,
                    sha256: Sha256::digest(c).into(),
                    base_offset: NO_BASE,
                })
                .collect(),
            deltas: vec![],
        };
        let spans = index.frame_spans();
        // The first frame's first chunk is already in the slot (a resumed try).
        let units: Vec<Unit> = spans
            .iter()
            .enumerate()
            .map(|(f, s)| {
                let skip = if f == 0 { u64::from(chunk) } else { 0 };
                Unit {
                    work: Work::Frame { frame: f, skip },
                    offset: s.image_offset + skip,
                    len: s.raw_size - skip,
                    fetch: Some(Span {
                        offset: s.payload_offset,
                        len: s.compressed_size,
                    }),
                }
            })
            .collect();
        let inputs = Inputs {
            index: &index,
            sources: &[],
            frames: &spans,
            active: None,
            class: "rootfs",
            image: "rootfs.ext4",
            origin: "memory",
        };
        let mut sink = Collect {
            out: vec![0; chunk as usize],
            largest_piece: 0,
        };
        sink.out.copy_from_slice(&image[..chunk as usize]);
        let flow = Flow::new(INPUT_BUDGET, OUTPUT_BUDGET);
        let (fetched, digest) = run_with(
            &inputs,
            &units,
            &mut Memory(payload.clone()),
            &mut sink,
            Some(Sha256::new()),
            &flow,
        )
        .unwrap();
        assert_eq!(fetched, payload.len() as u64);
        assert!(sink.out == image, "the image comes out whole");
        assert_eq!(
            digest.unwrap(),
            <[u8; 32]>::from(Sha256::digest(&image[chunk as usize..]))
        );
        assert!(sink.largest_piece <= PIECE);
        assert!(
            flow.peak() <= OUTPUT_BUDGET + HEAD_ALLOWANCE,
            "{} bytes queued",
            flow.peak()
        );
    }
}
