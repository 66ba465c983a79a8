//! framerec under systemd's eyes: what it says on NOTIFY_SOCKET, read from a
//! datagram socket as systemd would.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use crate::common::*;

/// `framerec run --config CONFIG --duration DURATION` with a notify socket
/// (as systemd's) and a 400 ms watchdog.
fn spawn_notified(env: &Env, config: &std::path::Path, duration: &str) -> (UnixDatagram, Running) {
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
    let child = Running::start(
        env.command(&args)
            .env("NOTIFY_SOCKET", &path)
            .env("WATCHDOG_USEC", "400000")
            .stderr(std::process::Stdio::piped()),
    );
    (socket, child)
}

/// A whole notified run that must succeed, and what it said.
fn notified_run(env: &Env, config: &std::path::Path, duration: &str) -> Vec<(Duration, String)> {
    let (socket, mut child) = spawn_notified(env, config, duration);
    let messages = collect(&socket, &mut child);
    assert_success(&child.wait_with_output().unwrap());
    messages
}

/// The messages' texts, checking that the first is READY=1.
fn texts_ready_first(messages: &[(Duration, String)]) -> Vec<&str> {
    let texts: Vec<&str> = messages.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(
        texts.first().map(|t| t.trim()),
        Some("READY=1"),
        "{texts:?}"
    );
    texts
}

/// Makes a FIFO at `path`.
fn mkfifo(path: &std::path::Path) {
    let made = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .unwrap();
    assert!(made.success(), "mkfifo {}", path.display());
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
    let messages = notified_run(&env, &config, "3s");
    let texts = texts_ready_first(&messages);
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
    mkfifo(&fifo);
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
    assert_success(&child.wait_with_output().unwrap());
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

/// The manifest's `seq` and `bytes`, in order.
fn seqs_and_bytes(env: &Env) -> Vec<(u64, u64)> {
    env.manifest()
        .iter()
        .map(|l| (l["seq"].as_u64().unwrap(), l["bytes"].as_u64().unwrap()))
        .collect()
}

/// Waits until the manifest has at least `n` lines.
fn wait_for_files(env: &Env, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while env.manifest().len() < n {
        assert!(Instant::now() < deadline, "no {n} files in 30 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn hup_applies_quality_and_retention_live_and_refuses_a_broken_file() {
    let env = Env::new();
    let body = |quality: u32, extra: &str| {
        format!(
            "camera = \"hup\"\n[source]\nwidth = 160\nheight = 120\nfps = 20\n\
             [snapshot]\nevery = \"frame\"\nquality = {quality}\n{extra}"
        )
    };
    let config = env.config(&body(98, ""));
    let (socket, mut child) = spawn_notified(&env, &config, "8s");
    let listener = std::thread::spawn(move || {
        let messages = collect(&socket, &mut child);
        (messages, child.wait_with_output().unwrap())
    });
    wait_for_files(&env, 10);
    // Quality down, a quota where there was none.
    env.config(&body(5, "[retention]\nmax_files = 15\n"));
    let hup = || {
        let status = std::process::Command::new("pkill")
            .args(["-HUP", "-f", config.to_str().unwrap()])
            .status()
            .unwrap();
        assert!(status.success());
    };
    hup();
    let before_broken = {
        std::thread::sleep(Duration::from_millis(1500));
        env.manifest().len()
    };
    // A broken file and a change that needs a restart: both refused, the
    // settings in force stay and recording goes on.
    std::fs::write(
        &config,
        body(5, "[retention]\nmax_files = 15\nbogus = 1\n") + "\n[output]\ndir = \"elsewhere\"\n",
    )
    .unwrap();
    hup();
    std::thread::sleep(Duration::from_millis(700));
    env.config(
        &body(5, "[retention]\nmax_files = 15\n").replace("camera = \"hup\"", "camera = \"other\""),
    );
    hup();
    let (messages, output) = listener.join().unwrap();
    assert_success(&output);
    let log = stderr(&output);

    // The numbering has no gap and no repeat; the quota holds. (Lines come
    // in the order files became durable: sorted, as a reader would.)
    let lines = seqs_and_bytes(&env);
    let mut seqs: Vec<u64> = lines.iter().map(|l| l.0).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "{log}");
    assert!(
        lines.len() > before_broken + 10,
        "recording stopped at the refused reloads: {log}"
    );
    let images = env.images();
    assert!(
        images.len() <= 15,
        "max_files = 15 after the reload: {images:?}"
    );
    // Quality 98, then 5: the files after the reload are far smaller.
    let first = lines[..5].iter().map(|l| l.1).sum::<u64>();
    let last = lines[lines.len() - 5..].iter().map(|l| l.1).sum::<u64>();
    assert!(
        last * 3 < first,
        "quality did not change: {first} then {last} bytes"
    );
    // Pillow reads the last files (the quota kept them).
    let kept: Vec<std::path::PathBuf> = images.iter().map(|f| env.out().join(f)).collect();
    assert_eq!(decode(&kept).len(), kept.len());

    assert!(log.contains("snapshot.quality 98 -> 5"), "{log}");
    assert!(log.contains("retention.max_files (unset) -> 15"), "{log}");
    assert!(log.contains("retention.bogus: unknown key"), "{log}");
    assert!(log.contains("line "), "the problem's line: {log}");
    assert!(log.contains("camera \"hup\" -> \"other\""), "{log}");
    assert!(log.contains("restart framerec"), "{log}");
    assert!(!env.path("elsewhere").exists());

    // RELOADING=1 with the monotonic time, then READY=1, for each HUP.
    let texts: Vec<&str> = messages.iter().map(|(_, t)| t.as_str()).collect();
    let reloads: Vec<usize> = (0..texts.len())
        .filter(|&i| texts[i].lines().any(|l| l == "RELOADING=1"))
        .collect();
    assert_eq!(reloads.len(), 3, "{texts:?}");
    for &i in &reloads {
        let usec = texts[i]
            .lines()
            .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
            .unwrap_or_else(|| panic!("no MONOTONIC_USEC: {:?}", texts[i]));
        assert!(usec.parse::<u64>().unwrap() > 0);
        let next = texts[i + 1..]
            .iter()
            .find(|t| !t.starts_with("WATCHDOG") && !t.starts_with("STATUS"));
        assert_eq!(next.map(|t| t.trim()), Some("READY=1"), "{texts:?}");
    }
}

#[test]
fn hup_with_a_new_frame_size_restarts_capture_only() {
    let env = Env::new();
    let body = |width: u32| {
        format!(
            "camera = \"size\"\n[source]\nwidth = {width}\nheight = 48\nfps = 20\n\
             [snapshot]\nevery = \"frame\"\nformat = \"png\"\n"
        )
    };
    env.config(&body(96));
    let mut child = env.spawn(false);
    wait_for_files(&env, 5);
    env.config(&body(64));
    signal(&child, "HUP");
    let deadline = Instant::now() + Duration::from_secs(30);
    let narrow = |env: &Env| {
        env.manifest()
            .iter()
            .filter(|l| l["width"].as_u64() == Some(64))
            .count()
    };
    while narrow(&env) < 5 {
        assert!(
            Instant::now() < deadline,
            "no 64-wide frames after the reload"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(child.try_wait().unwrap().is_none(), "the recorder exited");
    // Larger frames than the buffers allocated at start: refused, the
    // frames stay 64 wide.
    env.config(&body(128));
    signal(&child, "HUP");
    std::thread::sleep(Duration::from_millis(500));
    signal(&child, "TERM");
    wait_with_timeout(&mut child, Duration::from_secs(30));
    let output = child.wait_with_output().unwrap();
    assert_success(&output);
    let log = stderr(&output);
    let lines = env.manifest();
    // In the order files became durable: sorted, as a reader would.
    let mut seqs: Vec<u64> = lines.iter().map(|l| l["seq"].as_u64().unwrap()).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    assert!(
        lines.iter().all(|l| l["width"].as_u64() != Some(128)),
        "{log}"
    );
    // Every file is whole, at the size its manifest line says.
    let paths: Vec<std::path::PathBuf> = lines
        .iter()
        .map(|l| env.out().join(l["path"].as_str().unwrap()))
        .collect();
    for (line, image) in lines.iter().zip(decode(&paths)) {
        assert_eq!(image.width as u64, line["width"].as_u64().unwrap());
    }
    assert!(log.contains("source.width 96 -> 64"), "{log}");
    assert!(
        log.contains("larger than the") && log.contains("restart framerec"),
        "{log}"
    );
}

/// A free TCP port on the loopback address (free when asked).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One HTTP/1.0 exchange with raw bytes: (status, headers, body).
fn http_raw(port: u16, request: &[u8]) -> (u16, String, Vec<u8>) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream.write_all(request).unwrap();
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).unwrap();
    let end = reply
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(&reply)));
    let head = String::from_utf8_lossy(&reply[..end]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head, reply[end + 4..].to_vec())
}

fn http(port: u16, method: &str, path: &str) -> (u16, String, Vec<u8>) {
    http_raw(
        port,
        format!("{method} {path} HTTP/1.0\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n")
            .as_bytes(),
    )
}

/// Waits until the endpoint answers (the recorder is up).
fn wait_for_http(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on port {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Parses Prometheus text with the prometheus_client Python library (the
/// parser Prometheus' own Python tooling uses): name{labels} value lines.
fn parse_metrics(text: &str) -> Vec<String> {
    let script = r#"
import sys
from prometheus_client.parser import text_string_to_metric_families
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
        print(f"{family.type} {s.name}{{{labels}}} {s.value}")
"#;
    let python = python_with("prometheus_client", "python3-prometheus-client");
    let mut child = std::process::Command::new(python)
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), text.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "the Prometheus parser refused /metrics: {}\n{text}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The value of the one sample named `name` (with any labels).
fn sample(samples: &[String], name: &str) -> f64 {
    let found: Vec<&String> = samples
        .iter()
        .filter(|s| {
            s.split_whitespace()
                .nth(1)
                .is_some_and(|n| n.starts_with(&format!("{name}{{")))
        })
        .collect();
    assert_eq!(found.len(), 1, "{name}: {samples:#?}");
    found[0].rsplit(' ').next().unwrap().parse().unwrap()
}

#[test]
fn every_http_endpoint_answers_and_many_clients_drop_no_frame() {
    let env = Env::new();
    let port = free_port();
    let config = env.config(&format!(
        "camera = \"web\"\n[source]\nwidth = 160\nheight = 120\nfps = 25\n\
         [snapshot]\nevery = \"frame\"\nquality = 80\n\
         [retention]\nmax_bytes = \"1GiB\"\n\
         [http]\nlisten = \"127.0.0.1:{port}\"\n"
    ));
    let mut child = env.spawn(false);
    wait_for_http(port);
    wait_for_files(&env, 5);

    // 50 clients at once, each fetching the preview 5 times, while every
    // frame must become a file.
    let clients: Vec<_> = (0..50)
        .map(|_| {
            std::thread::spawn(move || {
                (0..5)
                    .map(|_| http(port, "GET", "/snapshot.jpg"))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for client in clients {
        for (status, head, body) in client.join().unwrap() {
            assert_eq!(status, 200, "{head}");
            assert!(head.contains("Content-Type: image/jpeg"), "{head}");
            assert_eq!(&body[..2], [0xFF, 0xD8], "not a JPEG");
        }
    }
    // Pillow reads the preview, at the camera's size.
    let (_, _, jpeg) = http(port, "GET", "/snapshot.jpg");
    let preview = env.input("preview.jpg", &jpeg);
    let decoded = decode(&[preview]);
    assert_eq!((decoded[0].width, decoded[0].height), (160, 120));

    let (status, _, body) = http(port, "GET", "/healthz");
    assert_eq!((status, String::from_utf8_lossy(&body).trim()), (200, "ok"));

    let (status, head, body) = http(port, "GET", "/status");
    assert_eq!(status, 200);
    assert!(head.contains("application/json"), "{head}");
    let status: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(status["camera"], "web");
    assert_eq!(status["state"], "recording");
    assert_eq!(status["healthy"], true);
    assert_eq!(status["settings"]["snapshot"]["quality"], 80);
    assert_eq!(status["source"]["up"], true);
    let newest = status["newest_file"]["seq"].as_u64().unwrap();
    assert!(newest >= 5, "{status}");
    let newest_path = status["newest_file"]["path"].as_str().unwrap();
    assert!(std::path::Path::new(newest_path).is_file(), "{status}");

    // POST /snapshot answers with the number the file gets.
    let (status, _, body) = http(port, "POST", "/snapshot");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let asked: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let asked = asked["seq"].as_u64().unwrap();
    assert!(asked > newest);

    // Bad requests get 4xx, and the server goes on.
    assert_eq!(http(port, "GET", "/nope").0, 404);
    assert_eq!(http(port, "DELETE", "/metrics").0, 405);
    assert_eq!(http(port, "GET", "/snapshot").0, 405);
    let garbage = http_raw(port, b"\x16\x03\x01 not http at all\r\n\r\n").0;
    assert!((400..500).contains(&garbage), "{garbage}");
    let long = format!("GET /{} HTTP/1.0\r\n\r\n", "a".repeat(20_000));
    let status = http_raw(port, long.as_bytes()).0;
    assert!((400..500).contains(&status), "{status}");
    // A name that is not this machine's (DNS rebinding), and a snapshot
    // asked for by another site's page.
    let rebound = http_raw(
        port,
        b"GET /snapshot.jpg HTTP/1.1\r\nHost: evil.example\r\n\r\n",
    );
    assert_eq!(rebound.0, 421);
    let cross = format!(
        "POST /snapshot HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nOrigin: http://evil.example\r\n\r\n"
    );
    assert_eq!(http_raw(port, cross.as_bytes()).0, 403);

    let (status, head, body) = http(port, "GET", "/metrics");
    assert_eq!(status, 200);
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    let text = String::from_utf8(body).unwrap();
    let samples = parse_metrics(&text);
    assert!(
        samples.iter().all(|s| s.contains("camera=web")),
        "every metric carries the camera: {samples:#?}"
    );
    let written = sample(&samples, "framerec_files_written_total");
    assert!(written >= 5.0);
    assert!(sample(&samples, "framerec_frames_captured_total") >= written);
    assert_eq!(sample(&samples, "framerec_camera_up"), 1.0);
    assert_eq!(
        sample(&samples, "framerec_quota_bytes"),
        (1u64 << 30) as f64
    );
    assert!(sample(&samples, "framerec_disk_used_bytes") > 0.0);
    let newest_time = sample(&samples, "framerec_last_file_timestamp_seconds");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((now - newest_time).abs() < 60.0, "{newest_time} vs {now}");
    assert!(sample(&samples, "framerec_encode_seconds_count") >= written);
    assert!(sample(&samples, "framerec_write_seconds_count") >= written);
    for reason in ["overflow", "encode", "corrupt", "write", "disk_full"] {
        assert!(
            samples
                .iter()
                .any(|s| s.contains("framerec_frames_dropped_total{")
                    && s.contains(&format!("reason={reason}"))),
            "{reason}: {samples:#?}"
        );
    }
    assert!(
        samples
            .iter()
            .any(|s| s.starts_with("gauge framerec_build_info{")),
        "{samples:#?}"
    );
    assert!(samples
        .iter()
        .any(|s| s.starts_with("gauge framerec_ring_frames_queued{")));

    signal(&child, "TERM");
    wait_with_timeout(&mut child, Duration::from_secs(30));
    let output = child.wait_with_output().unwrap();
    assert_success(&output);
    let _ = config;
    // No frame was dropped, the numbers have no gap, and the snapshot asked
    // for is on disk.
    let summary = summary_line(&output);
    assert!(summary.contains("dropped 0"), "{summary}");
    let mut seqs: Vec<u64> = env
        .manifest()
        .iter()
        .map(|l| l["seq"].as_u64().unwrap())
        .collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    assert!(seqs.contains(&asked));
}

#[test]
fn healthz_turns_503_and_camera_up_0_when_the_source_stalls() {
    let env = Env::new();
    let port = free_port();
    let fifo = env.path("frames.fifo");
    mkfifo(&fifo);
    env.config(&format!(
        "[source]\nkind = \"raw\"\npath = \"{}\"\nwidth = 8\nheight = 8\nfps = 30\n\
         [snapshot]\nevery = \"frame\"\n[http]\nlisten = \"127.0.0.1:{port}\"\n",
        fifo.display()
    ));
    let mut child = env.spawn(false);
    let mut writer = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    std::io::Write::write_all(&mut writer, &vec![7u8; 8 * 8 * 3 * 5]).unwrap();
    wait_for_http(port);
    assert_eq!(http(port, "GET", "/healthz").0, 200);
    // The stall timeout for 30 fps is 5 s.
    let deadline = Instant::now() + Duration::from_secs(15);
    let body = loop {
        let (status, _, body) = http(port, "GET", "/healthz");
        if status == 503 {
            break String::from_utf8(body).unwrap();
        }
        assert!(Instant::now() < deadline, "/healthz stayed {status}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(body.trim(), "the source sends no frames");
    let samples = parse_metrics(&String::from_utf8(http(port, "GET", "/metrics").2).unwrap());
    assert_eq!(sample(&samples, "framerec_camera_up"), 0.0);
    assert_eq!(sample(&samples, "framerec_healthy"), 0.0);
    // Frames again: healthy again.
    std::io::Write::write_all(&mut writer, &vec![9u8; 8 * 8 * 3 * 3]).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(http(port, "GET", "/healthz").0, 200);
    drop(writer);
    wait_with_timeout(&mut child, Duration::from_secs(30));
    assert_success(&child.wait_with_output().unwrap());
}

#[test]
fn a_camera_absent_at_start_is_ready_and_says_it_waits() {
    let env = Env::new();
    let config =
        env.config("[source]\nkind = \"camera\"\ndevice = \"/dev/framerec-no-such-camera\"\n");
    let messages = notified_run(&env, &config, "3s");
    let texts = texts_ready_first(&messages);
    assert!(
        texts
            .iter()
            .any(|t| t.starts_with("STATUS=waiting for the source")),
        "{texts:?}"
    );
    assert!(
        texts.iter().filter(|t| t.trim() == "WATCHDOG=1").count() >= 4,
        "a camera that is waited for is no reason to restart: {texts:?}"
    );
}

/// An ext4 filesystem on a loop device, mounted at a directory, that can be
/// frozen (`fsfreeze`): every write into it then waits, as on a wedged
/// disk. Thawed and unmounted on drop.
struct Freezable(std::path::PathBuf);

impl Freezable {
    /// None (with a message) where loop mounts are not permitted.
    fn mount(env: &Env, dir: &std::path::Path) -> Option<Freezable> {
        let image = env.path("disk.img");
        std::fs::File::create(&image)
            .unwrap()
            .set_len(64 << 20)
            .unwrap();
        std::fs::create_dir_all(dir).unwrap();
        let run = |program: &str, args: &[&std::ffi::OsStr]| {
            std::process::Command::new(program)
                .args(args)
                .output()
                .map_err(|e| e.to_string())
                .and_then(|o| {
                    o.status
                        .success()
                        .then_some(())
                        .ok_or_else(|| String::from_utf8_lossy(&o.stderr).trim().to_owned())
                })
        };
        let made = run("mkfs.ext4", &["-q".as_ref(), image.as_os_str()]).and_then(|()| {
            run(
                "mount",
                &[
                    "-o".as_ref(),
                    "loop".as_ref(),
                    image.as_os_str(),
                    dir.as_os_str(),
                ],
            )
        });
        match made {
            Ok(()) => Some(Freezable(dir.to_owned())),
            Err(e) => {
                eprintln!("skipping: cannot mount an ext4 image on a loop device here ({e})");
                None
            }
        }
    }

    fn freeze(&self, frozen: bool) {
        let flag = if frozen { "-f" } else { "-u" };
        let status = std::process::Command::new("fsfreeze")
            .arg(flag)
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(status.success(), "fsfreeze {flag}");
    }
}

impl Drop for Freezable {
    fn drop(&mut self) {
        // Thawed already unless a test failed: then quietly.
        let _ = std::process::Command::new("fsfreeze")
            .arg("-u")
            .arg(&self.0)
            .stderr(std::process::Stdio::null())
            .status();
        // A recorder still running (a failed test) may hold it: detach.
        let _ = std::process::Command::new("umount")
            .args(["-l"])
            .arg(&self.0)
            .status();
    }
}

#[test]
fn a_wedged_writer_stops_the_watchdog_and_turns_healthz_503() {
    let env = Env::new();
    let Some(disk) = Freezable::mount(&env, &env.out()) else {
        return;
    };
    let port = free_port();
    let config = env.config(&format!(
        "[source]\nwidth = 64\nheight = 48\nfps = 10\n[snapshot]\nevery = \"frame\"\n\
         [output]\ndir = \"{{out}}\"\nwrite_timeout = \"2s\"\n\
         [http]\nlisten = \"127.0.0.1:{port}\"\n"
    ));
    let (socket, mut child) = spawn_notified(&env, &config, "14s");
    let started = Instant::now();
    let listener = std::thread::spawn(move || {
        let messages = collect(&socket, &mut child);
        (messages, child.wait_with_output().unwrap())
    });
    wait_for_http(port);
    wait_for_files(&env, 5);
    // The disk stops taking writes: the encoders wait in write or fsync.
    disk.freeze(true);
    let frozen_at = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(10);
    let body = loop {
        let (status, _, body) = http(port, "GET", "/healthz");
        if status == 503 {
            break String::from_utf8(body).unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "/healthz stayed {status} with the disk frozen"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(body.trim(), "frames wait and no file is written");
    std::thread::sleep(Duration::from_secs(3));
    let thawed_at = started.elapsed();
    disk.freeze(false);
    let deadline = Instant::now() + Duration::from_secs(10);
    while http(port, "GET", "/healthz").0 != 200 {
        assert!(
            Instant::now() < deadline,
            "/healthz did not recover after the thaw"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (messages, output) = listener.join().unwrap();
    assert_success(&output);
    let pings: Vec<Duration> = messages
        .iter()
        .filter(|(_, t)| t.trim() == "WATCHDOG=1")
        .map(|(at, _)| *at)
        .collect();
    // No ping from write_timeout (plus slack) after the freeze to the thaw,
    // pings before and after.
    let quiet = frozen_at + Duration::from_millis(2600)..thawed_at;
    assert!(
        !pings.iter().any(|at| quiet.contains(at)),
        "pings went on while the writer was wedged ({quiet:?}): {pings:?}"
    );
    assert!(pings.iter().any(|at| *at < frozen_at));
    assert!(pings
        .iter()
        .any(|at| *at > thawed_at + Duration::from_secs(1)));
    // Every file on the thawed disk is whole.
    let paths: Vec<std::path::PathBuf> = env.images().iter().map(|f| env.out().join(f)).collect();
    assert_eq!(decode(&paths).len(), paths.len());
    drop(disk);
}

#[test]
fn a_config_replaced_by_a_fifo_is_refused_without_waiting() {
    let env = Env::new();
    let config =
        env.config("[source]\nwidth = 32\nheight = 16\nfps = 20\n[snapshot]\nevery = \"frame\"\n");
    let mut child = env.spawn(false);
    wait_for_files(&env, 3);
    std::fs::remove_file(&config).unwrap();
    mkfifo(&config);
    signal(&child, "HUP");
    std::thread::sleep(Duration::from_millis(500));
    let before = env.manifest().len();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        env.manifest().len() > before,
        "recording stopped at the reload"
    );
    signal(&child, "TERM");
    wait_with_timeout(&mut child, Duration::from_secs(10));
    let output = child.wait_with_output().unwrap();
    assert_success(&output);
    let log = stderr(&output);
    assert!(log.contains("config not reloaded"), "{log}");
    assert!(log.contains("not a config file"), "{log}");
    // At start too, at once.
    let output = env.run(&["check", "--config", config.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(78), "{}", stderr(&output));
}

#[test]
fn slow_and_silent_clients_never_keep_healthz_or_a_stop_waiting() {
    use std::io::Write as _;
    let env = Env::new();
    let port = free_port();
    env.config(&format!(
        "[source]\nwidth = 320\nheight = 240\nfps = 20\n[snapshot]\nevery = \"frame\"\n\
         [http]\nlisten = \"127.0.0.1:{port}\"\n"
    ));
    let mut child = env.spawn(false);
    wait_for_http(port);
    wait_for_files(&env, 3);
    // 200 connections that send half a request head and then nothing, and
    // 20 that ask for the preview and never read it.
    let mut held = Vec::new();
    for _ in 0..200 {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow:");
        held.push(s);
    }
    for _ in 0..20 {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let _ = s.write_all(b"GET /snapshot.jpg HTTP/1.1\r\n\r\n");
        held.push(s);
    }
    // 30 that promise a large body and send none, 150 that send nothing.
    for _ in 0..30 {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nContent-Length: 1000000000\r\n\r\n");
        held.push(s);
    }
    for _ in 0..150 {
        held.push(std::net::TcpStream::connect(("127.0.0.1", port)).unwrap());
    }
    // /healthz still answers at once.
    let asked = Instant::now();
    let (status, _, body) = http(port, "GET", "/healthz");
    assert!(
        status == 200 || status == 503,
        "{status} {}",
        String::from_utf8_lossy(&body)
    );
    let took = asked.elapsed();
    assert!(took < Duration::from_secs(3), "/healthz took {took:?}");
    // Slow heads are cut off after the deadline (408), not kept forever.
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(http(port, "GET", "/healthz").0, 200);
    // A stop does not wait for them.
    let stopping = Instant::now();
    signal(&child, "TERM");
    wait_with_timeout(&mut child, Duration::from_secs(30));
    let took = stopping.elapsed();
    let output = child.wait_with_output().unwrap();
    assert_success(&output);
    assert!(took < Duration::from_secs(15), "the stop took {took:?}");
    drop(held);
}

#[test]
fn reloads_that_cannot_apply_live_are_refused_and_auto_threads_do_not_count() {
    let env = Env::new();
    let fifo = env.path("frames.fifo");
    mkfifo(&fifo);
    let body = |fps: u32, quality: u32| {
        format!(
            "[source]\nkind = \"raw\"\npath = \"{}\"\nwidth = 8\nheight = 8\npixel_format = \"gray\"\nfps = {fps}\n\
             [ring]\nwhen_full = \"block\"\n[snapshot]\nevery = \"frame\"\nquality = {quality}\n",
            fifo.display()
        )
    };
    let config = env.config(&body(30, 90));
    let mut child = env.spawn(false);
    let mut writer = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    // Each frame's bytes are its index: a torn frame would mix two.
    let frame = |k: u8| vec![k; 64];
    for k in 0..20u8 {
        std::io::Write::write_all(&mut writer, &frame(k)).unwrap();
    }
    wait_for_files(&env, 20);
    // A raw stream cannot be reopened where it was: refused.
    std::fs::write(
        &config,
        body(25, 90) + "\n[output]\ndir = \"" + env.out().to_str().unwrap() + "\"\n",
    )
    .unwrap();
    signal(&child, "HUP");
    std::thread::sleep(Duration::from_millis(300));
    // Threads left at "one per core" are no change, even if the cores are.
    std::fs::write(
        &config,
        body(30, 70) + "\n[output]\ndir = \"" + env.out().to_str().unwrap() + "\"\n",
    )
    .unwrap();
    signal(&child, "HUP");
    std::thread::sleep(Duration::from_millis(300));
    for k in 20..40u8 {
        std::io::Write::write_all(&mut writer, &frame(k)).unwrap();
    }
    drop(writer);
    wait_with_timeout(&mut child, Duration::from_secs(30));
    let output = child.wait_with_output().unwrap();
    assert_success(&output);
    let log = stderr(&output);
    assert!(log.contains("raw input is a stream"), "{log}");
    assert!(log.contains("snapshot.quality 90 -> 70"), "{log}");
    assert!(!log.contains("encoder.threads"), "{log}");
    let lines = env.manifest();
    assert_eq!(lines.len(), 40, "{log}");
    let paths: Vec<std::path::PathBuf> = lines
        .iter()
        .map(|l| env.out().join(l["path"].as_str().unwrap()))
        .collect();
    // Every frame whole (one value) and numbered in order: nothing torn or
    // repeated. (Manifest lines come in the order files became durable.)
    for (line, image) in lines.iter().zip(decode(&paths)) {
        let seq = line["seq"].as_u64().unwrap();
        let expected = seq as i32 - 1;
        assert!(
            image
                .pixels
                .iter()
                .all(|&p| (i32::from(p) - expected).abs() <= 2),
            "file {seq} is not frame {expected}"
        );
    }
}
