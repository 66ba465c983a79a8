#!/usr/bin/env python3
"""framerec's benchmark, side by side with the programs users would pick
instead (`make bench`).

It installs what it needs when missing (scripts/deps.sh bench), builds
framerec and bench/turbojpeg-alone in release mode, makes the frames once
(target/bench-frames/N/), then runs every case R times in alternating order:
framerec from RGB, YUYV, NV12 and MJPEG (passthrough) files, fsync off and on;
libjpeg-turbo alone; OpenCV's imwrite on a thread pool; FFmpeg's image2
muxer; GStreamer's jpegenc ! multifilesink; a trivial loop writing the MJPEG
frames' bytes; and framerec fed at exactly 30 fps through a FIFO. Each run is
one process (two for the two-process libjpeg-turbo figure) measured by wait4:
wall time from start to exit, user+sys CPU time, peak RSS. It prints one
table, with every target of the benchmark marked PASS or FAIL, and writes it
to target/bench-report.md.

    python3 bench/run.py [--runs N] [--quick] [--framerec BIN [--label TEXT]] [--no-deps]

Outputs go to target/bench-work/ (on the disk the repository is on; the
script says so if that is a tmpfs), emptied and followed by sync() between
runs. No cache is dropped: the input frames are read from the page cache.
"""

import argparse
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "target"
FRAMES_ROOT = TARGET / "bench-frames"
WORK = TARGET / "bench-work"
VENV_PYTHON = TARGET / "bench-venv" / "bin" / "python"
PEERS = ROOT / "bench" / "peers.py"
BIN = TARGET / "bench-bin"  # private copies: a build running meanwhile cannot swap them
ALONE = BIN / "turbojpeg-alone"
MEASURE = BIN / "bench-measure"
REPORT = TARGET / "bench-report.md"
RESULTS = TARGET / "bench-runs.json"  # every run's figures, in the order they ran

WIDTH, HEIGHT = 1920, 1080
RGB_FRAME_BYTES = WIDTH * HEIGHT * 3
NOISE = 9  # ffmpeg noise strength: ~440 KB per JPEG q90 4:2:0, as measured before
FFMPEG_QSCALE = 2  # closest to q90's file size (ffmpeg's mjpeg encoder has no q90)
LIVE_FPS = 30
RING_FRAMES = 16  # framerec's default ring
MIB = 1024 * 1024
QUIET = 0.3  # cores other processes may use while a run starts


def log(message):
    print(message, file=sys.stderr, flush=True)


def fail(message):
    log(f"bench: FAILED: {message}")
    sys.exit(1)


# ----------------------------------------------------------------- setup


def run_checked(argv, **kwargs):
    result = subprocess.run(argv, **kwargs)
    if result.returncode != 0:
        fail(f"{' '.join(map(str, argv))} exited {result.returncode}")
    return result


def build(framerec_bin):
    """Builds framerec (unless given) and the tools, copies them to BIN;
    returns the copy of framerec and what it was built from."""
    source = f"built from {git_describe()}" if framerec_bin is None else str(framerec_bin)
    if framerec_bin is None:
        log("bench: cargo build --release")
        run_checked(["cargo", "build", "--release", "--quiet"], cwd=ROOT)
        framerec_bin = TARGET / "release" / "framerec"
    log("bench: building bench/tools")
    run_checked(
        ["cargo", "build", "--release", "--quiet", "--manifest-path",
         str(ROOT / "bench" / "tools" / "Cargo.toml")],
        cwd=ROOT,
        env={**os.environ, "CARGO_TARGET_DIR": str(TARGET)},
    )
    shutil.rmtree(BIN, ignore_errors=True)
    BIN.mkdir(parents=True)
    for tool in ("turbojpeg-alone", "bench-measure"):
        shutil.copy2(TARGET / "release" / tool, BIN / tool)
    shutil.copy2(framerec_bin, BIN / "framerec")
    return BIN / "framerec", source


def make_frames(count):
    """The frames, made once: raw RGB24, YUYV, NV12 and an MJPEG stream of the
    same `count` frames of testsrc2 with temporal noise."""
    folder = FRAMES_ROOT / str(count)
    done = folder / "frames.json"
    params = {"count": count, "width": WIDTH, "height": HEIGHT, "noise": NOISE, "version": 1}
    if done.exists():
        meta = json.loads(done.read_text())
        if meta.get("params") == params:
            return folder, meta
    log(f"bench: making {count} frames {WIDTH}x{HEIGHT} in {folder}")
    began = time.perf_counter()
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    ffmpeg = ["ffmpeg", "-v", "error", "-y"]
    run_checked(ffmpeg + [
        "-f", "lavfi", "-i", f"testsrc2=size={WIDTH}x{HEIGHT}:rate=30",
        "-vf", f"noise=alls={NOISE}:allf=t,format=rgb24",
        "-frames:v", str(count), "-f", "rawvideo", str(folder / "rgb.raw")])
    raw_in = ["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{WIDTH}x{HEIGHT}",
              "-i", str(folder / "rgb.raw")]
    # swscale's RGB → YUV is BT.601 limited range, as cameras send it.
    for pix_fmt, name in [("yuyv422", "yuyv.raw"), ("nv12", "nv12.raw")]:
        run_checked(ffmpeg + raw_in + ["-pix_fmt", pix_fmt, "-f", "rawvideo", str(folder / name)])
    offsets = run_checked(
        [str(VENV_PYTHON), str(PEERS), "encode-mjpeg", str(folder / "rgb.raw"),
         str(folder / "stream.mjpeg"), str(WIDTH), str(HEIGHT)],
        stdout=subprocess.PIPE, text=True).stdout
    (folder / "offsets.json").write_text(offsets)
    sizes = [length for _, length in json.loads(offsets)]
    if len(sizes) != count:
        fail(f"the MJPEG stream has {len(sizes)} frames, not {count}")
    meta = {"params": params, "mjpeg_mean_bytes": sum(sizes) / len(sizes)}
    done.write_text(json.dumps(meta))
    meta["made_in"] = time.perf_counter() - began
    return folder, meta


def warm(paths):
    """Reads the inputs once, so every run (the first too) reads them from
    the page cache."""
    for path in paths:
        with open(path, "rb") as f:
            while f.read(64 * MIB):
                pass


def filesystem_of(path):
    """The mount point and type of the filesystem that holds `path`."""
    path = os.path.realpath(path)
    best = ("/", "?")
    with open("/proc/self/mounts") as mounts:
        for line in mounts:
            fields = line.split()
            mount = fields[1].replace("\\040", " ")
            if (path == mount or path.startswith(mount.rstrip("/") + "/")) and len(mount) >= len(best[0]):
                best = (mount, fields[2])
    return best


# ------------------------------------------------------------- measuring


class Run:
    """One measured run."""

    def __init__(self, wall, cpu, rss_kib, files, bytes_written, extra=None):
        self.wall = wall
        self.cpu = cpu
        self.rss_kib = rss_kib
        self.files = files
        self.bytes = bytes_written
        self.extra = extra or {}


def spawn(argv, log_path, stdin=subprocess.DEVNULL, env=None):
    out = open(log_path, "ab")
    out.write(f"$ {' '.join(map(str, argv))}\n".encode())
    out.flush()
    proc = subprocess.Popen([str(a) for a in argv], stdin=stdin, stdout=out, stderr=out,
                            env={**os.environ, **(env or {})})
    out.close()
    return proc


def reap(proc, log_path, what):
    """Waits for `proc`; fails loudly, with the end of its output, unless it
    exited 0."""
    if proc.wait() != 0:
        tail = Path(log_path).read_text(errors="replace")[-3000:]
        fail(f"{what} exited {proc.returncode}; its output ({log_path}):\n{tail}")


def spawn_measured(argv, log_path, result):
    """Starts `argv` under bench-measure, which writes its wall time, CPU
    time and peak RSS to `result`."""
    if result.exists():
        result.unlink()
    return spawn([MEASURE, result, "--", *argv], log_path)


def measured(result):
    m = json.loads(result.read_text())
    return m["wall"], m["cpu"], m["maxrss_kib"]


def measure(argv, log_path, what):
    result = WORK / "measure.json"
    reap(spawn_measured(argv, log_path, result), log_path, what)
    return measured(result)


def jpeg_files(folder):
    count, size = 0, 0
    for dirpath, _, names in os.walk(folder):
        for name in names:
            if name.endswith(".jpg") and not name.startswith("."):
                count += 1
                size += os.path.getsize(os.path.join(dirpath, name))
    return count, size


def fresh_output():
    out = WORK / "out"
    shutil.rmtree(out, ignore_errors=True)
    os.sync()  # the previous run's dirty pages do not land in this one
    out.mkdir(parents=True)
    return out


def checked(what, out, expected):
    files, size = jpeg_files(out)
    if files != expected:
        fail(f"{what}: {files} files written, expected {expected} (in {out})")
    return files, size


def framerec_config(out, source_path, pixel_format, fsync, passthrough=False, listen=None):
    lines = [
        'camera = "bench"',
        "[source]",
        'kind = "raw"',
        f'path = "{source_path}"',
        f"width = {WIDTH}",
        f"height = {HEIGHT}",
        f'pixel_format = "{pixel_format}"',
        "[ring]",
        f'when_full = "{"drop-oldest" if listen else "block"}"',
        "[snapshot]",
        'every = "frame"',
        'format = "jpeg"',
        "quality = 90",
        'subsampling = "420"',
    ]
    if pixel_format == "mjpeg":
        lines.append(f"passthrough = {'true' if passthrough else 'false'}")
    lines += ["[output]", f'dir = "{out}"', f"fsync = {'true' if fsync else 'false'}",
              "manifest = true"]
    if listen:
        lines += ["[http]", f'listen = "{listen}"']
    return "\n".join(lines) + "\n"


class Bench:
    def __init__(self, framerec, folder, meta, count):
        self.framerec = framerec
        self.folder = folder
        self.meta = meta
        self.count = count
        self.logs = WORK / "logs"
        self.run_index = 0
        self.encoder_threads = {}  # case → encoder threads, as `framerec check` says

    def check(self, key, config):
        """Validates `config` and notes how many encoder threads it gets."""
        if key in self.encoder_threads:
            return
        result = subprocess.run([self.framerec, "check", "--config", config],
                                capture_output=True, text=True)
        if result.returncode != 0:
            fail(f"framerec check refused {config}:\n{result.stdout}{result.stderr}")
        match = re.search(r"^\[encoder\][^\[]*?^threads = (\d+)", result.stdout, re.M | re.S)
        self.encoder_threads[key] = int(match.group(1)) if match else len(os.sched_getaffinity(0))

    def log_path(self, key):
        self.run_index += 1
        return self.logs / f"{self.run_index:03d}-{key}.log"

    def input(self, name):
        return self.folder / name

    # Each case returns a Run.

    def framerec_file(self, key, source, pixel_format, fsync, passthrough=False):
        out = fresh_output()
        config = WORK / f"{key}.toml"
        config.write_text(framerec_config(out, self.input(source), pixel_format, fsync, passthrough))
        self.check(key, config)
        wall, cpu, rss = measure([self.framerec, "run", "--config", config], self.log_path(key),
                                 f"framerec ({key})")
        files, size = checked(key, out, self.count)
        return Run(wall, cpu, rss, files, size)

    def alone(self, key, processes):
        outputs = []
        procs = []
        # Both copies read the frames into memory, then start encoding together.
        start = time.time() + 1.0 + self.count * 0.008
        for i in range(processes):
            path = self.log_path(f"{key}-{i}")
            result = WORK / f"{key}-{i}.json"
            procs.append((path, result, spawn(
                ["sh", "-c", f'exec "$0" "$@" >"{result}"', ALONE, self.input("rgb.raw"),
                 WIDTH, HEIGHT, f"{start:.6f}"], path)))
        for path, result, proc in procs:
            reap(proc, path, "turbojpeg-alone")
            outputs.append(json.loads(result.read_text()))
        frames = sum(o["frames"] for o in outputs)
        if frames != self.count * processes:
            fail(f"{key}: {frames} frames encoded, expected {self.count * processes}")
        # The encode loops only: from the first start to the last end.
        wall = max(o["end"] for o in outputs) - min(o["start"] for o in outputs)
        loop_cpu = sum(o["cpu_seconds"] for o in outputs)
        mean_bytes = outputs[0]["mean_bytes"]
        return Run(wall, loop_cpu, None, frames, mean_bytes * frames)

    def opencv(self, key):
        out = fresh_output()
        wall, cpu, rss = measure(
            [VENV_PYTHON, PEERS, "opencv", self.input("rgb.raw"), out, WIDTH, HEIGHT, 2],
            self.log_path(key), "OpenCV pool")
        files, size = checked(key, out, self.count)
        return Run(wall, cpu, rss, files, size)

    def ffmpeg(self, key, pix_fmt, source):
        out = fresh_output()
        wall, cpu, rss = measure(
            ["ffmpeg", "-v", "error", "-nostdin", "-f", "rawvideo", "-pix_fmt", pix_fmt,
             "-s", f"{WIDTH}x{HEIGHT}", "-i", self.input(source), "-pix_fmt", "yuvj420p",
             "-q:v", FFMPEG_QSCALE, "-f", "image2", out / "%06d.jpg"],
            self.log_path(key), "ffmpeg")
        files, size = checked(key, out, self.count)
        return Run(wall, cpu, rss, files, size)

    def gstreamer(self, key, gst_format, source):
        out = fresh_output()
        wall, cpu, rss = measure(
            ["gst-launch-1.0", "-q", "filesrc", f"location={self.input(source)}", "!",
             "rawvideoparse", f"width={WIDTH}", f"height={HEIGHT}", f"format={gst_format}",
             "framerate=30/1", "!", "videoconvert", "!", "video/x-raw,format=I420", "!",
             "jpegenc", "quality=90", "!", "multifilesink", f"location={out}/%06d.jpg"],
            self.log_path(key), "gst-launch-1.0")
        files, size = checked(key, out, self.count)
        return Run(wall, cpu, rss, files, size)

    def trivial(self, key, fsync):
        out = fresh_output()
        wall, cpu, rss = measure(
            [sys.executable, PEERS, "trivial-write", self.input("stream.mjpeg"),
             self.input("offsets.json"), out, "fsync" if fsync else "nofsync"],
            self.log_path(key), "trivial loop")
        files, size = checked(key, out, self.count)
        return Run(wall, cpu, rss, files, size)

    def live(self, key, source, pixel_format):
        """framerec reading a FIFO fed at exactly LIVE_FPS, every frame kept,
        fsync on; /metrics read after the last file and before the end of
        input."""
        out = fresh_output()
        fifo = WORK / "live.fifo"
        if fifo.exists():
            fifo.unlink()
        os.mkfifo(fifo)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        listen = f"127.0.0.1:{port}"
        config = WORK / f"{key}.toml"
        config.write_text(framerec_config(out, fifo, pixel_format, True,
                                          passthrough=pixel_format == "mjpeg", listen=listen))
        self.check(key, config)
        if pixel_format == "mjpeg":
            stream = self.input(source).read_bytes()
            frames = [stream[a:a + n] for a, n in json.loads(self.input("offsets.json").read_text())]
        else:
            data = self.input(source).read_bytes()
            frame_bytes = len(data) // self.count
            frames = [data[i * frame_bytes:(i + 1) * frame_bytes] for i in range(self.count)]
        log_path = self.log_path(key)
        result = WORK / "measure.json"
        proc = spawn_measured([self.framerec, "run", "--config", config], log_path, result)
        metrics = {}
        feeder_error = []

        def feed():
            try:
                fd = None
                deadline = time.monotonic() + 30
                while fd is None:
                    try:
                        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
                    except OSError:
                        if proc.poll() is not None or time.monotonic() > deadline:
                            raise RuntimeError("framerec never opened the FIFO")
                        time.sleep(0.01)
                os.set_blocking(fd, True)
                t0 = time.monotonic()
                written = []
                for i, frame in enumerate(frames):
                    pause = t0 + i / LIVE_FPS - time.monotonic()
                    if pause > 0:
                        time.sleep(pause)
                    view = memoryview(frame)
                    while view:
                        view = view[os.write(fd, view):]
                    written.append(time.monotonic())
                metrics["fed"] = (len(written) - 1) / (written[-1] - written[0])
                # Every file written, then the counters, then the end of input.
                deadline = time.monotonic() + 30
                while True:
                    text = scrape(listen)
                    if counter(text, "framerec_files_written_total") >= len(frames) \
                            or time.monotonic() > deadline:
                        break
                    time.sleep(0.1)
                metrics["text"] = text
                os.close(fd)
            except Exception as e:  # reported below, after framerec is reaped
                feeder_error.append(e)
                proc.terminate()

        feeder = threading.Thread(target=feed)
        feeder.start()
        proc.wait()
        feeder.join()
        reap(proc, log_path, f"framerec ({key})")
        wall, cpu, rss = measured(result)
        fifo.unlink()
        if feeder_error:
            fail(f"{key}: feeding framerec failed: {feeder_error[0]}")
        files, size = checked(key, out, self.count)
        text = metrics["text"]
        extra = {
            "latency": histogram(text, "framerec_latency_seconds"),
            "encode": histogram(text, "framerec_encode_seconds"),
            "dropped": counter(text, "framerec_frames_dropped_total"),
            "fed": metrics["fed"],
        }
        return Run(wall, cpu, rss, files, size, extra)


def busy_and_own():
    """CPU seconds the whole machine spent busy (steal included: time the
    host gave to others), and those of this process and its reaped
    children."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = fields[:8]
    hz = os.sysconf("SC_CLK_TCK")
    t = os.times()
    own = t.user + t.system + t.children_user + t.children_system
    return (user + nice + system + irq + softirq + steal) / hz, own


def wait_for_quiet(limit):
    """Waits (up to `limit` seconds) until the rest of the machine uses less
    than QUIET cores; returns the cores it used in the last second."""
    deadline = time.monotonic() + limit
    while True:
        b0, o0 = busy_and_own()
        time.sleep(1.0)
        b1, o1 = busy_and_own()
        others = max(0.0, (b1 - b0) - (o1 - o0))
        if others < QUIET or time.monotonic() >= deadline:
            return others


def scrape(listen):
    with urllib.request.urlopen(f"http://{listen}/metrics", timeout=5) as response:
        return response.read().decode()


def counter(text, name):
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


def histogram(text, name):
    """sum, count and the cumulative buckets [(le, count)] of a histogram."""
    buckets, total, count = [], 0.0, 0.0
    for line in text.splitlines():
        if line.startswith(name + "_bucket"):
            le = re.search(r'le="([^"]+)"', line).group(1)
            buckets.append((float(le), float(line.rsplit(" ", 1)[1])))
        elif line.startswith(name + "_sum"):
            total = float(line.rsplit(" ", 1)[1])
        elif line.startswith(name + "_count"):
            count = float(line.rsplit(" ", 1)[1])
    buckets.sort()
    return {"sum": total, "count": count, "buckets": buckets}


def quantile(h, q):
    """Prometheus' histogram_quantile: linear within the bucket that holds
    the q-th observation."""
    if not h["count"]:
        return float("nan")
    rank = q * h["count"]
    lower, below = 0.0, 0.0
    for le, cumulative in h["buckets"]:
        if cumulative >= rank:
            if le == float("inf"):
                return lower
            inside = cumulative - below
            return lower + (le - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = le, cumulative
    return lower


# ---------------------------------------------------------------- report


def cpu_model():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def mem_total_gib():
    for line in open("/proc/meminfo"):
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 1024 / 1024
    return 0


def git_describe():
    try:
        return subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT,
                              capture_output=True, text=True).stdout.strip() or "?"
    except OSError:
        return "?"


def spread(values, fmt="{:.0f}"):
    med = statistics.median(values)
    if len(values) == 1:
        return fmt.format(med)
    return f"{fmt.format(med)} ({fmt.format(min(values))}–{fmt.format(max(values))})"


def verdict(ok):
    return "**PASS**" if ok else "**FAIL**"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs of each case (default 3)")
    parser.add_argument("--quick", action="store_true", help="30 frames, one run: a smoke check")
    parser.add_argument("--frames", type=int, default=300, help="frames per run (default 300)")
    parser.add_argument("--framerec", help="measure this framerec binary instead of building one")
    parser.add_argument("--label", help="how the report names the framerec measured "
                        "(default: the commit it was built from, or --framerec's path)")
    parser.add_argument("--no-deps", action="store_true", help="do not run scripts/deps.sh bench")
    parser.add_argument("--quiet-wait", type=float, default=20,
                        help="before each run, wait up to this many seconds for other processes "
                             "to leave the CPUs idle (default 20)")
    args = parser.parse_args()
    count, runs = (30, 1) if args.quick else (args.frames, args.runs)
    began = time.perf_counter()

    if not args.no_deps:
        run_checked(["bash", str(ROOT / "scripts" / "deps.sh"), "bench"], cwd=ROOT)
    framerec, framerec_source = build(args.framerec)
    folder, meta = make_frames(count)
    shutil.rmtree(WORK, ignore_errors=True)
    (WORK / "logs").mkdir(parents=True)
    mount, fstype = filesystem_of(WORK)
    if fstype in ("tmpfs", "ramfs"):
        log(f"bench: WARNING: {WORK} is on {fstype}: fsync costs nothing there")
    warm([folder / n for n in ("rgb.raw", "yuyv.raw", "nv12.raw", "stream.mjpeg")])
    cores = len(os.sched_getaffinity(0))
    bench = Bench(framerec, folder, meta, count)

    # key, label, function
    cases = [
        ("rgb-off", "framerec RGB → JPEG, fsync off", lambda k: bench.framerec_file(k, "rgb.raw", "rgb", False)),
        ("rgb-on", "framerec RGB → JPEG, fsync on (durable, the default)", lambda k: bench.framerec_file(k, "rgb.raw", "rgb", True)),
        ("yuyv-off", "framerec YUYV → JPEG, fsync off", lambda k: bench.framerec_file(k, "yuyv.raw", "yuyv", False)),
        ("nv12-off", "framerec NV12 → JPEG, fsync off", lambda k: bench.framerec_file(k, "nv12.raw", "nv12", False)),
        ("yuyv-on", "framerec YUYV → JPEG, fsync on", lambda k: bench.framerec_file(k, "yuyv.raw", "yuyv", True)),
        ("mjpeg-off", "framerec MJPEG passthrough, fsync off", lambda k: bench.framerec_file(k, "stream.mjpeg", "mjpeg", False, True)),
        ("mjpeg-on", "framerec MJPEG passthrough, fsync on", lambda k: bench.framerec_file(k, "stream.mjpeg", "mjpeg", True, True)),
        ("loop-off", "trivial loop writing the MJPEG bytes, fsync off", lambda k: bench.trivial(k, False)),
        ("loop-on", "trivial loop writing the MJPEG bytes, fsync on", lambda k: bench.trivial(k, True)),
        ("alone1", "libjpeg-turbo alone, 1 thread (RGB, in memory)", lambda k: bench.alone(k, 1)),
        ("alone2", "libjpeg-turbo alone, 2 processes at once", lambda k: bench.alone(k, 2)),
        ("opencv", "OpenCV imwrite, 2-thread pool (RGB)", lambda k: bench.opencv(k)),
        ("ffmpeg-rgb", f"FFmpeg image2, RGB (-q:v {FFMPEG_QSCALE})", lambda k: bench.ffmpeg(k, "rgb24", "rgb.raw")),
        ("ffmpeg-yuyv", f"FFmpeg image2, YUYV (-q:v {FFMPEG_QSCALE})", lambda k: bench.ffmpeg(k, "yuyv422", "yuyv.raw")),
        ("gst-rgb", "GStreamer jpegenc ! multifilesink, RGB", lambda k: bench.gstreamer(k, "rgb", "rgb.raw")),
        ("gst-yuyv", "GStreamer jpegenc ! multifilesink, YUYV", lambda k: bench.gstreamer(k, "yuy2", "yuyv.raw")),
        ("live-yuyv", f"framerec live {LIVE_FPS} fps, YUYV → JPEG, fsync on", lambda k: bench.live(k, "yuyv.raw", "yuyv")),
        ("live-mjpeg", f"framerec live {LIVE_FPS} fps, MJPEG passthrough, fsync on", lambda k: bench.live(k, "stream.mjpeg", "mjpeg")),
    ]
    results = {key: [] for key, _, _ in cases}
    others = []  # cores used by other processes during each run
    ledger = []
    for rep in range(runs):
        order = cases if rep % 2 == 0 else list(reversed(cases))
        for key, label, function in order:
            log(f"bench: run {rep + 1}/{runs}: {label}")
            before = wait_for_quiet(args.quiet_wait)
            if before >= QUIET:
                log(f"bench: other processes keep {before:.1f} cores busy; running anyway")
            b0, o0 = busy_and_own()
            t0 = time.perf_counter()
            run = function(key)
            b1, o1 = busy_and_own()
            others.append(max(0.0, (b1 - b0) - (o1 - o0)) / (time.perf_counter() - t0))
            results[key].append(run)
            ledger.append({"case": key, "rep": rep + 1, "files": run.files, "wall": run.wall,
                           "cpu": run.cpu, "maxrss_kib": run.rss_kib, "bytes": run.bytes,
                           "other_cores": others[-1],
                           "other_cores_before": before,
                           **{k: v for k, v in run.extra.items() if k == "fed"}})
            RESULTS.write_text(json.dumps(ledger, indent=1))
    shutil.rmtree(WORK / "out", ignore_errors=True)

    def rate(key):
        return [r.files / r.wall for r in results[key]]

    def med(key):
        return statistics.median(rate(key))

    # ---- targets
    notes = {key: [] for key in results}
    verdicts = []

    def target(key, name, text, ok):
        notes[key].append(f"{name}: {text} {verdict(ok) if ok is not None else ''}".rstrip())
        if ok is not None:
            verdicts.append((name, ok, text))

    r1 = med("rgb-off") / (2 * med("alone1"))
    target("rgb-off", "T1", f"{r1:.2f} of 2 × alone (≥ 0.85)", r1 >= 0.85)
    r1b = med("rgb-off") / med("opencv")
    target("rgb-off", "T1", f"{r1b:.2f}× OpenCV pool (≥ 1.5)", r1b >= 1.5)
    for key, name in [("yuyv-off", "YUYV"), ("nv12-off", "NV12")]:
        r = med(key) / med("rgb-off")
        target(key, "T2", f"{name}/RGB {r:.2f} (> 1)", r > 1)
    r3 = med("rgb-on") / med("rgb-off")
    target("rgb-on", "T3", f"{r3:.2f} of fsync off (≥ 0.90)", r3 >= 0.90)
    for on in ("off", "on"):
        r = med(f"mjpeg-{on}") / med(f"loop-{on}")
        target(f"mjpeg-{on}", "T4", f"{r:.2f} of the trivial loop (≥ 0.80)", r >= 0.80)
    r = med("alone2") / (2 * med("alone1"))
    target("alone2", "info", f"{r:.2f} of 2 × 1 thread", None)
    target("rgb-off", "info", f"{med('rgb-off') / med('alone2'):.2f} of 2 processes alone", None)
    for key in ("live-yuyv", "live-mjpeg"):
        cpu = statistics.median(r.cpu / r.files * 1000 for r in results[key])
        target(key, "T5", f"{cpu:.1f} CPU ms a frame", None)
    # T7: latency, from the run with the median p99.
    lat = sorted(results["live-yuyv"], key=lambda r: quantile(r.extra["latency"], 0.99))
    chosen = lat[len(lat) // 2].extra
    p50 = quantile(chosen["latency"], 0.50) * 1000
    p99 = quantile(chosen["latency"], 0.99) * 1000
    enc = chosen["encode"]
    mean_encode = enc["sum"] / enc["count"] * 1000 if enc["count"] else float("nan")
    target("live-yuyv", "T7", f"latency p50 {p50:.1f} ms, p99 {p99:.1f} ms ≤ 3 × mean encode "
           f"{mean_encode:.1f} ms = {3 * mean_encode:.1f} ms", p99 <= 3 * mean_encode)
    chosen_mjpeg = sorted(results["live-mjpeg"], key=lambda r: quantile(r.extra["latency"], 0.99))
    lm = chosen_mjpeg[len(chosen_mjpeg) // 2].extra["latency"]
    target("live-mjpeg", "info", f"latency p50 {quantile(lm, 0.5) * 1000:.1f} ms, "
           f"p99 {quantile(lm, 0.99) * 1000:.1f} ms", None)
    # T6: memory, over every framerec run.
    # Each framerec run against its own bound (its encoder threads as
    # `framerec check` resolves them); the one closest to its bound is shown.
    def bound_mib(key):
        threads = bench.encoder_threads.get(key, cores)
        return threads, ((RING_FRAMES + threads + 2) * RGB_FRAME_BYTES + 32 * MIB) / MIB

    framerec_keys = [k for k in results if k in bench.encoder_threads]
    worst_key = max(framerec_keys,
                    key=lambda k: max(r.rss_kib for r in results[k]) / 1024 / bound_mib(k)[1])
    worst = max(r.rss_kib for r in results[worst_key]) / 1024
    threads, bound = bound_mib(worst_key)
    over = [k for k in framerec_keys if max(r.rss_kib for r in results[k]) / 1024 > bound_mib(k)[1]]
    target(worst_key, "T6", f"peak RSS {worst:.0f} MiB ≤ ({RING_FRAMES} ring + {threads} encoder threads"
           f" + 2) × {RGB_FRAME_BYTES / MIB:.2f} MiB + 32 MiB = {bound:.0f} MiB, the closest of every"
           f" framerec run to its bound", not over)

    # ---- table
    rows = []
    for key, label, _ in cases:
        rs = results[key]
        if key.startswith("live-"):
            files_per_s = "fed at " + spread([r.extra["fed"] for r in rs], "{:.1f}")
        else:
            files_per_s = spread(rate(key))
        cpu_ms = spread([r.cpu / r.files * 1000 for r in rs], "{:.1f}")
        if key.startswith("alone"):
            rss = "—"
        else:
            rss = spread([r.rss_kib / 1024 for r in rs])
        kb = statistics.median(r.bytes / r.files / 1000 for r in rs)
        rows.append(f"| {label} | {files_per_s} | {cpu_ms} | {rss} | {kb:.0f} | {'; '.join(notes[key])} |")
    passed = sum(ok for _, ok, _ in verdicts)
    elapsed = time.perf_counter() - began
    header = [
        f"# framerec benchmark",
        "",
        f"{count} frames {WIDTH}x{HEIGHT} of FFmpeg's testsrc2 with temporal noise (noise=alls={NOISE}:allf=t), "
        f"{runs} run{'s' if runs > 1 else ''} of each case in alternating order; "
        f"framerec {args.label or framerec_source}; "
        f"{cores} cores ({cpu_model()}), {mem_total_gib():.0f} GiB, Linux {platform.release()}, "
        f"output on {fstype} ({mount}). Other processes used {statistics.mean(others):.2f} cores"
        f" on average during the runs (at most {max(others):.2f}). Took {elapsed / 60:.1f} min"
        + (f" ({meta['made_in']:.0f} s of it making the frames)." if "made_in" in meta else "."),
        "",
        "| case | files/s, median (min–max) | CPU ms a file | peak RSS MiB | KB a file | targets |",
        "|---|---|---|---|---|---|",
    ]
    footnotes = [
        "",
        *(["**Quick run** (30 frames, one run): start-up weighs on every figure; a smoke check, "
           "not a measurement.", ""] if args.quick else []),
        f"Targets: {passed} of {len(verdicts)} pass. "
        + "; ".join(f"{name} {'PASS' if ok else 'FAIL'}" for name, ok, _ in verdicts) + ".",
        "",
        "- Every run is one process (framerec, ffmpeg, gst-launch-1.0, python3), from start to exit,"
        " started by bench-measure (bench/tools): files/s = files / wall time; CPU = user + sys of"
        " the process; peak RSS = its ru_maxrss (wait4). Inputs are raw files read from the page cache; outputs go to the page cache"
        " of the disk (fsync off) or to the disk (fsync on); the output directory is emptied and"
        " sync() called before each run. Every run must write exactly one file per frame.",
        "- framerec: `framerec run` with `[source] kind = \"raw\"`, `[ring] when_full = \"block\"`,"
        " `[snapshot] every = \"frame\"`, JPEG q90 4:2:0, `[output] manifest = true`, encoder"
        " threads left to framerec (`threads = 0`; the count `framerec check` prints goes into"
        " T6's bound). MJPEG: the same frames as OpenCV q90 JPEGs, stored as they"
        " are (`passthrough = true`).",
        "- libjpeg-turbo alone: bench/turbojpeg-alone, the same vendored libjpeg-turbo build as"
        " framerec's, RGB → JPEG q90 4:2:0 with one reused compressor over the same frames held"
        " in memory; only the encode loop is timed (its CPU is the loop's thread time). 2 processes:"
        " two copies at once, frames of both over the span from the first start to the last end.",
        "- OpenCV: opencv-python-headless, `cv2.imwrite(path, bgr, [IMWRITE_JPEG_QUALITY, 90])` on a"
        " ThreadPoolExecutor of 2 threads; each task reads its frame from the file and converts"
        " RGB → BGR inside the measured process (as is the interpreter's and cv2's start-up).",
        f"- FFmpeg: `ffmpeg -f rawvideo -pix_fmt rgb24|yuyv422 -s {WIDTH}x{HEIGHT} -i FILE"
        f" -pix_fmt yuvj420p -q:v {FFMPEG_QSCALE} -f image2 out/%06d.jpg`; -q:v {FFMPEG_QSCALE} is"
        " the setting whose files come closest to q90's size (the mjpeg encoder has no q90;"
        " without -pix_fmt it would write 4:4:4 from RGB and 4:2:2 from YUYV).",
        "- GStreamer: `gst-launch-1.0 filesrc location=FILE ! rawvideoparse format=rgb|yuy2 ... !"
        " videoconvert ! video/x-raw,format=I420 ! jpegenc quality=90 ! multifilesink"
        " location=out/%06d.jpg` (without the I420 caps jpegenc stores RGB JPEGs unsubsampled,"
        " 3.4× larger; jpegenc's default DCT is ifast).",
        "- Trivial loop: bench/peers.py, one Python thread writing each JPEG of the MJPEG stream as"
        " a file: hidden temp file, write, fdatasync, rename, directory fsync (fsync on), or write"
        " and rename (fsync off), as framerec does.",
        f"- Live: the YUYV frames (or the MJPEG stream) written into a FIFO at exactly {LIVE_FPS} fps,"
        " framerec reading it as its source with `when_full = \"drop-oldest\"` and fsync on, every"
        " frame kept; CPU is framerec's whole process over the run. Latency (capture = the frame"
        " read from the FIFO, to the file durable) and the mean encode time come from"
        " `framerec_latency_seconds` and `framerec_encode_seconds` on `/metrics`, read after the"
        " last file; p50/p99 are interpolated linearly within the histogram's buckets (as"
        " Prometheus' histogram_quantile).",
    ]
    report = "\n".join(header + rows + footnotes) + "\n"
    print(report)
    REPORT.write_text(report)
    log(f"bench: report written to {REPORT}")


if __name__ == "__main__":
    main()
