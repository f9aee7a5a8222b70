//! Scalar reference dequantization of the K-quant super-blocks (256 values each).
//!
//! Follows `dequantize_row_q2_K` ... `dequantize_row_q8_K` and `get_scale_min_k4` in
//! `ggml/src/ggml-quants.c`, operation for operation (same products in the same order), so results
//! match ggml's bit for bit. Row-level entry points are in [`crate::dequant`].

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

/// `dequantize_row_q2_K` for one block: `y = d * sc * q - dmin * m` per group of 16.
pub fn dequantize_block_q2_k(b: &BlockQ2K, y: &mut [f32; QK_K]) {
    let d = f16_le(b.d);
    let min = f16_le(b.dmin);
    let mut out = y.iter_mut();
    let mut is = 0;
    for q in b.qs.chunks_exact(32) {
        for shift in [0, 2, 4, 6] {
            for half in q.chunks_exact(16) {
                let sc = b.scales[is];
                is += 1;
                let dl = d * f32::from(sc & 0x0f);
                let ml = min * f32::from(sc >> 4);
                for (o, &ql) in out.by_ref().zip(half) {
                    *o = dl * f32::from((ql >> shift) & 3) - ml;
                }
            }
        }
    }
}

/// `dequantize_row_q3_K` for one block: `y = d * (sc - 32) * (q - 4 * !hbit)` per group of 16.
pub fn dequantize_block_q3_k(b: &BlockQ3K, y: &mut [f32; QK_K]) {
    let d_all = f16_le(b.d);
    let scales = unpack_q3_k_scales(&b.scales);
    let mut out = y.iter_mut();
    let mut is = 0;
    let mut m: u8 = 1;
    for q in b.qs.chunks_exact(32) {
        for shift in [0, 2, 4, 6] {
            for (half, hm) in q.chunks_exact(16).zip(b.hmask.chunks_exact(16)) {
                let dl = d_all * f32::from(scales[is] as i8 - 32);
                is += 1;
                for (o, (&ql, &h)) in out.by_ref().zip(half.iter().zip(hm)) {
                    let low = ((ql >> shift) & 3) as i8;
                    let v = low - if h & m != 0 { 0 } else { 4 };
                    *o = dl * f32::from(v);
                }
            }
            m = m.wrapping_shl(1);
        }
    }
}

/// `dequantize_row_q4_K` for one block: `y = d * sc * q - dmin * m` per group of 32.
pub fn dequantize_block_q4_k(b: &BlockQ4K, y: &mut [f32; QK_K]) {
    let d = f16_le(b.d);
    let min = f16_le(b.dmin);
    let mut out = y.iter_mut();
    for (i, q) in b.qs.chunks_exact(32).enumerate() {
        let (sc, m) = get_scale_min_k4(2 * i, &b.scales);
        let (d1, m1) = (d * f32::from(sc), min * f32::from(m));
        let (sc, m) = get_scale_min_k4(2 * i + 1, &b.scales);
        let (d2, m2) = (d * f32::from(sc), min * f32::from(m));
        for (o, &ql) in out.by_ref().zip(q) {
            *o = d1 * f32::from(ql & 0x0f) - m1;
        }
        for (o, &ql) in out.by_ref().zip(q) {
            *o = d2 * f32::from(ql >> 4) - m2;
        }
    }
}

/// `dequantize_row_q5_K` for one block: as Q4_K with a fifth bit from `qh`.
pub fn dequantize_block_q5_k(b: &BlockQ5K, y: &mut [f32; QK_K]) {
    let d = f16_le(b.d);
    let min = f16_le(b.dmin);
    let mut out = y.iter_mut();
    let mut u1: u8 = 1;
    let mut u2: u8 = 2;
    for (i, ql) in b.qs.chunks_exact(32).enumerate() {
        let (sc, m) = get_scale_min_k4(2 * i, &b.scales);
        let (d1, m1) = (d * f32::from(sc), min * f32::from(m));
        let (sc, m) = get_scale_min_k4(2 * i + 1, &b.scales);
        let (d2, m2) = (d * f32::from(sc), min * f32::from(m));
        for (o, (&l, &h)) in out.by_ref().zip(ql.iter().zip(&b.qh)) {
            let q = (l & 0x0f) + if h & u1 != 0 { 16 } else { 0 };
            *o = d1 * f32::from(q) - m1;
        }
        for (o, (&l, &h)) in out.by_ref().zip(ql.iter().zip(&b.qh)) {
            let q = (l >> 4) + if h & u2 != 0 { 16 } else { 0 };
            *o = d2 * f32::from(q) - m2;
        }
        u1 = u1.wrapping_shl(2);
        u2 = u2.wrapping_shl(2);
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
        let mut p = [0u8; 12];
        for j in 0..4 {
            p[j] = 1;
        }
        for j in 8..12 {
            p[j] = 0x01; // scales 4..8 = 1, mins 0
        }
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
