//! framerec under systemd's eyes: what it says on NOTIFY_SOCKET, read from a
//! datagram socket as systemd would.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use crate::common::*;

/// `framerec run --config CONFIG --duration DURATION` with a notify socket
/// (as systemd's) and a 400 ms watchdog.
fn spawn_notified(
    env: &Env,
    config: &std::path::Path,
    duration: &str,
) -> (UnixDatagram, std::process::Child) {
    let path = env.path("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let args = [
        "run",
        "--config",
        config.to_str().unwrap(),
        "--duration",
        duration,
    ];
    let child = env
        .command(&args)
        .env("NOTIFY_SOCKET", &path)
        .env("WATCHDOG_USEC", "400000")
        .spawn()
        .unwrap();
    (socket, child)
}

fn collect(socket: &UnixDatagram, child: &mut std::process::Child) -> Vec<(Duration, String)> {
    let started = Instant::now();
    let mut messages = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Ok(n) = socket.recv(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            messages.push((started.elapsed(), text));
            continue;
        }
        if child.try_wait().unwrap().is_some() || started.elapsed() > Duration::from_secs(60) {
            break;
        }
    }
    messages
}

#[test]
fn tells_systemd_ready_pings_the_watchdog_reports_status_and_stopping() {
    let env = Env::new();
    let config = env.config("[source]\nwidth = 32\nheight = 16\nfps = 20\n");
    let (socket, mut child) = spawn_notified(&env, &config, "3s");
    let messages = collect(&socket, &mut child);
    assert!(child.wait().unwrap().success());
    let texts: Vec<&str> = messages.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(
        texts.first().map(|t| t.trim()),
        Some("READY=1"),
        "{texts:?}"
    );
    assert_eq!(
        texts.last().map(|t| t.trim()),
        Some("STOPPING=1"),
        "{texts:?}"
    );
    let pings: Vec<Duration> = messages
        .iter()
        .filter(|(_, t)| t.trim() == "WATCHDOG=1")
        .map(|(at, _)| *at)
        .collect();
    // Half of 400 ms: about 15 in 3 s; a loaded machine may stretch gaps.
    assert!(pings.len() >= 8, "{} pings: {texts:?}", pings.len());
    assert!(
        pings
            .windows(2)
            .all(|w| w[1] - w[0] < Duration::from_millis(400)),
        "a gap of a whole watchdog interval: {pings:?}"
    );
    assert!(
        texts
            .iter()
            .any(|t| t.starts_with("STATUS=recording:") && t.contains("fps")),
        "{texts:?}"
    );
}

#[test]
fn a_stalled_source_stops_the_watchdog_pings() {
    let env = Env::new();
    let fifo = env.path("frames.fifo");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let config = env.config(&format!(
        "[source]\nkind = \"raw\"\npath = \"{}\"\nwidth = 8\nheight = 8\nfps = 30\n\
         [snapshot]\nevery = \"frame\"\n",
        fifo.display()
    ));
    let (socket, mut child) = spawn_notified(&env, &config, "9s");
    // A few frames, then the writer stays but sends nothing.
    let mut writer = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    std::io::Write::write_all(&mut writer, &vec![7u8; 8 * 8 * 3 * 5]).unwrap();
    let messages = collect(&socket, &mut child);
    drop(writer);
    assert!(child.wait().unwrap().success());
    let last_ping = messages
        .iter()
        .rev()
        .find(|(_, t)| t.trim() == "WATCHDOG=1")
        .map(|(at, _)| *at)
        .expect("no ping at all");
    // The stall timeout for 30 fps is 5 s: pings end then, not at the end.
    assert!(
        last_ping < Duration::from_secs(7),
        "pings went on while nothing was captured: last at {last_ping:?}"
    );
    assert!(
        messages
            .iter()
            .any(|(_, t)| t.starts_with("STATUS=the source sends no frames")),
        "{messages:?}"
    );
}
