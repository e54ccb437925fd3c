//! `status` and the event queue a reporter drains.

use std::collections::BTreeMap;

use ota_client_core::{raise_floor, ClientState, ReportEvent, Slot, SlotState};

use super::{Client, ClientError, SlotStatus, Status, TrialStatus};
use crate::{booted, live};

impl Client {
    /// The robot's update status. Never fails: problems are listed in `errors`.
    pub fn status(&self) -> Status {
        let mut errors = Vec::new();
        let booted = booted::detect(&self.config.booted_slot)
            .map_err(|e| errors.push(e.to_string()))
            .ok();
        let env = self
            .boot
            .read()
            .map_err(|e| errors.push(e.to_string()))
            .ok();
        let state = match self.data.load() {
            Ok(s) => s.unwrap_or_default(),
            Err(e) => {
                errors.push(e.to_string());
                ClientState::default()
            }
        };
        let mut state = state;
        let floor_file = self
            .data
            .load_floor()
            .map_err(|e| errors.push(e.to_string()))
            .ok()
            .flatten();
        state.security_floor = raise_floor(state.security_floor.as_ref(), floor_file.as_ref());
        if let (Some(b), Some(e)) = (booted, env) {
            if b == e.primary && e.armed_trial().is_none() {
                let live_active = if state.live_trial.is_none() {
                    self.live_active().unwrap_or_default()
                } else {
                    BTreeMap::new()
                };
                state.adopt_running(&self.boot_classes(), b, &live_active);
            }
        }
        let trust_version = self
            .trust_root()
            .map_err(|e| errors.push(e.to_string()))
            .ok()
            .map(|r| r.version);
        // "trying": armed for the next boot, or booted on trial right now.
        let trying = env.and_then(|e| {
            e.armed_trial()
                .or(booted.filter(|b| e.trial == Some(*b) && e.primary != *b))
        });
        let mut slots = Vec::new();
        for (name, class) in &self.config.slots {
            let live_active = if class.is_live() {
                live::active(class).ok()
            } else {
                None
            };
            for slot in Slot::ALL {
                let rec = state.record(name, slot);
                let is_trying =
                    !class.is_live() && trying == Some(slot) && rec.state == SlotState::Installed;
                slots.push(SlotStatus {
                    class: name.clone(),
                    slot,
                    device: class.path(slot).display().to_string(),
                    state: if is_trying {
                        "trying".into()
                    } else {
                        rec.state.to_string()
                    },
                    version: rec.version,
                    bundle_hash: rec.bundle_hash,
                    note: rec.note,
                    active: if class.is_live() {
                        live_active == Some(slot)
                    } else {
                        booted == Some(slot)
                    },
                    live: class.is_live(),
                });
            }
        }
        Status {
            compatible: self.config.compatible.clone(),
            booted,
            primary: env.map(|e| e.primary),
            trial: env.and_then(|e| {
                e.trial.filter(|t| *t != e.primary).map(|slot| TrialStatus {
                    slot,
                    tries_left: e.tries,
                })
            }),
            errors,
            slots,
            pending_trial: state.pending_trial,
            live_trial: state.live_trial,
            last_install: state.last_install,
            unreported_events: state.events,
            staged: state.staged.map(|s| s.bundle_hash),
            security_floor: state.security_floor,
            trust_version,
        }
    }

    /// Removes and returns the unreported events (for a reporter that delivers them now).
    pub fn take_events(&mut self) -> Result<Vec<ReportEvent>, ClientError> {
        let last = self.status().unreported_events.last().map(|e| e.id);
        match last {
            Some(id) => self.ack_events(id),
            None => Ok(Vec::new()),
        }
    }

    /// Removes the events up to and including `up_to_id` once a server has accepted them,
    /// returning them.
    pub fn ack_events(&mut self, up_to_id: u64) -> Result<Vec<ReportEvent>, ClientError> {
        let _lock = self.data.lock()?;
        let Some(mut state) = self.data.load()? else {
            return Ok(Vec::new());
        };
        let (taken, kept): (Vec<_>, Vec<_>) =
            state.events.drain(..).partition(|e| e.id <= up_to_id);
        state.events = kept;
        if !taken.is_empty() {
            self.data.save(&state)?;
        }
        Ok(taken)
    }
}
