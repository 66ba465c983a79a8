//! What ships beside the binary: the example config and the systemd unit.

use crate::common::*;
use std::process::Command;

#[test]
fn the_example_config_is_valid_and_matches_the_defaults() {
    let env = Env::new();
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config/framerec.toml");
    let output = env.run(&["check", "--config", example]);
    assert_success(&output);
    // Its values are the built-in defaults: check of an empty file says the same.
    let empty = env.input("empty.toml", b"");
    let defaults = env.run(&["check", "--config", empty.to_str().unwrap()]);
    assert_success(&defaults);
    let strip_threads = |o: &std::process::Output| -> String {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| !l.starts_with("threads"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(strip_threads(&output), strip_threads(&defaults));
}

#[test]
fn the_systemd_unit_verifies() {
    let systemd_analyze = Command::new("systemd-analyze").arg("--version").output();
    assert!(
        systemd_analyze.is_ok(),
        "systemd-analyze is missing: run scripts/deps.sh test (installs systemd)"
    );
    let env = Env::new();
    // Point the unit at the built binary, so verify can check its commands.
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/systemd/framerec.service"
    ))
    .unwrap();
    assert!(unit.contains("ExecStartPre=/usr/local/bin/framerec check"));
    assert!(unit.contains("ExecReload=/bin/kill -HUP $MAINPID"));
    assert!(unit.contains("DeviceAllow=char-video4linux"));
    let path = env.path("framerec.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/framerec", BIN)).unwrap();
    let output = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success() && said.trim().is_empty(),
        "systemd-analyze verify: {said}"
    );
    let output = Command::new("systemd-analyze")
        .args(["security", "--offline=true"])
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    let level = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_default()
        .to_owned();
    let score: f64 = level
        .split_whitespace()
        .find_map(|w| w.parse().ok())
        .unwrap_or(10.0);
    assert!(score <= 2.0, "the unit is exposed: {level}");
}

#[test]
fn the_preset_configs_are_valid() {
    let env = Env::new();
    for preset in ["timelapse", "dataset", "surveillance"] {
        let path = format!("{}/config/{preset}.toml", env!("CARGO_MANIFEST_DIR"));
        let output = env.run(&["check", "--config", &path]);
        assert!(
            output.status.success(),
            "config/{preset}.toml fails check:\n{}",
            stderr(&output)
        );
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(text.contains("kind = \"camera\""), "{preset}: {text}");
    }
}

#[test]
fn the_readme_config_examples_are_valid() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let env = Env::new();
    let mut checked = 0;
    for block in readme.split("```toml\n").skip(1) {
        let text = block.split("```").next().unwrap();
        let path = env.input("example.toml", text.as_bytes());
        let output = env.run(&["check", "--config", path.to_str().unwrap()]);
        assert!(
            output.status.success(),
            "README example fails check:\n{text}\n{}",
            stderr(&output)
        );
        checked += 1;
    }
    assert!(checked >= 3, "only {checked} examples found");
}
