//! Error handling of the kernel API: every malformed call is an error naming the numbers involved,
//! and no input (lengths, shapes, NaN/inf bytes) makes it panic.
//!
//! The errors are the existing [`QuantError`] kinds: `Unsupported` for types without a kernel,
//! `NotBlockMultiple` for `k`, `SizeMismatch` for any buffer (f32 buffers are reported as F32 data,
//! in bytes).
#![allow(clippy::unwrap_used)]

use std::ops::Range;

use ember_quant::{
    ALL_TYPES, GgmlType, QuantError, QuantizedActivations, matmul_rows, quantize_activation,
    vec_dot, vec_dot_type,
};

use GgmlType::*;

fn size(ty: GgmlType, values: usize, expected_bytes: u64, got_bytes: usize) -> QuantError {
    QuantError::SizeMismatch {
        ty,
        values,
        expected_bytes,
        got_bytes,
    }
}

#[test]
fn vec_dot_types() {
    let pairs = [
        (F32, F32),
        (F16, F16),
        (BF16, BF16),
        (Q4_0, Q8_0),
        (Q5_0, Q8_0),
        (Q8_0, Q8_0),
        (Q4_1, Q8_1),
        (Q5_1, Q8_1),
        (Q2_K, Q8_K),
        (Q3_K, Q8_K),
        (Q4_K, Q8_K),
        (Q5_K, Q8_K),
        (Q6_K, Q8_K),
    ];
    for (w, a) in pairs {
        assert_eq!(vec_dot_type(w), Ok(a), "{w}");
    }
    // Activation-only types and types without kernels.
    for ty in ALL_TYPES
        .into_iter()
        .filter(|t| !pairs.iter().any(|p| p.0 == *t))
    {
        assert_eq!(vec_dot_type(ty), Err(QuantError::unsupported(ty)), "{ty}");
        assert!(vec_dot(ty, &[], &[], 0).is_err(), "{ty}");
        assert!(QuantizedActivations::new(ty, &[], 0, 0).is_err(), "{ty}");
    }
}

#[test]
fn quantize_activation_errors() {
    let x = [0.5f32; 64];
    let mut out = [0u8; 68];
    assert_eq!(
        quantize_activation(Q4_0, &x, &mut out),
        Err(QuantError::unsupported(Q4_0))
    );
    assert_eq!(
        quantize_activation(Q8_0, &x[..33], &mut out),
        Err(QuantError::NotBlockMultiple {
            ty: Q8_0,
            values: 33,
            block_size: 32
        })
    );
    assert_eq!(quantize_activation(Q8_0, &x, &mut out), Ok(()));
    assert_eq!(
        quantize_activation(Q8_1, &x, &mut out[..67]),
        Err(size(Q8_1, 64, 72, 67))
    );
    let e = quantize_activation(Q8_K, &x, &mut out).unwrap_err();
    assert_eq!(
        e.to_string(),
        "64 values is not a whole number of Q8_K blocks (256 values per block)"
    );
    // Empty rows are fine.
    assert_eq!(quantize_activation(Q8_K, &[], &mut []), Ok(()));
}

#[test]
fn vec_dot_errors() {
    let w = vec![0u8; 2 * 144];
    let a = vec![0u8; 2 * 292];
    assert_eq!(vec_dot(Q4_K, &w, &a, 512), Ok(0.0));
    assert_eq!(
        vec_dot(Q4_K, &w, &a, 500),
        Err(QuantError::NotBlockMultiple {
            ty: Q4_K,
            values: 500,
            block_size: 256
        })
    );
    assert_eq!(
        vec_dot(Q4_K, &w[1..], &a, 512),
        Err(size(Q4_K, 512, 288, 287))
    );
    assert_eq!(
        vec_dot(Q4_K, &w, &a[..292], 512),
        Err(size(Q8_K, 512, 584, 292))
    );
    assert_eq!(
        vec_dot(Q8_K, &a, &a, 512),
        Err(QuantError::unsupported(Q8_K))
    );
    assert_eq!(vec_dot(F16, &[0; 6], &[0; 6], 3), Ok(0.0));
    assert_eq!(vec_dot(F16, &[0; 6], &[0; 8], 3), Err(size(F16, 3, 6, 8)));
    let e = vec_dot(Q4_0, &[0; 17], &[0; 34], 32).unwrap_err();
    assert_eq!(
        e.to_string(),
        "Q4_0 data for 32 values must be 18 bytes, got 17"
    );
}

#[test]
fn quantized_activations_errors() {
    let x = vec![1.0f32; 3 * 64];
    assert_eq!(
        QuantizedActivations::new(Q4_0, &x, 3, 65).unwrap_err(),
        QuantError::NotBlockMultiple {
            ty: Q4_0,
            values: 65,
            block_size: 32
        }
    );
    assert_eq!(
        QuantizedActivations::new(Q4_0, &x, 2, 64).unwrap_err(),
        size(F32, 128, 512, 768)
    );
    // m * k overflowing is an error, not a panic or a huge allocation.
    assert!(QuantizedActivations::new(Q4_0, &x, usize::MAX, 64).is_err());
    assert!(QuantizedActivations::new(F32, &x, usize::MAX / 2, 4).is_err());
    // A K-quant weight needs k in whole super-blocks even though F32 activations would not.
    assert!(QuantizedActivations::new(Q6_K, &x, 1, 192).is_err());
    let xq = QuantizedActivations::new(Q4_0, &x, 3, 64).unwrap();
    assert_eq!(xq.as_bytes().len(), 3 * 2 * 34);
    assert!(xq.row(2).is_some() && xq.row(3).is_none() && xq.row(usize::MAX).is_none());
    let empty = QuantizedActivations::new(Q4_0, &[], 0, 64).unwrap();
    assert_eq!((empty.rows(), empty.as_bytes().len()), (0, 0));
    let zero_k = QuantizedActivations::new(Q4_K, &[], 4, 0).unwrap();
    assert!(zero_k.row(3) == Some(&[][..]) && zero_k.row(4).is_none());
}

#[test]
fn matmul_rows_errors() {
    let (k, n, m) = (64, 4, 2);
    let w = vec![0x11u8; n * 36]; // Q4_0: 2 blocks of 18 bytes per row
    let x = vec![0.25f32; m * k];
    let xq = QuantizedActivations::new(Q4_0, &x, m, k).unwrap();
    let mut out = vec![0.0f32; m * 2];
    assert_eq!(matmul_rows(Q4_0, &w, k, &xq, 1..3, &mut out), Ok(()));
    // Same vec-dot type, different weight type: fine (Q8_0 rows are 68 bytes).
    let w8 = vec![0u8; n * 68];
    assert_eq!(matmul_rows(Q8_0, &w8, k, &xq, 0..2, &mut out), Ok(()));

    // Activations for another vec-dot type or another k.
    assert_eq!(
        matmul_rows(Q4_1, &vec![0; n * 40], k, &xq, 0..2, &mut out),
        Err(size(Q8_1, 128, 144, 136))
    );
    assert_eq!(
        matmul_rows(Q4_0, &w, 32, &xq, 0..2, &mut out),
        Err(size(Q8_0, 64, 68, 136))
    );
    assert!(matmul_rows(Q4_K, &w, 256, &xq, 0..2, &mut out).is_err());
    // Weight not whole rows, rows past the end.
    assert_eq!(
        matmul_rows(Q4_0, &w[..w.len() - 1], k, &xq, 0..2, &mut out),
        Err(size(Q4_0, 192, 108, 143))
    );
    assert_eq!(
        matmul_rows(Q4_0, &w, k, &xq, 3..5, &mut out),
        Err(size(Q4_0, 320, 180, 144))
    );
    assert!(matmul_rows(Q4_0, &w, k, &xq, Range { start: 6, end: 4 }, &mut []).is_err());
    // Reversed but in-bounds ranges are empty (`Range::is_empty`), spelled out as a struct because
    // that is the point.
    assert_eq!(
        matmul_rows(Q4_0, &w, k, &xq, Range { start: 3, end: 1 }, &mut []),
        Ok(())
    );
    // Output size.
    assert_eq!(
        matmul_rows(Q4_0, &w, k, &xq, 0..3, &mut out),
        Err(size(F32, 6, 24, 16))
    );
    assert_eq!(
        matmul_rows(Q4_0, &w, 48, &xq, 0..2, &mut out),
        Err(QuantError::NotBlockMultiple {
            ty: Q4_0,
            values: 48,
            block_size: 32
        })
    );
    assert_eq!(
        matmul_rows(IQ4_NL, &w, k, &xq, 0..2, &mut out),
        Err(QuantError::unsupported(IQ4_NL))
    );

    // k = 0: rows are empty, every dot is 0, and the weight must be empty.
    let xq0 = QuantizedActivations::new(Q4_0, &[], 2, 0).unwrap();
    let mut out = [f32::NAN; 6];
    assert_eq!(matmul_rows(Q4_0, &[], 0, &xq0, 5..8, &mut out), Ok(()));
    assert_eq!(out, [0.0; 6]);
    assert!(matmul_rows(Q4_0, &[0; 18], 0, &xq0, 0..3, &mut out).is_err());
}

#[test]
fn arbitrary_bytes_never_panic() {
    // Every byte pattern, NaN and inf scales included, is a valid input; results may be non-finite.
    let bytes: Vec<u8> = (0..8192u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    let x: Vec<f32> = (0..512)
        .map(|i| match i % 97 {
            0 => f32::NAN,
            1 => f32::INFINITY,
            2 => -f32::INFINITY,
            3 => f32::MAX,
            4 => f32::MIN_POSITIVE / 8.0,
            _ => f32::from_bits((i as u32).wrapping_mul(0x9e37_79b9)),
        })
        .collect();
    for ty in ALL_TYPES {
        let Ok(vdt) = vec_dot_type(ty) else { continue };
        let k = 512;
        let wlen = ty.bytes_for(k as u64).unwrap() as usize;
        let alen = vdt.bytes_for(k as u64).unwrap() as usize;
        let mut q = vec![0u8; alen];
        quantize_activation(vdt, &x, &mut q).unwrap();
        vec_dot(ty, &bytes[..wlen], &q, k).unwrap();
        vec_dot(ty, &bytes[..wlen], &bytes[wlen..wlen + alen], k).unwrap();
        let xq = QuantizedActivations::new(ty, &x, 1, k).unwrap();
        let n = bytes.len() / wlen;
        let mut out = vec![0.0; n];
        matmul_rows(ty, &bytes[..n * wlen], k, &xq, 0..n, &mut out).unwrap();
    }
}
