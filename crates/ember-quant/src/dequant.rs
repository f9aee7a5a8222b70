//! Scalar reference dequantization: whole rows of any supported type, and the legacy 32-value blocks.
//!
//! Follows `dequantize_row_q4_0` ... `dequantize_row_q8_0` in `ggml/src/ggml-quants.c` (and the
//! f16/bf16 conversions in `ggml/src/ggml.c`), operation for operation, so results match ggml's
//! bit for bit. The K-quant blocks are in [`crate::dequant_k`]. Nothing here assumes alignment of
//! the source bytes and nothing panics: lengths are validated before any block is touched.

use crate::blocks::{
    Block, BlockQ2K, BlockQ3K, BlockQ4_0, BlockQ4_1, BlockQ4K, BlockQ5_0, BlockQ5_1, BlockQ5K,
    BlockQ6K, BlockQ8_0, BlockQ8_1, BlockQ8K, QK, QK_K, as_blocks, bf16_le, f16_le,
};
use crate::dequant_k::{
    dequantize_block_q2_k, dequantize_block_q3_k, dequantize_block_q4_k, dequantize_block_q5_k,
    dequantize_block_q6_k, dequantize_block_q8_k,
};
use crate::error::QuantError;
use crate::types::GgmlType;

/// Dequantizes `src`, the stored bytes of `dst.len()` values of type `ty`, into `dst`.
///
/// `src` must be exactly `ty.bytes_for(dst.len())` bytes, at any alignment. Types without a
/// dequantizer ([`GgmlType::is_supported`] is false) give [`QuantError::Unsupported`].
pub fn dequantize(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<(), QuantError> {
    check_sizes(ty, src.len(), dst.len())?;
    match ty {
        GgmlType::F32 => {
            for (out, b) in dst.iter_mut().zip(src.as_chunks::<4>().0) {
                *out = f32::from_le_bytes(*b);
            }
        }
        GgmlType::F16 => {
            for (out, b) in dst.iter_mut().zip(src.as_chunks::<2>().0) {
                *out = f16_le(*b);
            }
        }
        GgmlType::BF16 => {
            for (out, b) in dst.iter_mut().zip(src.as_chunks::<2>().0) {
                *out = bf16_le(*b);
            }
        }
        GgmlType::Q4_0 => rows::<BlockQ4_0, QK>(src, dst, dequantize_block_q4_0),
        GgmlType::Q4_1 => rows::<BlockQ4_1, QK>(src, dst, dequantize_block_q4_1),
        GgmlType::Q5_0 => rows::<BlockQ5_0, QK>(src, dst, dequantize_block_q5_0),
        GgmlType::Q5_1 => rows::<BlockQ5_1, QK>(src, dst, dequantize_block_q5_1),
        GgmlType::Q8_0 => rows::<BlockQ8_0, QK>(src, dst, dequantize_block_q8_0),
        GgmlType::Q2_K => rows::<BlockQ2K, QK_K>(src, dst, dequantize_block_q2_k),
        GgmlType::Q3_K => rows::<BlockQ3K, QK_K>(src, dst, dequantize_block_q3_k),
        GgmlType::Q4_K => rows::<BlockQ4K, QK_K>(src, dst, dequantize_block_q4_k),
        GgmlType::Q5_K => rows::<BlockQ5K, QK_K>(src, dst, dequantize_block_q5_k),
        GgmlType::Q6_K => rows::<BlockQ6K, QK_K>(src, dst, dequantize_block_q6_k),
        GgmlType::Q8_K => rows::<BlockQ8K, QK_K>(src, dst, dequantize_block_q8_k),
        // `check_sizes` has already rejected everything else; this arm keeps the match total.
        other => return Err(QuantError::unsupported(other)),
    }
    Ok(())
}

/// [`dequantize`], naming `name` in an [`QuantError::Unsupported`] error.
pub fn dequantize_tensor(
    name: &str,
    ty: GgmlType,
    src: &[u8],
    dst: &mut [f32],
) -> Result<(), QuantError> {
    dequantize(ty, src, dst).map_err(|e| e.with_tensor(name))
}

/// [`dequantize`] into a new vector of `n` values.
pub fn dequantize_to_vec(ty: GgmlType, src: &[u8], n: usize) -> Result<Vec<f32>, QuantError> {
    // Validate before allocating, so a bogus `n` cannot trigger a huge allocation.
    check_sizes(ty, src.len(), n)?;
    let mut out = vec![0.0; n];
    dequantize(ty, src, &mut out)?;
    Ok(out)
}

/// Checks that `ty` is supported, `values` is a whole number of blocks and `src_len` is exactly the
/// bytes those take.
pub fn check_sizes(ty: GgmlType, src_len: usize, values: usize) -> Result<(), QuantError> {
    if !ty.is_supported() {
        return Err(QuantError::unsupported(ty));
    }
    let block_size = ty.block_size();
    if !values.is_multiple_of(block_size) {
        return Err(QuantError::NotBlockMultiple {
            ty,
            values,
            block_size,
        });
    }
    let expected_bytes = ty.bytes_for(values as u64).unwrap_or(u64::MAX);
    if expected_bytes != src_len as u64 {
        return Err(QuantError::SizeMismatch {
            ty,
            values,
            expected_bytes,
            got_bytes: src_len,
        });
    }
    Ok(())
}

/// Runs a per-block dequantizer over a row. Sizes were validated by the caller; should they not
/// match anyway, the shorter side bounds the loop (no panic).
fn rows<B: Block, const N: usize>(src: &[u8], dst: &mut [f32], f: fn(&B, &mut [f32; N])) {
    const { assert!(B::VALUES == N, "block type and output array disagree") };
    let blocks = as_blocks::<B>(src).unwrap_or_default();
    for (block, out) in blocks.iter().zip(dst.as_chunks_mut::<N>().0) {
        f(block, out);
    }
}

/// `dequantize_row_q4_0` for one block: `y = (q - 8) * d`.
pub fn dequantize_block_q4_0(b: &BlockQ4_0, y: &mut [f32; QK]) {
    let d = f16_le(b.d);
    for (j, &q) in b.qs.iter().enumerate() {
        let x0 = i32::from(q & 0x0f) - 8;
        let x1 = i32::from(q >> 4) - 8;
        y[j] = x0 as f32 * d;
        y[j + QK / 2] = x1 as f32 * d;
    }
}

/// `dequantize_row_q4_1` for one block: `y = q * d + m`.
pub fn dequantize_block_q4_1(b: &BlockQ4_1, y: &mut [f32; QK]) {
    let d = f16_le(b.d);
    let m = f16_le(b.m);
    for (j, &q) in b.qs.iter().enumerate() {
        let x0 = q & 0x0f;
        let x1 = q >> 4;
        y[j] = f32::from(x0) * d + m;
        y[j + QK / 2] = f32::from(x1) * d + m;
    }
}

/// `dequantize_row_q5_0` for one block: `y = (q - 16) * d`, the fifth bit from `qh`.
pub fn dequantize_block_q5_0(b: &BlockQ5_0, y: &mut [f32; QK]) {
    let d = f16_le(b.d);
    let qh = u32::from_le_bytes(b.qh);
    for (j, &q) in b.qs.iter().enumerate() {
        let xh0 = ((qh >> j) << 4) & 0x10;
        let xh1 = (qh >> (j + 12)) & 0x10;
        let x0 = (u32::from(q & 0x0f) | xh0) as i32 - 16;
        let x1 = (u32::from(q >> 4) | xh1) as i32 - 16;
        y[j] = x0 as f32 * d;
        y[j + QK / 2] = x1 as f32 * d;
    }
}

/// `dequantize_row_q5_1` for one block: `y = q * d + m`, the fifth bit from `qh`.
pub fn dequantize_block_q5_1(b: &BlockQ5_1, y: &mut [f32; QK]) {
    let d = f16_le(b.d);
    let m = f16_le(b.m);
    let qh = u32::from_le_bytes(b.qh);
    for (j, &q) in b.qs.iter().enumerate() {
        let xh0 = ((qh >> j) << 4) & 0x10;
        let xh1 = (qh >> (j + 12)) & 0x10;
        let x0 = u32::from(q & 0x0f) | xh0;
        let x1 = u32::from(q >> 4) | xh1;
        y[j] = x0 as f32 * d + m;
        y[j + QK / 2] = x1 as f32 * d + m;
    }
}

/// `dequantize_row_q8_0` for one block: `y = q * d`.
pub fn dequantize_block_q8_0(b: &BlockQ8_0, y: &mut [f32; QK]) {
    let d = f16_le(b.d);
    for (out, &q) in y.iter_mut().zip(&b.qs) {
        *out = f32::from(q) * d;
    }
}

/// One Q8_1 block: `y = q * d` (`s` is only for dot products). ggml has no `dequantize_row_q8_1`
/// (Q8_1 is an activation format, never stored weights), so [`dequantize`] rejects Q8_1; this is
/// here for kernels that produce it.
pub fn dequantize_block_q8_1(b: &BlockQ8_1, y: &mut [f32; QK]) {
    let d = f16_le(b.d);
    for (out, &q) in y.iter_mut().zip(&b.qs) {
        *out = f32::from(q) * d;
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
    fn q4_0_block() {
        let mut qs = [0u8; 16];
        for (j, q) in qs.iter_mut().enumerate() {
            *q = (j as u8) | ((15 - j as u8) << 4);
        }
        let b = BlockQ4_0 { d: h(0.5), qs };
        let mut y = [0.0; 32];
        dequantize_block_q4_0(&b, &mut y);
        for j in 0..16 {
            assert_eq!(y[j], (j as f32 - 8.0) * 0.5);
            assert_eq!(y[j + 16], (7.0 - j as f32) * 0.5);
        }
    }

    #[test]
    fn q4_1_block() {
        let b = BlockQ4_1 {
            d: h(0.25),
            m: h(-1.0),
            qs: [0x3a; 16],
        };
        let mut y = [0.0; 32];
        dequantize_block_q4_1(&b, &mut y);
        assert!(y[..16].iter().all(|&v| v == 10.0 * 0.25 - 1.0));
        assert!(y[16..].iter().all(|&v| v == 3.0 * 0.25 - 1.0));
    }

    #[test]
    fn q5_0_block() {
        // Fifth bit set for values 0 and 17 (bit 17 of qh) only.
        let qh = (1u32 | (1 << 17)).to_le_bytes();
        let b = BlockQ5_0 {
            d: h(2.0),
            qh,
            qs: [0x00; 16],
        };
        let mut y = [0.0; 32];
        dequantize_block_q5_0(&b, &mut y);
        assert_eq!(y[0], 0.0); // 16 - 16
        assert_eq!(y[1], -32.0); // 0 - 16
        assert_eq!(y[17], 0.0);
        assert_eq!(y[16], -32.0);
        let b = BlockQ5_0 {
            d: h(1.0),
            qh: [0xff; 4],
            qs: [0xff; 16],
        };
        dequantize_block_q5_0(&b, &mut y);
        assert!(y.iter().all(|&v| v == 15.0));
    }

    #[test]
    fn q5_1_block() {
        let qh = (1u32 << 31).to_le_bytes();
        let b = BlockQ5_1 {
            d: h(0.5),
            m: h(1.0),
            qh,
            qs: [0x21; 16],
        };
        let mut y = [0.0; 32];
        dequantize_block_q5_1(&b, &mut y);
        assert_eq!(y[0], 1.0 * 0.5 + 1.0);
        assert_eq!(y[16], 2.0 * 0.5 + 1.0);
        assert_eq!(y[31], 18.0 * 0.5 + 1.0);
    }

    #[test]
    fn q8_blocks() {
        let mut qs = [0i8; 32];
        qs[0] = -128;
        qs[1] = 127;
        qs[2] = -3;
        let mut y = [0.0; 32];
        dequantize_block_q8_0(&BlockQ8_0 { d: h(0.125), qs }, &mut y);
        assert_eq!(&y[..4], &[-16.0, 15.875, -0.375, 0.0]);
        let mut y1 = [0.0; 32];
        dequantize_block_q8_1(
            &BlockQ8_1 {
                d: h(0.125),
                s: h(99.0),
                qs,
            },
            &mut y1,
        );
        assert_eq!(y, y1);
    }

    #[test]
    fn plain_types() {
        let src: Vec<u8> = [1.5f32, -2.0, f32::INFINITY]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        assert_eq!(
            dequantize_to_vec(GgmlType::F32, &src, 3).expect("f32"),
            vec![1.5, -2.0, f32::INFINITY]
        );
        let src: Vec<u8> = [h(1.5), h(-0.25)].concat();
        assert_eq!(
            dequantize_to_vec(GgmlType::F16, &src, 2).expect("f16"),
            vec![1.5, -0.25]
        );
        assert_eq!(
            dequantize_to_vec(GgmlType::BF16, &[0xc0, 0x3f, 0x80, 0xbe], 2).expect("bf16"),
            vec![1.5, -0.25]
        );
    }

    #[test]
    fn rows_at_odd_offsets() {
        let b0 = BlockQ4_0 {
            d: h(1.0),
            qs: [0x98; 16],
        };
        let b1 = BlockQ4_0 {
            d: h(-2.0),
            qs: [0x10; 16],
        };
        let mut bytes = vec![0xee];
        bytes.extend_from_slice(bytemuck::bytes_of(&b0));
        bytes.extend_from_slice(bytemuck::bytes_of(&b1));
        let y = dequantize_to_vec(GgmlType::Q4_0, &bytes[1..], 64).expect("two blocks");
        assert_eq!(y[0], 0.0);
        assert_eq!(y[16], 1.0);
        assert_eq!(y[32], 16.0);
        assert_eq!(y[48], 14.0);
    }

    #[test]
    fn size_errors() {
        let mut dst = [0.0; 64];
        assert_eq!(
            dequantize(GgmlType::Q4_0, &[0; 35], &mut dst),
            Err(QuantError::SizeMismatch {
                ty: GgmlType::Q4_0,
                values: 64,
                expected_bytes: 36,
                got_bytes: 35
            })
        );
        assert_eq!(
            dequantize(GgmlType::Q4_K, &[0; 144], &mut dst),
            Err(QuantError::NotBlockMultiple {
                ty: GgmlType::Q4_K,
                values: 64,
                block_size: 256
            })
        );
        assert_eq!(
            dequantize(GgmlType::F32, &[0; 255], &mut dst),
            Err(QuantError::SizeMismatch {
                ty: GgmlType::F32,
                values: 64,
                expected_bytes: 256,
                got_bytes: 255
            })
        );
        // Absurd counts are rejected before any allocation.
        assert!(matches!(
            dequantize_to_vec(GgmlType::F32, &[], usize::MAX / 2),
            Err(QuantError::SizeMismatch { got_bytes: 0, .. })
        ));
        assert_eq!(dequantize_to_vec(GgmlType::Q6_K, &[], 0), Ok(vec![]));
    }

    #[test]
    fn unsupported_types() {
        let mut dst = [0.0; 256];
        for ty in crate::types::ALL_TYPES
            .into_iter()
            .filter(|t| !t.is_supported())
        {
            let err = dequantize_tensor("blk.0.ffn_down.weight", ty, &[0; 4], &mut dst)
                .expect_err("unsupported");
            assert_eq!(
                err,
                QuantError::Unsupported {
                    ty,
                    tensor: Some("blk.0.ffn_down.weight".into())
                }
            );
            assert!(
                err.to_string()
                    .contains(&format!("has type {ty}, which ember does not support"))
            );
        }
        assert!(matches!(
            dequantize(GgmlType::Q8_1, &[0; 36], &mut dst[..32]),
            Err(QuantError::Unsupported { .. })
        ));
    }

    #[test]
    fn every_supported_type_accepts_any_bytes() {
        // No input may panic; NaN/inf are fine.
        let bytes: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        for ty in crate::types::ALL_TYPES
            .into_iter()
            .filter(|t| t.is_supported())
        {
            let n = 2 * 256;
            let len = ty.bytes_for(n as u64).expect("fits") as usize;
            let y = dequantize_to_vec(ty, &bytes[..len], n).expect("dequantizes");
            assert_eq!(y.len(), n);
        }
    }
}
