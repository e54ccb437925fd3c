//! The install planner: every check that can refuse an update runs here, before the first
//! byte is written to any slot (like rauc's `install_make_plans`).

use std::collections::{BTreeMap, BTreeSet};

use crate::slot::{check_floor, BelowFloor, BootEnv, ClientState, LiveFlip, Slot};

/// What the verified manifest says (only the facts the planner needs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestFacts {
    /// Release version.
    pub version: semver::Version,
    /// Product string.
    pub compatible: String,
    /// Bundle identity (SHA-256 of the signed manifest).
    pub bundle_hash: String,
    /// The bundle's signed security floor.
    pub security_floor: Option<semver::Version>,
    /// Images in bundle order.
    pub images: Vec<ImageFacts>,
}

/// One image of the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFacts {
    /// Image name.
    pub name: String,
    /// Slot class it goes to.
    pub slot_class: String,
    /// Uncompressed size.
    pub size: u64,
}

/// One configured slot class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClassFacts {
    /// Switched by a symlink without reboot (`active_link`) instead of by the bootloader.
    pub live: bool,
    /// Capacity of slot A in bytes.
    pub size_a: u64,
    /// Capacity of slot B in bytes.
    pub size_b: u64,
}

impl ClassFacts {
    /// Capacity of `slot`.
    pub fn size(&self, slot: Slot) -> u64 {
        match slot {
            Slot::A => self.size_a,
            Slot::B => self.size_b,
        }
    }
}

/// What the configuration says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigFacts {
    /// This robot's product string.
    pub compatible: String,
    /// Configured slot classes.
    pub classes: BTreeMap<String, ClassFacts>,
    /// Trial boots to arm.
    pub tries: u8,
    /// Bytes the state directory needs free for the client's records.
    pub state_space_needed: u64,
}

impl ConfigFacts {
    /// The boot-coupled classes, in name order.
    pub fn boot_classes(&self) -> Vec<String> {
        self.classes
            .iter()
            .filter(|(_, c)| !c.live)
            .map(|(n, _)| n.clone())
            .collect()
    }
}

/// What the robot looks like right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceFacts {
    /// The slot the running system booted from.
    pub booted: Slot,
    /// The boot environment.
    pub env: BootEnv,
    /// The active slot of each live class (from its symlink).
    pub live_active: BTreeMap<String, Slot>,
    /// Free bytes in the state directory.
    pub state_dir_free: u64,
}

/// Operator (or rollout) choices. Neither ever goes below the robot's security floor.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InstallOptions {
    /// Accept a version lower than the installed one (the operator's manual override).
    pub allow_downgrade: bool,
    /// The server's rollout is a revert: a lower version is expected.
    pub revert: bool,
}

/// One image write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedWrite {
    /// Index of the image in the manifest.
    pub index: usize,
    /// Image name.
    pub image: String,
    /// Slot class.
    pub class: String,
    /// Target slot (always the standby slot of its class).
    pub slot: Slot,
    /// Image size.
    pub size: u64,
    /// Whether the class is live.
    pub live: bool,
}

/// What an install will do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallPlan {
    /// Release version.
    pub version: semver::Version,
    /// Bundle identity.
    pub bundle_hash: String,
    /// The bundle's security floor (raised into the robot's at commit).
    pub security_floor: Option<semver::Version>,
    /// Every slot class the bundle writes, recorded with each slot.
    pub bundle_classes: Vec<String>,
    /// The boot slot to try, if the bundle has boot-coupled images.
    pub boot_slot: Option<Slot>,
    /// The boot-coupled classes written.
    pub boot_classes: Vec<String>,
    /// The writes, in bundle order.
    pub writes: Vec<PlannedWrite>,
    /// Live classes to switch (at once for a live-only bundle, at commit otherwise).
    pub live: Vec<LiveFlip>,
    /// Trial boots to arm.
    pub tries: u8,
}

/// Why an install is refused before anything is written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The bundle is for another product.
    #[error(
        "bundle is for \"{bundle}\" but this robot is \"{robot}\": refusing an incompatible bundle"
    )]
    Incompatible {
        /// The bundle's compatible string.
        bundle: String,
        /// The robot's.
        robot: String,
    },
    /// The bundle has an image for a class this robot does not have.
    #[error("bundle image '{image}' is for slot class '{class}', which is not configured on this robot ([slots.{class}] missing)")]
    UnknownClass {
        /// Image name.
        image: String,
        /// Its class.
        class: String,
    },
    /// Two images target the same class.
    #[error("bundle has more than one image for slot class '{0}'")]
    DuplicateClass(String),
    /// A boot-coupled class would keep stale content in the trial slot.
    #[error("bundle updates the boot slot but has no image for boot-coupled slot class '{0}': the trial slot would mix versions")]
    MissingBootClass(String),
    /// An image does not fit.
    #[error("image '{image}' is {size} bytes but slot {class}/{slot} holds only {capacity} bytes")]
    TooLarge {
        /// Image name.
        image: String,
        /// Slot class.
        class: String,
        /// Target slot.
        slot: Slot,
        /// Image size.
        size: u64,
        /// Slot capacity.
        capacity: u64,
    },
    /// Below the robot's security floor: never, whatever the options.
    #[error(transparent)]
    BelowFloor(#[from] BelowFloor),
    /// Lower than what runs.
    #[error("version {new} is lower than the installed {current}: refusing a downgrade (use --allow-downgrade)")]
    Downgrade {
        /// Bundle version.
        new: semver::Version,
        /// Running version.
        current: semver::Version,
    },
    /// Equal to what runs.
    #[error("version {0} is already installed")]
    AlreadyInstalled(semver::Version),
    /// A trial is pending.
    #[error(
        "a trial boot of slot {0} is pending: reboot and let it be confirmed or rolled back first"
    )]
    TrialPending(Slot),
    /// A live trial is in progress (or was interrupted and not yet cleaned up).
    #[error("a live update trial is in progress: run `ota-client confirm` to finish it first")]
    LiveTrialPending,
    /// The running slot is not the committed one.
    #[error("the robot runs slot {booted} but the committed slot is {primary}: confirm or reboot before installing")]
    NotOnPrimary {
        /// The booted slot.
        booted: Slot,
        /// The primary slot.
        primary: Slot,
    },
    /// No room for the client's records.
    #[error("state directory has {free} bytes free but needs {needed}: free some space")]
    NoSpaceForState {
        /// Free bytes.
        free: u64,
        /// Needed bytes.
        needed: u64,
    },
}

/// Plans an install, or refuses it. Pure: the caller has already verified the manifest's
/// signatures and measured the device.
pub fn plan_install(
    manifest: &ManifestFacts,
    config: &ConfigFacts,
    state: &ClientState,
    device: &DeviceFacts,
    options: InstallOptions,
) -> Result<InstallPlan, Refusal> {
    if manifest.compatible != config.compatible {
        return Err(Refusal::Incompatible {
            bundle: manifest.compatible.clone(),
            robot: config.compatible.clone(),
        });
    }
    check_floor(&manifest.version, state.security_floor.as_ref())?;
    let mut seen = BTreeSet::new();
    for image in &manifest.images {
        if !config.classes.contains_key(&image.slot_class) {
            return Err(Refusal::UnknownClass {
                image: image.name.clone(),
                class: image.slot_class.clone(),
            });
        }
        if !seen.insert(image.slot_class.clone()) {
            return Err(Refusal::DuplicateClass(image.slot_class.clone()));
        }
    }
    let boot_classes = config.boot_classes();
    let touches_boot = boot_classes.iter().any(|c| seen.contains(c));
    if touches_boot {
        if let Some(missing) = boot_classes.iter().find(|c| !seen.contains(*c)) {
            return Err(Refusal::MissingBootClass(missing.clone()));
        }
    }

    settled(state, device)?;

    let active = |class: &str, live: bool| -> Slot {
        if live {
            device.live_active.get(class).copied().unwrap_or(Slot::A)
        } else {
            device.booted
        }
    };
    let mut writes = Vec::new();
    let mut live = Vec::new();
    let mut currents = Vec::new();
    for (index, image) in manifest.images.iter().enumerate() {
        let class = &config.classes[&image.slot_class];
        let from = active(&image.slot_class, class.live);
        let slot = from.other();
        let capacity = class.size(slot);
        if image.size > capacity {
            return Err(Refusal::TooLarge {
                image: image.name.clone(),
                class: image.slot_class.clone(),
                slot,
                size: image.size,
                capacity,
            });
        }
        currents.push(state.record(&image.slot_class, from).version);
        if class.live {
            live.push(LiveFlip {
                class: image.slot_class.clone(),
                from,
                to: slot,
            });
        }
        writes.push(PlannedWrite {
            index,
            image: image.name.clone(),
            class: image.slot_class.clone(),
            slot,
            size: image.size,
            live: class.live,
        });
    }

    check_version(&manifest.version, &currents, options)?;
    if device.state_dir_free < config.state_space_needed {
        return Err(Refusal::NoSpaceForState {
            free: device.state_dir_free,
            needed: config.state_space_needed,
        });
    }

    Ok(InstallPlan {
        version: manifest.version.clone(),
        bundle_hash: manifest.bundle_hash.clone(),
        security_floor: manifest.security_floor.clone(),
        bundle_classes: seen.into_iter().collect(),
        boot_slot: touches_boot.then(|| device.booted.other()),
        boot_classes: if touches_boot {
            boot_classes
        } else {
            Vec::new()
        },
        writes,
        live,
        tries: config.tries,
    })
}

/// The robot must run its committed slot with nothing pending before anything is written or
/// armed.
pub(crate) fn settled(state: &ClientState, device: &DeviceFacts) -> Result<(), Refusal> {
    if let Some(t) = &state.pending_trial {
        return Err(Refusal::TrialPending(t.slot));
    }
    if let Some(t) = device.env.armed_trial() {
        return Err(Refusal::TrialPending(t));
    }
    if state.live_trial.is_some() {
        return Err(Refusal::LiveTrialPending);
    }
    if device.booted != device.env.primary {
        return Err(Refusal::NotOnPrimary {
            booted: device.booted,
            primary: device.env.primary,
        });
    }
    Ok(())
}

/// Checks a version against the versions it replaces (`currents`, one per written class):
/// lower only when asked (a revert or the operator's override), the same never. The floor is
/// checked separately, before anything else.
pub(crate) fn check_version(
    version: &semver::Version,
    currents: &[Option<semver::Version>],
    options: InstallOptions,
) -> Result<(), Refusal> {
    if !options.allow_downgrade && !options.revert {
        if let Some(current) = currents.iter().flatten().filter(|v| *v > version).max() {
            return Err(Refusal::Downgrade {
                new: version.clone(),
                current: current.clone(),
            });
        }
    }
    if !currents.is_empty() && currents.iter().all(|v| v.as_ref() == Some(version)) {
        return Err(Refusal::AlreadyInstalled(version.clone()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slot::{PendingTrial, SlotState};

    fn v(s: &str) -> semver::Version {
        s.parse().unwrap()
    }

    fn config() -> ConfigFacts {
        let mut classes = BTreeMap::new();
        classes.insert(
            "rootfs".into(),
            ClassFacts {
                live: false,
                size_a: 1000,
                size_b: 1000,
            },
        );
        classes.insert(
            "model".into(),
            ClassFacts {
                live: true,
                size_a: 100,
                size_b: 50,
            },
        );
        ConfigFacts {
            compatible: "robot".into(),
            classes,
            tries: 3,
            state_space_needed: 4096,
        }
    }

    fn manifest(version: &str, images: &[(&str, u64)]) -> ManifestFacts {
        ManifestFacts {
            version: v(version),
            compatible: "robot".into(),
            bundle_hash: "h".repeat(64),
            security_floor: None,
            images: images
                .iter()
                .map(|(c, s)| ImageFacts {
                    name: format!("{c}.img"),
                    slot_class: c.to_string(),
                    size: *s,
                })
                .collect(),
        }
    }

    fn device(booted: Slot) -> DeviceFacts {
        DeviceFacts {
            booted,
            env: BootEnv {
                primary: booted,
                trial: None,
                tries: 0,
            },
            live_active: BTreeMap::new(),
            state_dir_free: 1 << 20,
        }
    }

    fn running(version: &str) -> ClientState {
        let mut s = ClientState::default();
        let r = s.record_mut("rootfs", Slot::A);
        r.state = SlotState::Good;
        r.version = Some(v(version));
        s
    }

    fn plan(m: &ManifestFacts, s: &ClientState, d: &DeviceFacts) -> Result<InstallPlan, Refusal> {
        plan_install(m, &config(), s, d, InstallOptions::default())
    }

    #[test]
    fn boot_update_targets_standby() {
        let p = plan(
            &manifest("2.0.0", &[("rootfs", 1000)]),
            &running("1.0.0"),
            &device(Slot::A),
        )
        .unwrap();
        assert_eq!(p.boot_slot, Some(Slot::B));
        assert_eq!(p.writes[0].slot, Slot::B);
        assert_eq!(p.boot_classes, vec!["rootfs".to_string()]);
        assert!(p.live.is_empty());
        let p = plan(
            &manifest("2.0.0", &[("rootfs", 10)]),
            &ClientState::default(),
            &device(Slot::B),
        )
        .unwrap();
        assert_eq!(p.boot_slot, Some(Slot::A));
    }

    #[test]
    fn live_only_update_targets_inactive_live_slot() {
        let mut d = device(Slot::A);
        d.live_active.insert("model".into(), Slot::B);
        let p = plan(&manifest("2.0.0", &[("model", 100)]), &running("1.0.0"), &d).unwrap();
        assert_eq!(p.boot_slot, None);
        assert_eq!(p.writes[0].slot, Slot::A);
        assert_eq!(
            p.live,
            vec![LiveFlip {
                class: "model".into(),
                from: Slot::B,
                to: Slot::A
            }]
        );
    }

    #[test]
    fn refusals() {
        let s = running("1.0.0");
        let d = device(Slot::A);
        let mut m = manifest("2.0.0", &[("rootfs", 10)]);
        m.compatible = "other".into();
        assert!(matches!(
            plan(&m, &s, &d),
            Err(Refusal::Incompatible { .. })
        ));
        assert!(matches!(
            plan(&manifest("2.0.0", &[("kernel", 1)]), &s, &d),
            Err(Refusal::UnknownClass { .. })
        ));
        assert!(matches!(
            plan(&manifest("2.0.0", &[("rootfs", 1), ("rootfs", 1)]), &s, &d),
            Err(Refusal::DuplicateClass(_))
        ));
        assert!(matches!(
            plan(&manifest("2.0.0", &[("rootfs", 1001)]), &s, &d),
            Err(Refusal::TooLarge { capacity: 1000, .. })
        ));
        // model slot B (the standby when A is active) holds only 50 bytes
        assert!(matches!(
            plan(&manifest("2.0.0", &[("model", 51)]), &s, &d),
            Err(Refusal::TooLarge { slot: Slot::B, .. })
        ));
        assert_eq!(
            plan(&manifest("0.9.0", &[("rootfs", 10)]), &s, &d),
            Err(Refusal::Downgrade {
                new: v("0.9.0"),
                current: v("1.0.0")
            })
        );
        assert_eq!(
            plan(&manifest("1.0.0", &[("rootfs", 10)]), &s, &d),
            Err(Refusal::AlreadyInstalled(v("1.0.0")))
        );
        let mut small = d.clone();
        small.state_dir_free = 100;
        assert!(matches!(
            plan(&manifest("2.0.0", &[("rootfs", 10)]), &s, &small),
            Err(Refusal::NoSpaceForState { .. })
        ));
    }

    #[test]
    fn downgrade_allowed_on_request_but_equal_never() {
        let s = running("1.0.0");
        let d = device(Slot::A);
        let opts = InstallOptions {
            allow_downgrade: true,
            ..InstallOptions::default()
        };
        assert!(plan_install(
            &manifest("0.9.0", &[("rootfs", 10)]),
            &config(),
            &s,
            &d,
            opts
        )
        .is_ok());
        assert!(plan_install(
            &manifest("1.0.0", &[("rootfs", 10)]),
            &config(),
            &s,
            &d,
            opts
        )
        .is_err());
    }

    #[test]
    fn revert_goes_down_to_the_floor_and_never_below() {
        let mut s = running("3.0.0");
        s.security_floor = Some(v("2.0.0"));
        let d = device(Slot::A);
        let revert = InstallOptions {
            revert: true,
            ..InstallOptions::default()
        };
        let manual = InstallOptions {
            allow_downgrade: true,
            ..InstallOptions::default()
        };
        for opts in [revert, manual] {
            let m = manifest("2.0.0", &[("rootfs", 10)]);
            assert!(plan_install(&m, &config(), &s, &d, opts).is_ok());
            let m = manifest("1.9.9", &[("rootfs", 10)]);
            let err = plan_install(&m, &config(), &s, &d, opts).unwrap_err();
            assert_eq!(
                err.to_string(),
                "version 1.9.9 is below this robot's security floor 2.0.0: refusing it, whatever the server says"
            );
        }
        // without either option a lower version is a downgrade, as before
        assert!(matches!(
            plan(&manifest("2.5.0", &[("rootfs", 10)]), &s, &d),
            Err(Refusal::Downgrade { .. })
        ));
        // an upgrade is checked against the floor too (an unknown running version)
        let fresh = ClientState {
            security_floor: Some(v("2.0.0")),
            ..ClientState::default()
        };
        assert!(matches!(
            plan(&manifest("1.0.0", &[("rootfs", 10)]), &fresh, &d),
            Err(Refusal::BelowFloor(_))
        ));
    }

    #[test]
    fn unknown_running_version_accepts_any() {
        assert!(plan(
            &manifest("0.0.1", &[("rootfs", 10)]),
            &ClientState::default(),
            &device(Slot::A)
        )
        .is_ok());
    }

    #[test]
    fn refuses_while_trial_pending_or_off_primary() {
        let s = running("1.0.0");
        let m = manifest("2.0.0", &[("rootfs", 10)]);
        let mut d = device(Slot::A);
        d.env.trial = Some(Slot::B);
        d.env.tries = 2;
        assert_eq!(plan(&m, &s, &d), Err(Refusal::TrialPending(Slot::B)));
        // a used-up trial (tries 0) is not pending in the env, but a recorded one is
        d.env.tries = 0;
        assert!(plan(&m, &s, &d).is_ok());
        let mut s2 = s.clone();
        s2.pending_trial = Some(PendingTrial {
            slot: Slot::B,
            classes: vec!["rootfs".into()],
            armed_tries: 3,
            version: v("2.0.0"),
            bundle_hash: "x".into(),
            live: vec![],
            security_floor: None,
        });
        assert_eq!(
            plan(&m, &s2, &device(Slot::A)),
            Err(Refusal::TrialPending(Slot::B))
        );
        let mut d = device(Slot::B);
        d.env.primary = Slot::A;
        assert_eq!(
            plan(&m, &s, &d),
            Err(Refusal::NotOnPrimary {
                booted: Slot::B,
                primary: Slot::A
            })
        );
    }

    #[test]
    fn mixed_bundle_requires_every_boot_class() {
        let mut c = config();
        c.classes.insert(
            "kernel".into(),
            ClassFacts {
                live: false,
                size_a: 10,
                size_b: 10,
            },
        );
        let r = plan_install(
            &manifest("2.0.0", &[("rootfs", 10)]),
            &c,
            &ClientState::default(),
            &device(Slot::A),
            InstallOptions::default(),
        );
        assert_eq!(r, Err(Refusal::MissingBootClass("kernel".into())));
        let p = plan(
            &manifest("2.0.0", &[("rootfs", 10), ("model", 10)]),
            &ClientState::default(),
            &device(Slot::A),
        )
        .unwrap();
        assert_eq!(p.boot_slot, Some(Slot::B));
        assert_eq!(p.live.len(), 1);
    }
}
