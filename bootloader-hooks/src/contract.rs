//! The boot contract: three variables shared by the bootloader scripts and the OTA client,
//! and [`select_boot`], the single Rust statement of what the bootloader does at every boot.
//!
//! The shipped scripts (`grub/ota.cfg`, `u-boot/boot.cmd`) implement the same selection;
//! the test kit's script simulator (`ota_testkit::sim`) runs them and its table test checks
//! they agree with [`select_boot`].

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// The committed (known good) slot: `A` or `B`; anything else means `A`, so a factory
/// image whose environment was never written boots A and can take its first update.
pub const OTA_PRIMARY: &str = "OTA_PRIMARY";
/// The slot armed for trial boots: `A`, `B`, or empty/unset for none.
pub const OTA_TRIAL: &str = "OTA_TRIAL";
/// Trial boots left: one decimal digit `0`..`9`; anything else counts as `0`.
pub const OTA_TRIES: &str = "OTA_TRIES";
/// All contract variables, in the order the scripts load them.
pub const CONTRACT_VARS: [&str; 3] = [OTA_PRIMARY, OTA_TRIAL, OTA_TRIES];
/// The largest try count the one-digit encoding can hold.
pub const MAX_TRIES: u8 = 9;
/// The kernel command line parameter naming the booted slot (`ota.slot=A`).
pub const CMDLINE_PARAM: &str = "ota.slot";

/// One of the two A/B slots.
///
/// With the `serde` feature it serializes as its variant name, `"A"` or `"B"` (the same text
/// as [`Slot::as_str`]); deserializing is as strict as [`Slot::from_env_value`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Slot {
    /// Slot A (the factory slot).
    A,
    /// Slot B.
    B,
}

impl Slot {
    /// Both slots, A first.
    pub const ALL: [Slot; 2] = [Slot::A, Slot::B];

    /// The other slot of the pair.
    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }

    /// `"A"` or `"B"`, exactly as stored in the environment.
    pub fn as_str(self) -> &'static str {
        match self {
            Slot::A => "A",
            Slot::B => "B",
        }
    }

    /// Parses an environment value strictly (`"A"` or `"B"`, nothing else), as the scripts do.
    pub fn from_env_value(value: &str) -> Option<Slot> {
        match value {
            "A" => Some(Slot::A),
            "B" => Some(Slot::B),
            _ => None,
        }
    }

    /// The slot named by `ota.slot=` in a kernel command line (e.g. `/proc/cmdline`).
    pub fn from_cmdline(cmdline: &str) -> Option<Slot> {
        let prefix = format!("{CMDLINE_PARAM}=");
        cmdline
            .split_ascii_whitespace()
            .rev()
            .find_map(|arg| arg.strip_prefix(prefix.as_str()))
            .and_then(Slot::from_env_value)
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that is not exactly `A` or `B`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid slot {0:?}: expected \"A\" or \"B\"")]
pub struct ParseSlotError(pub String);

impl FromStr for Slot {
    type Err = ParseSlotError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Slot::from_env_value(s).ok_or_else(|| ParseSlotError(s.to_string()))
    }
}

/// The contract variables, normalised the way the bootloader reads them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootEnv {
    /// The committed slot.
    pub primary: Slot,
    /// The slot armed for trial boots, if any (may equal `primary`, which arms nothing).
    pub trial: Option<Slot>,
    /// Trial boots left, `0..=MAX_TRIES`.
    pub tries: u8,
}

impl Default for BootEnv {
    /// What a never-written environment means: primary A, no trial.
    fn default() -> Self {
        BootEnv {
            primary: Slot::A,
            trial: None,
            tries: 0,
        }
    }
}

/// Parses `OTA_TRIES`: exactly one decimal digit, anything else is 0 (one encoding only).
fn parse_tries(value: Option<&String>) -> u8 {
    match value.map(String::as_bytes) {
        Some([d @ b'0'..=b'9']) => d - b'0',
        _ => 0,
    }
}

impl BootEnv {
    /// Reads the contract variables with the bootloader's exact normalisation.
    pub fn from_vars(vars: &BTreeMap<String, String>) -> BootEnv {
        BootEnv {
            primary: vars
                .get(OTA_PRIMARY)
                .and_then(|v| Slot::from_env_value(v))
                .unwrap_or(Slot::A),
            trial: vars.get(OTA_TRIAL).and_then(|v| Slot::from_env_value(v)),
            tries: parse_tries(vars.get(OTA_TRIES)),
        }
    }

    /// Writes the three contract variables into `vars`, leaving every other variable as is.
    /// `tries` above [`MAX_TRIES`] is stored as `9` (the encoding has one digit).
    pub fn apply(&self, vars: &mut BTreeMap<String, String>) {
        vars.insert(OTA_PRIMARY.into(), self.primary.to_string());
        vars.insert(
            OTA_TRIAL.into(),
            self.trial.map(|s| s.to_string()).unwrap_or_default(),
        );
        vars.insert(OTA_TRIES.into(), self.tries.min(MAX_TRIES).to_string());
    }

    /// A copy of `vars` with the contract variables replaced by this state.
    pub fn applied_to(&self, vars: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        let mut out = vars.clone();
        self.apply(&mut out);
        out
    }

    /// The slot the bootloader will boot on trial at the next boot, if any:
    /// a trial slot other than the primary with tries left.
    pub fn armed_trial(&self) -> Option<Slot> {
        self.trial.filter(|t| *t != self.primary && self.tries > 0)
    }

    /// Arms `slot` for `tries` trial boots (the client's "install finished" step).
    pub fn arm_trial(self, slot: Slot, tries: u8) -> BootEnv {
        BootEnv {
            trial: Some(slot),
            tries: tries.min(MAX_TRIES),
            ..self
        }
    }

    /// Commits `booted` as the primary and clears the trial (the client's "confirm" step).
    pub fn commit(self, booted: Slot) -> BootEnv {
        BootEnv {
            primary: booted,
            trial: None,
            ..self
        }
    }

    /// Clears a pending trial without changing the primary (after a rollback was recorded).
    pub fn clear_trial(self) -> BootEnv {
        BootEnv {
            trial: None,
            ..self
        }
    }
}

/// What the bootloader does at one boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootDecision {
    /// The slot whose kernel is started (`ota.slot=<boot>`).
    pub boot: Slot,
    /// The entry tried in the same boot if `boot`'s kernel fails to load: the primary on a
    /// trial boot, none otherwise (never fall back to a slot that may never have been written).
    pub fallback: Option<Slot>,
    /// The environment saved before booting (all variables), or `None` if nothing is written.
    pub updated_vars: Option<BTreeMap<String, String>>,
}

/// The boot selection of the contract, exactly as the scripts implement it:
///
/// ```text
/// primary := OTA_PRIMARY if it is A or B, else A
/// if OTA_TRIAL is A or B and OTA_TRIAL != primary and OTA_TRIES is 1..9:
///     OTA_TRIES := OTA_TRIES - 1; save env   (count before booting)
///     boot OTA_TRIAL, fallback primary
/// else:
///     boot primary, env not written
/// ```
pub fn select_boot(vars: &BTreeMap<String, String>) -> BootDecision {
    let env = BootEnv::from_vars(vars);
    match env.armed_trial() {
        Some(trial) => {
            let mut updated = vars.clone();
            updated.insert(OTA_TRIES.into(), (env.tries - 1).to_string());
            BootDecision {
                boot: trial,
                fallback: Some(env.primary),
                updated_vars: Some(updated),
            }
        }
        None => BootDecision {
            boot: env.primary,
            fallback: None,
            updated_vars: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env_from_pairs as vars;

    #[test]
    fn slot_text_round_trip() {
        for s in Slot::ALL {
            assert_eq!(s.to_string().parse::<Slot>().unwrap(), s);
            assert_eq!(s.other().other(), s);
            assert_ne!(s.other(), s);
        }
        assert!("a".parse::<Slot>().is_err());
        assert!(" A".parse::<Slot>().is_err());
        assert!("".parse::<Slot>().is_err());
    }

    #[cfg(feature = "serde")]
    #[test]
    fn slot_serde_is_the_variant_name() {
        // Client state files store slots as "A"/"B": this form must never change.
        for (slot, json) in [(Slot::A, "\"A\""), (Slot::B, "\"B\"")] {
            assert_eq!(serde_json::to_string(&slot).unwrap(), json);
            assert_eq!(serde_json::from_str::<Slot>(json).unwrap(), slot);
        }
        assert_eq!(serde_json::from_str::<Slot>("\"A\"").unwrap(), Slot::A);
        for bad in ["\"a\"", "\"C\"", "\"\"", "0"] {
            assert!(serde_json::from_str::<Slot>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cmdline_slot() {
        assert_eq!(
            Slot::from_cmdline("root=/dev/sda2 ro ota.slot=B quiet"),
            Some(Slot::B)
        );
        assert_eq!(Slot::from_cmdline("root=/dev/sda2 ota.slot=C"), None);
        assert_eq!(Slot::from_cmdline("root=/dev/sda2"), None);
    }

    #[test]
    fn never_written_env_boots_a_without_writing() {
        let d = select_boot(&BTreeMap::new());
        assert_eq!(d.boot, Slot::A);
        assert_eq!(d.fallback, None);
        assert_eq!(d.updated_vars, None);
        assert_eq!(BootEnv::from_vars(&BTreeMap::new()), BootEnv::default());
    }

    #[test]
    fn tries_are_one_decimal_digit() {
        for (v, n) in [
            ("0", 0),
            ("7", 7),
            ("9", 9),
            ("10", 0),
            ("0x3", 0),
            (" 3", 0),
            ("a", 0),
            ("", 0),
        ] {
            assert_eq!(
                BootEnv::from_vars(&vars(&[(OTA_TRIES, v)])).tries,
                n,
                "{v:?}"
            );
        }
    }

    #[test]
    fn trial_counts_down_then_primary_forever() {
        let mut env = vars(&[("keep", "me"), (OTA_PRIMARY, "A")]);
        BootEnv::from_vars(&env)
            .arm_trial(Slot::B, 3)
            .apply(&mut env);
        for left in [2, 1, 0] {
            let d = select_boot(&env);
            assert_eq!((d.boot, d.fallback), (Slot::B, Some(Slot::A)));
            env = d.updated_vars.expect("trial boots save the env");
            assert_eq!(env[OTA_TRIES], left.to_string());
            assert_eq!(env["keep"], "me");
        }
        for _ in 0..5 {
            let d = select_boot(&env);
            assert_eq!((d.boot, d.fallback, d.updated_vars), (Slot::A, None, None));
        }
    }

    #[test]
    fn apply_preserves_foreign_and_commit_clears_trial() {
        let mut env = vars(&[("bootcmd", "run x"), (OTA_TRIES, "junk")]);
        let state = BootEnv::from_vars(&env).arm_trial(Slot::B, 12);
        assert_eq!(state.tries, 9);
        state.commit(Slot::B).apply(&mut env);
        assert_eq!(
            env,
            vars(&[
                ("bootcmd", "run x"),
                (OTA_PRIMARY, "B"),
                (OTA_TRIAL, ""),
                (OTA_TRIES, "9")
            ])
        );
        assert_eq!(BootEnv::from_vars(&env).armed_trial(), None);
    }

    #[test]
    fn trial_equal_to_primary_is_not_armed() {
        let env = vars(&[(OTA_PRIMARY, "B"), (OTA_TRIAL, "B"), (OTA_TRIES, "5")]);
        let d = select_boot(&env);
        assert_eq!((d.boot, d.fallback, d.updated_vars), (Slot::B, None, None));
    }
}
