//! The fleet's robot options: the telemetry of a model's latency and the readiness command.

use std::collections::BTreeMap;
use std::process::Command;

use ota_testkit::fleet::ModelLatency;
use ota_testkit::robot::{Backend, Robot, RobotSpec};

fn run(argv: &[String]) -> (bool, String) {
    let out = Command::new(&argv[0]).args(&argv[1..]).output().unwrap();
    (out.status.success(), String::from_utf8(out.stdout).unwrap())
}

#[test]
fn the_latency_reported_is_the_running_models() {
    let robot = Robot::new(Backend::Grub);
    let latency = ModelLatency {
        default_ms: 40.0,
        by_version: BTreeMap::from([("1.2.0".to_string(), 95.5)]),
        fields: r#""battery_percent": 80"#.into(),
    };
    let argv = latency
        .command(robot.dir(), ota_testkit::robot::MODEL_SIZE)
        .unwrap();
    let report = |argv: &[String]| -> serde_json::Value {
        let (ok, out) = run(argv);
        assert!(ok, "{out}");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{out}: {e}"))
    };
    let factory = report(&argv);
    assert_eq!(factory["metrics"]["inference_latency_ms"], 40.0);
    assert_eq!(factory["battery_percent"], 80);
    // The active model slot now holds 1.2.0's model.
    std::fs::write(robot.path("model_a.bin"), robot.model_image("1.2.0")).unwrap();
    assert_eq!(report(&argv)["metrics"]["inference_latency_ms"], 95.5);
}

#[test]
fn the_readiness_command_says_go_until_the_robot_is_busy() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = RobotSpec::new(Backend::Grub);
    spec.readiness = Some(vec!["install".into()]);
    let robot = Robot::create(dir.path(), &spec);
    let config = std::fs::read_to_string(&robot.config_path).unwrap();
    assert!(config.contains("[readiness]") && config.contains(r#"phases = ["install"]"#));
    let argv = vec![
        robot.path("ready.sh").display().to_string(),
        "install".into(),
    ];
    assert!(run(&argv).0);
    robot.set_busy(Some("on a mission"));
    assert_eq!(run(&argv), (false, "on a mission\n".to_string()));
    robot.set_busy(None);
    assert!(run(&argv).0);
}
