//! Maintenance windows, pure: whether a [`Schedule`] allows installing at a given instant. The instant is a
//! parameter (no clock here); local time comes from the IANA time-zone database bundled with `jiff`, so a
//! server without `/usr/share/zoneinfo` evaluates `Europe/Berlin` the same way.
//!
//! Semantics: a window opens on each of its days at `start` local wall-clock time and closes at `end`; an `end`
//! at or before `start` runs past midnight into the next day (the window belongs to the day it starts on, so
//! `fri@22:00-06:00` is open Saturday 03:00 but not Friday 03:00). Across DST changes the wall clock decides: a
//! window inside the skipped spring-forward hour does not open that day, and one spanning the repeated
//! fall-back hour stays open through both of its passes.

use std::sync::atomic::{AtomicU64, Ordering};

use jiff::tz::TimeZone;
use jiff::Timestamp;
use ota_protocol::fleet::{Schedule, Weekday, Window};

const MINUTES_PER_DAY: u32 = 24 * 60;

/// A window in minutes of the local day.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Span {
    /// Bit `d` set: opens on weekday `d` (0 = Monday).
    days: u8,
    start: u32,
    end: u32,
}

/// A [`Schedule`] checked and ready to answer [`CompiledSchedule::allows`] without allocating. It remembers
/// its last answer per minute, so polls of many robots in the same minute share one time-zone lookup.
#[derive(Debug)]
pub struct CompiledSchedule {
    tz: TimeZone,
    spans: Vec<Span>,
    /// `(minute since the epoch + 1) << 1 | allowed`; 0 = nothing cached.
    cache: AtomicU64,
}

/// Parses `"HH:MM"` (00:00 to 24:00) into minutes of the day.
pub fn parse_time(text: &str) -> Result<u32, String> {
    let bad = || format!("time {text:?}: expected HH:MM between 00:00 and 24:00");
    let (h, m) = text.split_once(':').ok_or_else(bad)?;
    if h.len() != 2 || m.len() != 2 {
        return Err(bad());
    }
    let h: u32 = h.parse().map_err(|_| bad())?;
    let m: u32 = m.parse().map_err(|_| bad())?;
    if m > 59 || h > 24 || (h == 24 && m != 0) {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

fn day_index(d: Weekday) -> u32 {
    d as u32
}

/// Parses a weekday name (`mon`..`sun`).
pub fn parse_weekday(text: &str) -> Result<Weekday, String> {
    use Weekday::*;
    Ok(match text.to_ascii_lowercase().as_str() {
        "mon" => Mon,
        "tue" => Tue,
        "wed" => Wed,
        "thu" => Thu,
        "fri" => Fri,
        "sat" => Sat,
        "sun" => Sun,
        _ => {
            return Err(format!(
                "day {text:?}: expected mon, tue, wed, thu, fri, sat or sun"
            ))
        }
    })
}

const ALL_DAYS: [Weekday; 7] = [
    Weekday::Mon,
    Weekday::Tue,
    Weekday::Wed,
    Weekday::Thu,
    Weekday::Fri,
    Weekday::Sat,
    Weekday::Sun,
];

/// Parses the command-line form of a window: `[DAYS@]HH:MM-HH:MM` where DAYS is a comma list of days or
/// day ranges (`mon-fri`, `sat,sun`, `fri-mon`); without DAYS, every day.
pub fn parse_window(text: &str) -> Result<Window, String> {
    let (days_text, times) = match text.split_once('@') {
        Some((d, t)) => (Some(d), t),
        None => (None, text),
    };
    let (start, end) = times.split_once('-').ok_or_else(|| {
        format!("window {text:?}: expected [DAYS@]HH:MM-HH:MM, e.g. mon-fri@22:00-06:00")
    })?;
    parse_time(start)?;
    parse_time(end)?;
    let mut days = Vec::new();
    for part in days_text.into_iter().flat_map(|d| d.split(',')) {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (parse_weekday(a)?, parse_weekday(b)?),
            None => {
                let d = parse_weekday(part)?;
                (d, d)
            }
        };
        let mut i = day_index(a);
        loop {
            let d = ALL_DAYS[i as usize];
            if !days.contains(&d) {
                days.push(d);
            }
            if i == day_index(b) {
                break;
            }
            i = (i + 1) % 7;
        }
    }
    days.sort();
    Ok(Window {
        days,
        start: start.to_string(),
        end: end.to_string(),
    })
}

impl CompiledSchedule {
    /// Checks a schedule: known time zone, well-formed times, no empty window.
    pub fn compile(schedule: &Schedule) -> Result<CompiledSchedule, String> {
        let name = schedule.timezone.as_deref().unwrap_or("UTC");
        let tz = TimeZone::get(name).map_err(|_| {
            format!("unknown time zone {name:?}; use an IANA name such as Europe/Berlin")
        })?;
        let mut spans = Vec::with_capacity(schedule.windows.len());
        for w in &schedule.windows {
            let start = parse_time(&w.start)?;
            let end = parse_time(&w.end)?;
            if start == end && start != 0 {
                return Err(format!(
                    "window {}-{} is empty; for a whole day use 00:00-24:00",
                    w.start, w.end
                ));
            }
            let days = if w.days.is_empty() {
                0x7f
            } else {
                w.days.iter().fold(0u8, |acc, d| acc | 1 << day_index(*d))
            };
            spans.push(Span { days, start, end });
        }
        Ok(CompiledSchedule {
            tz,
            spans,
            cache: AtomicU64::new(0),
        })
    }

    /// Whether installing is allowed at `unix` seconds. No windows: always.
    pub fn allows(&self, unix: u64) -> bool {
        if self.spans.is_empty() {
            return true;
        }
        let minute = unix / 60;
        let cached = self.cache.load(Ordering::Relaxed);
        if cached >> 1 == minute + 1 {
            return cached & 1 == 1;
        }
        let allowed = self.evaluate(unix);
        self.cache
            .store((minute + 1) << 1 | u64::from(allowed), Ordering::Relaxed);
        allowed
    }

    fn evaluate(&self, unix: u64) -> bool {
        let Ok(ts) = Timestamp::from_second(unix.min(i64::MAX as u64) as i64) else {
            return true;
        };
        let offset = i64::from(self.tz.to_offset(ts).seconds());
        let local = unix as i64 + offset;
        let days = local.div_euclid(86_400);
        let minute = (local.rem_euclid(86_400) / 60) as u32;
        // 1970-01-01 was a Thursday (index 3 with Monday = 0).
        let weekday = (days + 3).rem_euclid(7) as u32;
        in_spans(&self.spans, weekday, minute)
    }
}

/// Whether a robot may install now: the rollout's own windows if it has them, else its group's, else always.
pub fn install_allowed(
    rollout: Option<&CompiledSchedule>,
    group: Option<&CompiledSchedule>,
    now: u64,
) -> bool {
    rollout.or(group).is_none_or(|s| s.allows(now))
}

/// Whether local `minute` of `weekday` (0 = Monday) lies in one of the spans.
fn in_spans(spans: &[Span], weekday: u32, minute: u32) -> bool {
    let yesterday = (weekday + 6) % 7;
    spans.iter().any(|s| {
        let today = s.days & (1 << weekday) != 0;
        if s.start < s.end {
            today && (s.start..s.end).contains(&minute)
        } else if s.start == s.end {
            // 00:00-00:00: the whole day.
            today
        } else {
            (today && minute >= s.start) || (s.days & (1 << yesterday) != 0 && minute < s.end)
        }
    }) && minute < MINUTES_PER_DAY
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sched(tz: &str, windows: &[&str]) -> CompiledSchedule {
        CompiledSchedule::compile(&Schedule {
            windows: windows.iter().map(|w| parse_window(w).unwrap()).collect(),
            timezone: Some(tz.into()),
        })
        .unwrap()
    }

    /// Unix seconds of a local civil time in a zone.
    fn at(tz: &str, civil: &str) -> u64 {
        let dt: jiff::civil::DateTime = civil.parse().unwrap();
        TimeZone::get(tz)
            .unwrap()
            .to_timestamp(dt)
            .unwrap()
            .as_second() as u64
    }

    #[test]
    fn parses_the_command_line_form() {
        let w = parse_window("mon-fri@22:00-06:00").unwrap();
        assert_eq!(
            w.days,
            vec![
                Weekday::Mon,
                Weekday::Tue,
                Weekday::Wed,
                Weekday::Thu,
                Weekday::Fri
            ]
        );
        assert_eq!((w.start.as_str(), w.end.as_str()), ("22:00", "06:00"));
        let w = parse_window("fri-mon@01:00-02:00").unwrap();
        assert_eq!(
            w.days,
            vec![Weekday::Mon, Weekday::Fri, Weekday::Sat, Weekday::Sun]
        );
        assert!(parse_window("10:00-11:00").unwrap().days.is_empty());
        assert!(parse_window("mon@25:00-26:00").is_err());
        assert!(parse_window("moon@10:00-11:00").is_err());
        assert!(parse_window("10:00").is_err());
        assert!(CompiledSchedule::compile(&Schedule {
            windows: vec![],
            timezone: Some("Mars/Olympus".into())
        })
        .is_err());
    }

    #[test]
    fn a_window_past_midnight_belongs_to_the_day_it_starts() {
        let s = sched("UTC", &["fri@22:00-06:00"]);
        // 2026-12-04 is a Friday.
        assert!(!s.allows(at("UTC", "2026-12-04T03:00")));
        assert!(!s.allows(at("UTC", "2026-12-04T21:59")));
        assert!(s.allows(at("UTC", "2026-12-04T22:00")));
        assert!(s.allows(at("UTC", "2026-12-05T00:00")));
        assert!(s.allows(at("UTC", "2026-12-05T05:59")));
        assert!(!s.allows(at("UTC", "2026-12-05T06:00")));
        assert!(!s.allows(at("UTC", "2026-12-05T23:00")));
    }

    #[test]
    fn local_time_follows_the_zone_and_its_dst() {
        let s = sched("Europe/Berlin", &["mon-fri@22:00-06:00"]);
        // Winter: Berlin is UTC+1, so 22:30 Berlin is 21:30 UTC.
        assert!(s.allows(at("UTC", "2026-12-07T21:30")));
        assert!(!s.allows(at("UTC", "2026-12-07T20:30")));
        // Summer: UTC+2.
        assert!(s.allows(at("UTC", "2026-07-06T20:30")));
        assert!(!s.allows(at("UTC", "2026-07-06T19:30")));
        // Spring forward (Sunday 2026-03-29, 02:00 -> 03:00): a window in the skipped hour never opens.
        let skipped = sched("Europe/Berlin", &["sun@02:00-03:00"]);
        let start = at("UTC", "2026-03-28T23:00");
        assert!((0..4 * 60).all(|m| !skipped.allows(start + m * 60)));
        // ...but it opens the Sunday after.
        assert!(skipped.allows(at("Europe/Berlin", "2026-04-05T02:30")));
        // Fall back (Sunday 2026-10-25, 03:00 -> 02:00): 02:30 happens twice and the window is open both times.
        let repeated = sched("Europe/Berlin", &["sun@02:00-03:00"]);
        assert!(repeated.allows(at("UTC", "2026-10-25T00:30")));
        assert!(repeated.allows(at("UTC", "2026-10-25T01:30")));
        assert!(!repeated.allows(at("UTC", "2026-10-25T02:30")));
    }

    #[test]
    fn no_windows_means_any_time_and_the_cache_keeps_answers_per_minute() {
        let any = sched("UTC", &[]);
        assert!(any.allows(0) && any.allows(1_800_000_000));
        let s = sched("UTC", &["10:00-11:00"]);
        let ten = at("UTC", "2026-12-04T10:00");
        assert!(!s.allows(ten - 1));
        assert!(s.allows(ten));
        assert!(s.allows(ten + 59));
        assert!(!s.allows(ten + 3600));
        assert!(!s.allows(ten - 1));
    }

    proptest! {
        /// The cached answer equals a fresh evaluation, whatever order instants come in.
        #[test]
        fn cache_never_changes_an_answer(times in proptest::collection::vec(1_700_000_000u64..1_900_000_000, 1..50)) {
            let s = sched("America/New_York", &["mon-fri@22:00-06:00", "sat@12:00-13:30"]);
            for t in times {
                prop_assert_eq!(s.allows(t), s.evaluate(t));
                prop_assert_eq!(s.allows(t + 1), s.evaluate(t + 1));
            }
        }

        /// An overnight window on every day is the union of its evening and its morning.
        #[test]
        fn overnight_every_day_is_evening_or_morning(start in 1u32..1440, end in 0u32..1440, weekday in 0u32..7, minute in 0u32..1440) {
            prop_assume!(end < start);
            let spans = [Span { days: 0x7f, start, end }];
            prop_assert_eq!(in_spans(&spans, weekday, minute), minute >= start || minute < end);
        }

        /// A window on a single day is never open on a day that neither is nor follows it.
        #[test]
        fn single_day_windows_stay_on_their_day(day in 0u32..7, start in 0u32..1440, end in 0u32..1440, weekday in 0u32..7, minute in 0u32..1440) {
            let spans = [Span { days: 1 << day, start, end }];
            if weekday != day && weekday != (day + 1) % 7 {
                prop_assert!(!in_spans(&spans, weekday, minute));
            }
            if start < end && weekday != day {
                prop_assert!(!in_spans(&spans, weekday, minute));
            }
        }
    }
}
