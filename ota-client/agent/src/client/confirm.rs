//! `confirm` (run at every boot) and the operator's `mark-good` / `mark-bad`.

use ota_client_core::{decide_on_boot, BootOutcome, Event, Slot};

use super::{Client, ClientError, ConfirmReport, Session};
use crate::command::run_health_checks;

impl Client {
    /// Run at every boot (and at every start of a daemon): finishes or undoes whatever the
    /// last run left, commits a healthy trial boot, records rollbacks. Idempotent.
    pub fn confirm(&mut self) -> Result<ConfirmReport, ClientError> {
        let _lock = self.data.lock()?;
        let mut s = self.session()?;
        let mut report = ConfirmReport {
            booted: s.booted,
            actions: Vec::new(),
            rebooted: false,
        };
        if let Some(t) = s.state.live_trial.clone() {
            self.switch_live(&t.flips, false, "confirm:live-back")?;
            let reason = format!(
                "live update {} was interrupted (power cut or client restart) before it was confirmed; switched back",
                t.version
            );
            self.event(
                &mut s,
                Event::LiveFailed {
                    reason: reason.clone(),
                    interrupted: true,
                },
                "confirm:live-interrupted",
            )?;
            report.actions.push(reason);
        }
        let outcome = decide_on_boot(&s.env, s.booted, &s.state, &self.boot_classes());
        match outcome {
            BootOutcome::Settled => {
                if s.dirty {
                    let st = s.state.clone();
                    self.save(&mut s, st, "confirm:adopt")?;
                }
                report
                    .actions
                    .push(format!("slot {} is committed; nothing to do", s.booted));
            }
            BootOutcome::AwaitingReboot { slot } => {
                report.actions.push(format!(
                    "slot {slot} is armed for a trial boot; waiting for a reboot"
                ));
            }
            BootOutcome::TrialBooted { slot } => {
                match run_health_checks(&self.config.health_checks) {
                    Ok(()) => {
                        self.commit(&mut s, "confirm:commit")?;
                        report
                            .actions
                            .push(format!("health checks passed: committed slot {slot}"));
                    }
                    Err(f) => {
                        return Err(self.fail_trial(
                            &mut s,
                            slot,
                            f.reason(),
                            "confirm:trial-failed",
                        ))
                    }
                }
            }
            BootOutcome::AbortTrial { slot, reason } => {
                return Err(self.fail_trial(&mut s, slot, reason, "confirm:abort-trial"))
            }
            BootOutcome::RolledBack { slot, reason } => {
                self.event(
                    &mut s,
                    Event::RolledBack {
                        reason: reason.clone(),
                    },
                    "confirm:rolled-back",
                )?;
                report
                    .actions
                    .push(format!("slot {slot} was rolled back: {reason}"));
            }
            BootOutcome::FinishCommit { slot } => {
                self.commit(&mut s, "confirm:finish-commit")?;
                report
                    .actions
                    .push(format!("finished recording the commit of slot {slot}"));
            }
            BootOutcome::ArmInterrupted { slot } => {
                self.event(&mut s, Event::ArmInterrupted, "confirm:arm-interrupted")?;
                report.actions.push(format!(
                    "the trial of slot {slot} was never armed (interrupted install); install again"
                ));
            }
            BootOutcome::ClearStaleTrial { slot } => {
                self.event(&mut s, Event::ClearStaleTrial, "confirm:clear-stale")?;
                report
                    .actions
                    .push(format!("cleared a stale trial of slot {slot}"));
            }
            BootOutcome::AwaitingRebootToPrimary { booted, primary } => {
                report.actions.push(format!(
                    "slot {booted} failed its trial; rebooting into slot {primary}"
                ));
                self.reboot()?;
                report.rebooted = true;
            }
            BootOutcome::Inconsistent { reason } => return Err(ClientError::Inconsistent(reason)),
        }
        Ok(report)
    }

    /// Gives up the booted trial: records why and reboots into the committed slot. The error says why the
    /// trial failed, or why recording it or rebooting did.
    fn fail_trial(
        &mut self,
        s: &mut Session,
        slot: Slot,
        reason: String,
        label: &str,
    ) -> ClientError {
        let failed = Event::TrialFailed {
            reason: reason.clone(),
        };
        match self.event(s, failed, label).and_then(|()| self.reboot()) {
            Ok(()) => ClientError::TrialFailed { slot, reason },
            Err(e) => e,
        }
    }

    /// Commits the booted trial slot (or records a commit the environment already holds),
    /// then switches the live classes installed with it.
    fn commit(&mut self, s: &mut Session, label: &str) -> Result<(), ClientError> {
        let live = s
            .state
            .pending_trial
            .as_ref()
            .map(|p| p.live.clone())
            .unwrap_or_default();
        let event = if s.env.primary == s.booted {
            Event::FinishCommit
        } else {
            Event::Commit
        };
        let t = self.transition(s, event)?;
        if let Some(env) = t.env {
            if let Err(e) = self.write_env(s, env, label) {
                return Err(self.env_not_written(s, None, e));
            }
        }
        self.switch_live(&live, true, label)?;
        self.save(s, t.state, label)
    }

    // ---------------------------------------------------------------- mark

    /// Marks a slot good (the booted one by default). On a trial boot this commits it.
    pub fn mark_good(&mut self, slot: Option<Slot>) -> Result<String, ClientError> {
        let _lock = self.data.lock()?;
        let mut s = self.session()?;
        let slot = slot.unwrap_or(s.booted);
        if slot == s.booted && s.env.trial == Some(slot) && s.env.primary != slot {
            self.commit(&mut s, "mark-good:commit")?;
            return Ok(format!("committed slot {slot}"));
        }
        self.event(&mut s, Event::MarkGood { slot }, "mark-good")?;
        Ok(format!("marked slot {slot} good"))
    }

    /// Marks a slot bad (the booted one by default). For the running committed slot this
    /// switches the primary to the other slot, only if that one is known good.
    pub fn mark_bad(&mut self, slot: Option<Slot>) -> Result<String, ClientError> {
        let _lock = self.data.lock()?;
        let mut s = self.session()?;
        let slot = slot.unwrap_or(s.booted);
        let on_trial = slot == s.booted && s.env.trial == Some(slot) && s.env.primary != slot;
        let was_primary = slot == s.env.primary;
        self.event(&mut s, Event::MarkBad { slot }, "mark-bad")?;
        Ok(if on_trial {
            format!(
                "marked slot {slot} bad; reboot to return to slot {}",
                s.env.primary
            )
        } else if was_primary {
            format!(
                "marked slot {slot} bad; slot {} boots from the next reboot",
                s.env.primary
            )
        } else {
            format!("marked slot {slot} bad")
        })
    }
}
