//! What a replica tells the others after a commit: which entity changed (they reload it from the store, so a
//! notice never carries state that could disagree with the database) and whether dashboards hear of it. Encoded
//! as a short JSON text that fits a PostgreSQL `NOTIFY` payload.

use serde::{Deserialize, Serialize};

/// The PostgreSQL channel the notices travel on.
pub const CHANNEL: &str = "ota_changes";

/// The longest payload `NOTIFY` takes (8000 bytes less one).
pub const MAX_PAYLOAD: usize = 7999;

/// The entity that changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "k", content = "id", rename_all = "snake_case")]
pub enum Subject {
    /// A device was enrolled or relabelled (its identity, token, labels or last status changed).
    Device(String),
    /// A device was deleted.
    DeviceDeleted(String),
    /// A report was committed: the device, its rollout membership and the report itself.
    Report {
        /// Reporting device.
        device_id: String,
        /// The report's id.
        report_id: String,
        /// The rollout it reported on.
        rollout_id: Option<u64>,
    },
    /// A bundle was published or removed.
    Bundle(String),
    /// A rollout's row or members changed.
    Rollout(u64),
    /// A group's settings changed.
    Group(String),
    /// Anything may have changed: reload everything.
    All,
}

/// One committed change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notice {
    /// The announcing replica ([`super::Cluster::origin`]).
    #[serde(rename = "o")]
    pub origin: u64,
    /// What changed.
    #[serde(rename = "s")]
    pub subject: Subject,
    /// Whether dashboards are told (the replica that made the change told its own).
    #[serde(rename = "e")]
    pub event: bool,
}

impl Notice {
    /// The payload; a notice too long for one (ids are bounded, so only in theory) becomes "reload
    /// everything", which loses nothing.
    pub fn encode(&self) -> String {
        let text = serde_json::to_string(self).unwrap_or_default();
        if !text.is_empty() && text.len() <= MAX_PAYLOAD {
            return text;
        }
        let all = Notice {
            subject: Subject::All,
            ..self.clone()
        };
        serde_json::to_string(&all).unwrap_or_default()
    }

    /// Reads a payload; `None` for one this build does not understand (a newer replica's: it is skipped).
    pub fn decode(payload: &str) -> Option<Notice> {
        serde_json::from_str(payload).ok()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn subject() -> impl Strategy<Value = Subject> {
        prop_oneof![
            ".{0,80}".prop_map(Subject::Device),
            ".{0,80}".prop_map(Subject::DeviceDeleted),
            (".{0,80}", ".{0,9000}", proptest::option::of(any::<u64>())).prop_map(
                |(device_id, report_id, rollout_id)| Subject::Report {
                    device_id,
                    report_id,
                    rollout_id
                }
            ),
            "[0-9a-f]{64}".prop_map(Subject::Bundle),
            any::<u64>().prop_map(Subject::Rollout),
            ".{0,64}".prop_map(Subject::Group),
            Just(Subject::All),
        ]
    }

    proptest! {
        #[test]
        fn a_payload_fits_notify_and_says_the_same_or_reload_everything(
            origin in any::<u64>(), subject in subject(), event in any::<bool>()
        ) {
            let notice = Notice { origin, subject, event };
            let payload = notice.encode();
            prop_assert!(payload.len() <= MAX_PAYLOAD);
            let back = Notice::decode(&payload).expect("decodes");
            prop_assert_eq!(back.origin, origin);
            prop_assert_eq!(back.event, event);
            prop_assert!(back.subject == notice.subject || back.subject == Subject::All);
            if serde_json::to_string(&notice).unwrap().len() <= MAX_PAYLOAD {
                prop_assert_eq!(back.subject, notice.subject);
            }
        }
    }

    #[test]
    fn a_payload_of_a_newer_build_is_skipped() {
        assert_eq!(
            Notice::decode(r#"{"o":1,"s":{"k":"tenant","id":"x"},"e":true}"#),
            None
        );
        assert_eq!(Notice::decode("not json"), None);
    }
}
