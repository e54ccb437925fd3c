//! Turning measured cases into a table (for people) and JSON (for tracking), with pass/fail against targets.

use serde::Serialize;

use crate::harness::{median, Case, Sample};

/// A target one row must meet.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Target {
    /// Median wall time at most this many times that of the row's baseline.
    MaxRatio {
        /// The limit.
        ratio: f64,
    },
    /// Peak RSS (largest over the runs) at most this many MiB.
    MaxRssMib {
        /// The limit.
        mib: f64,
    },
}

impl Target {
    fn describe(&self) -> String {
        match self {
            Target::MaxRatio { ratio } => format!("<= {ratio:.2}x"),
            Target::MaxRssMib { mib } => format!("RSS <= {mib:.0} MiB"),
        }
    }
}

/// How one row is to be reported: which case, against which baseline, with which targets.
pub struct RowSpec<'a> {
    /// The measured case.
    pub case: &'a Case,
    /// The case it is compared with, if any.
    pub baseline: Option<&'a Case>,
    /// Targets it must meet.
    pub targets: Vec<Target>,
}

impl<'a> RowSpec<'a> {
    /// The row of the case named `name`, against the case named `baseline`.
    ///
    /// # Panics
    /// If a name is not among `cases` (a typo in the bench itself).
    pub fn named(
        cases: &'a [Case],
        name: &str,
        baseline: Option<&str>,
        targets: Vec<Target>,
    ) -> RowSpec<'a> {
        let find = |n: &str| {
            cases
                .iter()
                .find(|c| c.name == n)
                .unwrap_or_else(|| panic!("no bench case {n:?}"))
        };
        RowSpec {
            case: find(name),
            baseline: baseline.map(find),
            targets,
        }
    }
}

impl Target {
    /// At most `ratio` times the baseline's time and `mib` MiB of peak RSS.
    pub fn ratio_and_rss(ratio: f64, mib: f64) -> Vec<Target> {
        vec![Target::MaxRatio { ratio }, Target::MaxRssMib { mib }]
    }
}

/// Outcome of one target.
#[derive(Debug, Clone, Serialize)]
pub struct TargetResult {
    /// The target.
    pub target: Target,
    /// The value measured against it.
    pub measured: f64,
    /// Whether it was met.
    pub pass: bool,
}

/// One row of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Case name.
    pub name: String,
    /// What ran.
    pub label: String,
    /// Exact command line.
    pub command: String,
    /// Number of runs.
    pub runs: usize,
    /// Median wall seconds.
    pub wall_median_s: f64,
    /// Fastest run.
    pub wall_min_s: f64,
    /// Slowest run.
    pub wall_max_s: f64,
    /// Median user+system CPU seconds.
    pub cpu_median_s: f64,
    /// Image bytes / median wall time, in MB/s (10^6 bytes).
    pub mb_per_s: f64,
    /// Largest peak RSS over the runs, MiB.
    pub peak_rss_mib: f64,
    /// Name of the baseline case.
    pub baseline: Option<String>,
    /// Median wall / baseline median wall.
    pub ratio: Option<f64>,
    /// Median of the per-round ratios (each run against the baseline run of the same round): less sensitive to
    /// load that changes between rounds.
    pub paired_ratio: Option<f64>,
    /// Targets and their outcome.
    pub targets: Vec<TargetResult>,
    /// Every run.
    pub samples: Vec<Sample>,
}

impl Row {
    /// Computes a row; `bytes` is the amount of data the step processes (for MB/s).
    pub fn new(spec: &RowSpec<'_>, bytes: u64) -> Row {
        let case = spec.case;
        let walls: Vec<f64> = case.samples.iter().map(|s| s.wall_s).collect();
        let cpus: Vec<f64> = case.samples.iter().map(|s| s.user_s + s.sys_s).collect();
        let wall_median_s = median(&walls);
        let peak_rss_mib = case
            .samples
            .iter()
            .map(|s| s.max_rss_kib)
            .max()
            .unwrap_or(0) as f64
            / 1024.0;
        let ratio = spec.baseline.map(|b| {
            let base: Vec<f64> = b.samples.iter().map(|s| s.wall_s).collect();
            wall_median_s / median(&base)
        });
        let paired_ratio = spec.baseline.map(|b| {
            let pairs: Vec<f64> = case
                .samples
                .iter()
                .zip(&b.samples)
                .map(|(s, base)| s.wall_s / base.wall_s)
                .collect();
            median(&pairs)
        });
        let targets = spec
            .targets
            .iter()
            .map(|&target| {
                let measured = match target {
                    Target::MaxRatio { .. } => ratio.unwrap_or(f64::INFINITY),
                    Target::MaxRssMib { .. } => peak_rss_mib,
                };
                let pass = match target {
                    Target::MaxRatio { ratio } => measured <= ratio,
                    Target::MaxRssMib { mib } => measured <= mib,
                };
                TargetResult {
                    target,
                    measured,
                    pass,
                }
            })
            .collect();
        Row {
            name: case.name.clone(),
            label: case.label.clone(),
            command: case.command_line(),
            runs: case.samples.len(),
            wall_median_s,
            wall_min_s: walls.iter().copied().fold(f64::INFINITY, f64::min),
            wall_max_s: walls.iter().copied().fold(0.0, f64::max),
            cpu_median_s: median(&cpus),
            mb_per_s: bytes as f64 / 1e6 / wall_median_s,
            peak_rss_mib,
            baseline: spec.baseline.map(|b| b.name.clone()),
            ratio,
            paired_ratio,
            targets,
            samples: case.samples.clone(),
        }
    }

    /// Whether every target of this row was met.
    pub fn pass(&self) -> bool {
        self.targets.iter().all(|t| t.pass)
    }
}

/// Formats rows as a fixed-width text table.
pub fn table(rows: &[Row]) -> String {
    let header = [
        "step", "what", "wall s", "min-max", "cpu s", "MB/s", "vs base", "paired", "peak RSS",
        "target", "result",
    ];
    let mut lines: Vec<[String; 11]> = vec![header.map(String::from)];
    for r in rows {
        let targets: Vec<String> = r.targets.iter().map(|t| t.target.describe()).collect();
        let result = if r.targets.is_empty() {
            String::new()
        } else if r.pass() {
            "PASS".into()
        } else {
            let failed: Vec<String> = r
                .targets
                .iter()
                .filter(|t| !t.pass)
                .map(|t| match t.target {
                    Target::MaxRatio { .. } => format!("{:.2}x", t.measured),
                    Target::MaxRssMib { .. } => format!("{:.0} MiB", t.measured),
                })
                .collect();
            format!("FAIL ({})", failed.join(", "))
        };
        lines.push([
            r.name.clone(),
            r.label.clone(),
            format!("{:.3}", r.wall_median_s),
            format!("{:.2}-{:.2}", r.wall_min_s, r.wall_max_s),
            format!("{:.2}", r.cpu_median_s),
            format!("{:.0}", r.mb_per_s),
            r.ratio.map_or("-".into(), |x| format!("{x:.3}x")),
            r.paired_ratio.map_or("-".into(), |x| format!("{x:.3}x")),
            format!("{:.1} MiB", r.peak_rss_mib),
            if targets.is_empty() {
                "-".into()
            } else {
                targets.join(", ")
            },
            result,
        ]);
    }
    let mut widths = [0usize; 11];
    for line in &lines {
        for (w, cell) in widths.iter_mut().zip(line) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let numeric = [
        false, false, true, true, true, true, true, true, true, false, false,
    ];
    let mut out = String::new();
    for (i, line) in lines.iter().enumerate() {
        let cells: Vec<String> = line
            .iter()
            .zip(widths)
            .zip(numeric)
            .map(|((cell, w), right)| {
                let pad = " ".repeat(w - cell.chars().count());
                if right {
                    format!("{pad}{cell}")
                } else {
                    format!("{cell}{pad}")
                }
            })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
        if i == 0 {
            let total: usize = widths.iter().sum::<usize>() + 2 * (widths.len() - 1);
            out.push_str(&"-".repeat(total));
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case_with(name: &str, walls: &[f64], rss_kib: u64) -> Case {
        let mut c = Case::new(name, name, "/bin/true");
        c.samples = walls
            .iter()
            .map(|&wall_s| Sample {
                wall_s,
                user_s: wall_s,
                sys_s: 0.0,
                max_rss_kib: rss_kib,
            })
            .collect();
        c
    }

    #[test]
    fn ratios_and_targets() {
        let ours = case_with("extract", &[2.2, 2.0, 2.4], 40 * 1024);
        let base = case_with("zstd-d", &[2.0, 1.9, 1.0], 8 * 1024);
        let row = Row::new(
            &RowSpec {
                case: &ours,
                baseline: Some(&base),
                targets: vec![
                    Target::MaxRatio { ratio: 1.15 },
                    Target::MaxRssMib { mib: 64.0 },
                ],
            },
            2_200_000_000,
        );
        assert!((row.wall_median_s - 2.2).abs() < 1e-9);
        assert!((row.ratio.unwrap() - 2.2 / 1.9).abs() < 1e-9);
        // Per-round ratios 1.1, 1.0526, 2.4: median 1.1.
        assert!((row.paired_ratio.unwrap() - 1.1).abs() < 1e-9);
        assert!((row.mb_per_s - 1000.0).abs() < 1e-6);
        assert!(!row.targets[0].pass && row.targets[1].pass && !row.pass());
        let text = table(&[row]);
        assert!(text.contains("FAIL (1.16x)"), "{text}");
    }
}
