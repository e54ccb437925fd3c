//! The range engine's pipeline: work units in image order (a frame to decode, a run of local chunks to read and
//! verify, a delta to decode against the active slot), processed by one worker per core with a bounded number
//! in flight, written in order to the standby slot; the whole-image digest on its own thread.

use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Mutex;
use std::thread;

use ota_bundle_format::chunked::{ChunkIndex, ChunkSource, FetchPlan, FrameSpan, Span};
use ota_bundle_format::write::decode_delta;
use ota_bundle_format::BundleError;
use sha2::{Digest, Sha256};
use zstd::zstd_safe::{DCtx, DParameter};

use super::fetch;
use crate::client::ClientError;
use crate::source::ranges::RangeSource;

/// A run of local chunks is read as one unit up to this size.
const MAX_LOCAL_RUN: u64 = 4 << 20;
/// Frames are decoded with at most this window (16 MiB, as the format allows).
const WINDOW_LOG_MAX: u32 = 24;

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

    /// Runs one unit.
    pub fn process(&self, unit: &Unit, input: Option<Vec<u8>>) -> Result<Vec<u8>, ClientError> {
        match unit.work {
            Work::Frame { frame, skip } => {
                let input = input.expect("frames are fetched");
                let record = &self.index.frames[frame];
                if Sha256::digest(&input).as_slice() != record.sha256 {
                    return Err(self.corrupt(format!(
                        "frame {frame} does not match its SHA-256 in the index"
                    )));
                }
                let raw = self.frames[frame].raw_size as usize;
                let out = decode_frame(&input, raw)
                    .map_err(|e| self.corrupt(format!("frame {frame} does not decode: {e}")))?;
                if out.len() != raw {
                    return Err(self.corrupt(format!(
                        "frame {frame} decodes to {} bytes, the index says {raw}",
                        out.len()
                    )));
                }
                Ok(if skip == 0 {
                    out
                } else {
                    out[skip as usize..].to_vec()
                })
            }
            Work::Local { first, count } => {
                let mut out = Vec::with_capacity(unit.len as usize);
                for i in first..first + count {
                    let ChunkSource::Local { offset } = self.sources[i] else {
                        unreachable!("local runs hold local chunks")
                    };
                    let chunk = &self.index.chunks[i];
                    let bytes = self.read_active(offset, chunk.size as usize)?;
                    if Sha256::digest(&bytes).as_slice() != chunk.sha256 {
                        return Err(self.changed(offset));
                    }
                    out.extend_from_slice(&bytes);
                }
                Ok(out)
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
                        Ok(out)
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

/// Decodes one plain frame of at most `capacity` bytes (deltas: the writer's [`decode_delta`]).
fn decode_frame(input: &[u8], capacity: usize) -> Result<Vec<u8>, String> {
    let mut dctx = DCtx::create();
    let name = |code| zstd::zstd_safe::get_error_name(code).to_string();
    dctx.set_parameter(DParameter::WindowLogMax(WINDOW_LOG_MAX))
        .map_err(name)?;
    let mut out = Vec::with_capacity(capacity);
    dctx.decompress(&mut out, input).map_err(name)?;
    Ok(out)
}

/// Where the pipeline's output goes, in image order.
pub trait Sink {
    /// Writes the output of a unit ending at image offset `end`.
    fn write(&mut self, bytes: &[u8], end: u64) -> Result<(), ClientError>;
}

/// Where a worker's result for one unit arrives.
type Answer = Receiver<Result<Vec<u8>, ClientError>>;

/// A job for a worker: the unit, its fetched bytes, where to send the result.
struct Job {
    unit: Unit,
    input: Option<Vec<u8>>,
    reply: SyncSender<Result<Vec<u8>, ClientError>>,
}

/// Runs the units: fetch on its own thread, one worker per core, at most `in_flight` units decoded ahead of
/// the writer, output to `sink` in order and (with `hash`) into the whole-image digest on its own thread.
/// Returns the bytes fetched and the digest of everything hashed.
pub fn run(
    inputs: &Inputs,
    units: &[Unit],
    source: &mut dyn RangeSource,
    sink: &mut dyn Sink,
    hash: Option<Sha256>,
) -> Result<(u64, Option<[u8; 32]>), ClientError> {
    let workers = thread::available_parallelism().map_or(2, |n| n.get());
    // Each unit holds at most a frame's input and output (4 MiB raw from the writer, 8 MiB by the format):
    // with the fetch's request and the two small queues, anonymous memory stays well under 64 MiB.
    let in_flight = (workers + 1).min(4);
    let items: Vec<Span> = units.iter().filter_map(|u| u.fetch).collect();
    let requests = fetch::requests(&items);
    let (job_tx, job_rx) = sync_channel::<Job>(in_flight);
    let job_rx = Mutex::new(job_rx);
    let job_rx = &job_rx;
    thread::scope(|scope| {
        let (item_tx, item_rx) = sync_channel::<Result<Vec<u8>, ClientError>>(2);
        let requests = &requests;
        let origin = inputs.origin;
        let fetcher = scope.spawn(move || fetch::run(source, origin, requests, &item_tx));
        for _ in 0..workers {
            scope.spawn(move || loop {
                let job = job_rx.lock().expect("no worker panics holding it").recv();
                let Ok(job) = job else { return };
                let _ = job.reply.send(inputs.process(&job.unit, job.input));
            });
        }
        let (hash_tx, hash_rx) = sync_channel::<Vec<u8>>(2);
        let hasher = hash.map(|h| scope.spawn(move || hash_all(h, hash_rx)));
        let hash_tx = hasher.is_some().then_some(hash_tx);

        let result = drive(units, &item_rx, &job_tx, in_flight, sink, hash_tx.as_ref());
        drop(job_tx);
        drop(item_rx);
        drop(hash_tx);
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

/// Hands units to the workers in order and writes their results in order.
fn drive(
    units: &[Unit],
    items: &Receiver<Result<Vec<u8>, ClientError>>,
    jobs: &SyncSender<Job>,
    in_flight: usize,
    sink: &mut dyn Sink,
    hash: Option<&SyncSender<Vec<u8>>>,
) -> Result<(), ClientError> {
    let mut pending: VecDeque<(Unit, Answer)> = VecDeque::new();
    let mut write = |unit: Unit, reply: Answer| {
        let out = reply.recv().expect("every job is answered")?;
        debug_assert_eq!(out.len() as u64, unit.len);
        sink.write(&out, unit.offset + unit.len)?;
        if let Some(hash) = hash {
            let _ = hash.send(out);
        }
        Ok::<(), ClientError>(())
    };
    for unit in units {
        if pending.len() >= in_flight {
            let (u, r) = pending.pop_front().expect("not empty");
            write(u, r)?;
        }
        let input = match unit.fetch {
            Some(_) => Some(
                items
                    .recv()
                    .expect("the fetch sends every item or an error")?,
            ),
            None => None,
        };
        let (reply, answer) = sync_channel(1);
        jobs.send(Job {
            unit: *unit,
            input,
            reply,
        })
        .expect("workers run until the jobs end");
        pending.push_back((*unit, answer));
    }
    while let Some((u, r)) = pending.pop_front() {
        write(u, r)?;
    }
    Ok(())
}
