"""Decodes images with Pillow, as a user's tools would read them.

Reads lines "IMAGE<TAB>RAW_OUT" on stdin; for each, writes the decoded pixels
to RAW_OUT (8-bit modes as stored; 16-bit grayscale as little-endian u16) and
prints one JSON line: mode, width, height, format and the text metadata.
A file Pillow cannot fully decode prints {"error": ...}.
"""
import json
import struct
import sys

from PIL import Image

for line in sys.stdin:
    image_path, raw_path = line.rstrip("\n").split("\t")
    try:
        with Image.open(image_path) as im:
            im.load()
            mode = im.mode
            if mode in ("I", "I;16", "I;16B"):
                values = list(im.getdata())
                data = struct.pack("<%dH" % len(values), *values)
                mode = "gray16"
            else:
                data = im.tobytes()
            with open(raw_path, "wb") as out:
                out.write(data)
            info = {k: v for k, v in im.info.items() if isinstance(v, (str, int, float))}
            print(json.dumps({"mode": mode, "width": im.width, "height": im.height,
                              "format": im.format, "info": info}), flush=True)
    except Exception as e:  # report, do not stop: the test decides
        print(json.dumps({"error": "%s: %s" % (type(e).__name__, e)}), flush=True)
