//! One measured phase of polls (open-loop at a rate, or closed-loop back-to-back) and the CPU it cost.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use hdrhistogram::Histogram;
use hyper::header::HeaderValue;
use hyper::{Method, StatusCode};
use ota_protocol::device::PollResponse;

use crate::child;
use crate::conn::{Conn, JSON};
use crate::traffic::{poll_body, Rng};

/// A poll that takes longer counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What one phase measured.
pub(crate) struct PhaseResult {
    /// Latency of the polls scheduled (rate) or sent (closed loop) inside the measured window, in µs.
    pub(crate) latency: Histogram<u64>,
    /// Polls answered 200 inside the measured window.
    pub(crate) completed: u64,
    /// Failed polls (transport errors, timeouts, non-200) during the whole phase, warm-up included.
    pub(crate) errors: u64,
    /// Polls answered with an update offer.
    pub(crate) offers: u64,
    /// A few error messages.
    pub(crate) samples: Vec<String>,
    /// Measured window.
    pub(crate) window: Duration,
}

/// Runs one phase. `rate`: open-loop polls/s over all connections; `None`: closed loop (back-to-back).
pub(crate) async fn poll_phase(
    addr: SocketAddr,
    tokens: Arc<Vec<HeaderValue>>,
    connections: usize,
    rate: Option<u64>,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<PhaseResult> {
    let t0 = tokio::time::Instant::now() + Duration::from_millis(200);
    let measure_from = t0 + warmup;
    let end = measure_from + duration;
    let interval = rate.map(|r| Duration::from_secs_f64(connections as f64 / r as f64));
    let mut tasks = Vec::new();
    for c in 0..connections {
        let tokens = tokens.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::new(addr, REQUEST_TIMEOUT)?;
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 2)?;
            let mut rng = Rng(0x2545_F491_4F6C_DD1D ^ ((c as u64 + 1) * 0x9E37_79B9));
            let (mut completed, mut errors, mut offers) = (0u64, 0u64, 0u64);
            let mut samples = Vec::new();
            // Spread the connections' schedules evenly over one interval.
            let mut next = interval
                .map(|i| t0 + i.mul_f64(c as f64 / connections as f64))
                .unwrap_or(t0);
            let mut k = 0usize;
            loop {
                let scheduled = match interval {
                    Some(i) => {
                        tokio::time::sleep_until(next).await;
                        let s = next;
                        next += i;
                        s
                    }
                    None => {
                        if k == 0 {
                            tokio::time::sleep_until(t0).await;
                        }
                        tokio::time::Instant::now()
                    }
                };
                if scheduled >= end {
                    break;
                }
                let device = (c + k * connections) % tokens.len();
                k += 1;
                let body = poll_body(&mut rng, device, 86_400 + k as u64);
                let result = conn
                    .send(
                        Method::POST,
                        ota_protocol::paths::POLL,
                        Some(&tokens[device]),
                        Some(JSON),
                        body,
                    )
                    .await;
                let done = tokio::time::Instant::now();
                let ok = match result {
                    Ok((StatusCode::OK, answer)) => {
                        match serde_json::from_slice::<PollResponse>(&answer) {
                            Ok(p) => {
                                offers += u64::from(p.update.is_some());
                                true
                            }
                            Err(e) => {
                                if samples.len() < 3 {
                                    samples.push(format!("bad poll answer: {e}"));
                                }
                                false
                            }
                        }
                    }
                    Ok((status, answer)) => {
                        if samples.len() < 3 {
                            samples.push(format!(
                                "HTTP {status}: {}",
                                String::from_utf8_lossy(&answer)
                            ));
                        }
                        false
                    }
                    Err(e) => {
                        if samples.len() < 3 {
                            samples.push(format!("{e:#}"));
                        }
                        false
                    }
                };
                if !ok {
                    errors += 1;
                    continue;
                }
                if scheduled >= measure_from {
                    let micros = done.duration_since(scheduled).as_micros().max(1);
                    hist.saturating_record(u64::try_from(micros).unwrap_or(u64::MAX));
                }
                if done >= measure_from && done < end {
                    completed += 1;
                }
            }
            Ok::<_, anyhow::Error>((hist, completed, errors, offers, samples))
        }));
    }
    let mut result = PhaseResult {
        latency: Histogram::new_with_bounds(1, 60_000_000, 2)?,
        completed: 0,
        errors: 0,
        offers: 0,
        samples: Vec::new(),
        window: duration,
    };
    for t in tasks {
        let (hist, completed, errors, offers, samples) =
            t.await.context("poll worker panicked")??;
        result.latency.add(&hist)?;
        result.completed += completed;
        result.errors += errors;
        result.offers += offers;
        if result.samples.len() < 5 {
            result.samples.extend(samples);
        }
    }
    Ok(result)
}

pub(crate) fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

pub(crate) fn print_phase(name: &str, r: &PhaseResult, cpu: &CpuUse) -> f64 {
    let rate = r.completed as f64 / r.window.as_secs_f64();
    let h = &r.latency;
    println!("{name}:");
    println!(
        "  polls/s     {rate:>10.0}   ({} answered in {:.0} s)",
        r.completed,
        r.window.as_secs_f64()
    );
    println!(
        "  latency ms  p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
        ms(h.value_at_quantile(0.50)),
        ms(h.value_at_quantile(0.90)),
        ms(h.value_at_quantile(0.99)),
        ms(h.value_at_quantile(0.999)),
        ms(h.max())
    );
    println!("  errors      {}   offers {}", r.errors, r.offers);
    let secs = r.window.as_secs_f64();
    let per_poll = |c: f64| c * 1e6 / r.completed.max(1) as f64;
    if let Some(c) = cpu.server {
        println!(
            "  server CPU  {:.2} cores ({:.1} µs per poll)",
            c / secs,
            per_poll(c)
        );
    }
    if let Some(c) = cpu.client {
        println!(
            "  client CPU  {:.2} cores ({:.1} µs per poll)",
            c / secs,
            per_poll(c)
        );
    }
    if let Some(m) = cpu.machine {
        let others = m - cpu.server.unwrap_or(0.0) - cpu.client.unwrap_or(0.0);
        println!(
            "  other CPU   {:.2} cores (other processes on this machine during the window)",
            (others / secs).max(0.0)
        );
    }
    for s in &r.samples {
        println!("  error: {s}");
    }
    rate
}

/// CPU used during a phase's measured window: by the server, by this process, and by everything else on the
/// machine (other builds and tests skew the figures; this makes that visible).
pub(crate) struct CpuUse {
    server: Option<f64>,
    client: Option<f64>,
    machine: Option<f64>,
}

/// Runs `f` (a phase) and samples CPU counters at the start and end of its measured window.
pub(crate) async fn measured<F: std::future::Future<Output = anyhow::Result<PhaseResult>>>(
    server_pid: Option<&str>,
    warmup: Duration,
    window: Duration,
    f: F,
) -> anyhow::Result<(PhaseResult, CpuUse)> {
    fn sample(pid: Option<&str>) -> (Option<f64>, Option<f64>, Option<f64>) {
        (
            pid.and_then(child::cpu_seconds),
            child::cpu_seconds("self"),
            child::machine_busy_seconds(),
        )
    }
    let pid = server_pid.map(str::to_string);
    // The phase's clock starts 200 ms after it is called.
    let sampler = tokio::spawn(async move {
        tokio::time::sleep(warmup + Duration::from_millis(200)).await;
        let start = sample(pid.as_deref());
        tokio::time::sleep(window).await;
        let end = sample(pid.as_deref());
        (start, end)
    });
    let result = f.await?;
    let (start, end) = sampler.await?;
    let delta = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| b - a);
    let cpu = CpuUse {
        server: delta(start.0, end.0),
        client: delta(start.1, end.1),
        machine: delta(start.2, end.2),
    };
    Ok((result, cpu))
}
