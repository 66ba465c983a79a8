//! Pixel conversions shared by the sources and the encoders.
//!
//! Cameras send YUYV and NV12 as BT.601 *limited* range (Y 16–235, chroma
//! 16–240); JPEG (JFIF) wants *full* range. The encoders expand the planes
//! with lookup tables on the way into libjpeg-turbo (no RGB detour), and read
//! them as limited range where RGB is needed (PNG). Everything here writes
//! into caller-owned buffers, so the frame path allocates nothing once they
//! have grown.

/// Y 16..=235 → 0..=255.
pub static EXPAND_LUMA: [u8; 256] = expand_table(16, 219);
/// Cb/Cr 16..=240 → 0..=255, centred on 128.
pub static EXPAND_CHROMA: [u8; 256] = expand_table(16, 224);

const fn expand_table(low: i32, span: i32) -> [u8; 256] {
    let mut table = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        // Rounded (i - low) * 255 / span, clamped.
        let v = ((i as i32 - low) * 255 * 2 + span) / (2 * span);
        let v = if i as i32 <= low { 0 } else { v };
        table[i] = if v < 0 {
            0
        } else if v > 255 {
            255
        } else {
            v as u8
        };
        i += 1;
    }
    if span == 224 {
        // Keep neutral chroma exactly neutral.
        table[128] = 128;
    }
    table
}

#[inline]
fn clamp_u8(v: i32) -> u8 {
    v.clamp(0, 255) as u8
}

/// BT.601 limited-range Y'CbCr of a full-range RGB colour.
#[inline]
pub fn rgb_to_yuv(r: u8, g: u8, b: u8) -> (u8, u8, u8) {
    let (r, g, b) = (i32::from(r), i32::from(g), i32::from(b));
    let y = (66 * r + 129 * g + 25 * b + 128) >> 8;
    let u = (-38 * r - 74 * g + 112 * b + 128) >> 8;
    let v = (112 * r - 94 * g - 18 * b + 128) >> 8;
    (clamp_u8(y + 16), clamp_u8(u + 128), clamp_u8(v + 128))
}

/// Full-range RGB of a BT.601 limited-range Y'CbCr sample.
#[inline]
pub fn yuv_to_rgb(y: u8, u: u8, v: u8) -> (u8, u8, u8) {
    let c = 298 * (i32::from(y) - 16);
    let d = i32::from(u) - 128;
    let e = i32::from(v) - 128;
    (
        clamp_u8((c + 409 * e + 128) >> 8),
        clamp_u8((c - 100 * d - 208 * e + 128) >> 8),
        clamp_u8((c + 516 * d + 128) >> 8),
    )
}

/// Full-range BT.601 luma of an RGB colour (what a gray JPEG or PNG holds).
#[inline]
pub fn rgb_to_gray(r: u8, g: u8, b: u8) -> u8 {
    ((77 * u32::from(r) + 150 * u32::from(g) + 29 * u32::from(b) + 128) >> 8) as u8
}

/// Resizes `out` to `len` bytes, keeping its allocation when it is big enough.
#[inline]
pub fn sized(out: &mut Vec<u8>, len: usize) -> &mut [u8] {
    out.resize(len, 0);
    &mut out[..len]
}

/// CMYK → RGB in the same buffer (4 bytes a pixel in, 3 out; the buffer
/// shrinks), by the usual formula R = (1 − C)(1 − K) and so on. `inverted`:
/// the samples are stored as 255 − ink, as in JPEGs with an Adobe marker.
pub fn cmyk_to_rgb_in_place(buf: &mut Vec<u8>, inverted: bool) {
    let pixels = buf.len() / 4;
    let flip = if inverted { 0 } else { 255 };
    for i in 0..pixels {
        let [c, m, y, k] = [buf[4 * i], buf[4 * i + 1], buf[4 * i + 2], buf[4 * i + 3]];
        // The part of each primary no ink takes away, 0..=255.
        let white = |ink: u8| u32::from(ink ^ flip);
        let k = white(k);
        let mix = |ink: u8| ((white(ink) * k + 127) / 255) as u8;
        // Pixel i's RGB goes to 3i..3i+3, below its own CMYK (4i..4i+4),
        // which is already read, and below every later pixel's.
        buf[3 * i] = mix(c);
        buf[3 * i + 1] = mix(m);
        buf[3 * i + 2] = mix(y);
    }
    buf.truncate(pixels * 3);
}

/// Packed YUYV (limited range) → RGB.
pub fn yuyv_to_rgb(src: &[u8], width: usize, height: usize, out: &mut Vec<u8>) {
    let out = sized(out, width * height * 3);
    for (pair, rgb) in src.chunks_exact(4).zip(out.chunks_exact_mut(6)) {
        let (y0, u, y1, v) = (pair[0], pair[1], pair[2], pair[3]);
        let (r, g, b) = yuv_to_rgb(y0, u, v);
        rgb[..3].copy_from_slice(&[r, g, b]);
        let (r, g, b) = yuv_to_rgb(y1, u, v);
        rgb[3..].copy_from_slice(&[r, g, b]);
    }
}

/// NV12 (limited range) → RGB.
pub fn nv12_to_rgb(src: &[u8], width: usize, height: usize, out: &mut Vec<u8>) {
    let out = sized(out, width * height * 3);
    let (luma, chroma) = src.split_at(width * height);
    for row in 0..height {
        let uv_row = &chroma[(row / 2) * width..][..width];
        let y_row = &luma[row * width..][..width];
        let out_row = &mut out[row * width * 3..][..width * 3];
        for (x, rgb) in out_row.chunks_exact_mut(3).enumerate() {
            let (u, v) = (uv_row[x & !1], uv_row[x | 1]);
            let (r, g, b) = yuv_to_rgb(y_row[x], u, v);
            rgb.copy_from_slice(&[r, g, b]);
        }
    }
}

/// Y, U and V planes (full range) for libjpeg-turbo, with their strides.
#[derive(Default)]
pub struct Planes {
    pub y: Vec<u8>,
    pub u: Vec<u8>,
    pub v: Vec<u8>,
}

/// YUYV → full-range planes at 4:2:2, or 4:2:0 when `vertical_half` (the
/// chroma of each pair of rows is averaged).
pub fn yuyv_to_planes(
    src: &[u8],
    width: usize,
    height: usize,
    vertical_half: bool,
    planes: &mut Planes,
) {
    let cw = width / 2;
    let ch = if vertical_half {
        height.div_ceil(2)
    } else {
        height
    };
    // libjpeg-turbo wants whole 2-row groups of luma at 4:2:0: an odd last
    // row is repeated.
    let rows = if vertical_half {
        height.next_multiple_of(2)
    } else {
        height
    };
    let y = sized(&mut planes.y, width * rows);
    for (out, pair) in y.chunks_exact_mut(2).zip(src.chunks_exact(4)) {
        out[0] = EXPAND_LUMA[pair[0] as usize];
        out[1] = EXPAND_LUMA[pair[2] as usize];
    }
    if rows > height {
        y.copy_within((height - 1) * width..height * width, height * width);
    }
    let u = sized(&mut planes.u, cw * ch);
    let v = sized(&mut planes.v, cw * ch);
    let stride = width * 2;
    for crow in 0..ch {
        let (r0, r1) = if vertical_half {
            (crow * 2, (crow * 2 + 1).min(height - 1))
        } else {
            (crow, crow)
        };
        let a = &src[r0 * stride..][..stride];
        let b = &src[r1 * stride..][..stride];
        let u_row = &mut u[crow * cw..][..cw];
        let v_row = &mut v[crow * cw..][..cw];
        for x in 0..cw {
            let uu = (u32::from(a[x * 4 + 1]) + u32::from(b[x * 4 + 1])).div_ceil(2);
            let vv = (u32::from(a[x * 4 + 3]) + u32::from(b[x * 4 + 3])).div_ceil(2);
            u_row[x] = EXPAND_CHROMA[uu as usize];
            v_row[x] = EXPAND_CHROMA[vv as usize];
        }
    }
}

/// NV12 → full-range 4:2:0 planes.
pub fn nv12_to_planes(src: &[u8], width: usize, height: usize, planes: &mut Planes) {
    let (luma, chroma) = src.split_at(width * height);
    for (out, &y) in sized(&mut planes.y, width * height).iter_mut().zip(luma) {
        *out = EXPAND_LUMA[y as usize];
    }
    let n = (width / 2) * (height / 2);
    let u = sized(&mut planes.u, n);
    let v = sized(&mut planes.v, n);
    for ((pair, u), v) in chroma.chunks_exact(2).zip(u.iter_mut()).zip(v.iter_mut()) {
        *u = EXPAND_CHROMA[pair[0] as usize];
        *v = EXPAND_CHROMA[pair[1] as usize];
    }
}

/// Full-range luma only, from YUYV or NV12 (for gray JPEGs).
pub fn expand_luma_of(src: &[u8], packed_yuyv: bool, pixels: usize, out: &mut Vec<u8>) {
    let out = sized(out, pixels);
    if packed_yuyv {
        for (o, pair) in out.iter_mut().zip(src.chunks_exact(2)) {
            *o = EXPAND_LUMA[pair[0] as usize];
        }
    } else {
        for (o, &y) in out.iter_mut().zip(&src[..pixels]) {
            *o = EXPAND_LUMA[y as usize];
        }
    }
}

/// Little-endian 16-bit samples → big-endian, as PNG stores them.
pub fn swap16(src: &[u8], out: &mut Vec<u8>) {
    let out = sized(out, src.len());
    for (o, s) in out.chunks_exact_mut(2).zip(src.chunks_exact(2)) {
        o[0] = s[1];
        o[1] = s[0];
    }
}

/// An RGB image in another 8-bit pixel format (used to build test patterns).
pub fn rgb_to(
    format: crate::frame::PixelFormat,
    rgb: &[u8],
    width: usize,
    height: usize,
    out: &mut Vec<u8>,
) {
    use crate::frame::PixelFormat as P;
    match format {
        P::Rgb => {
            out.clear();
            out.extend_from_slice(rgb);
        }
        P::Rgba => {
            let out = sized(out, width * height * 4);
            for (o, p) in out.chunks_exact_mut(4).zip(rgb.chunks_exact(3)) {
                o.copy_from_slice(&[p[0], p[1], p[2], 255]);
            }
        }
        P::Gray => {
            let out = sized(out, width * height);
            for (o, p) in out.iter_mut().zip(rgb.chunks_exact(3)) {
                *o = rgb_to_gray(p[0], p[1], p[2]);
            }
        }
        P::Gray16 => {
            let out = sized(out, width * height * 2);
            for (o, p) in out.chunks_exact_mut(2).zip(rgb.chunks_exact(3)) {
                let g = u16::from(rgb_to_gray(p[0], p[1], p[2])) * 257;
                o.copy_from_slice(&g.to_le_bytes());
            }
        }
        P::Yuyv => {
            let out = sized(out, width * height * 2);
            for (o, p) in out.chunks_exact_mut(4).zip(rgb.chunks_exact(6)) {
                let (y0, u0, v0) = rgb_to_yuv(p[0], p[1], p[2]);
                let (y1, u1, v1) = rgb_to_yuv(p[3], p[4], p[5]);
                let u = (u16::from(u0) + u16::from(u1)).div_ceil(2) as u8;
                let v = (u16::from(v0) + u16::from(v1)).div_ceil(2) as u8;
                o.copy_from_slice(&[y0, u, y1, v]);
            }
        }
        P::Nv12 => {
            let out = sized(out, width * height * 3 / 2);
            let (luma, chroma) = out.split_at_mut(width * height);
            for (o, p) in luma.iter_mut().zip(rgb.chunks_exact(3)) {
                *o = rgb_to_yuv(p[0], p[1], p[2]).0;
            }
            for cy in 0..height / 2 {
                for cx in 0..width / 2 {
                    let (mut su, mut sv) = (0u32, 0u32);
                    for (dy, dx) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                        let i = ((cy * 2 + dy) * width + cx * 2 + dx) * 3;
                        let (_, u, v) = rgb_to_yuv(rgb[i], rgb[i + 1], rgb[i + 2]);
                        su += u32::from(u);
                        sv += u32::from(v);
                    }
                    chroma[cy * width + cx * 2] = ((su + 2) / 4) as u8;
                    chroma[cy * width + cx * 2 + 1] = ((sv + 2) / 4) as u8;
                }
            }
        }
        P::Mjpeg => {
            // Not a raw format: callers compress RGB with turbojpeg instead.
            out.clear();
        }
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn cmyk_becomes_rgb_in_place_either_way_round() {
        // White, black, cyan, and half-strength magenta, as ink amounts.
        let inks: [[u8; 4]; 4] = [[0, 0, 0, 0], [0, 0, 0, 255], [255, 0, 0, 0], [0, 128, 0, 0]];
        let rgb = [255, 255, 255, 0, 0, 0, 0, 255, 255, 255, 127, 255];
        let mut plain: Vec<u8> = inks.concat();
        cmyk_to_rgb_in_place(&mut plain, false);
        assert_eq!(plain, rgb);
        let mut adobe: Vec<u8> = inks.concat().iter().map(|v| 255 - v).collect();
        cmyk_to_rgb_in_place(&mut adobe, true);
        assert_eq!(adobe, rgb);
    }
    use super::*;
    use crate::frame::PixelFormat;

    #[test]
    fn expansion_tables_hit_the_ends() {
        assert_eq!(EXPAND_LUMA[16], 0);
        assert_eq!(EXPAND_LUMA[235], 255);
        assert_eq!(EXPAND_LUMA[0], 0);
        assert_eq!(EXPAND_LUMA[255], 255);
        assert_eq!(EXPAND_CHROMA[16], 0);
        assert_eq!(EXPAND_CHROMA[128], 128);
        assert_eq!(EXPAND_CHROMA[240], 255);
    }

    #[test]
    fn yuv_round_trips_within_rounding() {
        for &(r, g, b) in &[
            (0, 0, 0),
            (255, 255, 255),
            (255, 0, 0),
            (0, 255, 0),
            (0, 0, 255),
            (12, 200, 99),
        ] {
            let (y, u, v) = rgb_to_yuv(r, g, b);
            assert!(
                (16..=235).contains(&y),
                "luma {y} outside the limited range"
            );
            let (r2, g2, b2) = yuv_to_rgb(y, u, v);
            for (a, b) in [(r, r2), (g, g2), (b, b2)] {
                assert!(
                    a.abs_diff(b) <= 3,
                    "{r},{g},{b} came back as {r2},{g2},{b2}"
                );
            }
        }
    }

    #[test]
    fn packed_and_planar_agree() {
        // A 4×2 image of flat colours in pairs; YUYV and NV12 must decode alike.
        let rgb: Vec<u8> = [[200u8, 30, 40], [200, 30, 40], [10, 220, 90], [10, 220, 90]]
            .iter()
            .cycle()
            .take(8)
            .flatten()
            .copied()
            .collect();
        let (mut yuyv, mut nv12, mut a, mut b) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        rgb_to(PixelFormat::Yuyv, &rgb, 4, 2, &mut yuyv);
        rgb_to(PixelFormat::Nv12, &rgb, 4, 2, &mut nv12);
        yuyv_to_rgb(&yuyv, 4, 2, &mut a);
        nv12_to_rgb(&nv12, 4, 2, &mut b);
        for ((x, y), z) in a.iter().zip(&b).zip(&rgb) {
            assert!(
                x.abs_diff(*y) <= 2 && x.abs_diff(*z) <= 3,
                "{a:?} {b:?} {rgb:?}"
            );
        }
    }

    #[test]
    fn planes_are_full_range() {
        let mut planes = Planes::default();
        // Black and white in limited range.
        let yuyv = [16, 128, 235, 128];
        yuyv_to_planes(&yuyv, 2, 1, false, &mut planes);
        assert_eq!(planes.y, [0, 255]);
        assert_eq!((planes.u[0], planes.v[0]), (128, 128));
        let nv12 = [16, 235, 16, 235, 128, 128];
        nv12_to_planes(&nv12, 2, 2, &mut planes);
        assert_eq!(planes.y, [0, 255, 0, 255]);
        assert_eq!(
            (planes.u.as_slice(), planes.v.as_slice()),
            (&[128u8][..], &[128u8][..])
        );
    }

    #[test]
    fn swaps_sixteen_bit_samples() {
        let mut out = Vec::new();
        swap16(&[0x34, 0x12, 0xff, 0x00], &mut out);
        assert_eq!(out, [0x12, 0x34, 0x00, 0xff]);
    }
}
