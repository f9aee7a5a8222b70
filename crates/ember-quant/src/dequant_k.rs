//! Scalar reference dequantization of the K-quant super-blocks (256 values each).
//!
//! Follows `dequantize_row_q2_K` ... `dequantize_row_q8_K` and `get_scale_min_k4` in
//! `ggml/src/ggml-quants.c`, operation for operation (same products in the same order), so results
//! match ggml's bit for bit. Row-level entry points: [`crate::dequantize`].

use crate::blocks::{
    BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K, BlockQ6K, BlockQ8K, K_SCALE_SIZE, QK_K, f16_le,
};

/// `get_scale_min_k4`: the `j`-th (0..8) 6-bit scale and min packed in Q4_K/Q5_K `scales`.
#[inline]
pub fn get_scale_min_k4(j: usize, q: &[u8; K_SCALE_SIZE]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        let d = (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4);
        let m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
        (d, m)
    }
}

/// Unpacks Q3_K's twelve bytes of packed scales into sixteen 6-bit values (0..64), as the
/// `kmask1`/`kmask2` shuffle in `dequantize_row_q3_K` does.
#[inline]
pub fn unpack_q3_k_scales(packed: &[u8; 12]) -> [u8; 16] {
    const KMASK1: u32 = 0x0303_0303;
    const KMASK2: u32 = 0x0f0f_0f0f;
    let a0 = u32::from_le_bytes([packed[0], packed[1], packed[2], packed[3]]);
    let a1 = u32::from_le_bytes([packed[4], packed[5], packed[6], packed[7]]);
    let tmp = u32::from_le_bytes([packed[8], packed[9], packed[10], packed[11]]);
    let aux = [
        (a0 & KMASK2) | ((tmp & KMASK1) << 4),
        (a1 & KMASK2) | (((tmp >> 2) & KMASK1) << 4),
        ((a0 >> 4) & KMASK2) | (((tmp >> 4) & KMASK1) << 4),
        ((a1 >> 4) & KMASK2) | (((tmp >> 6) & KMASK1) << 4),
    ];
    let mut out = [0u8; 16];
    for (chunk, word) in out.chunks_exact_mut(4).zip(aux) {
        chunk.copy_from_slice(&word.to_le_bytes());
    }
    out
}

/// The 2-bit fields of `qs` in output order, as Q2_K and Q3_K lay them out: for each 32-byte half
/// of `qs` (128 values), shifts 0, 2, 4, 6, each over bytes 0..16 then 16..32. Yields
/// `(half_index, bytes, shift)` for the sixteen groups of 16 values.
fn two_bit_groups(qs: &[u8; QK_K / 4]) -> impl Iterator<Item = (usize, &[u8], u8)> {
    qs.chunks_exact(32).flat_map(|q| {
        [0u8, 2, 4, 6].into_iter().flat_map(move |shift| {
            q.chunks_exact(16)
                .enumerate()
                .map(move |(h, bytes)| (h, bytes, shift))
        })
    })
}

/// `dequantize_row_q2_K` for one block: `y = d * sc * q - dmin * m` per group of 16.
pub fn dequantize_block_q2_k(b: &BlockQ2K, y: &mut [f32; QK_K]) {
    let d = f16_le(b.d);
    let min = f16_le(b.dmin);
    let groups = y
        .chunks_exact_mut(16)
        .zip(&b.scales)
        .zip(two_bit_groups(&b.qs));
    for ((out, &sc), (_, q, shift)) in groups {
        let dl = d * f32::from(sc & 0x0f);
        let ml = min * f32::from(sc >> 4);
        for (o, &ql) in out.iter_mut().zip(q) {
            *o = dl * f32::from((ql >> shift) & 3) - ml;
        }
    }
}

/// `dequantize_row_q3_K` for one block: `y = d * (sc - 32) * (q - 4 * !hbit)` per group of 16.
pub fn dequantize_block_q3_k(b: &BlockQ3K, y: &mut [f32; QK_K]) {
    let d_all = f16_le(b.d);
    let scales = unpack_q3_k_scales(&b.scales);
    let groups = y
        .chunks_exact_mut(16)
        .zip(scales)
        .zip(two_bit_groups(&b.qs));
    for (g, ((out, sc), (h, q, shift))) in groups.enumerate() {
        // The high-bit mask moves up one bit every two groups and, unlike `qs`, restarts its bytes
        // for every 16 values: bytes 0..16 for the first group of a pair, 16..32 for the second.
        let m = 1u8 << ((g / 2) % 8);
        let hm = &b.hmask[16 * h..16 * h + 16];
        let dl = d_all * f32::from(sc as i8 - 32);
        for (o, (&ql, &hb)) in out.iter_mut().zip(q.iter().zip(hm)) {
            let low = ((ql >> shift) & 3) as i8;
            let v = low - if hb & m != 0 { 0 } else { 4 };
            *o = dl * f32::from(v);
        }
    }
}

/// `dequantize_row_q4_K` for one block: `y = d * sc * q - dmin * m` per group of 32.
pub fn dequantize_block_q4_k(b: &BlockQ4K, y: &mut [f32; QK_K]) {
    let d = f16_le(b.d);
    let min = f16_le(b.dmin);
    for (i, (out, q)) in y
        .chunks_exact_mut(64)
        .zip(b.qs.chunks_exact(32))
        .enumerate()
    {
        let (sc, m) = get_scale_min_k4(2 * i, &b.scales);
        let (d1, m1) = (d * f32::from(sc), min * f32::from(m));
        let (sc, m) = get_scale_min_k4(2 * i + 1, &b.scales);
        let (d2, m2) = (d * f32::from(sc), min * f32::from(m));
        let (lo, hi) = out.split_at_mut(32);
        for ((o1, o2), &ql) in lo.iter_mut().zip(hi.iter_mut()).zip(q) {
            *o1 = d1 * f32::from(ql & 0x0f) - m1;
            *o2 = d2 * f32::from(ql >> 4) - m2;
        }
    }
}

/// `dequantize_row_q5_K` for one block: as Q4_K with a fifth bit from `qh`.
pub fn dequantize_block_q5_k(b: &BlockQ5K, y: &mut [f32; QK_K]) {
    let d = f16_le(b.d);
    let min = f16_le(b.dmin);
    for (i, (out, ql)) in y
        .chunks_exact_mut(64)
        .zip(b.qs.chunks_exact(32))
        .enumerate()
    {
        let (sc, m) = get_scale_min_k4(2 * i, &b.scales);
        let (d1, m1) = (d * f32::from(sc), min * f32::from(m));
        let (sc, m) = get_scale_min_k4(2 * i + 1, &b.scales);
        let (d2, m2) = (d * f32::from(sc), min * f32::from(m));
        let u1 = 1u8 << (2 * i);
        let u2 = 2u8 << (2 * i);
        let (lo, hi) = out.split_at_mut(32);
        for ((o1, o2), (&l, &h)) in lo.iter_mut().zip(hi.iter_mut()).zip(ql.iter().zip(&b.qh)) {
            let q1 = (l & 0x0f) + if h & u1 != 0 { 16 } else { 0 };
            let q2 = (l >> 4) + if h & u2 != 0 { 16 } else { 0 };
            *o1 = d1 * f32::from(q1) - m1;
            *o2 = d2 * f32::from(q2) - m2;
        }
    }
}

/// `dequantize_row_q6_K` for one block: `y = d * sc * (q - 32)` per group of 16.
pub fn dequantize_block_q6_k(b: &BlockQ6K, y: &mut [f32; QK_K]) {
    let d = f16_le(b.d);
    let halves = y
        .chunks_exact_mut(128)
        .zip(b.ql.chunks_exact(64))
        .zip(b.qh.chunks_exact(32));
    for (n, ((y, ql), qh)) in halves.enumerate() {
        let sc = &b.scales[8 * n..8 * n + 8];
        for l in 0..32 {
            let is = l / 16;
            let h = qh[l];
            let q1 = ((ql[l] & 0x0f) | ((h & 3) << 4)) as i8 - 32;
            let q2 = ((ql[l + 32] & 0x0f) | (((h >> 2) & 3) << 4)) as i8 - 32;
            let q3 = ((ql[l] >> 4) | (((h >> 4) & 3) << 4)) as i8 - 32;
            let q4 = ((ql[l + 32] >> 4) | (((h >> 6) & 3) << 4)) as i8 - 32;
            y[l] = d * f32::from(sc[is]) * f32::from(q1);
            y[l + 32] = d * f32::from(sc[is + 2]) * f32::from(q2);
            y[l + 64] = d * f32::from(sc[is + 4]) * f32::from(q3);
            y[l + 96] = d * f32::from(sc[is + 6]) * f32::from(q4);
        }
    }
}

/// `dequantize_row_q8_K` for one block: `y = d * q`.
pub fn dequantize_block_q8_k(b: &BlockQ8K, y: &mut [f32; QK_K]) {
    let d = b.d();
    for (o, &q) in y.iter_mut().zip(&b.qs) {
        *o = d * f32::from(q);
    }
}

#[cfg(test)]
mod tests {
    use half::f16;

    use super::*;

    fn h(x: f32) -> [u8; 2] {
        f16::from_f32(x).to_bits().to_le_bytes()
    }

    #[test]
    fn scale_min_k4_unpacking() {
        // Scales 0..8 = 1,2,..,8 + 48 (top bits exercised for j >= 4); mins = 63 - j.
        let sc: [u8; 8] = [1, 2, 3, 4, 53, 54, 55, 56];
        let mn: [u8; 8] = [63, 62, 61, 60, 59, 58, 57, 56];
        let mut p = [0u8; 12];
        for j in 0..4 {
            p[j] = sc[j] | ((sc[j + 4] >> 4) << 6);
            p[j + 4] = mn[j] | ((mn[j + 4] >> 4) << 6);
            p[j + 8] = (sc[j + 4] & 0x0f) | ((mn[j + 4] & 0x0f) << 4);
        }
        for j in 0..8 {
            assert_eq!(get_scale_min_k4(j, &p), (sc[j], mn[j]), "j={j}");
        }
    }

    #[test]
    fn q3_k_scale_unpacking() {
        // Pack sixteen 6-bit scales the way quantize_row_q3_K_ref does.
        let s: [u8; 16] = core::array::from_fn(|i| (i as u8 * 4 + 1) & 63);
        let mut p = [0u8; 12];
        for (j, &l) in s.iter().enumerate() {
            if j < 8 {
                p[j] = l & 0x0f;
            } else {
                p[j - 8] |= (l & 0x0f) << 4;
            }
            p[j % 4 + 8] |= (l >> 4) << (2 * (j / 4));
        }
        assert_eq!(unpack_q3_k_scales(&p), s);
    }

    #[test]
    fn q2_k_block() {
        let mut scales = [0u8; 16];
        for (i, s) in scales.iter_mut().enumerate() {
            *s = (i as u8 & 0x0f) | (1 << 4);
        }
        // Every 2-bit field = 2 (0b10), so byte 0xaa.
        let b = BlockQ2K {
            scales,
            qs: [0xaa; 64],
            d: h(0.5),
            dmin: h(0.25),
        };
        let mut y = [0.0; 256];
        dequantize_block_q2_k(&b, &mut y);
        for (g, group) in y.chunks(16).enumerate() {
            let expect = 0.5 * g as f32 * 2.0 - 0.25;
            assert!(group.iter().all(|&v| v == expect), "group {g}");
        }
        // Byte 0 feeds values 0, 32, 64, 96 through shifts 0, 2, 4, 6.
        let mut qs = [0u8; 64];
        qs[0] = 0b1110_0100; // shifts 0,2,4,6 -> 0,1,2,3
        let b = BlockQ2K {
            scales: [1; 16],
            qs,
            d: h(1.0),
            dmin: h(0.0),
        };
        dequantize_block_q2_k(&b, &mut y);
        assert_eq!([y[0], y[32], y[64], y[96]], [0.0, 1.0, 2.0, 3.0]);
        assert_eq!(y[128], 0.0);
    }

    #[test]
    fn q3_k_block() {
        // All scales 33 (so sc - 32 = 1): pack 33 = 0b10_0001.
        let mut p = [0u8; 12];
        for j in 0..16 {
            if j < 8 {
                p[j] = 1;
            } else {
                p[j - 8] |= 1 << 4;
            }
            p[j % 4 + 8] |= 2 << (2 * (j / 4));
        }
        let mut hmask = [0xffu8; 32];
        hmask[0] = 0xfe; // value 0 loses its high bit -> q - 4
        let b = BlockQ3K {
            hmask,
            qs: [0b1110_0100; 64],
            scales: p,
            d: h(2.0),
        };
        let mut y = [0.0; 256];
        dequantize_block_q3_k(&b, &mut y);
        assert_eq!(y[0], 2.0 * -4.0);
        assert_eq!(y[1], 0.0);
        assert_eq!([y[32], y[64], y[96]], [2.0, 4.0, 6.0]);
        assert_eq!(y[128 + 96 + 5], 6.0);
    }

    #[test]
    fn q4_k_block() {
        let mut p = [0u8; 12];
        p[0] = 2; // scale 0 = 2
        p[4] = 3; // min 0 = 3
        p[1] = 5; // scale 1 = 5
        p[5] = 1; // min 1 = 1
        let b = BlockQ4K {
            d: h(0.5),
            dmin: h(0.25),
            scales: p,
            qs: [0x9f; 128],
        };
        let mut y = [0.0; 256];
        dequantize_block_q4_k(&b, &mut y);
        assert!(y[..32].iter().all(|&v| v == 0.5 * 2.0 * 15.0 - 0.25 * 3.0));
        assert!(y[32..64].iter().all(|&v| v == 0.5 * 5.0 * 9.0 - 0.25));
        assert!(y[64..].iter().all(|&v| v == 0.0));
    }

    #[test]
    fn q5_k_block() {
        // Scales 0..4 = 1 (bytes 0..4), scales 4..8 = 1 (low nibbles of bytes 8..12), mins all 0.
        let p = [1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1];
        let mut qh = [0u8; 32];
        // Bit 1 (u2 of the first 64): value 32 + 3; bit 2 (u1 of the second 64): value 64 + 3.
        qh[3] = 0b0000_0110;
        let b = BlockQ5K {
            d: h(1.0),
            dmin: h(0.0),
            scales: p,
            qh,
            qs: [0x21; 128],
        };
        let mut y = [0.0; 256];
        dequantize_block_q5_k(&b, &mut y);
        assert_eq!(y[3], 1.0);
        assert_eq!(y[32 + 3], 18.0);
        assert_eq!(y[64 + 3], 17.0);
        assert_eq!(y[96 + 3], 2.0);
        assert_eq!(y[255], 2.0);
    }

    #[test]
    fn q6_k_block() {
        let mut scales = [1i8; 16];
        scales[0] = -2;
        let mut ql = [0u8; 128];
        let mut qh = [0u8; 64];
        ql[0] = 0x21; // q1 low = 1, q3 low = 2
        qh[0] = 0b11_10_01_00; // q1 hi 0, q2 hi 1, q3 hi 2, q4 hi 3
        let b = BlockQ6K {
            ql,
            qh,
            scales,
            d: h(0.5),
        };
        let mut y = [0.0; 256];
        dequantize_block_q6_k(&b, &mut y);
        assert_eq!(y[0], 0.5 * -2.0 * (1.0 - 32.0));
        assert_eq!(y[32], 0.5 * (16.0 - 32.0));
        assert_eq!(y[64], 0.5 * (34.0 - 32.0));
        assert_eq!(y[96], 0.5 * (48.0 - 32.0));
        assert_eq!(y[128], 0.5 * -32.0);
    }

    #[test]
    fn q8_k_block() {
        let mut qs = [0i8; 256];
        qs[255] = -7;
        let b = BlockQ8K {
            d: 0.5f32.to_le_bytes(),
            qs,
            bsums: [[0; 2]; 16],
        };
        let mut y = [1.0; 256];
        dequantize_block_q8_k(&b, &mut y);
        assert_eq!(y[255], -3.5);
        assert_eq!(y[0], 0.0);
    }
}
