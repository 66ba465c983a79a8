//! Pixel conversions shared by the sources and the encoders.
//!
//! Cameras send YUYV and NV12 as BT.601 *limited* range (Y 16–235, chroma
//! 16–240); JPEG (JFIF) wants *full* range. The encoders expand the planes
//! (arithmetic the compiler vectorises, AVX2 intrinsics for YUYV) on the way
//! into libjpeg-turbo (no RGB detour), and read
//! them as limited range where RGB is needed (PNG). Everything here writes
//! into caller-owned buffers, so the frame path allocates nothing once they
//! have grown.

/// Y 16..=235 → 0..=255: the definition [`expand_luma`] computes.
#[cfg(test)]
static EXPAND_LUMA: [u8; 256] = expand_table(16, 219);
/// Cb/Cr 16..=240 → 0..=255, centred on 128: the definition
/// [`expand_chroma`] computes.
#[cfg(test)]
static EXPAND_CHROMA: [u8; 256] = expand_table(16, 224);

#[cfg(test)]
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

/// `EXPAND_LUMA` (the tests' table) as arithmetic the compiler turns into vector code
/// (equal for every value: see the tests).
#[inline(always)]
fn expand_luma(y: u8) -> u8 {
    ((u32::from(y).saturating_sub(16) * 9539 + 4096) >> 13).min(255) as u8
}

/// `EXPAND_CHROMA` as arithmetic, likewise.
#[inline(always)]
fn expand_chroma(c: u32) -> u8 {
    ((c.saturating_sub(16) * 37303 + 16384) >> 15).min(255) as u8
}

/// YUYV → full-range planes at 4:2:2, or 4:2:0 when `vertical_half` (the
/// chroma of each pair of rows is averaged), in one pass over each row:
/// 4:2:2 in, 4:2:0 out costs no pass of its own. With AVX2, 32 pixels at a
/// time ([`avx2`]).
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
    #[cfg(target_arch = "x86_64")]
    let avx2 = std::arch::is_x86_feature_detected!("avx2");
    let stride = width * 2;
    let y = sized(&mut planes.y, width * rows);
    for (out, row) in y.chunks_exact_mut(width).zip(src.chunks_exact(stride)) {
        #[cfg(target_arch = "x86_64")]
        if avx2 {
            // SAFETY: the CPU has AVX2 (checked above).
            unsafe { avx2::yuyv_luma_row(out, row) };
            continue;
        }
        yuyv_luma_row(out, row);
    }
    if rows > height {
        y.copy_within((height - 1) * width..height * width, height * width);
    }
    let u = sized(&mut planes.u, cw * ch);
    let v = sized(&mut planes.v, cw * ch);
    for crow in 0..ch {
        let (r0, r1) = if vertical_half {
            (crow * 2, (crow * 2 + 1).min(height - 1))
        } else {
            (crow, crow)
        };
        let a = &src[r0 * stride..][..cw * 4];
        let b = &src[r1 * stride..][..cw * 4];
        let u_row = &mut u[crow * cw..][..cw];
        let v_row = &mut v[crow * cw..][..cw];
        #[cfg(target_arch = "x86_64")]
        if avx2 {
            // SAFETY: the CPU has AVX2 (checked above).
            unsafe { avx2::yuyv_chroma_row(u_row, v_row, a, b) };
            continue;
        }
        yuyv_chroma_row(u_row, v_row, a, b, 0);
    }
}

/// The luma of one YUYV row, expanded.
fn yuyv_luma_row(out: &mut [u8], row: &[u8]) {
    for (o, pair) in out.iter_mut().zip(row.chunks_exact(2)) {
        *o = expand_luma(pair[0]);
    }
}

/// The chroma of YUYV rows `a` and `b` (the same row at 4:2:2), averaged
/// (rounding up) and expanded, from pixel pair `from` on.
fn yuyv_chroma_row(u: &mut [u8], v: &mut [u8], a: &[u8], b: &[u8], from: usize) {
    let avg = |p: u8, q: u8| (u32::from(p) + u32::from(q)).div_ceil(2);
    for i in from..u.len() {
        u[i] = expand_chroma(avg(a[4 * i + 1], b[4 * i + 1]));
        v[i] = expand_chroma(avg(a[4 * i + 3], b[4 * i + 3]));
    }
}

/// YUYV rows with AVX2 intrinsics. The arithmetic is [`expand_luma`] and
/// [`expand_chroma`] split so every step fits 16 bits (exact: the tests
/// compare both with the tables): for x = v − 16 (saturating),
/// `(x·9539 + 4096) >> 13 = (x·37 + ((x·67 + 4096) >> 8)) >> 5` and
/// `(x·37303 + 16384) >> 15 = (x·145 + ((x·183 + 16384) >> 8)) >> 7`.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    /// 16 lanes of limited-range luma → full range.
    #[target_feature(enable = "avx2")]
    fn luma16(y: __m256i) -> __m256i {
        let x = _mm256_subs_epu16(y, _mm256_set1_epi16(16));
        let high = _mm256_mullo_epi16(x, _mm256_set1_epi16(37));
        let low = _mm256_mullo_epi16(x, _mm256_set1_epi16(67));
        let low = _mm256_srli_epi16(_mm256_add_epi16(low, _mm256_set1_epi16(4096)), 8);
        let full = _mm256_srli_epi16(_mm256_add_epi16(high, low), 5);
        _mm256_min_epu16(full, _mm256_set1_epi16(255))
    }

    /// 16 lanes of limited-range chroma → full range.
    #[target_feature(enable = "avx2")]
    fn chroma16(c: __m256i) -> __m256i {
        let x = _mm256_subs_epu16(c, _mm256_set1_epi16(16));
        let high = _mm256_mullo_epi16(x, _mm256_set1_epi16(145));
        let low = _mm256_mullo_epi16(x, _mm256_set1_epi16(183));
        let low = _mm256_srli_epi16(_mm256_add_epi16(low, _mm256_set1_epi16(16384)), 8);
        let full = _mm256_srli_epi16(_mm256_add_epi16(high, low), 7);
        _mm256_min_epu16(full, _mm256_set1_epi16(255))
    }

    /// See [`super::yuyv_luma_row`]; 32 pixels at a time.
    #[target_feature(enable = "avx2")]
    pub(super) fn yuyv_luma_row(out: &mut [u8], row: &[u8]) {
        let whole = out.len().min(row.len() / 2) / 32 * 32;
        let low_bytes = _mm256_set1_epi16(0x00FF);
        for k in (0..whole).step_by(32) {
            // SAFETY: k + 32 <= out.len() and 2k + 64 <= row.len().
            unsafe {
                let a = _mm256_loadu_si256(row.as_ptr().add(2 * k).cast());
                let b = _mm256_loadu_si256(row.as_ptr().add(2 * k + 32).cast());
                let ya = luma16(_mm256_and_si256(a, low_bytes));
                let yb = luma16(_mm256_and_si256(b, low_bytes));
                // packus works within 128-bit lanes: put them back in order.
                let packed = _mm256_permute4x64_epi64(_mm256_packus_epi16(ya, yb), 0b11_01_10_00);
                _mm256_storeu_si256(out.as_mut_ptr().add(k).cast(), packed);
            }
        }
        super::yuyv_luma_row(&mut out[whole..], &row[2 * whole..]);
    }

    /// See [`super::yuyv_chroma_row`]; 16 pixel pairs at a time.
    #[target_feature(enable = "avx2")]
    pub(super) fn yuyv_chroma_row(u: &mut [u8], v: &mut [u8], a: &[u8], b: &[u8]) {
        let whole = u.len().min(v.len()).min(a.len() / 4).min(b.len() / 4) / 16 * 16;
        // Within each 128-bit lane: the even bytes (U), then the odd (V).
        let split = _mm256_setr_epi8(
            0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15, 0, 2, 4, 6, 8, 10, 12, 14, 1, 3,
            5, 7, 9, 11, 13, 15,
        );
        for k in (0..whole).step_by(16) {
            // SAFETY: k + 16 <= u.len(), v.len(), and 4k + 64 <= a.len(), b.len().
            unsafe {
                let load = |row: &[u8], at: usize| _mm256_loadu_si256(row.as_ptr().add(at).cast());
                // The odd bytes (U, V, U, V...) as 16-bit lanes, the two rows
                // averaged rounding up.
                let odd = |row: &[u8], at: usize| _mm256_srli_epi16(load(row, at), 8);
                let c0 = chroma16(_mm256_avg_epu16(odd(a, 4 * k), odd(b, 4 * k)));
                let c1 = chroma16(_mm256_avg_epu16(odd(a, 4 * k + 32), odd(b, 4 * k + 32)));
                let bytes = _mm256_permute4x64_epi64(_mm256_packus_epi16(c0, c1), 0b11_01_10_00);
                // [U0-7 V0-7 | U8-15 V8-15] → [U0-15 | V0-15].
                let split =
                    _mm256_permute4x64_epi64(_mm256_shuffle_epi8(bytes, split), 0b11_01_10_00);
                _mm_storeu_si128(u.as_mut_ptr().add(k).cast(), _mm256_castsi256_si128(split));
                _mm_storeu_si128(
                    v.as_mut_ptr().add(k).cast(),
                    _mm256_extracti128_si256(split, 1),
                );
            }
        }
        super::yuyv_chroma_row(u, v, a, b, whole);
    }
}

/// NV12 → full-range 4:2:0 planes. Plain loops over fixed-size chunks,
/// which the compiler vectorises; built for AVX2 too when the CPU has it
/// (four times the work per instruction of the baseline x86-64 build).
pub fn nv12_to_planes(src: &[u8], width: usize, height: usize, planes: &mut Planes) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above).
        return unsafe { nv12_to_planes_avx2(src, width, height, planes) };
    }
    nv12_to_planes_here(src, width, height, planes)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn nv12_to_planes_avx2(src: &[u8], width: usize, height: usize, planes: &mut Planes) {
    nv12_to_planes_here(src, width, height, planes)
}

#[inline(always)]
fn nv12_to_planes_here(src: &[u8], width: usize, height: usize, planes: &mut Planes) {
    let (luma, chroma) = src.split_at(width * height);
    let y = sized(&mut planes.y, width * height);
    let mut outs = y.chunks_exact_mut(32);
    let mut ins = luma.chunks_exact(32);
    for (o, i) in (&mut outs).zip(&mut ins) {
        for k in 0..32 {
            o[k] = expand_luma(i[k]);
        }
    }
    for (o, i) in outs.into_remainder().iter_mut().zip(ins.remainder()) {
        *o = expand_luma(*i);
    }
    let n = (width / 2) * (height / 2);
    let u = sized(&mut planes.u, n);
    let v = sized(&mut planes.v, n);
    let mut us = u.chunks_exact_mut(16);
    let mut vs = v.chunks_exact_mut(16);
    let mut pairs = chroma.chunks_exact(32);
    for ((uo, vo), p) in (&mut us).zip(&mut vs).zip(&mut pairs) {
        for k in 0..16 {
            uo[k] = expand_chroma(u32::from(p[2 * k]));
            vo[k] = expand_chroma(u32::from(p[2 * k + 1]));
        }
    }
    let rest = us.into_remainder().iter_mut().zip(vs.into_remainder());
    for ((uo, vo), p) in rest.zip(pairs.remainder().chunks_exact(2)) {
        *uo = expand_chroma(u32::from(p[0]));
        *vo = expand_chroma(u32::from(p[1]));
    }
}

/// Full-range luma only, from YUYV or NV12 (for gray JPEGs).
pub fn expand_luma_of(src: &[u8], packed_yuyv: bool, pixels: usize, out: &mut Vec<u8>) {
    let out = sized(out, pixels);
    if packed_yuyv {
        for (o, pair) in out.iter_mut().zip(src.chunks_exact(2)) {
            *o = expand_luma(pair[0]);
        }
    } else {
        for (o, &y) in out.iter_mut().zip(&src[..pixels]) {
            *o = expand_luma(y);
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

    /// Every width (also odd, and below one vector) and both subsamplings:
    /// the vector path writes what the scalar one does.
    #[test]
    fn yuyv_planes_are_the_same_with_and_without_vectors() {
        let mut state = 7u32;
        for width in [2usize, 4, 30, 32, 62, 64, 66, 94, 130, 1922] {
            for height in [1usize, 2, 3] {
                let src: Vec<u8> = (0..width * height * 2)
                    .map(|_| {
                        state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                        (state >> 24) as u8
                    })
                    .collect();
                for half in [false, true] {
                    let mut planes = Planes::default();
                    yuyv_to_planes(&src, width, height, half, &mut planes);
                    let stride = width * 2;
                    for (row, out) in planes.y.chunks_exact(width).enumerate().take(height) {
                        let mut expected = vec![0; width];
                        yuyv_luma_row(&mut expected, &src[row * stride..][..stride]);
                        assert_eq!(out, expected, "luma {width}x{height}");
                    }
                    let cw = width / 2;
                    for (crow, (u, v)) in planes
                        .u
                        .chunks_exact(cw)
                        .zip(planes.v.chunks_exact(cw))
                        .enumerate()
                    {
                        let (r0, r1) = if half {
                            (crow * 2, (crow * 2 + 1).min(height - 1))
                        } else {
                            (crow, crow)
                        };
                        let (mut eu, mut ev) = (vec![0; cw], vec![0; cw]);
                        yuyv_chroma_row(
                            &mut eu,
                            &mut ev,
                            &src[r0 * stride..],
                            &src[r1 * stride..],
                            0,
                        );
                        assert_eq!(
                            (u, v),
                            (&eu[..], &ev[..]),
                            "chroma {width}x{height} half {half}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn the_arithmetic_expansion_is_the_table() {
        for i in 0..=255u8 {
            assert_eq!(expand_luma(i), EXPAND_LUMA[usize::from(i)], "luma {i}");
            assert_eq!(
                expand_chroma(u32::from(i)),
                EXPAND_CHROMA[usize::from(i)],
                "chroma {i}"
            );
        }
    }

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
