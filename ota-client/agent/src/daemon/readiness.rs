//! The robot's readiness check (`[readiness]`): `command PHASE` with the offer in `OTA_*`
//! environment variables. Exit 0 within the timeout is a go; anything else is a "not now",
//! whose reason is the first line the command printed (or how it failed), so a check that
//! cannot run holds the update and says why instead of letting it through.

use ota_client_core::daemon::Readiness;
use ota_protocol::device::UpdateOffer;
use ota_protocol::fleet::WaitPhase;

use crate::command::{self, CommandResult};
use crate::config::ReadinessConfig;

/// Asks the readiness check about `phase` of `offer`; without a check, always go.
pub(super) fn check(
    config: Option<&ReadinessConfig>,
    phase: WaitPhase,
    offer: &UpdateOffer,
) -> Readiness {
    let Some(config) = config else {
        return Readiness::Go;
    };
    let mut argv = config.command.clone();
    argv.push(phase.as_str().to_string());
    verdict(&command::run_with_env(
        &argv,
        &environment(phase, offer),
        config.timeout,
    ))
}

/// The offer as the check sees it.
pub(super) fn environment(phase: WaitPhase, offer: &UpdateOffer) -> Vec<(String, String)> {
    [
        ("OTA_PHASE", phase.as_str().to_string()),
        ("OTA_VERSION", offer.version.to_string()),
        ("OTA_ROLLOUT_ID", offer.rollout_id.to_string()),
        ("OTA_BUNDLE_ID", offer.bundle_id.clone()),
        ("OTA_MANIFEST_DIGEST", offer.manifest_digest.clone()),
        ("OTA_SIZE", offer.size.to_string()),
        ("OTA_REVERT", offer.revert.to_string()),
        (
            "OTA_REQUIRE_CONFIRMATION",
            offer.require_confirmation.to_string(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// How the check's run reads as an answer.
pub(super) fn verdict(r: &CommandResult) -> Readiness {
    if r.success {
        Readiness::Go
    } else if !r.first_line.is_empty() {
        Readiness::Wait(r.first_line.chars().take(200).collect())
    } else {
        Readiness::Wait(format!("the readiness check said not now ({})", r.status))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn offer() -> UpdateOffer {
        UpdateOffer {
            rollout_id: 4,
            bundle_id: "b1".into(),
            version: "2.1.0".parse().unwrap(),
            compatible: "robot".into(),
            manifest_digest: "d1".into(),
            size: 10,
            download_url: "/x".into(),
            install_allowed: true,
            revert: true,
            require_confirmation: false,
            chunked: false,
        }
    }

    fn config(script: &str) -> ReadinessConfig {
        ReadinessConfig {
            command: vec!["sh".into(), "-c".into(), script.into(), "ready".into()],
            timeout: Duration::from_secs(10),
            phases: WaitPhase::ALL.to_vec(),
        }
    }

    #[test]
    fn exit_zero_is_go_else_the_first_line_says_why() {
        let o = offer();
        assert_eq!(check(None, WaitPhase::Reboot, &o), Readiness::Go);
        let go = config(
            "test \"$1\" = install && test \"$OTA_VERSION\" = 2.1.0 && test \"$OTA_REVERT\" = true",
        );
        assert_eq!(check(Some(&go), WaitPhase::Install, &o), Readiness::Go);
        assert_eq!(
            check(Some(&go), WaitPhase::Download, &o),
            Readiness::Wait("the readiness check said not now (exit status: 1)".into())
        );
        let busy = config(
            "echo \"on a mission ($OTA_PHASE of rollout $OTA_ROLLOUT_ID)\"; echo more; exit 3",
        );
        assert_eq!(
            check(Some(&busy), WaitPhase::Reboot, &o),
            Readiness::Wait("on a mission (reboot of rollout 4)".into())
        );
        let missing = ReadinessConfig {
            command: vec!["/nonexistent/robot-ready".into()],
            ..config("")
        };
        let Readiness::Wait(why) = check(Some(&missing), WaitPhase::Download, &o) else {
            panic!("a check that cannot run must hold the update");
        };
        assert!(
            why.contains("cannot start /nonexistent/robot-ready"),
            "{why}"
        );
    }

    #[test]
    fn a_hung_check_is_a_no() {
        let hung = ReadinessConfig {
            timeout: Duration::from_millis(200),
            ..config("sleep 30")
        };
        let Readiness::Wait(why) = check(Some(&hung), WaitPhase::Download, &offer()) else {
            panic!("a hung check must hold the update");
        };
        assert!(why.contains("timeout"), "{why}");
    }
}
