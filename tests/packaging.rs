//! What ships beside the binary: the example configs, the systemd units and
//! their HTTP drop-in, the sysusers and tmpfiles snippets, scripts/install.sh.

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

/// A file of the repository.
fn shipped(path: &str) -> String {
    let path = format!("{}/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The units, each under the name it is checked as (the template as an
/// instance) and pointed at the built binary so that verify can check the
/// commands.
fn units() -> [(&'static str, String); 2] {
    let point = |text: String| text.replace("/usr/local/bin/framerec", BIN);
    [
        (
            "framerec.service",
            point(shipped("systemd/framerec.service")),
        ),
        (
            "framerec@cam0.service",
            point(shipped("systemd/framerec@.service")),
        ),
    ]
}

/// Writes a unit into a directory of its own, with the HTTP drop-in (or
/// `drop_in`'s text) in `NAME.d/` when given: systemd-analyze reads the
/// drop-ins beside a unit it is handed by path.
fn unit_file(env: &Env, name: &str, text: &str, drop_in: Option<&str>) -> std::path::PathBuf {
    let dir = env.path(&format!("{name}-{}", drop_in.is_some()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    if let Some(drop_in) = drop_in {
        let dropins = dir.join(format!("{name}.d"));
        std::fs::create_dir_all(&dropins).unwrap();
        std::fs::write(dropins.join("http.conf"), drop_in).unwrap();
    }
    path
}

/// Runs a tool, failing the test with a hint when it is not installed.
fn tool(program: &str, args: &[&str], path: &std::path::Path) -> std::process::Output {
    Command::new(program)
        .args(args)
        .arg(path)
        .output()
        .unwrap_or_else(|e| {
            panic!("{program} cannot run ({e}): run scripts/deps.sh test (installs systemd)")
        })
}

/// What `systemd-analyze verify` says about a unit; it fails only by
/// printing, so any output is a failure.
fn verify(path: &std::path::Path) -> String {
    let output = tool("systemd-analyze", &["verify", "--man=no"], path);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if output.status.success() {
        said.trim().to_owned()
    } else {
        format!("({}) {said}", output.status)
    }
}

/// The overall exposure level `systemd-analyze security` gives a unit.
fn exposure(path: &std::path::Path) -> f64 {
    let output = tool("systemd-analyze", &["security", "--offline=true"], path);
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines()
        .find(|l| l.contains("Overall exposure level"))
        .and_then(|l| l.split_whitespace().find_map(|w| w.parse().ok()))
        .unwrap_or_else(|| {
            panic!(
                "no exposure level for {}:\n{text}{}",
                path.display(),
                stderr(&output)
            )
        })
}

#[test]
fn the_systemd_units_keep_their_guarantees() {
    for (name, unit) in units() {
        let config = if name.contains('@') {
            "/etc/framerec/%i.toml"
        } else {
            "/etc/framerec/framerec.toml"
        };
        for line in [
            "Type=notify".to_owned(),
            format!("ExecStartPre={BIN} check --config {config}"),
            format!("ExecStart={BIN} run --config {config}"),
            "ExecReload=/bin/kill -HUP $MAINPID".to_owned(),
            "RestartPreventExitStatus=78".to_owned(),
            "WatchdogSec=30s".to_owned(),
            "DeviceAllow=char-video4linux rw".to_owned(),
            "PrivateNetwork=yes".to_owned(),
            "RestrictAddressFamilies=AF_UNIX".to_owned(),
        ] {
            assert!(unit.lines().any(|l| l == line), "{name} lacks {line}");
        }
    }
    // The template is the plain unit per camera: the same lines but for its
    // name and directories.
    let settings = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .filter(|l| {
                !["Description=", "StateDirectory=", "WorkingDirectory="]
                    .iter()
                    .any(|key| l.starts_with(key))
            })
            .map(|l| l.replace("%i", "framerec"))
            .collect()
    };
    let [(_, plain), (_, template)] = units();
    assert_eq!(settings(&plain), settings(&template));
    let http = shipped("systemd/framerec-http.conf");
    for line in [
        "PrivateNetwork=no",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
        "IPAddressDeny=any",
        "IPAddressAllow=localhost",
    ] {
        assert!(http.lines().any(|l| l == line), "the drop-in lacks {line}");
    }
}

#[test]
fn the_systemd_units_verify_with_and_without_the_http_drop_in() {
    let env = Env::new();
    let http = shipped("systemd/framerec-http.conf");
    for (name, unit) in units() {
        let path = unit_file(&env, name, &unit, None);
        assert_eq!(verify(&path), "", "systemd-analyze verify {name}");
        let path = unit_file(&env, name, &unit, Some(&http));
        assert_eq!(
            verify(&path),
            "",
            "systemd-analyze verify {name} + http.conf"
        );
        // The drop-in is read: a bad line in it is reported.
        let path = unit_file(&env, name, &unit, Some(&format!("{http}Bogus=1\n")));
        assert!(verify(&path).contains("Bogus"), "{name}: drop-in not read");
    }
}

#[test]
fn the_systemd_units_are_hardened_with_and_without_the_http_drop_in() {
    let env = Env::new();
    let http = shipped("systemd/framerec-http.conf");
    for (name, unit) in units() {
        let closed = exposure(&unit_file(&env, name, &unit, None));
        let loopback = exposure(&unit_file(&env, name, &unit, Some(&http)));
        eprintln!("{name}: exposure {closed}, with http.conf {loopback}");
        assert!(closed <= 2.0, "{name} is exposed: {closed}");
        assert!(
            loopback <= 2.0,
            "{name} with http.conf is exposed: {loopback}"
        );
        // The network the drop-in opens is counted (so it was applied).
        assert!(loopback > closed, "{name}: {loopback} <= {closed}");
    }
}

/// Runs scripts/install.sh into `dest` (PREFIX=/usr, as a package would),
/// installing the built binary.
fn install(dest: &std::path::Path) -> std::process::Output {
    let output = Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/install.sh"))
        .env("DESTDIR", dest)
        .env("PREFIX", "/usr")
        .env("FRAMEREC_BIN", BIN)
        .output()
        .expect("bash runs");
    assert_success(&output);
    output
}

#[test]
fn install_sh_stages_every_file_and_keeps_the_users_config() {
    let env = Env::new();
    let dest = env.path("dest");
    install(&dest);
    let mut expected = vec![
        "etc/framerec/framerec.toml".to_owned(),
        "etc/systemd/system/framerec.service".to_owned(),
        "etc/systemd/system/framerec@.service".to_owned(),
        "usr/bin/framerec".to_owned(),
        "usr/lib/sysusers.d/framerec.conf".to_owned(),
        "usr/lib/tmpfiles.d/framerec.conf".to_owned(),
        "usr/share/framerec/framerec-http.conf".to_owned(),
    ];
    let examples = files_under(&std::path::PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config"
    )));
    expected.extend(
        examples
            .iter()
            .filter(|e| e.ends_with(".toml"))
            .map(|e| format!("usr/share/framerec/{e}")),
    );
    expected.sort();
    assert_eq!(files_under(&dest), expected);
    assert!(std::fs::read(dest.join("usr/bin/framerec")).unwrap() == std::fs::read(BIN).unwrap());
    let unit = std::fs::read_to_string(dest.join("etc/systemd/system/framerec@.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/bin/framerec run --config /etc/framerec/%i.toml"));
    assert!(
        !unit.contains("/usr/local"),
        "not pointed at PREFIX:\n{unit}"
    );
    assert_eq!(
        std::fs::read_to_string(dest.join("etc/framerec/framerec.toml")).unwrap(),
        shipped("config/framerec.toml")
    );

    // The installed binary accepts the installed config.
    let config = dest.join("etc/framerec/framerec.toml");
    let installed = dest.join("usr/bin/framerec");
    let check = |config: &std::path::Path| {
        let output = Command::new(&installed)
            .args(["check", "--config"])
            .arg(config)
            .output()
            .unwrap();
        assert_success(&output);
    };
    check(&config);

    // A second run changes nothing, and leaves the user's config alone.
    let mine = format!(
        "{}\n# edited by the user\n",
        shipped("config/framerec.toml")
    );
    std::fs::write(&config, &mine).unwrap();
    let output = install(&dest);
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(!said.contains("installed "), "second run:\n{said}");
    assert!(said.contains("kept "), "second run:\n{said}");
    assert_eq!(files_under(&dest), expected);
    assert_eq!(std::fs::read_to_string(&config).unwrap(), mine);
    check(&config);
}

#[test]
fn the_sysusers_and_tmpfiles_snippets_apply() {
    use std::os::unix::fs::MetadataExt;
    let env = Env::new();
    let dest = env.path("dest");
    install(&dest);
    let dest_arg = format!("--root={}", dest.display());
    let output = tool(
        "systemd-sysusers",
        &[&dest_arg],
        &dest.join("usr/lib/sysusers.d/framerec.conf"),
    );
    assert_success(&output);
    let passwd = std::fs::read_to_string(dest.join("etc/passwd")).unwrap();
    let user = passwd
        .lines()
        .find(|l| l.starts_with("framerec:"))
        .unwrap_or_else(|| panic!("no framerec user:\n{passwd}"));
    let uid: u32 = user.split(':').nth(2).unwrap().parse().unwrap();
    assert!(
        user.ends_with(":/var/lib/framerec:/usr/sbin/nologin"),
        "{user}"
    );
    let group = std::fs::read_to_string(dest.join("etc/group")).unwrap();
    assert!(
        group
            .lines()
            .any(|l| l.starts_with("video:") && l.ends_with(":framerec")),
        "framerec is not in video:\n{group}"
    );

    // Creating /var/lib/framerec for another user takes root.
    if std::fs::metadata(env.dir.path()).unwrap().uid() != 0 {
        eprintln!("skipping systemd-tmpfiles --create: it chowns to framerec, which needs root");
        return;
    }
    let output = tool(
        "systemd-tmpfiles",
        &[&dest_arg, "--create"],
        &dest.join("usr/lib/tmpfiles.d/framerec.conf"),
    );
    assert_success(&output);
    let state = std::fs::metadata(dest.join("var/lib/framerec")).unwrap();
    assert!(state.is_dir());
    assert_eq!((state.uid(), state.mode() & 0o7777), (uid, 0o750));
    let etc = std::fs::metadata(dest.join("etc/framerec")).unwrap();
    assert_eq!((etc.uid(), etc.mode() & 0o7777), (0, 0o755));
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
