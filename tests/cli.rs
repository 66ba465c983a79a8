//! The command line: `check`, bad configs (exit 78 with every problem and
//! its line), and what `run` says when it cannot start.

use crate::common::*;

fn check(env: &Env, text: &str) -> std::process::Output {
    let path = env.input("bad.toml", text.as_bytes());
    env.run(&["check", "--config", path.to_str().unwrap()])
}

#[test]
fn check_prints_the_effective_settings() {
    let env = Env::new();
    let path = env.input(
        "good.toml",
        b"camera = \"lab\"\n[snapshot]\nformat = \"png\"\n",
    );
    let output = env.run(&["check", "--config", path.to_str().unwrap()]);
    assert_success(&output);
    let text = String::from_utf8_lossy(&output.stdout);
    for expected in [
        "camera = \"lab\"",
        "format = \"png\"",
        "every = \"1s\"",
        "width = 1280",
        "fsync = true",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    // What check prints is itself a valid config.
    let again = env.input("again.toml", &output.stdout);
    assert_success(&env.run(&["check", "--config", again.to_str().unwrap()]));
}

#[test]
fn check_prints_the_mjpeg_frame_bound_where_it_applies() {
    let env = Env::new();
    for (text, bound) in [
        // The default: the RGB size of a 640x480 frame plus 256 KiB.
        ("[source]\nkind = \"camera\"\nwidth = 640\nheight = 480\n", 1_183_744),
        (
            "[source]\nkind = \"raw\"\npath = \"-\"\npixel_format = \"mjpeg\"\nmax_frame_bytes = \"3MiB\"\n",
            3 << 20,
        ),
    ] {
        let path = env.input("good.toml", text.as_bytes());
        let output = env.run(&["check", "--config", path.to_str().unwrap()]);
        assert_success(&output);
        let printed = String::from_utf8_lossy(&output.stdout);
        assert!(
            printed.contains(&format!("\nmax_frame_bytes = {bound}\n")),
            "{text:?} printed:\n{printed}"
        );
        let again = env.input("again.toml", &output.stdout);
        let output = env.run(&["check", "--config", again.to_str().unwrap()]);
        assert_success(&output);
        assert_eq!(String::from_utf8_lossy(&output.stdout), printed);
    }
    // Raw pixels have a fixed size: no bound is printed.
    let output = check(&env, "camera = \"x\"\n");
    assert!(!String::from_utf8_lossy(&output.stdout).contains("max_frame_bytes"));
}

#[test]
fn each_kind_of_bad_config_exits_78_naming_its_line() {
    let cases: &[(&str, &str, &[&str])] = &[
        ("syntax", "[source\nwidth = 3\n", &["line 1"]),
        (
            "unknown key",
            "[source]\nwidht = 640\n",
            &["line 2", "source.widht", "unknown key"],
        ),
        (
            "wrong type",
            "[snapshot]\nquality = \"high\"\n",
            &["line 2", "snapshot"],
        ),
        (
            "out of range",
            "\n[snapshot]\nquality = 0\n",
            &["line 3", "snapshot.quality", "1 to 100"],
        ),
        (
            "no seq",
            "[output]\nname = \"{camera}.{ext}\"\n",
            &["line 2", "output.name", "{seq}"],
        ),
        (
            "leaves dir",
            "[output]\nname = \"../{seq}.{ext}\"\n",
            &["line 2", "output.name", "leave"],
        ),
        (
            "format cannot hold",
            "[source]\npixel_format = \"gray16\"\n[snapshot]\nformat = \"jpeg\"\n",
            &["snapshot.format", "png"],
        ),
        (
            "bad duration",
            "[snapshot]\nevery = \"often\"\n",
            &["line 2", "snapshot.every"],
        ),
        (
            "bad pixel format",
            "[source]\npixel_format = \"bgr24\"\n",
            &["line 2", "source.pixel_format", "nv12"],
        ),
        (
            "raw without path",
            "[source]\nkind = \"raw\"\n",
            &["line 2", "source.path"],
        ),
        (
            "block on a live source",
            "[ring]\nwhen_full = \"block\"\n",
            &["line 2", "ring.when_full"],
        ),
        (
            "frame bound not a size",
            "[source]\nkind = \"camera\"\nmax_frame_bytes = \"big\"\n",
            &["line 3", "source.max_frame_bytes", "50GiB"],
        ),
        (
            "frame bound for raw pixels",
            "[source]\nmax_frame_bytes = \"8MiB\"\n",
            &[
                "line 2",
                "source.max_frame_bytes",
                "pixel_format = \"mjpeg\"",
            ],
        ),
    ];
    let env = Env::new();
    for (what, text, needles) in cases {
        let output = check(&env, text);
        assert_eq!(
            output.status.code(),
            Some(78),
            "{what}: {}",
            stderr(&output)
        );
        let err = stderr(&output);
        for needle in *needles {
            assert!(err.contains(needle), "{what}: {needle:?} not in:\n{err}");
        }
    }
}

#[test]
fn every_problem_is_listed_at_once() {
    let env = Env::new();
    let output = check(
        &env,
        "[source]\nwidth = 0\nfps = 0\n[snapshot]\nquality = 500\n[encoder]\nthreads = -1\n",
    );
    assert_eq!(output.status.code(), Some(78));
    let err = stderr(&output);
    assert!(err.contains("4 problems"), "{err}");
    for line in ["line 2", "line 3", "line 5", "line 7"] {
        assert!(err.contains(line), "{line} not in:\n{err}");
    }
}

#[test]
fn a_missing_config_file_exits_78_with_its_path() {
    let env = Env::new();
    for command in ["check", "run"] {
        let output = env.run(&[command, "--config", "/nonexistent/framerec.toml"]);
        assert_eq!(output.status.code(), Some(78));
        assert!(
            stderr(&output).contains("/nonexistent/framerec.toml"),
            "{}",
            stderr(&output)
        );
    }
}

#[test]
fn run_refuses_a_bad_config_before_touching_the_disk() {
    let env = Env::new();
    let config = env.config("[snapshot]\nquality = 0\n");
    let output = env.run(&["run", "--config", config.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(78));
    assert!(
        !env.out().exists(),
        "a bad config created the output directory"
    );
}

#[test]
fn an_unwritable_output_directory_is_a_runtime_failure() {
    let env = Env::new();
    std::fs::write(env.path("file"), b"x").unwrap();
    let config = env.config("[output]\ndir = \"{out}/../file/sub\"\n");
    let output = env.run(&["run", "--config", config.to_str().unwrap(), "--frames", "1"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("cannot create output directory"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn a_missing_raw_input_is_named() {
    let env = Env::new();
    let config = env.config(
        "[source]\nkind = \"raw\"\npath = \"/nonexistent/in.rgb\"\nwidth = 4\nheight = 4\n",
    );
    let output = env.run(&["run", "--config", config.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("/nonexistent/in.rgb"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn unknown_keys_and_wrong_types_do_not_hide_other_problems() {
    let env = Env::new();
    let output = check(
        &env,
        "camra = 1\n[source]\nwidth = \"abc\"\nwidht = 3\nfps = 0\n[snapshot]\nquality = 500\n",
    );
    assert_eq!(output.status.code(), Some(78));
    let err = stderr(&output);
    assert!(err.contains("5 problems"), "{err}");
    for needle in [
        "line 1, column 1: camra",
        "line 3, column 9: source.width",
        "line 4, column 1: source.widht",
        "line 5",
        "line 7",
    ] {
        assert!(err.contains(needle), "{needle} not in:\n{err}");
    }
}

#[test]
fn devices_without_a_camera_says_so_and_exits_0() {
    let env = Env::new();
    let output = env.run(&["devices"]);
    assert_success(&output);
    let text = String::from_utf8_lossy(&output.stdout);
    // On a machine with cameras it lists them with their formats instead.
    assert!(
        text.contains("no cameras found") || text.contains("/dev/video"),
        "{text}"
    );
}

#[test]
fn a_missing_camera_is_waited_for_and_sigterm_still_exits_0() {
    let env = Env::new();
    env.config("[source]\nkind = \"camera\"\ndevice = \"/dev/v4l/by-id/no-such-camera\"\n");
    let mut child = env.spawn(false);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    signal(&child, "TERM");
    wait_with_timeout(&mut child, std::time::Duration::from_secs(10));
    let output = child.wait_with_output().unwrap();
    assert_success(&output);
    let err = stderr(&output);
    assert!(
        err.contains("camera not available") && err.contains("no-such-camera"),
        "{err}"
    );
}
