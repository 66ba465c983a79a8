//! Runtime faults: a full disk and I/O errors are counted, logged and
//! survived, and never leave a partial or temp file behind.

use crate::common::*;
use std::path::PathBuf;
use std::process::Command;

fn assert_all_whole(env: &Env) {
    let files = env.files();
    assert!(
        files.iter().all(|f| !f.ends_with(".tmp")),
        "temp files left: {files:?}"
    );
    let paths: Vec<PathBuf> = env.images().iter().map(|f| env.out().join(f)).collect();
    decode(&paths);
}

#[test]
fn a_full_disk_drops_frames_and_recording_resumes_when_space_returns() {
    let env = Env::new();
    let Some(_mount) = Tmpfs::mount(&env.out(), "1M") else {
        return;
    };
    env.config("[source]\nwidth = 160\nheight = 120\nfps = 40\n[snapshot]\nevery = \"frame\"\nformat = \"png\"\n");
    let output = env.record(&["--duration", "2s"]);
    let line = summary_line(&output);
    assert!(line.contains("disk_full"), "no disk_full drops: {line}");
    assert!(
        stderr(&output).contains("No space left on device"),
        "{}",
        stderr(&output)
    );
    assert_all_whole(&env);
    let before = env.images();
    assert!(!before.is_empty());
    // Free the space: the next run writes again, numbering after the last file.
    let highest = before.iter().map(|f| seq_of(f)).max().unwrap();
    for image in &before {
        std::fs::remove_file(env.out().join(image)).unwrap();
    }
    env.record(&["--frames", "3"]);
    let after: Vec<u64> = env.images().iter().map(|f| seq_of(f)).collect();
    assert_eq!(after.len(), 3);
    assert!(
        after.iter().all(|&s| s > highest),
        "{after:?} reuses numbers up to {highest}"
    );
    assert_all_whole(&env);
}

#[test]
fn io_errors_on_sync_and_write_are_survived() {
    let fiu = Command::new("fiu-run").arg("-h").output();
    assert!(
        fiu.is_ok(),
        "fiu-run is missing: run scripts/deps.sh test (installs fiu-utils)"
    );
    let env = Env::new();
    env.config("[source]\nwidth = 64\nheight = 48\nfps = 100\n[snapshot]\nevery = \"frame\"\nformat = \"png\"\n");
    let config = env.path("config.toml");
    // Images are written with writev and synced with fdatasync; plain write
    // is what the log uses: failing it must not stop the recorder either.
    for point in [
        "posix/io/sync/fdatasync",
        "posix/io/rw/writev",
        "posix/io/rw/write",
    ] {
        let output = Command::new("fiu-run")
            .args([
                "-x",
                "-c",
                &format!("enable_random name={point},probability=0.3"),
            ])
            .arg(BIN)
            .args([
                "run",
                "--config",
                config.to_str().unwrap(),
                "--duration",
                "1s",
            ])
            .output()
            .unwrap();
        assert_success(&output);
        let line = summary_line(&output);
        if !point.ends_with("/write") {
            assert!(
                line.contains("write "),
                "{point}: no write drops counted: {line}"
            );
        }
        assert_all_whole(&env);
    }
    // Every manifest line names a whole file (lines may be missing, never wrong).
    for entry in env.manifest() {
        let path = env.out().join(entry["path"].as_str().unwrap());
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            entry["bytes"].as_u64().unwrap()
        );
    }
}
