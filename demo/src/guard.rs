//! The demo's second story: release 1.2.0 brings a new perception model that passes every health check but
//! answers in about 96 ms where 1.1.0's took about 40. The operator groups the updated robots, rolls 1.2.0 out
//! to the group with a guard on `inference_latency_ms`; the guard halts the rollout after its first stage,
//! naming the rule and the robots, and the operator reverts the group to 1.1.0 (the robots switch back to the
//! slot that still holds it).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context};
use ota_protocol::admin::{CreateRolloutRequest, RolloutDetail, RolloutState};
use ota_protocol::client::ApiClient;
use ota_protocol::device::ReportStatus;
use ota_protocol::fleet::{DeviceLabels, GuardRule, GuardStat, StageRules, TargetFilter};
use ota_testkit::fleet::{booted_version, wait_rollout, Fleet};
use ota_testkit::release::Release;

use crate::RELEASE_VERSION;

/// The release whose model is slower.
pub const SLOW_VERSION: &str = "1.2.0";
/// What 1.2.0's model takes per inference, in ms (the others take 39 to 43).
pub const SLOW_MODEL_MS: f64 = 96.0;
/// The group the operator puts the updated robots in.
pub const GROUP: &str = "pick-line";

/// What the second story showed.
#[derive(Clone, Debug, Default)]
pub struct GuardStory {
    /// The rollout of 1.2.0 the guard halted.
    pub rollout_id: u64,
    /// Why it paused, as the server says it.
    pub pause_reason: String,
    /// The robots the breach named.
    pub named: Vec<String>,
    /// The robots the revert took back to 1.1.0.
    pub reverted: Vec<String>,
    /// Of those, the ones that switched slots without downloading anything.
    pub without_download: Vec<String>,
    /// Robots of the group that never got 1.2.0 (later stages, halted).
    pub spared: Vec<String>,
    /// The guard halted the rollout, and every robot of the group runs 1.1.0 again.
    pub as_expected: bool,
}

/// What the story needs from the first one.
pub(crate) struct Stage<'a> {
    pub admin: &'a ApiClient,
    pub fleet: &'a Fleet,
    pub release: &'a Release,
    /// The 1.1.0 bundle (the revert's target).
    pub release_bundle_id: &'a str,
    /// The robots on 1.1.0.
    pub updated: Vec<String>,
    pub timeout: Duration,
    pub say: &'a dyn Fn(&str),
}

fn statuses(admin: &ApiClient, robot: &str, rollout: u64) -> anyhow::Result<Vec<ReportStatus>> {
    Ok(admin
        .device(robot)?
        .reports
        .into_iter()
        .filter(|r| r.rollout_id == Some(rollout))
        .map(|r| r.status)
        .collect())
}

fn finished(d: &RolloutDetail) -> bool {
    d.devices
        .iter()
        .all(|m| ReportStatus::parse(&m.status).is_some_and(ReportStatus::is_terminal))
}

/// Runs the story and says what happens.
pub(crate) fn run(stage: &Stage) -> anyhow::Result<GuardStory> {
    let (admin, say) = (stage.admin, stage.say);
    say("");
    say(&format!(
        "story 2: release {SLOW_VERSION} brings a new perception model; it passes its health checks but is slower"
    ));
    for id in &stage.updated {
        admin.set_labels(
            id,
            &DeviceLabels {
                tags: BTreeMap::new(),
                group: Some(GROUP.into()),
            },
        )?;
    }
    say(&format!(
        "the operator puts the robots on {RELEASE_VERSION} in group {GROUP}: {}",
        stage.updated.join(", ")
    ));

    let first = &stage.fleet.robots[0].robot;
    let bundle = ota_testkit::robot::try_bundle_with(
        &stage.release.key,
        SLOW_VERSION,
        ota_testkit::robot::COMPATIBLE,
        &[
            ("rootfs", first.rootfs_image(SLOW_VERSION)),
            ("model", first.model_image(SLOW_VERSION)),
        ],
    )
    .context("cannot build the 1.2.0 bundle")?;
    let published = admin.publish_bytes(bundle)?;
    say(&format!(
        "published {SLOW_VERSION} as bundle {}",
        &published.bundle_id[..16]
    ));
    let guard = GuardRule {
        metric: "inference_latency_ms".into(),
        stat: GuardStat::P95,
        // The bound holds however few robots are left to compare with.
        max: Some(80.0),
        max_increase_percent: Some(20.0),
        min_robots: 1,
    };
    let rollout = admin.create_rollout(&CreateRolloutRequest {
        bundle_id: published.bundle_id.clone(),
        stages: Some(vec![50, 100]),
        failure_threshold: Some(0.25),
        name: Some(format!("{SLOW_VERSION} to {GROUP}")),
        filter: Some(TargetFilter {
            group: Some(GROUP.into()),
            ..Default::default()
        }),
        // Each stage soaks while the updated robots' telemetry comes in.
        rules: StageRules {
            soak_secs: 30,
            deadline_secs: 0,
        },
        guards: vec![guard],
        watch_secs: 60,
        ..Default::default()
    })?;
    let id = rollout.rollout_id;
    say(&format!(
        "rollout {id} created: group {GROUP}, stages 50% -> 100%, soak 30 s, guard: inference_latency_ms p95 of the updated robots at most 80 ms and at most 20% above the others'"
    ));
    let mut last = (rollout.state, rollout.current_stage);
    let halted = wait_rollout(admin, id, stage.timeout, |d| {
        let r = &d.rollout;
        if (r.state, r.current_stage) != last && r.state == RolloutState::Active {
            say(&format!("rollout {id} at stage {}", r.current_stage + 1));
        }
        last = (r.state, r.current_stage);
        matches!(r.state, RolloutState::Paused | RolloutState::Completed)
    })?;
    let r = &halted.rollout;
    let pause_reason = r.pause_reason.clone().unwrap_or_default();
    let named = r
        .breach
        .as_ref()
        .map(|b| b.robots.clone())
        .unwrap_or_default();
    if r.state != RolloutState::Paused || r.breach.is_none() {
        say(&format!(
            "rollout {id} was NOT halted by its guard: {} {pause_reason}",
            r.state.as_str()
        ));
    } else {
        say(&format!("rollout {id} HALTED by its guard: {pause_reason}"));
    }
    // Robots that were installing when the guard fired finish (paused means nothing new is offered).
    let halted = wait_rollout(admin, id, stage.timeout, |d| {
        d.devices.iter().all(|m| {
            m.status == "pending"
                || ReportStatus::parse(&m.status).is_some_and(ReportStatus::is_terminal)
        })
    })?;
    let took: Vec<String> = halted
        .devices
        .iter()
        .filter(|m| m.status == "success")
        .map(|m| m.device_id.clone())
        .collect();
    let spared: Vec<String> = halted
        .devices
        .iter()
        .filter(|m| m.status == "pending")
        .map(|m| m.device_id.clone())
        .collect();
    // The server knows a robot runs 1.2.0 from its next poll (the success report comes first); the revert
    // aims at the robots running something else than 1.1.0.
    let slow: semver::Version = SLOW_VERSION.parse()?;
    let polled = ota_testkit::wait::poll(stage.timeout, || {
        let devices = admin.devices()?;
        let seen = took.iter().all(|id| {
            devices
                .iter()
                .any(|d| &d.device_id == id && d.current_version.as_ref() == Some(&slow))
        });
        Ok::<_, anyhow::Error>(seen.then_some(()))
    })?;
    if polled.is_none() {
        bail!("{} did not poll with {SLOW_VERSION}", took.join(", "));
    }
    admin.rollout_action(id, "abort")?;
    say(&format!(
        "the operator aborts rollout {id} ({} never got {SLOW_VERSION}) and reverts {GROUP} to {RELEASE_VERSION}",
        if spared.is_empty() {
            "every robot".to_string()
        } else {
            spared.join(", ")
        }
    ));

    let revert = admin.create_rollout(&CreateRolloutRequest {
        bundle_id: stage.release_bundle_id.to_string(),
        stages: Some(vec![100]),
        failure_threshold: Some(0.5),
        name: Some(format!("revert {GROUP} to {RELEASE_VERSION}")),
        filter: Some(TargetFilter {
            group: Some(GROUP.into()),
            ..Default::default()
        }),
        revert: true,
        ..Default::default()
    })?;
    let rid = revert.rollout_id;
    say(&format!(
        "rollout {rid} (revert) created: {} of {GROUP} go back to {RELEASE_VERSION}",
        took.join(", ")
    ));
    let reverted = wait_rollout(admin, rid, stage.timeout, |d| {
        matches!(
            d.rollout.state,
            RolloutState::Completed | RolloutState::Aborted
        ) && finished(d)
    })?;
    say(&format!("rollout {rid} (revert) completed"));
    let back: Vec<String> = reverted
        .devices
        .iter()
        .filter(|m| m.status == "success")
        .map(|m| m.device_id.clone())
        .collect();
    let mut without_download = Vec::new();
    for robot in &back {
        if !statuses(admin, robot, rid)?.contains(&ReportStatus::Downloading) {
            without_download.push(robot.clone());
        }
    }
    let release: semver::Version = RELEASE_VERSION.parse()?;
    let all_back = stage.updated.iter().all(|id| {
        stage
            .fleet
            .robot(id)
            .is_some_and(|r| booted_version(&r.robot).as_ref() == Some(&release))
    });
    if took.is_empty() {
        bail!("no robot took {SLOW_VERSION} before the guard fired");
    }
    Ok(GuardStory {
        rollout_id: id,
        as_expected: r.state == RolloutState::Paused
            && r.breach.is_some()
            && back.len() == took.len()
            && all_back,
        pause_reason,
        named,
        reverted: back,
        without_download,
        spared,
    })
}

/// The story's lines of the summary.
pub fn format(g: &GuardStory) -> String {
    let list = |v: &[String]| {
        if v.is_empty() {
            "-".to_string()
        } else {
            v.join(", ")
        }
    };
    format!(
        "rollout {} of {SLOW_VERSION} halted by its guard: {}\n  breach names: {}; never offered: {}\n  reverted to {RELEASE_VERSION}: {} ({} without a download){}\n",
        g.rollout_id,
        g.pause_reason,
        list(&g.named),
        list(&g.spared),
        list(&g.reverted),
        g.without_download.len(),
        if g.as_expected {
            " (as expected)"
        } else {
            " (NOT the expected outcome)"
        }
    )
}
