//! Pixels in, files out: every input pixel format through the raw source,
//! decoded again by Pillow (and exiftool for metadata), as a user would.

use crate::common::*;
use std::path::PathBuf;

const W: usize = 64;
const H: usize = 48;

/// Records the raw frames in `input` and returns the files in seq order with
/// their manifest lines.
fn record_raw(
    env: &Env,
    pixel_format: &str,
    input: &[u8],
    snapshot: &str,
) -> Vec<(PathBuf, serde_json::Value)> {
    let path = env.input("in.raw", input);
    env.config(&format!(
        "camera = \"t\"\n[source]\nkind = \"raw\"\npath = \"{}\"\nwidth = {W}\nheight = {H}\npixel_format = \"{pixel_format}\"\n\
         [ring]\nwhen_full = \"block\"\n[snapshot]\nevery = \"frame\"\n{snapshot}\n",
        path.display()
    ));
    env.record(&[]);
    let mut lines = env.manifest();
    lines.sort_by_key(|l| l["seq"].as_u64());
    assert_eq!(
        lines.len(),
        env.images().len(),
        "one manifest line per file"
    );
    lines
        .into_iter()
        .map(|l| (env.out().join(l["path"].as_str().unwrap()), l))
        .collect()
}

fn images(n: usize) -> Vec<Vec<u8>> {
    (0..n).map(|k| rgb_image(W, H, k)).collect()
}

#[test]
fn rgb_to_png_is_pixel_identical() {
    let env = Env::new();
    let frames = images(3);
    let written = record_raw(&env, "rgb", &frames.concat(), "format = \"png\"");
    assert_eq!(written.len(), 3);
    let paths: Vec<PathBuf> = written.iter().map(|(p, _)| p.clone()).collect();
    for (decoded, frame) in decode(&paths).iter().zip(&frames) {
        assert_eq!(
            (decoded.format.as_str(), decoded.mode.as_str()),
            ("PNG", "RGB")
        );
        assert_eq!((decoded.width, decoded.height), (W as u32, H as u32));
        assert!(decoded.pixels == *frame, "PNG pixels differ from the input");
    }
    let seqs: Vec<u64> = written
        .iter()
        .map(|(_, l)| l["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [1, 2, 3]);
}

#[test]
fn rgba_and_gray_to_png_are_pixel_identical() {
    for (format, mode, bytes_per_pixel) in [("rgba", "RGBA", 4), ("gray", "L", 1)] {
        let env = Env::new();
        let frames: Vec<Vec<u8>> = (0..2)
            .map(|k| {
                (0..W * H * bytes_per_pixel)
                    .map(|i| ((i * 31 + k * 17) % 256) as u8)
                    .collect()
            })
            .collect();
        let written = record_raw(&env, format, &frames.concat(), "format = \"png\"");
        let paths: Vec<PathBuf> = written.iter().map(|(p, _)| p.clone()).collect();
        for (decoded, frame) in decode(&paths).iter().zip(&frames) {
            assert_eq!(decoded.mode, mode, "{format}");
            assert!(decoded.pixels == *frame, "{format}: pixels differ");
        }
    }
}

#[test]
fn gray16_to_png_keeps_all_sixteen_bits() {
    let env = Env::new();
    // A ramp over the whole 16-bit range whose low byte varies.
    let samples: Vec<u16> = (0..W * H)
        .map(|i| ((i * 65_535) / (W * H - 1)) as u16 ^ (i as u16 & 0x5A))
        .collect();
    let input: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
    let written = record_raw(&env, "gray16", &input, "format = \"png\"");
    let decoded = decode(&[written[0].0.clone()]).remove(0);
    assert_eq!(decoded.mode, "gray16");
    assert!(
        decoded.pixels == input,
        "16-bit samples differ (byte order or lost low byte)"
    );
    // Cross-check the file's bit depth with an independent tool.
    let depth = std::process::Command::new("identify")
        .args(["-format", "%z"])
        .arg(&written[0].0)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&depth.stdout).trim(), "16");
}

#[test]
fn jpeg_quality_trades_size_for_fidelity() {
    let frames = images(2);
    let mut sizes = Vec::new();
    for quality in [90, 30] {
        let env = Env::new();
        let written = record_raw(
            &env,
            "rgb",
            &frames.concat(),
            &format!("format = \"jpeg\"\nquality = {quality}"),
        );
        let paths: Vec<PathBuf> = written.iter().map(|(p, _)| p.clone()).collect();
        let decoded = decode(&paths);
        let db = psnr(&decoded[0].pixels, &frames[0]);
        if quality == 90 {
            assert!(db >= 35.0, "q90 JPEG is only {db:.1} dB from its input");
        } else {
            assert!(db >= 25.0, "q30 JPEG is only {db:.1} dB from its input");
        }
        sizes.push(std::fs::metadata(&paths[0]).unwrap().len());
    }
    assert!(
        sizes[1] < sizes[0],
        "q30 ({}) is not smaller than q90 ({})",
        sizes[1],
        sizes[0]
    );
}

#[test]
fn yuyv_and_nv12_decode_to_the_right_colours() {
    let frames = images(2);
    for (format, convert) in [
        ("yuyv", to_yuyv as fn(&[u8], usize, usize) -> Vec<u8>),
        ("nv12", to_nv12),
    ] {
        let input: Vec<u8> = frames.iter().flat_map(|f| convert(f, W, H)).collect();
        for (output, bound) in [("png", 33.0), ("jpeg", 30.0)] {
            let env = Env::new();
            let written = record_raw(
                &env,
                format,
                &input,
                &format!("format = \"{output}\"\nquality = 95\nsubsampling = \"420\""),
            );
            let paths: Vec<PathBuf> = written.iter().map(|(p, _)| p.clone()).collect();
            for (decoded, frame) in decode(&paths).iter().zip(&frames) {
                assert_eq!(decoded.mode, "RGB");
                let db = psnr(&decoded.pixels, frame);
                // Limited range read as full range gives washed-out colours near 24 dB.
                assert!(
                    db >= bound,
                    "{format} → {output}: {db:.1} dB from the original colours"
                );
            }
        }
    }
}

#[test]
fn gray_to_jpeg_is_a_gray_jpeg() {
    let env = Env::new();
    let frames: Vec<Vec<u8>> = images(1).iter().map(|f| to_gray(f)).collect();
    let written = record_raw(&env, "gray", &frames.concat(), "format = \"jpeg\"");
    let decoded = decode(&[written[0].0.clone()]).remove(0);
    assert_eq!(decoded.mode, "L");
    let db = psnr(&decoded.pixels, &frames[0]);
    assert!(db >= 35.0, "{db:.1} dB");
}

/// Concatenated JPEGs as `ffmpeg -f mjpeg` writes them, made by ImageMagick.
fn jpeg_stream(env: &Env, n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|k| {
            let ppm = env.path(&format!("f{k}.ppm"));
            let mut data = format!("P6\n{W} {H}\n255\n").into_bytes();
            data.extend_from_slice(&rgb_image(W, H, k));
            std::fs::write(&ppm, data).unwrap();
            let jpg = env.path(&format!("f{k}.jpg"));
            let status = std::process::Command::new("convert")
                .arg(&ppm)
                .args(["-quality", "85"])
                .arg(&jpg)
                .status()
                .unwrap();
            assert!(status.success(), "ImageMagick convert failed");
            std::fs::read(&jpg).unwrap()
        })
        .collect()
}

#[test]
fn mjpeg_passthrough_stores_the_cameras_bytes() {
    let env = Env::new();
    let jpegs = jpeg_stream(&env, 3);
    // A torn frame and some garbage between whole ones are skipped.
    let torn = &jpegs[1][..jpegs[1].len() / 2];
    let stream = [
        &jpegs[0][..],
        torn,
        b"\0\0garbage",
        &jpegs[1][..],
        &jpegs[2][..],
    ]
    .concat();
    let written = record_raw(
        &env,
        "mjpeg",
        &stream,
        "format = \"jpeg\"\npassthrough = true",
    );
    assert_eq!(written.len(), 3);
    for ((path, line), jpeg) in written.iter().zip(&jpegs) {
        // The camera's bytes, with only the capture time spliced in.
        assert!(
            without_our_exif(&std::fs::read(path).unwrap()) == *jpeg,
            "{} is not the input JPEG byte for byte (but for the EXIF segment)",
            path.display()
        );
        assert_exif_time(path, line["captured_at"].as_str().unwrap());
        assert_eq!(line["pixel_format"], "mjpeg");
        assert_eq!(
            (line["width"].as_u64(), line["height"].as_u64()),
            (Some(W as u64), Some(H as u64))
        );
    }
}

/// A CMYK JPEG made by ImageMagick (Adobe's inverted YCCK, as Photoshop
/// writes them) from a colourful picture, and the picture.
fn cmyk_jpeg(env: &Env) -> (Vec<u8>, Vec<u8>) {
    let rgb = rgb_image(W, H, 5);
    let ppm = env.input(
        "cmyk.ppm",
        &[format!("P6\n{W} {H}\n255\n").into_bytes(), rgb.clone()].concat(),
    );
    let jpg = env.path("cmyk.jpg");
    let status = std::process::Command::new("convert")
        .arg(&ppm)
        .args(["-colorspace", "CMYK", "-quality", "95"])
        .arg(&jpg)
        .status()
        .unwrap();
    assert!(status.success(), "ImageMagick convert failed");
    let colorspace = std::process::Command::new("identify")
        .args(["-format", "%[colorspace]"])
        .arg(&jpg)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&colorspace.stdout), "CMYK");
    (std::fs::read(&jpg).unwrap(), rgb)
}

#[test]
fn a_cmyk_mjpeg_frame_is_decoded_to_its_colours() {
    let setup = Env::new();
    let (jpeg, rgb) = cmyk_jpeg(&setup);
    // How Pillow, independently, shows the same file.
    let pillow = pillow_rgb(&setup.path("cmyk.jpg"));
    assert!(
        psnr(&pillow, &rgb) >= 30.0,
        "the test picture itself is off"
    );
    for (snapshot, against_pillow) in [
        ("format = \"png\"", 45.0),
        (
            "format = \"jpeg\"\npassthrough = false\nquality = 95\nsubsampling = \"444\"",
            38.0,
        ),
    ] {
        let env = Env::new();
        let written = record_raw(
            &env,
            "mjpeg",
            &[jpeg.clone(), jpeg.clone()].concat(),
            snapshot,
        );
        assert_eq!(written.len(), 2, "{snapshot}: {:?}", env.files());
        let paths: Vec<PathBuf> = written.iter().map(|(p, _)| p.clone()).collect();
        for decoded in decode(&paths) {
            assert_eq!(decoded.mode, "RGB", "{snapshot}");
            assert_eq!((decoded.width, decoded.height), (W as u32, H as u32));
            let db = psnr(&decoded.pixels, &pillow);
            assert!(
                db >= against_pillow,
                "{snapshot}: {db:.1} dB from Pillow's colours"
            );
            let db = psnr(&decoded.pixels, &rgb);
            assert!(
                db >= 30.0,
                "{snapshot}: {db:.1} dB from the original colours"
            );
        }
    }
}

#[test]
fn mjpeg_to_png_decodes_the_same_pixels() {
    let env = Env::new();
    let jpegs = jpeg_stream(&env, 2);
    let written = record_raw(&env, "mjpeg", &jpegs.concat(), "format = \"png\"");
    let paths: Vec<PathBuf> = written.iter().map(|(p, _)| p.clone()).collect();
    let inputs: Vec<PathBuf> = (0..2).map(|k| env.path(&format!("f{k}.jpg"))).collect();
    for (png, jpeg) in decode(&paths).iter().zip(decode(&inputs)) {
        assert_eq!((png.width, png.height), (jpeg.width, jpeg.height));
        let db = psnr(&png.pixels, &jpeg.pixels);
        assert!(
            db >= 45.0,
            "PNG from MJPEG differs from the JPEG's own pixels ({db:.1} dB)"
        );
    }
}

#[test]
fn reads_raw_frames_from_stdin() {
    let env = Env::new();
    let frames = images(4);
    env.config(&format!(
        "[source]\nkind = \"raw\"\npath = \"-\"\nwidth = {W}\nheight = {H}\n[ring]\nwhen_full = \"block\"\n[snapshot]\nevery = \"frame\"\nformat = \"png\"\n"
    ));
    let mut child = env.spawn(true);
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(&frames.concat()).unwrap();
    }
    let output = child.wait_with_output().unwrap();
    assert_success(&output);
    let images = env.images();
    assert_eq!(images.len(), 4, "{images:?}");
    let paths: Vec<PathBuf> = images.iter().map(|i| env.out().join(i)).collect();
    for (decoded, frame) in decode(&paths).iter().zip(&frames) {
        assert!(decoded.pixels == *frame);
    }
}

#[test]
fn capture_time_is_in_the_image_and_the_manifest() {
    let env = Env::new();
    let frames = images(1);
    for format in ["jpeg", "png"] {
        let written = record_raw(
            &env,
            "rgb",
            &frames.concat(),
            &format!("format = \"{format}\""),
        );
        let (path, line) = written.last().unwrap();
        let captured_at = line["captured_at"].as_str().unwrap();
        // 2026-11-24T21:11:53.986941342Z: nanoseconds, UTC.
        assert_eq!(captured_at.len(), 30, "{captured_at}");
        assert!(captured_at.ends_with('Z'));
        if format == "png" {
            let decoded = decode(std::slice::from_ref(path)).remove(0);
            assert_eq!(decoded.info["Creation Time"], captured_at);
        } else {
            assert_exif_time(path, captured_at);
        }
    }
}

/// Checks with exiftool that the JPEG at `path` carries `captured_at` (the
/// manifest's RFC 3339 time) as its EXIF capture time.
fn assert_exif_time(path: &std::path::Path, captured_at: &str) {
    let out = std::process::Command::new("exiftool")
        .args(["-s3", "-SubSecDateTimeOriginal"])
        .arg(path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    // exiftool prints 2026:11:24 21:11:53.986941342+00:00 for our tags.
    let expected = format!(
        "{} {}+00:00",
        captured_at[..10].replace('-', ":"),
        &captured_at[11..29]
    );
    assert_eq!(
        text.trim(),
        expected,
        "{}: EXIF time differs from the manifest",
        path.display()
    );
}

/// `jpeg` without the APP1 EXIF segment framerec splices in after SOI (and
/// after JFIF's APP0, if there is one).
fn without_our_exif(jpeg: &[u8]) -> Vec<u8> {
    let segment_len = |at: usize| 2 + usize::from(u16::from_be_bytes([jpeg[at + 2], jpeg[at + 3]]));
    let mut at = 2;
    if jpeg[at..at + 2] == [0xFF, 0xE0] {
        at += segment_len(at);
    }
    assert_eq!(
        jpeg[at..at + 2],
        [0xFF, 0xE1],
        "no APP1 segment where EXIF goes"
    );
    assert_eq!(&jpeg[at + 4..at + 10], b"Exif\0\0");
    [&jpeg[..at], &jpeg[at + segment_len(at)..]].concat()
}
