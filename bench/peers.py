#!/usr/bin/env python3
"""The benchmark's Python programs, each run as a process of its own so that
bench/run.py measures it the same way as framerec (wall time, CPU time and
peak RSS from wait4):

  peers.py opencv FRAMES.rgb OUT_DIR WIDTH HEIGHT THREADS
      OpenCV's imwrite at JPEG q90 (OpenCV's default 4:2:0) on a thread pool;
      each task reads its frame from the raw RGB file, turns it into BGR (what
      OpenCV expects) and writes it. Everything is inside the measured process.
  peers.py encode-mjpeg FRAMES.rgb OUT.mjpeg WIDTH HEIGHT
      The MJPEG stream of the same frames: concatenated JPEGs q90 4:2:0 from
      OpenCV (libjpeg-turbo). Prints the frames' offsets as JSON.
  peers.py trivial-write STREAM.mjpeg OFFSETS.json OUT_DIR fsync|nofsync
      The trivial loop: writes each JPEG's bytes as its own file the way
      framerec does with the same durability: a hidden temp file, write,
      fdatasync, rename, directory fsync (fsync on); write and rename only
      (fsync off). One thread, the stream read into memory first.

opencv and encode-mjpeg need cv2 and numpy (the venv in target/bench-venv);
trivial-write needs the standard library only.
"""

import json
import os
import sys


def opencv(frames_path, out_dir, width, height, threads):
    from concurrent.futures import ThreadPoolExecutor

    import cv2
    import numpy as np

    frame_bytes = width * height * 3
    count = os.path.getsize(frames_path) // frame_bytes
    fd = os.open(frames_path, os.O_RDONLY)
    params = [cv2.IMWRITE_JPEG_QUALITY, 90]

    def one(seq):
        data = os.pread(fd, frame_bytes, seq * frame_bytes)
        rgb = np.frombuffer(data, np.uint8).reshape(height, width, 3)
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        if not cv2.imwrite(os.path.join(out_dir, f"{seq:06d}.jpg"), bgr, params):
            raise RuntimeError(f"imwrite failed for frame {seq}")

    with ThreadPoolExecutor(max_workers=threads) as pool:
        for _ in pool.map(one, range(count)):
            pass
    os.close(fd)


def encode_mjpeg(frames_path, out_path, width, height):
    import cv2
    import numpy as np

    frame_bytes = width * height * 3
    offsets = []
    with open(frames_path, "rb") as src, open(out_path, "wb") as out:
        while True:
            data = src.read(frame_bytes)
            if len(data) < frame_bytes:
                break
            rgb = np.frombuffer(data, np.uint8).reshape(height, width, 3)
            bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
            ok, jpeg = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 90])
            if not ok:
                raise RuntimeError("imencode failed")
            offsets.append([out.tell(), len(jpeg)])
            out.write(jpeg.tobytes())
    json.dump(offsets, sys.stdout)


def trivial_write(stream_path, offsets_path, out_dir, durability):
    sync = durability == "fsync"
    with open(offsets_path) as f:
        offsets = json.load(f)
    with open(stream_path, "rb") as f:
        stream = f.read()
    dir_fd = os.open(out_dir, os.O_RDONLY | os.O_DIRECTORY)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    view = memoryview(stream)
    for seq, (start, length) in enumerate(offsets):
        name = f"{seq:010d}.jpg"
        temp = f".{name}.tmp"
        fd = os.open(temp, flags, 0o640, dir_fd=dir_fd)
        data = view[start : start + length]
        while data:
            data = data[os.write(fd, data) :]
        if sync:
            os.fdatasync(fd)
        os.close(fd)
        os.rename(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        if sync:
            os.fsync(dir_fd)
    os.close(dir_fd)


def main(argv):
    command, args = argv[1], argv[2:]
    if command == "opencv":
        opencv(args[0], args[1], int(args[2]), int(args[3]), int(args[4]))
    elif command == "encode-mjpeg":
        encode_mjpeg(args[0], args[1], int(args[2]), int(args[3]))
    elif command == "trivial-write":
        trivial_write(args[0], args[1], args[2], args[3])
    else:
        sys.exit(f"unknown command {command}")


if __name__ == "__main__":
    main(sys.argv)
