//! How column values become records and back, the same for every backend: JSON text for maps and nested
//! values, semver text for versions, hex for token hashes, names for statuses and states. A value that does not
//! decode is [`StoreError::Corrupt`], naming its column.

use ota_protocol::admin::RolloutState;
use ota_protocol::device::ReportStatus;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::StoreError;

/// A value as stored JSON text.
pub fn to_json<T: Serialize>(value: &T) -> String {
    // Only maps with string keys, strings and numbers are stored this way: encoding cannot fail.
    serde_json::to_string(value).unwrap_or_default()
}

/// Stored JSON text of column `what` as a value.
pub fn from_json<T: DeserializeOwned>(what: &'static str, text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt {
        what,
        detail: e.to_string(),
    })
}

/// [`from_json`] of a nullable column.
pub fn opt_json<T: DeserializeOwned>(
    what: &'static str,
    text: Option<String>,
) -> Result<Option<T>, StoreError> {
    text.map(|t| from_json(what, &t)).transpose()
}

/// A nullable version column.
pub fn version(
    what: &'static str,
    text: Option<String>,
) -> Result<Option<semver::Version>, StoreError> {
    text.map(|t| {
        t.parse().map_err(|e: semver::Error| StoreError::Corrupt {
            what,
            detail: e.to_string(),
        })
    })
    .transpose()
}

/// A version column that must be set.
pub fn required_version(
    what: &'static str,
    text: Option<String>,
) -> Result<semver::Version, StoreError> {
    version(what, text)?.ok_or_else(|| StoreError::Corrupt {
        what,
        detail: "null".into(),
    })
}

/// A report status column.
pub fn status(what: &'static str, text: &str) -> Result<ReportStatus, StoreError> {
    ReportStatus::parse(text).ok_or_else(|| StoreError::Corrupt {
        what,
        detail: format!("unknown status {text:?}"),
    })
}

/// The rollout state column.
pub fn rollout_state(text: &str) -> Result<RolloutState, StoreError> {
    RolloutState::parse(text).ok_or_else(|| StoreError::Corrupt {
        what: "rollouts.state",
        detail: format!("unknown state {text:?}"),
    })
}

/// The token hash column (64 hex digits).
pub fn hash_from_hex(text: &str) -> Result<[u8; 32], StoreError> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(text, &mut out).map_err(|e| StoreError::Corrupt {
        what: "devices.token_hash",
        detail: e.to_string(),
    })?;
    Ok(out)
}

/// A stored progress percentage (clamped: the column is a plain integer).
pub fn percent(value: Option<i64>) -> Option<u8> {
    value.map(|v| v.clamp(0, 100) as u8)
}

/// An admission state column.
pub fn admission(text: &str) -> Result<ota_protocol::admin::Admission, StoreError> {
    ota_protocol::admin::Admission::parse(text).ok_or_else(|| StoreError::Corrupt {
        what: "device_identities.admission",
        detail: format!("unknown admission state {text:?}"),
    })
}

/// An alert's kind, target and severity.
pub type AlertColumns = (
    ota_protocol::alerts::AlertKind,
    ota_protocol::alerts::AlertTarget,
    ota_protocol::alerts::Severity,
);

/// An alert's kind, target and severity columns.
pub fn alert_columns(kind: &str, target: &str, severity: &str) -> Result<AlertColumns, StoreError> {
    use ota_protocol::alerts::{AlertKind, AlertTarget, Severity};
    let bad = |what, value: &str| StoreError::Corrupt {
        what,
        detail: format!("unknown value '{value}'"),
    };
    Ok((
        AlertKind::parse(kind).ok_or_else(|| bad("alerts.kind", kind))?,
        AlertTarget::parse(target).ok_or_else(|| bad("alerts.target", target))?,
        Severity::parse(severity).ok_or_else(|| bad("alerts.severity", severity))?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn token_hashes_round_trip(bytes in proptest::array::uniform32(any::<u8>())) {
            prop_assert_eq!(hash_from_hex(&hex::encode(bytes)).unwrap(), bytes);
        }

        #[test]
        fn percentages_stay_in_range(v in any::<i64>()) {
            prop_assert!(percent(Some(v)).unwrap() <= 100);
        }
    }

    #[test]
    fn corrupt_values_name_their_column() {
        let e = from_json::<Vec<u8>>("devices.tags", "{").unwrap_err();
        assert!(e.to_string().contains("devices.tags"), "{e}");
        assert!(required_version("bundles.version", None).is_err());
        assert!(rollout_state("sideways")
            .unwrap_err()
            .to_string()
            .contains("sideways"));
        assert!(hash_from_hex("zz").is_err());
    }
}
