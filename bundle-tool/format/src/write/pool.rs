//! An ordered parallel map: jobs made in order on the calling thread, worked on by a pool of threads, results
//! handed to a sink in the same order. The output therefore does not depend on the number of workers or on
//! timing, which keeps bundles reproducible, and at most two jobs per worker are ever in flight, which keeps
//! memory bounded whatever the image size.

use std::collections::BTreeMap;
use std::sync::mpsc;
use std::sync::Mutex;

/// Jobs in flight (made but not yet sunk) per worker.
const IN_FLIGHT_PER_WORKER: usize = 2;

/// Runs `work` on every job `next_job` makes (until it returns `Ok(None)`) on `workers` threads, and gives the
/// results to `sink` in job order. The first error (of any of the three) stops the run and is returned.
pub fn ordered_map<J, T, E>(
    workers: usize,
    mut next_job: impl FnMut() -> Result<Option<J>, E>,
    work: impl Fn(J) -> Result<T, E> + Sync,
    mut sink: impl FnMut(T) -> Result<(), E>,
) -> Result<(), E>
where
    J: Send,
    T: Send,
    E: Send,
{
    let workers = workers.max(1);
    let limit = workers * IN_FLIGHT_PER_WORKER;
    let (to_workers, jobs) = mpsc::sync_channel::<(usize, J)>(limit);
    let (to_sink, results) = mpsc::channel::<(usize, Result<T, E>)>();
    let jobs = Mutex::new(jobs);
    std::thread::scope(|scope| {
        for _ in 0..workers {
            let (jobs, to_sink, work) = (&jobs, to_sink.clone(), &work);
            scope.spawn(move || loop {
                let job = jobs.lock().map(|rx| rx.recv());
                let Ok(Ok((seq, job))) = job else { return };
                if to_sink.send((seq, work(job))).is_err() {
                    return;
                }
            });
        }
        drop(to_sink);
        let mut pending: BTreeMap<usize, T> = BTreeMap::new();
        let (mut made, mut sunk, mut done) = (0usize, 0usize, false);
        let outcome = (|| loop {
            while !done && made - sunk < limit {
                match next_job()? {
                    // Workers stop only once this sender is dropped, so the send cannot fail.
                    Some(job) => {
                        let _ = to_workers.send((made, job));
                        made += 1;
                    }
                    None => done = true,
                }
            }
            if done && sunk == made {
                return Ok(());
            }
            let (seq, result) = results
                .recv()
                .expect("workers hold the result sender while jobs are in flight");
            pending.insert(seq, result?);
            while let Some(value) = pending.remove(&sunk) {
                sink(value)?;
                sunk += 1;
            }
        })();
        drop(to_workers);
        outcome
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn results_come_in_job_order_with_bounded_jobs_in_flight() {
        for workers in [1, 2, 5] {
            let mut next = 0u64;
            let (mut out, mut peak) = (Vec::new(), 0);
            let in_flight = AtomicUsize::new(0);
            ordered_map::<u64, u64, String>(
                workers,
                || {
                    let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                    peak = peak.max(now);
                    next += 1;
                    Ok((next <= 200).then_some(next))
                },
                |job| {
                    // Later jobs finish sooner, so results arrive out of order.
                    std::thread::sleep(std::time::Duration::from_micros(200 - job));
                    Ok(job * 3)
                },
                |value| {
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                    out.push(value);
                    Ok(())
                },
            )
            .unwrap();
            assert_eq!(out, (1..=200).map(|j| j * 3).collect::<Vec<_>>());
            assert!(peak <= workers * IN_FLIGHT_PER_WORKER + 1, "{peak}");
        }
    }

    #[test]
    fn the_first_error_stops_the_run() {
        let mut next = 0;
        let err = ordered_map::<u32, u32, String>(
            2,
            || {
                next += 1;
                Ok(Some(next))
            },
            |job| {
                if job == 7 {
                    Err(format!("job {job}"))
                } else {
                    Ok(job)
                }
            },
            |_| Ok(()),
        )
        .unwrap_err();
        assert_eq!(err, "job 7");
        let err = ordered_map::<u32, u32, String>(2, || Err("no job".into()), Ok, |_| Ok(()))
            .unwrap_err();
        assert_eq!(err, "no job");
        let mut next = 0;
        let err = ordered_map::<u32, u32, String>(
            2,
            || {
                next += 1;
                Ok((next < 50).then_some(next))
            },
            Ok,
            |v| if v == 3 { Err("sink".into()) } else { Ok(()) },
        )
        .unwrap_err();
        assert_eq!(err, "sink");
    }
}
