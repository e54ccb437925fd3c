//! The alerts' Prometheus families, appended to `/metrics`: `ota_alerts{kind,severity}` counts the open alerts
//! (every kind and severity, zeros included, so a rule can say `== 0`), and `ota_alert{kind,target,severity}`
//! is 1 per open alert (Alertmanager groups and routes by these labels; docs/alerts.md). `acknowledged`
//! (`true`/`false`) lets a rule skip what someone already looks at.

use ota_protocol::alerts::{AlertKind, Severity};
use prometheus::{Encoder, IntGaugeVec, Opts, Registry};

use super::track::AlertRecord;

fn gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| unreachable!("constant metric options: {e}"));
    registry
        .register(Box::new(g.clone()))
        .unwrap_or_else(|e| unreachable!("each metric is registered once: {e}"));
    g
}

/// The two families in the text format.
pub fn render(open: &[AlertRecord]) -> String {
    let registry = Registry::new();
    let counts = gauge(
        &registry,
        "ota_alerts",
        "open alerts by kind and severity",
        &["kind", "severity"],
    );
    let each = gauge(
        &registry,
        "ota_alert",
        "1 per open alert (target: robot/ID or rollout/ID)",
        &["kind", "target", "severity", "acknowledged"],
    );
    for k in AlertKind::ALL {
        for s in Severity::ALL {
            counts.with_label_values(&[k.as_str(), s.as_str()]).set(0);
        }
    }
    for a in open {
        counts
            .with_label_values(&[a.kind.as_str(), a.severity.as_str()])
            .inc();
        let acked = if a.acknowledged.is_some() {
            "true"
        } else {
            "false"
        };
        each.with_label_values(&[
            a.kind.as_str(),
            &a.target.path(),
            a.severity.as_str(),
            acked,
        ])
        .set(1);
    }
    let mut out = Vec::new();
    prometheus::TextEncoder::new()
        .encode(&registry.gather(), &mut out)
        .unwrap_or_else(|e| unreachable!("the text encoder writes to memory: {e}"));
    String::from_utf8(out).unwrap_or_else(|e| unreachable!("the text format is UTF-8: {e}"))
}
