//! Test harness: runs the framerec binary in a temp dir and reads what it
//! wrote with independent tools (Pillow, exiftool), as a user would.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_framerec");

/// One test's sandbox: a temp dir with `out/` as the output directory.
pub struct Env {
    pub dir: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Env {
        Env {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn out(&self) -> PathBuf {
        self.path("out")
    }

    /// Writes `config.toml`: `body` plus `[output] dir = <out>` unless the
    /// body has its own `[output]` (then `{out}` in it is replaced).
    pub fn config(&self, body: &str) -> PathBuf {
        let out = self.out();
        let out = out.to_str().unwrap();
        let text = if body.contains("[output]") {
            body.replace("{out}", out)
        } else {
            format!("{body}\n[output]\ndir = \"{out}\"\n")
        };
        let path = self.path("config.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    /// A file of raw bytes in the sandbox.
    pub fn input(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .current_dir(self.dir.path())
            .env("RUST_LOG", "info");
        cmd
    }

    /// Runs framerec to completion (with a generous time limit).
    pub fn run(&self, args: &[&str]) -> Output {
        output_within(&mut self.command(args), Duration::from_secs(120))
    }

    /// Runs `framerec run --config <config.toml>` plus `extra`, expecting success.
    pub fn record(&self, extra: &[&str]) -> Output {
        let output = self.run_config(extra);
        assert_success(&output);
        output
    }

    /// Runs `framerec run --config <config.toml>` plus `extra` to the end,
    /// whatever it exits with.
    pub fn run_config(&self, extra: &[&str]) -> Output {
        let config = self.path("config.toml");
        let mut args = vec!["run", "--config", config.to_str().unwrap()];
        args.extend_from_slice(extra);
        self.run(&args)
    }

    /// Starts `framerec run --config <config.toml>` in the background, with
    /// stderr captured and stdin piped when `stdin` is true.
    pub fn spawn(&self, stdin: bool) -> Running {
        let config = self.path("config.toml");
        let mut cmd = self.command(&["run", "--config", config.to_str().unwrap()]);
        cmd.stderr(Stdio::piped());
        if stdin {
            cmd.stdin(Stdio::piped());
        }
        Running::start(&mut cmd)
    }

    /// Waits until a running recorder has taken its lock (it is recording).
    pub fn wait_for_lock(&self, camera: &str) {
        let lock = self.out().join(format!(".framerec-{camera}.lock"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !lock.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(200));
    }

    /// The manifest's lines, in order.
    pub fn manifest(&self) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(self.out().join("manifest.jsonl")).unwrap_or_default();
        text.lines()
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|e| panic!("bad manifest line {l:?}: {e}"))
            })
            .collect()
    }

    /// Every regular file below `out/` (relative paths, sorted).
    pub fn files(&self) -> Vec<String> {
        files_under(&self.out())
    }

    /// The image files below `out/` (not the manifest or lock).
    pub fn images(&self) -> Vec<String> {
        self.files()
            .into_iter()
            .filter(|f| f.ends_with(".jpg") || f.ends_with(".png"))
            .collect()
    }
}

/// Every regular file below `root` (relative paths, sorted).
pub fn files_under(root: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                found.push(
                    path.strip_prefix(root)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }
    found.sort();
    found
}

/// A process started by a test, killed when dropped: a test that fails
/// half-way never leaves a recorder running (holding the test run's output
/// open, so the whole suite would wait for it).
pub struct Running(Option<Child>);

impl Running {
    /// Spawns `cmd`, panicking with its program's name when it cannot start.
    pub fn start(cmd: &mut Command) -> Running {
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("{:?} does not start: {e}", cmd.get_program()));
        Running(Some(child))
    }

    /// Waits for the process to end and collects what it printed.
    pub fn wait_with_output(mut self) -> std::io::Result<Output> {
        self.0.take().expect("a running process").wait_with_output()
    }
}

impl std::ops::Deref for Running {
    type Target = Child;
    fn deref(&self) -> &Child {
        self.0.as_ref().expect("a running process")
    }
}

impl std::ops::DerefMut for Running {
    fn deref_mut(&mut self) -> &mut Child {
        self.0.as_mut().expect("a running process")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            if child.try_wait().is_ok_and(|s| s.is_none()) {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }
}

/// Runs `cmd` to its end with its output captured; killed (and the test
/// failed) if it takes longer than `limit`.
pub fn output_within(cmd: &mut Command, limit: Duration) -> Output {
    let mut child = Running::start(cmd.stdout(Stdio::piped()).stderr(Stdio::piped()));
    wait_with_timeout(&mut child, limit);
    child.wait_with_output().unwrap()
}

pub fn wait_with_timeout(child: &mut Child, limit: Duration) {
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("framerec did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn assert_success(output: &Output) {
    assert!(
        output.status.success(),
        "framerec failed ({}):\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Sends a signal to a process.
pub fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// An image as Pillow decoded it.
#[derive(Debug)]
pub struct Decoded {
    pub mode: String,
    pub width: u32,
    pub height: u32,
    pub format: String,
    pub info: serde_json::Value,
    pub pixels: Vec<u8>,
}

/// The Python that has Pillow (Debian's, from python3-pil).
fn python() -> &'static str {
    python_with("PIL", "python3-pil")
}

/// The Python that can import `module` (Debian's, from `package`).
pub fn python_with(module: &str, package: &str) -> &'static str {
    for candidate in ["/usr/bin/python3", "python3"] {
        let ok = Command::new(candidate)
            .args(["-c", &format!("import {module}")])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return candidate;
        }
    }
    panic!("{module} is missing: run scripts/deps.sh test (installs {package})");
}

/// An image as Pillow decodes it and converts it to 8-bit RGB itself (its
/// own CMYK → RGB conversion, for one).
pub fn pillow_rgb(path: &Path) -> Vec<u8> {
    let output = Command::new(python())
        .args([
            "-c",
            "import sys; from PIL import Image; \
             sys.stdout.buffer.write(Image.open(sys.argv[1]).convert('RGB').tobytes())",
        ])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "Pillow cannot read {}: {}",
        path.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// Decodes images with Pillow; an undecodable file panics with its name.
pub fn decode(paths: &[PathBuf]) -> Vec<Decoded> {
    try_decode(paths)
        .into_iter()
        .zip(paths)
        .map(|(d, p)| d.unwrap_or_else(|e| panic!("Pillow cannot read {}: {e}", p.display())))
        .collect()
}

/// Decodes images with Pillow, each one's error kept.
pub fn try_decode(paths: &[PathBuf]) -> Vec<Result<Decoded, String>> {
    let scratch = tempfile::tempdir().unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tools/pil_decode.py");
    let mut child = Command::new(python())
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = String::new();
    let raws: Vec<PathBuf> = (0..paths.len())
        .map(|i| scratch.path().join(format!("{i}.raw")))
        .collect();
    for (path, raw) in paths.iter().zip(&raws) {
        input.push_str(&format!("{}\t{}\n", path.display(), raw.display()));
    }
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "the Pillow helper failed");
    let text = String::from_utf8(output.stdout).unwrap();
    text.lines()
        .zip(&raws)
        .map(|(line, raw)| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            if let Some(e) = v.get("error") {
                return Err(e.as_str().unwrap_or_default().to_owned());
            }
            Ok(Decoded {
                mode: v["mode"].as_str().unwrap().to_owned(),
                width: v["width"].as_u64().unwrap() as u32,
                height: v["height"].as_u64().unwrap() as u32,
                format: v["format"].as_str().unwrap_or_default().to_owned(),
                info: v["info"].clone(),
                pixels: std::fs::read(raw).unwrap(),
            })
        })
        .collect()
}

/// Peak signal-to-noise ratio of two 8-bit images, in dB.
pub fn psnr(a: &[u8], b: &[u8]) -> f64 {
    assert_eq!(a.len(), b.len(), "images differ in size");
    let mse: f64 = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2))
        .sum::<f64>()
        / a.len() as f64;
    if mse == 0.0 {
        return f64::INFINITY;
    }
    10.0 * (255.0f64 * 255.0 / mse).log10()
}

/// A smooth, colourful RGB test image that changes with `k`: gradients and
/// a few soft blobs (what cameras see more than hard edges).
pub fn rgb_image(width: usize, height: usize, k: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(width * height * 3);
    for y in 0..height {
        for x in 0..width {
            let fx = x as f64 / width as f64;
            let fy = y as f64 / height as f64;
            let phase = k as f64 * 0.7;
            let r = 127.5 + 110.0 * (fx * 6.0 + phase).sin();
            let g = 127.5 + 110.0 * (fy * 5.0 - phase).cos();
            let b = 127.5 + 100.0 * ((fx + fy) * 4.0 + phase * 0.5).sin();
            out.extend_from_slice(&[r as u8, g as u8, b as u8]);
        }
    }
    out
}

/// BT.601 limited-range Y'CbCr of an RGB pixel, by the textbook formulas
/// (written here independently of framerec's own integer code).
pub fn yuv601(r: u8, g: u8, b: u8) -> (u8, u8, u8) {
    let (r, g, b) = (f64::from(r), f64::from(g), f64::from(b));
    let y = 16.0 + (65.481 * r + 128.553 * g + 24.966 * b) / 255.0;
    let cb = 128.0 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255.0;
    let cr = 128.0 + (112.0 * r - 93.786 * g - 18.214 * b) / 255.0;
    (y.round() as u8, cb.round() as u8, cr.round() as u8)
}

/// RGB → packed YUYV (limited range), chroma averaged over each pair.
pub fn to_yuyv(rgb: &[u8], width: usize, height: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(width * height * 2);
    for px in rgb.chunks_exact(6) {
        let (y0, u0, v0) = yuv601(px[0], px[1], px[2]);
        let (y1, u1, v1) = yuv601(px[3], px[4], px[5]);
        out.extend_from_slice(&[
            y0,
            ((u16::from(u0) + u16::from(u1)) / 2) as u8,
            y1,
            ((u16::from(v0) + u16::from(v1)) / 2) as u8,
        ]);
    }
    out
}

/// RGB → NV12 (limited range), chroma averaged over each 2×2 block.
pub fn to_nv12(rgb: &[u8], width: usize, height: usize) -> Vec<u8> {
    let mut luma = Vec::with_capacity(width * height);
    for px in rgb.chunks_exact(3) {
        luma.push(yuv601(px[0], px[1], px[2]).0);
    }
    let mut chroma = Vec::with_capacity(width * height / 2);
    for by in 0..height / 2 {
        for bx in 0..width / 2 {
            let (mut su, mut sv) = (0u32, 0u32);
            for (dy, dx) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                let i = ((by * 2 + dy) * width + bx * 2 + dx) * 3;
                let (_, u, v) = yuv601(rgb[i], rgb[i + 1], rgb[i + 2]);
                su += u32::from(u);
                sv += u32::from(v);
            }
            chroma.push((su / 4) as u8);
            chroma.push((sv / 4) as u8);
        }
    }
    luma.extend_from_slice(&chroma);
    luma
}

/// Full-range luma (what a grayscale image holds).
pub fn to_gray(rgb: &[u8]) -> Vec<u8> {
    rgb.chunks_exact(3)
        .map(|p| {
            (0.299 * f64::from(p[0]) + 0.587 * f64::from(p[1]) + 0.114 * f64::from(p[2])).round()
                as u8
        })
        .collect()
}

/// The sequence number in a file name (the digits before the extension).
pub fn seq_of(name: &str) -> u64 {
    let stem = name.rsplit('/').next().unwrap().split('.').next().unwrap();
    let digits: String = stem
        .chars()
        .rev()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.chars().rev().collect::<String>().parse().unwrap()
}

/// The summary line framerec logs at exit ("captured ... files/s").
pub fn summary_line(output: &Output) -> String {
    stderr(output)
        .lines()
        .rev()
        .find(|l| l.contains("captured "))
        .unwrap_or_default()
        .to_owned()
}

/// The number of files the summary line says were written.
pub fn wrote(summary: &str) -> u64 {
    summary
        .split("wrote ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no file count in {summary:?}"))
}

/// `rm -rf DIR` while a recorder may be writing into it: tried again, as a
/// user would, while new files keep the directory from being empty.
pub fn remove_tree(dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match std::fs::remove_dir_all(dir) {
            Ok(()) => return,
            Err(_) if !dir.exists() => return,
            Err(e) if Instant::now() < deadline => {
                eprintln!("removing {} again: {e}", dir.display());
            }
            Err(e) => panic!("cannot remove {}: {e}", dir.display()),
        }
    }
}

/// A small tmpfs mounted for one test, unmounted when dropped.
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    /// None (with a message) where mounting is not permitted.
    pub fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output();
        match output {
            Ok(o) if o.status.success() => Some(Tmpfs(dir.to_owned())),
            Ok(o) => {
                eprintln!(
                    "skipping: cannot mount a tmpfs here ({})",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("skipping: cannot run mount ({e})");
                None
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}
