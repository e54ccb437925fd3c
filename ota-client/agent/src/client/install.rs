//! `install`: verify, plan, stream into the standby slot, record, arm a trial boot (or switch live
//! classes, or, stage-only, arm nothing), each step persisted before the next.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};

use ota_bundle_format::{BundleError, BundleReader, Manifest, UnverifiedBundle};
use ota_client_core::machine::Context;
use ota_client_core::{
    plan_install, step, ClassFacts, ConfigFacts, DeviceFacts, Event, ImageFacts, LiveTrial,
    ManifestFacts, PendingTrial, PlannedWrite, Slot, StagedBundle, WriteTarget,
};

use super::{chunked, Client, ClientError, InstallOptions, InstallReport, Progress, Session};
use crate::command::run_health_checks;
use crate::slotio::{self, ImageWriter, SlotWriter};
use crate::source::{self, BundleSource, ReadFailure};
use crate::store::STATE_SPACE_NEEDED;

/// Counts bytes for the progress display on their way into the slot.
struct ProgressWriter<'a> {
    inner: &'a mut dyn SlotWriter,
    progress: &'a mut dyn Progress,
}

impl Write for ProgressWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.progress.bytes_written(n as u64);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl Client {
    /// Installs a bundle: verify, plan, stream into the standby slot, record, then arm a
    /// trial boot (or switch live classes; with `stage_only`, record it as staged and stop).
    /// On failure the booted and primary slots and the armed state are untouched, and the
    /// failure is recorded for the report.
    pub fn install(
        &mut self,
        source: &BundleSource,
        options: &InstallOptions,
        progress: &mut dyn Progress,
    ) -> Result<InstallReport, ClientError> {
        let _lock = self.data.lock()?;
        let mut s = self.session()?;
        let result = self.install_locked(&mut s, source, options, progress);
        self.record_failure(&mut s, &result);
        result
    }

    /// Records a failed install or activation for the report (best effort: the failure itself
    /// is what the caller reports). A live trial that failed recorded its own outcome.
    pub(super) fn record_failure<T>(&mut self, s: &mut Session, result: &Result<T, ClientError>) {
        if let Err(e) = result {
            if !self.dead && !matches!(e, ClientError::LiveFailed(_)) {
                let (version, bundle_hash) = s
                    .bundle
                    .clone()
                    .map_or((None, None), |(v, h)| (Some(v), Some(h)));
                let failed = Event::InstallFailed {
                    reason: e.to_string(),
                    version,
                    bundle_hash,
                };
                if let Ok(t) = self.transition(s, failed) {
                    let _ = self.apply(s, t, "install-failed");
                }
            }
        }
    }

    fn install_locked(
        &mut self,
        s: &mut Session,
        source: &BundleSource,
        options: &InstallOptions,
        progress: &mut dyn Progress,
    ) -> Result<InstallReport, ClientError> {
        progress.phase(&format!("opening {source}"));
        let before = self.trust_root()?.version;
        // A chunked bundle from a file or a server answering ranges goes through the range engine; anything
        // else streams as always. A URL is streamed first, so a full bundle costs exactly today's requests,
        // unless the request asks for ranges first (the daemon) or the download journal says it continues a
        // chunked bundle from that URL.
        // Whichever way it is read, the head's carried trust chain is walked before its signatures are checked
        // (`Client::bundle_trust`).
        let ranged = match source {
            BundleSource::File(path) => chunked::ranged::open_file(path, self)?,
            _ => chunked::ranged::open_url_by_ranges(source, self, options.cancel.clone())?,
        };
        let mut body = match ranged {
            Some(r) => Body::Ranged(Box::new(r)),
            None => {
                let streamed = self.open_stream(source, options)?;
                let reader = &streamed.reader;
                match chunked::ranged::switch_to_ranges(
                    source,
                    self,
                    options.cancel.clone(),
                    reader.manifest(),
                    &reader.manifest_digest(),
                )? {
                    Some(r) => Body::Ranged(Box::new(r)),
                    None => Body::Stream(Box::new(streamed)),
                }
            }
        };
        let (manifest, hash) = match &body {
            Body::Stream(b) => (b.reader.manifest().clone(), b.reader.manifest_digest()),
            Body::Ranged(r) => (r.head.manifest.clone(), r.head.bundle_id.clone()),
        };
        s.bundle = Some((manifest.version.clone(), hash.clone()));
        let after = self.trust_root()?.version;
        if after != before {
            progress.phase(&format!(
                "trust root updated from version {before} to {after} by the chain the bundle carries"
            ));
        }
        progress.phase(&format!(
            "bundle {} ({}) is signed by the trusted keys",
            manifest.version,
            &hash[..12]
        ));

        let facts = manifest_facts(&manifest, &hash);
        let used: Vec<&str> = facts.images.iter().map(|i| i.slot_class.as_str()).collect();
        let config_facts = self.config_facts(&used)?;
        let device = self.device_facts(s)?;
        let plan = plan_install(
            &facts,
            &config_facts,
            &s.state,
            &device,
            core_options(options),
        )?;

        // The targets become unbootable (state Writing, OTA_TRIAL cleared if it names them)
        // before their first byte is written.
        let targets = plan
            .writes
            .iter()
            .map(|w| WriteTarget {
                class: w.class.clone(),
                slot: w.slot,
                live: w.live,
            })
            .collect();
        self.event(
            s,
            Event::WriteStarted {
                targets,
                version: plan.version.clone(),
                bundle_hash: hash.clone(),
            },
            "install:write-started",
        )?;

        // The progress of an interrupted write of another bundle is about to be overwritten.
        chunked::journal::discard_other(&self.journal_path(), &hash)?;

        for w in &plan.writes {
            progress.image_started(&w.image, &w.class, w.slot, w.size);
            match &mut body {
                Body::Stream(b) => self.write_streamed(w, b, progress)?,
                Body::Ranged(r) => {
                    self.write_ranged(s, w, r, progress)?;
                }
            }
            progress.image_finished();
            self.checkpoint(&format!("install:{}-synced", w.class))?;
        }
        if let Body::Stream(b) = body {
            b.reader.finish().map_err(|e| stream_error(&b.failure, e))?;
        }
        self.checkpoint("install:bundle-finished")?;

        // Record every written slot as verified in one atomic state write.
        let mut state_after = s.state.clone();
        for w in &plan.writes {
            let classes = self.boot_classes();
            let ctx = Context {
                env: s.env,
                booted: s.booted,
                boot_classes: &classes,
            };
            let t = step(
                &state_after,
                &ctx,
                Event::WriteVerified {
                    class: w.class.clone(),
                    slot: w.slot,
                    version: plan.version.clone(),
                    bundle_hash: hash.clone(),
                    security_floor: plan.security_floor.clone(),
                    bundle_classes: plan.bundle_classes.clone(),
                },
            )?;
            state_after = t.state;
        }
        self.save(s, state_after, "install:verified")?;
        // Verified and recorded: nothing left to resume.
        chunked::journal::remove(&self.journal_path())?;

        if options.stage_only {
            progress.phase("staged: written and verified, nothing armed");
            let staged = StagedBundle {
                version: plan.version.clone(),
                bundle_hash: hash.clone(),
                boot_slot: plan.boot_slot,
            };
            self.event(s, Event::Stage(staged), "stage")?;
            return Ok(InstallReport::Staged {
                version: plan.version,
                bundle_hash: hash,
                slot: plan.boot_slot,
            });
        }

        if let Some(slot) = plan.boot_slot {
            progress.phase(&format!(
                "arming slot {slot} for {} trial boots",
                plan.tries
            ));
            self.event(
                s,
                Event::ArmTrial(PendingTrial {
                    slot,
                    classes: plan.boot_classes.clone(),
                    armed_tries: plan.tries,
                    version: plan.version.clone(),
                    bundle_hash: hash.clone(),
                    live: plan.live.clone(),
                    security_floor: plan.security_floor.clone(),
                }),
                "install:arm",
            )?;
            if options.reboot {
                self.reboot()?;
            }
            return Ok(InstallReport::TrialArmed {
                version: plan.version,
                bundle_hash: hash,
                slot,
                tries: plan.tries,
                live_classes: plan.live.iter().map(|f| f.class.clone()).collect(),
                rebooting: options.reboot,
            });
        }

        progress.phase("switching live slots");
        let trial = LiveTrial {
            flips: plan.live.clone(),
            version: plan.version.clone(),
            bundle_hash: hash.clone(),
            security_floor: plan.security_floor.clone(),
        };
        self.live_trial(s, Event::LiveStarted(trial))?;
        Ok(InstallReport::LiveSwitched {
            version: plan.version,
            bundle_hash: hash,
            flips: plan.live,
        })
    }

    /// Opens `source` for today's streaming install and authenticates its head against the robot's root walked
    /// through the chain the head carries ([`Client::bundle_trust`]).
    fn open_stream(
        &self,
        source: &BundleSource,
        options: &InstallOptions,
    ) -> Result<Streamed, ClientError> {
        let opened = source::open(source, &self.config.http, options.cancel.clone())?;
        let failure = opened.failure;
        let head: UnverifiedBundle<Box<dyn Read + Send>> =
            UnverifiedBundle::read(opened.reader).map_err(|e| stream_error(&failure, e))?;
        let trust = self.bundle_trust(head.trust_chain())?;
        let reader = head.verify(&trust).map_err(|e| stream_error(&failure, e))?;
        Ok(Streamed { reader, failure })
    }

    /// Streams the next image of the bundle into its slot (the streaming path).
    fn write_streamed(
        &mut self,
        w: &PlannedWrite,
        b: &mut Streamed,
        progress: &mut dyn Progress,
    ) -> Result<(), ClientError> {
        let image = b
            .reader
            .next_image()
            .map_err(|e| stream_error(&b.failure, e))?
            .ok_or_else(|| {
                BundleError::Usage(format!("the bundle ended before image '{}'", w.image))
            })?;
        debug_assert_eq!(image.entry().name, w.image);
        let path = self.config.slots[&w.class].path(w.slot).to_path_buf();
        let slot_err = |detail: String| ClientError::Slot {
            class: w.class.clone(),
            slot: w.slot,
            path: path.display().to_string(),
            detail,
        };
        let file = ImageWriter::open_slot(&path)
            .map_err(|e| slot_err(format!("cannot open for writing: {e}")))?;
        let mut writer: Box<dyn SlotWriter> = Box::new(file);
        if let Some(wrap) = &self.hooks.wrap_writer {
            writer = wrap(writer);
        }
        let mut counting = ProgressWriter {
            inner: &mut *writer,
            progress: &mut *progress,
        };
        // Only a failed write is the slot's problem. Anything else (the download gave up
        // or was cancelled, a corrupt or modified payload) is the bundle's: the daemon
        // tells an outage (retried later) from a verdict (reported) by that error.
        let failure = b.failure.clone();
        image.copy_to(&mut counting).map_err(|e| match e {
            BundleError::WriteFailed { .. } => slot_err(e.to_string()),
            other => stream_error(&failure, other),
        })?;
        writer.sync().map_err(|e| slot_err(format!("syncing: {e}")))
    }

    /// What the planner needs of the robot now.
    pub(super) fn device_facts(&self, s: &Session) -> Result<DeviceFacts, ClientError> {
        Ok(DeviceFacts {
            booted: s.booted,
            env: s.env,
            live_active: self.live_active()?,
            state_dir_free: self.data.free_space()?,
        })
    }

    /// What the planner needs of the configuration: each class's slot sizes (measured only for
    /// the `used` classes, those the bundle writes), the tries to arm, the state directory's
    /// needs.
    pub(super) fn config_facts(&self, used: &[&str]) -> Result<ConfigFacts, ClientError> {
        let mut classes = BTreeMap::new();
        for (name, class) in &self.config.slots {
            let used = used.contains(&name.as_str());
            let size = |slot: Slot| -> Result<u64, ClientError> {
                if !used {
                    return Ok(0);
                }
                let path = class.path(slot);
                slotio::capacity(path, class.size).map_err(|e| ClientError::Slot {
                    class: name.clone(),
                    slot,
                    path: path.display().to_string(),
                    detail: format!("cannot determine its size: {e}"),
                })
            };
            classes.insert(
                name.clone(),
                ClassFacts {
                    live: class.is_live(),
                    size_a: size(Slot::A)?,
                    size_b: size(Slot::B)?,
                },
            );
        }
        Ok(ConfigFacts {
            compatible: self.config.compatible.clone(),
            classes,
            tries: self.config.bootloader.tries,
            state_space_needed: STATE_SPACE_NEEDED,
        })
    }

    /// Starts a live trial (`start`: [`Event::LiveStarted`] after writing,
    /// [`Event::ActivateLive`] for slots written before), switches the classes, runs the
    /// health checks, keeps or switches back.
    pub(super) fn live_trial(&mut self, s: &mut Session, start: Event) -> Result<(), ClientError> {
        let flips = match &start {
            Event::LiveStarted(t) | Event::ActivateLive(t) => t.flips.clone(),
            _ => Vec::new(),
        };
        self.event(s, start, "live:started")?;
        let health = self
            .switch_live(&flips, true, "live:forward")
            .map_err(|e| e.to_string())
            .and_then(|()| {
                self.checkpoint("live:restarted")
                    .map_err(|e| e.to_string())?;
                run_health_checks(&self.config.health_checks).map_err(|f| f.reason())
            });
        match health {
            Ok(()) => self.event(s, Event::LiveCommitted, "live:committed"),
            Err(_) if self.dead => Err(ClientError::PowerCut("live:trial".into())),
            Err(reason) => {
                self.switch_live(&flips, false, "live:back")?;
                self.event(
                    s,
                    Event::LiveFailed {
                        reason: reason.clone(),
                        interrupted: false,
                    },
                    "live:failed",
                )?;
                Err(ClientError::LiveFailed(reason))
            }
        }
    }
}

/// Where the bundle's bytes come from.
enum Body {
    /// Read front to back (today's path; any bundle).
    Stream(Box<Streamed>),
    /// Read by ranges (chunked bundles from a file or a server answering ranges).
    Ranged(Box<chunked::ranged::Ranged>),
}

/// A bundle being streamed.
struct Streamed {
    reader: BundleReader<Box<dyn Read + Send>>,
    failure: ReadFailure,
}

/// A bundle error after the download failed is the download's, of the kind it decided.
fn stream_error(failure: &ReadFailure, error: BundleError) -> ClientError {
    match failure.kind() {
        Some(kind) => ClientError::Download { error, kind },
        None => ClientError::Bundle(error),
    }
}

/// The planner's options: the floor binds both ways down.
pub(super) fn core_options(options: &InstallOptions) -> ota_client_core::InstallOptions {
    ota_client_core::InstallOptions {
        allow_downgrade: options.allow_downgrade,
        revert: options.revert,
    }
}

/// What the planner needs of the authenticated manifest.
fn manifest_facts(manifest: &Manifest, hash: &str) -> ManifestFacts {
    ManifestFacts {
        version: manifest.version.clone(),
        compatible: manifest.compatible.clone(),
        bundle_hash: hash.to_string(),
        security_floor: manifest.security_floor.clone(),
        images: manifest
            .images
            .iter()
            .map(|i| ImageFacts {
                name: i.name.clone(),
                slot_class: i.slot_class.clone(),
                size: i.size,
            })
            .collect(),
    }
}
