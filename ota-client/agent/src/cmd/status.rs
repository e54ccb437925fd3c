//! `ota-client status [--json]`.

use ota_client::{Client, Config};

#[derive(clap::Args)]
pub struct Args {
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

fn opt<T: std::fmt::Display>(v: &Option<T>) -> String {
    v.as_ref()
        .map_or_else(|| "-".to_string(), ToString::to_string)
}

/// The freeze detection in one line: the alarm and why, or how fresh the newest timestamp is.
fn freeze_line(f: &ota_client::daemon::FreshnessStatus) -> String {
    let newest = f
        .state
        .newest
        .map_or_else(|| "none".to_string(), |n| n.version.to_string());
    let age = f.state.stale_ms / 1000;
    match (&f.alarm, &f.state.refused) {
        (Some(a), Some(r)) => format!("ALARM ({}): {}", a.reason.as_str(), r.detail),
        (Some(a), None) => format!(
            "ALARM ({}): no new signed timestamp for {age} s of uptime (newest version {newest})",
            a.reason.as_str()
        ),
        (None, _) => format!("ok: newest timestamp version {newest}, {age} s of uptime ago"),
    }
}

pub fn run(config: Config, args: Args) -> anyhow::Result<()> {
    let client = Client::open(config)?;
    let status = client.status();
    let freshness = client
        .trust_root()
        .ok()
        .and_then(|root| ota_client::daemon::freshness_status(client.config(), &root));
    if args.json {
        let mut value = serde_json::to_value(&status)?;
        if let Some(f) = &freshness {
            value["freshness"] = serde_json::to_value(f)?;
        }
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        println!("compatible: {}", status.compatible);
        println!("booted:     {}", opt(&status.booted));
        println!("primary:    {}", opt(&status.primary));
        match &status.trial {
            Some(t) => println!("trial:      slot {} ({} tries left)", t.slot, t.tries_left),
            None => println!("trial:      none"),
        }
        println!("floor:      {}", opt(&status.security_floor));
        println!("trust root: version {}", opt(&status.trust_version));
        if let Some(f) = &freshness {
            println!("freeze:     {}", freeze_line(f));
        }
        if let Some(staged) = &status.staged {
            println!("staged:     {staged} (`ota-client activate {staged}` arms it)");
        }
        for s in &status.slots {
            println!(
                "  {}/{} {}{} {:<9} {:<10} {} {}",
                s.class,
                s.slot,
                if s.active { "*" } else { " " },
                if s.live { "live" } else { "    " },
                s.state,
                opt(&s.version),
                s.bundle_hash
                    .as_deref()
                    .map_or("-", |h| &h[..h.len().min(12)]),
                s.note.as_deref().unwrap_or(""),
            );
        }
        if let Some(l) = &status.last_install {
            println!(
                "last install: {} {}",
                opt(&l.version),
                serde_json::to_string(&l.outcome)?
            );
        }
        for e in &status.unreported_events {
            println!(
                "unreported: #{} {:?} slot {} {} {}",
                e.id,
                e.kind,
                opt(&e.slot),
                opt(&e.version),
                e.reason
            );
        }
        for e in &status.errors {
            println!("error: {e}");
        }
    }
    if let Some(first) = status.errors.first() {
        anyhow::bail!("{first}");
    }
    Ok(())
}
