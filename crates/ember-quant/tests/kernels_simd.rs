//! The SIMD kernels against the scalar reference kernels, on random blocks: every SIMD set this CPU
//! runs ([`Kernels::Avx2`] and [`Kernels::Avx512Vnni`] on x86-64; [`Kernels::Neon`],
//! [`Kernels::NeonDotprod`] and [`Kernels::NeonI8mm`] on aarch64, as available), row kernels and
//! 2×2 tile kernels (each of a tile's four results against the scalar dot of its rows). The aarch64
//! sets must moreover agree with each other bit for bit, tiles included.
//!
//! Both compute every block's integer dot exactly; they differ only in the order (and fusion) of the
//! float operations that scale and sum the blocks. For a sum of `n` float terms `t_j` every such
//! order errs by at most about `n * 2^-24 * sum |t_j|`, so the two differ by at most twice that. We
//! allow `|simd - scalar| <= 2 * (nb + 16) * 2^-24 * S + tiny`, with `nb` the number of blocks (the
//! longest chain of additions either side performs, plus the final 8- or 16-lane reduction) and `S`
//! an upper bound on `sum |t_j|`, from the dequantized weights `w_i` and activations `x~_i`:
//! `S = sum_i (|w_i| + 2 |o_i|) * |x~_i| + sum_b |m_b * s_b|`, `o_i` the weight's offset (`m` of
//! Q4_1, `-dmin * min` of Q4_K/Q5_K, 0 elsewhere): the scaled quant `d * q = w - o` is bounded by
//! `|w| + |o|`, the min terms by `|o| * |x~|`, and Q8_1's stored `s` enters as `m * s`. `tiny` covers
//! subnormal results, whose rounding is absolute (and the scale products both sides round alike).
//! The typical observed error is far below the bound (printed); a wrong integer sum, scale or block
//! is off by a whole term and fails.
#![allow(clippy::unwrap_used)]

mod common;
use common::Rng;
use ember_quant::kernels::{
    Kernels, TileKernel, matmul_rows_with, row_kernel, row_kernel_for, tile_kernel_for,
    vec_dot_with,
};
use ember_quant::{
    GgmlType, QuantizedActivations, dequantize, quantize_activation, vec_dot, vec_dot_type,
};
use half::f16;

use GgmlType::*;

/// The types with SIMD kernels, then the rest (which must fall back to the scalar kernel).
const SIMD_TYPES: [GgmlType; 6] = [Q4_0, Q4_1, Q8_0, Q4_K, Q5_K, Q6_K];
const OTHER_TYPES: [GgmlType; 7] = [F32, F16, BF16, Q5_0, Q5_1, Q2_K, Q3_K];

/// Whether `kernels` has its own kernel for `ty`: the SIMD types, plus on x86-64 Q5_0/Q5_1 (Qwen2
/// Q4_K_M files keep most matrices whose width is not a multiple of 256 in Q5_0) and F32 (MoE
/// routers).
fn has_simd(kernels: Kernels, ty: GgmlType) -> bool {
    kernels != Kernels::Scalar
        && (SIMD_TYPES.contains(&ty)
            || (matches!(kernels, Kernels::Avx2 | Kernels::Avx512Vnni)
                && matches!(ty, Q5_0 | Q5_1 | F32)))
}

/// The SIMD sets this CPU runs (the scalar reference excluded).
fn simd_sets() -> Vec<Kernels> {
    Kernels::ALL
        .into_iter()
        .filter(|&k| k != Kernels::Scalar && k.is_available())
        .collect()
}

/// Every aarch64 CPU runs NEON, so there the SIMD tests can never be skipped; x86-64 CPUs without
/// AVX2 (and other architectures) have no SIMD set.
#[test]
fn simd_sets_match_the_architecture() {
    let sets = simd_sets();
    eprintln!(
        "kernel sets: detected {:?}, active {:?}, SIMD sets available {sets:?}",
        Kernels::detected(),
        Kernels::active()
    );
    if cfg!(target_arch = "aarch64") {
        assert!(sets.contains(&Kernels::Neon), "{sets:?}");
        assert!(!sets.contains(&Kernels::Avx2));
        // i8mm implies the dotprod row kernels.
        if sets.contains(&Kernels::NeonI8mm) {
            assert!(sets.contains(&Kernels::NeonDotprod));
        }
    } else if cfg!(target_arch = "x86_64") {
        assert!(
            sets.iter()
                .all(|&k| matches!(k, Kernels::Avx2 | Kernels::Avx512Vnni)),
            "{sets:?}"
        );
        // The VNNI set is the AVX2 set plus VNNI.
        if sets.contains(&Kernels::Avx512Vnni) {
            assert!(sets.contains(&Kernels::Avx2), "{sets:?}");
        }
    } else {
        assert!(sets.is_empty(), "{sets:?}");
    }
    // Scripts name the set the emulated CPU must give (scripts/test-aarch64.sh).
    if let Ok(want) = std::env::var("EMBER_EXPECT_KERNELS") {
        let want = Kernels::from_name(&want).expect("EMBER_EXPECT_KERNELS names a kernel set");
        assert_eq!(Kernels::detected(), want, "EMBER_EXPECT_KERNELS");
    }
}

/// The i8mm set has tiles for every SIMD type; the tile kernels must be exercised where the CPU
/// runs them.
#[test]
fn i8mm_has_tiles_for_every_simd_type() {
    for ty in SIMD_TYPES {
        assert_eq!(
            tile_kernel_for(Kernels::NeonI8mm, ty).is_some(),
            Kernels::NeonI8mm.is_available(),
            "{ty}"
        );
    }
    for ty in OTHER_TYPES {
        assert!(tile_kernel_for(Kernels::NeonI8mm, ty).is_none(), "{ty}");
    }
    for kernels in [Kernels::Scalar, Kernels::Neon, Kernels::NeonDotprod] {
        for ty in SIMD_TYPES.into_iter().chain(OTHER_TYPES) {
            assert!(tile_kernel_for(kernels, ty).is_none(), "{kernels:?} {ty}");
        }
    }
}

/// How the f16 scale fields of the weights are drawn.
#[derive(Clone, Copy, Debug)]
enum Scales {
    /// Realistic: around 2^-14..2^-4.
    Normal,
    /// All zero.
    Zero,
    /// f16 subnormals (and zero).
    Subnormal,
    /// Up to 2^15.
    Large,
    /// Any of the above, per field.
    Mixed,
}

fn f16_field(rng: &mut Rng, how: Scales) -> [u8; 2] {
    let sign = if rng.u32() & 1 == 1 { 0x8000u16 } else { 0 };
    let bits = match how {
        Scales::Normal => {
            let e = 1 + rng.u32() % 11; // biased exponent 1..=11: 2^-14 .. 2^-4
            ((e as u16) << 10) | (rng.u32() as u16 & 0x3ff)
        }
        Scales::Zero => 0,
        Scales::Subnormal => rng.u32() as u16 & 0x3ff,
        Scales::Large => {
            let e = 16 + rng.u32() % 15; // 2^1 .. 2^15
            ((e as u16) << 10) | (rng.u32() as u16 & 0x3ff)
        }
        Scales::Mixed => {
            let how = [
                Scales::Normal,
                Scales::Zero,
                Scales::Subnormal,
                Scales::Large,
            ][(rng.u32() % 4) as usize];
            return f16_field(rng, how);
        }
    };
    (bits | sign).to_le_bytes()
}

/// Offsets of the f16 scale fields within one block of `ty`, and the offset of `d` alone (the
/// field that multiplies the quants).
fn scale_fields(ty: GgmlType) -> (&'static [usize], Option<usize>) {
    match ty {
        Q4_0 | Q5_0 | Q8_0 => (&[0], Some(0)),
        Q4_1 | Q5_1 => (&[0, 2], Some(0)),
        Q4_K | Q5_K => (&[0, 2], Some(0)),
        Q2_K => (&[80, 82], Some(80)),
        Q3_K => (&[108], Some(108)),
        Q6_K => (&[208], Some(208)),
        _ => (&[], None),
    }
}

/// Random weight bytes with finite scale fields drawn as `how`.
fn random_weights(ty: GgmlType, values: usize, how: Scales, rng: &mut Rng) -> Vec<u8> {
    let len = ty.bytes_for(values as u64).unwrap() as usize;
    let mut bytes: Vec<u8> = (0..len).map(|_| rng.u32() as u8).collect();
    match ty {
        F32 | F16 | BF16 => {
            let x: Vec<f32> = (0..values).map(|_| rng.normal()).collect();
            quantize_activation(ty, &x, &mut bytes).unwrap();
        }
        _ => {
            let (fields, _) = scale_fields(ty);
            for block in bytes.chunks_exact_mut(ty.type_size()) {
                for &f in fields {
                    block[f..f + 2].copy_from_slice(&f16_field(rng, how));
                }
            }
        }
    }
    bytes
}

/// How activation rows are drawn.
#[derive(Clone, Copy, Debug)]
enum Acts {
    /// `quantize_activation` of roughly normal values with outliers, times `scale`.
    Quantized(f32),
    /// `quantize_activation` of an all-zero row.
    Zero,
    /// Raw random quant bytes (including -128, which no quantizer writes) with sane scales: the
    /// integer parts must be exact for any bytes.
    Raw,
}

fn activations(ty: GgmlType, k: usize, how: Acts, rng: &mut Rng) -> Vec<u8> {
    let vdt = vec_dot_type(ty).unwrap();
    let len = vdt.bytes_for(k as u64).unwrap() as usize;
    let mut out = vec![0u8; len];
    match how {
        Acts::Quantized(scale) => {
            let x: Vec<f32> = (0..k).map(|_| rng.normal() * scale).collect();
            quantize_activation(vdt, &x, &mut out).unwrap();
        }
        Acts::Zero => quantize_activation(vdt, &vec![0.0; k], &mut out).unwrap(),
        Acts::Raw => {
            out.iter_mut().for_each(|b| *b = rng.u32() as u8);
            match vdt {
                Q8_0 | Q8_1 => {
                    for b in out.chunks_exact_mut(vdt.type_size()) {
                        b[0..2].copy_from_slice(&f16_field(rng, Scales::Normal));
                        if vdt == Q8_1 {
                            b[2..4].copy_from_slice(&f16_field(rng, Scales::Normal));
                        }
                    }
                }
                Q8_K => {
                    for b in out.chunks_exact_mut(vdt.type_size()) {
                        let d = (rng.uniform() - 0.5) * 0.1;
                        b[0..4].copy_from_slice(&d.to_le_bytes());
                    }
                }
                _ => {
                    let x: Vec<f32> = (0..k).map(|_| rng.normal()).collect();
                    quantize_activation(vdt, &x, &mut out).unwrap();
                }
            }
        }
    }
    out
}

fn h(b: &[u8]) -> f64 {
    f64::from(f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32())
}

/// Dequantized activation row (Q8_1 by hand: ember has no row dequantizer for it).
fn dequant_activation(vdt: GgmlType, xq: &[u8], k: usize) -> Vec<f64> {
    if vdt == Q8_1 {
        return xq
            .chunks_exact(36)
            .flat_map(|b| {
                let d = h(&b[0..2]);
                b[4..36].iter().map(move |&q| d * f64::from(q as i8))
            })
            .collect();
    }
    let mut out = vec![0.0f32; k];
    dequantize(vdt, xq, &mut out).unwrap();
    out.into_iter().map(f64::from).collect()
}

/// `S` of the module comment.
fn term_bound(ty: GgmlType, w: &[u8], xq: &[u8], k: usize) -> f64 {
    let vdt = vec_dot_type(ty).unwrap();
    let x = dequant_activation(vdt, xq, k);
    let mut wd = vec![0.0f32; k];
    dequantize(ty, w, &mut wd).unwrap();
    // The offsets: the same row with `d` zeroed (Q4_1: m; Q4_K/Q5_K: -dmin * min).
    let mut off = vec![0.0f32; k];
    if matches!(ty, Q4_1 | Q5_1 | Q4_K | Q5_K | Q2_K) {
        let mut w0 = w.to_vec();
        let d = scale_fields(ty).1.unwrap();
        for b in w0.chunks_exact_mut(ty.type_size()) {
            b[d..d + 2].copy_from_slice(&[0, 0]);
        }
        dequantize(ty, &w0, &mut off).unwrap();
    }
    let mut s: f64 = wd
        .iter()
        .zip(&off)
        .zip(&x)
        .map(|((&w, &o), &x)| (f64::from(w.abs()) + 2.0 * f64::from(o.abs())) * x.abs())
        .sum();
    if vdt == Q8_1 {
        for (wb, xb) in w.chunks_exact(ty.type_size()).zip(xq.chunks_exact(36)) {
            s += (h(&wb[2..4]) * h(&xb[2..4])).abs();
        }
    }
    s
}

fn tolerance(ty: GgmlType, k: usize, s: f64) -> f64 {
    let nb = (k / ty.block_size().max(1)) as f64;
    2.0 * (nb + 16.0) * 2f64.powi(-24) * s + (nb + 1.0) * 1e-36
}

/// Checks one SIMD result against the scalar one; returns error / tolerance.
fn check(ty: GgmlType, simd: f32, scalar: f32, w: &[u8], xq: &[u8], k: usize, at: &str) -> f64 {
    assert!(
        scalar.is_finite(),
        "{at}: scalar {scalar} (test data too large)"
    );
    assert!(simd.is_finite(), "{at}: simd {simd} vs scalar {scalar}");
    let s = term_bound(ty, w, xq, k);
    let tol = tolerance(ty, k, s);
    let err = (f64::from(simd) - f64::from(scalar)).abs();
    assert!(
        err <= tol,
        "{at}: simd {simd} vs scalar {scalar}: |err| {err:e} > {tol:e} (S = {s:e})"
    );
    err / tol
}

/// Compares the set `kernels` with scalar for one weight row and activation row; returns error /
/// tolerance.
fn compare(kernels: Kernels, ty: GgmlType, w: &[u8], xq: &[u8], k: usize, at: &str) -> f64 {
    let scalar = vec_dot_with(Kernels::Scalar, ty, w, xq, k).unwrap();
    let simd = vec_dot_with(kernels, ty, w, xq, k).unwrap();
    if kernels == Kernels::active() {
        // The dispatched default is this set's kernel, exactly.
        let active = vec_dot(ty, w, xq, k).unwrap();
        assert_eq!(active.to_bits(), simd.to_bits(), "{at}: vec_dot");
    }
    check(ty, simd, scalar, w, xq, k, &format!("{kernels:?} {at}"))
}

/// Runs `tile` on two weight rows and two activation rows and checks each of the four results
/// against the scalar dot of its rows; returns the worst error / tolerance.
fn compare_tile(
    tile: TileKernel,
    ty: GgmlType,
    w: [&[u8]; 2],
    x: [&[u8]; 2],
    k: usize,
    at: &str,
) -> f64 {
    let got = tile(w, x);
    let mut worst = 0.0f64;
    for (r, w_row) in w.iter().enumerate() {
        for (c, x_row) in x.iter().enumerate() {
            let scalar = vec_dot_with(Kernels::Scalar, ty, w_row, x_row, k).unwrap();
            let at = format!("{at} tile [w{r}][x{c}]");
            worst = worst.max(check(ty, got[r][c], scalar, w_row, x_row, k, &at));
        }
    }
    worst
}

const ALL_SCALES: [Scales; 5] = [
    Scales::Normal,
    Scales::Zero,
    Scales::Subnormal,
    Scales::Large,
    Scales::Mixed,
];

const ALL_ACTS: [Acts; 6] = [
    Acts::Quantized(1.0),
    Acts::Quantized(1e-30),
    Acts::Quantized(1e-3),
    // Large, with the activation scale and Q8_1 sum (f16s, max 65504) still finite.
    Acts::Quantized(300.0),
    Acts::Zero,
    Acts::Raw,
];

fn ks(ty: GgmlType) -> Vec<usize> {
    let bs = ty.block_size();
    if bs == 256 {
        // 1, 2, 3, 16 (4096), 17 super-blocks.
        vec![256, 512, 768, 4096, 4352]
    } else {
        // 1, 2, 3, 7, 128 (4096), 129 blocks.
        vec![32, 64, 96, 224, 4096, 4128]
    }
}

#[test]
fn simd_matches_scalar_on_random_blocks() {
    let sets = simd_sets();
    if sets.is_empty() {
        eprintln!("no SIMD kernel set on this CPU: SIMD kernels not tested");
        return;
    }
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut checked = 0;
    for ty in SIMD_TYPES.into_iter().chain(OTHER_TYPES) {
        let mut worst = vec![0.0f64; sets.len()];
        for k in ks(ty) {
            for how in ALL_SCALES {
                let w = random_weights(ty, k, how, &mut rng);
                for act in ALL_ACTS {
                    let xq = activations(ty, k, act, &mut rng);
                    let at = format!("{ty} k={k} weights {how:?} activations {act:?}");
                    for (worst, &kernels) in worst.iter_mut().zip(&sets) {
                        *worst = worst.max(compare(kernels, ty, &w, &xq, k, &at));
                        checked += 1;
                    }
                }
            }
        }
        for (worst, kernels) in worst.iter().zip(&sets) {
            eprintln!("{ty} {kernels:?}: worst |simd - scalar| / tolerance = {worst:.2e}");
        }
    }
    assert!(checked > 0);
}

/// Every tile kernel of every SIMD set this CPU runs, on the size classes and edge cases of
/// [`simd_matches_scalar_on_random_blocks`]: two weight rows drawn alike but independently, and two
/// different kinds of activation row, so a swapped or duplicated result is off by a whole dot.
#[test]
fn tiles_match_scalar_on_random_blocks() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut tiles = 0;
    for kernels in simd_sets() {
        for ty in SIMD_TYPES.into_iter().chain(OTHER_TYPES) {
            let Some(tile) = tile_kernel_for(kernels, ty) else {
                continue;
            };
            tiles += 1;
            let mut worst = 0.0f64;
            for k in ks(ty) {
                for how in ALL_SCALES {
                    let w0 = random_weights(ty, k, how, &mut rng);
                    let w1 = random_weights(ty, k, how, &mut rng);
                    for (i, act) in ALL_ACTS.into_iter().enumerate() {
                        let other = ALL_ACTS[(i + 1) % ALL_ACTS.len()];
                        let x0 = activations(ty, k, act, &mut rng);
                        let x1 = activations(ty, k, other, &mut rng);
                        let at = format!(
                            "{kernels:?} {ty} k={k} weights {how:?} activations {act:?}/{other:?}"
                        );
                        let err = compare_tile(tile, ty, [&w0, &w1], [&x0, &x1], k, &at);
                        worst = worst.max(err);
                    }
                }
            }
            eprintln!("{ty} {kernels:?} tiles: worst |simd - scalar| / tolerance = {worst:.2e}");
        }
    }
    eprintln!("{tiles} tile kernels tested");
    if Kernels::NeonI8mm.is_available() {
        assert!(tiles >= SIMD_TYPES.len());
    }
}

/// On aarch64 every kernel set shares one float structure (see `kernels/aarch64.rs`), and integer
/// sums are exact: the row kernels of [`Kernels::Neon`], [`Kernels::NeonDotprod`] and
/// [`Kernels::NeonI8mm`] give the same bits, and each tile result has the bits of the row kernel's.
/// So a product does not depend on the CPU, nor on how rows are split into tiles or threads.
#[test]
fn aarch64_sets_agree_bit_for_bit() {
    let sets: Vec<Kernels> = simd_sets()
        .into_iter()
        .filter(|k| matches!(k, Kernels::Neon | Kernels::NeonDotprod | Kernels::NeonI8mm))
        .collect();
    if sets.is_empty() {
        eprintln!("no aarch64 kernel set on this CPU: not tested");
        return;
    }
    let mut rng = Rng(0x5851_f42d_4c95_7f2d);
    let mut tiles = 0;
    for ty in SIMD_TYPES {
        for k in ks(ty) {
            for how in ALL_SCALES {
                let w = [0, 1].map(|_| random_weights(ty, k, how, &mut rng));
                for (i, act) in ALL_ACTS.into_iter().enumerate() {
                    let other = ALL_ACTS[(i + 1) % ALL_ACTS.len()];
                    let x = [act, other].map(|a| activations(ty, k, a, &mut rng));
                    let at = format!("{ty} k={k} weights {how:?} activations {act:?}/{other:?}");
                    // Row results of the first set (Neon), [w][x].
                    let base = w.each_ref().map(|w| {
                        x.each_ref()
                            .map(|x| vec_dot_with(sets[0], ty, w, x, k).unwrap().to_bits())
                    });
                    for &kernels in &sets {
                        let rows = w.each_ref().map(|w| {
                            x.each_ref()
                                .map(|x| vec_dot_with(kernels, ty, w, x, k).unwrap().to_bits())
                        });
                        assert_eq!(rows, base, "{kernels:?} rows vs {:?}: {at}", sets[0]);
                        if let Some(tile) = tile_kernel_for(kernels, ty) {
                            let got = tile([&w[0], &w[1]], [&x[0], &x[1]]);
                            assert_eq!(
                                got.map(|r| r.map(f32::to_bits)),
                                base,
                                "{kernels:?} tile: {at}"
                            );
                            tiles += 1;
                        }
                    }
                }
            }
        }
    }
    if Kernels::NeonI8mm.is_available() {
        assert!(tiles > 0);
    }
}

/// Types without a SIMD kernel, and every type for sets this CPU cannot run, get exactly the scalar
/// kernel (and no tile); all types get a kernel from every set.
#[test]
fn dispatch_falls_back_to_scalar() {
    let mut rng = Rng(99);
    for ty in SIMD_TYPES.into_iter().chain(OTHER_TYPES) {
        let (vdt, _) = row_kernel(ty).unwrap();
        assert_eq!(vdt, vec_dot_type(ty).unwrap());
        let k = ty.block_size().max(32) * 3;
        let w = random_weights(ty, k, Scales::Normal, &mut rng);
        let xq = activations(ty, k, Acts::Quantized(1.0), &mut rng);
        let scalar = vec_dot_with(Kernels::Scalar, ty, &w, &xq, k).unwrap();
        for kernels in Kernels::ALL {
            assert_eq!(row_kernel_for(kernels, ty).unwrap().0, vdt);
            if !has_simd(kernels, ty) || !kernels.is_available() {
                let got = vec_dot_with(kernels, ty, &w, &xq, k).unwrap();
                assert_eq!(got.to_bits(), scalar.to_bits(), "{kernels:?} {ty}");
            }
            if !kernels.is_available() {
                assert!(tile_kernel_for(kernels, ty).is_none(), "{kernels:?} {ty}");
            }
        }
    }
    assert!(Kernels::Scalar.is_available());
    // The detected set is the last (fastest) available one.
    let detected = Kernels::detected();
    let last = Kernels::ALL.into_iter().rev().find(|k| k.is_available());
    assert_eq!(Some(detected), last);
    // The active set: `EMBER_KERNELS` when it names a set this CPU runs, else the detected one.
    let requested = std::env::var("EMBER_KERNELS")
        .ok()
        .and_then(|v| Kernels::from_name(&v));
    match requested {
        Some(k) if k.is_available() => assert_eq!(Kernels::active(), k),
        _ => assert_eq!(Kernels::active(), detected),
    }
}

#[test]
fn kernel_set_names() {
    for k in Kernels::ALL {
        assert_eq!(Kernels::from_name(&format!("{k:?}")), Some(k));
        assert_eq!(
            Kernels::from_name(&format!("{k:?}").to_uppercase()),
            Some(k)
        );
    }
    assert_eq!(Kernels::from_name(" scalar "), Some(Kernels::Scalar));
    assert_eq!(Kernels::from_name("neon"), Some(Kernels::Neon));
    assert_eq!(
        Kernels::from_name("neon-dotprod"),
        Some(Kernels::NeonDotprod)
    );
    assert_eq!(Kernels::from_name("neon_i8mm"), Some(Kernels::NeonI8mm));
    assert_eq!(Kernels::from_name("avx512"), None);
    assert_eq!(Kernels::from_name(""), None);
}

/// `matmul_rows_with` gives exactly the numbers of the same kernel set's kernels, for several
/// activation rows and split row ranges: where the set has a tile kernel, the 2×2 tiles of
/// (weight rows paired from the start of the range) × (activation rows paired from 0) come from it
/// and the odd last row or column from the row kernel, as `tiled` in `kernels/mod.rs` splits them.
#[test]
fn matmul_rows_matches_vec_dot_per_kernel_set() {
    let mut rng = Rng(12345);
    let mut sets = vec![Kernels::Scalar];
    sets.extend(simd_sets());
    for ty in SIMD_TYPES.into_iter().chain([Q5_0, Q5_1]) {
        let k = ty.block_size() * 5;
        let (n, m) = (7, 5);
        let w = random_weights(ty, n * k, Scales::Normal, &mut rng);
        let x: Vec<f32> = (0..m * k).map(|_| rng.normal()).collect();
        let xq = QuantizedActivations::new(ty, &x, m, k).unwrap();
        let row_bytes = ty.bytes_for(k as u64).unwrap() as usize;
        let w_row = |j: usize| &w[j * row_bytes..(j + 1) * row_bytes];
        let x_row = |i: usize| xq.row(i).unwrap();
        for &kernels in &sets {
            let tile = tile_kernel_for(kernels, ty);
            for rows in [0..n, 2..5, 6..7] {
                let nr = rows.len();
                let mut out = vec![f32::NAN; m * nr];
                matmul_rows_with(kernels, ty, &w, k, &xq, rows.clone(), &mut out).unwrap();
                for i in 0..m {
                    for (jj, j) in rows.clone().enumerate() {
                        let (i0, jj0) = (i & !1, jj & !1);
                        let expect = match tile {
                            Some(tile) if i0 + 1 < m && jj0 + 1 < nr => {
                                let j0 = rows.start + jj0;
                                let t =
                                    tile([w_row(j0), w_row(j0 + 1)], [x_row(i0), x_row(i0 + 1)]);
                                t[jj - jj0][i - i0]
                            }
                            _ => vec_dot_with(kernels, ty, w_row(j), x_row(i), k).unwrap(),
                        };
                        assert_eq!(
                            out[i * nr + jj].to_bits(),
                            expect.to_bits(),
                            "{ty} {kernels:?} rows {rows:?} [{i}][{j}]"
                        );
                    }
                }
            }
        }
    }
}

/// `bytes` copied to start `shift` bytes into a fresh buffer.
fn shifted(bytes: &[u8], shift: usize) -> Vec<u8> {
    let mut b = vec![0u8; shift];
    b.extend_from_slice(bytes);
    b
}

/// Blocks at odd byte offsets (as in an mmap'd file): the kernels use unaligned loads.
#[test]
fn unaligned_rows() {
    let mut rng = Rng(777);
    for kernels in simd_sets() {
        for ty in SIMD_TYPES {
            let k = ty.block_size() * 3;
            let w = random_weights(ty, k, Scales::Normal, &mut rng);
            let w1 = random_weights(ty, k, Scales::Normal, &mut rng);
            let xq = activations(ty, k, Acts::Quantized(1.0), &mut rng);
            let xq1 = activations(ty, k, Acts::Raw, &mut rng);
            let base = vec_dot_with(kernels, ty, &w, &xq, k).unwrap();
            let tile = tile_kernel_for(kernels, ty);
            let base_tile = tile.map(|t| t([&w, &w1], [&xq, &xq1]));
            for shift in 1..4 {
                let (wb, xb) = (shifted(&w, shift), shifted(&xq, shift + 1));
                let (w, x) = (&wb[shift..], &xb[shift + 1..]);
                let got = vec_dot_with(kernels, ty, w, x, k).unwrap();
                assert_eq!(
                    got.to_bits(),
                    base.to_bits(),
                    "{kernels:?} {ty} shift {shift}"
                );
                if let (Some(tile), Some(base)) = (tile, base_tile) {
                    let (w1b, x1b) = (shifted(&w1, shift + 2), shifted(&xq1, shift + 3));
                    let got = tile([w, &w1b[shift + 2..]], [x, &x1b[shift + 3..]]);
                    let bits = |t: [[f32; 2]; 2]| t.map(|r| r.map(f32::to_bits));
                    assert_eq!(bits(got), bits(base), "{kernels:?} {ty} tile shift {shift}");
                }
            }
        }
    }
}

/// Mat-vec (`m = 1`) and small mat-mat (`m = 4`, where tile kernels apply) throughput, scalar vs
/// every SIMD set this CPU runs, single-threaded, in GB/s of weight bytes per activation row:
/// `cargo test --release -p ember-quant --test kernels_simd -- --ignored --nocapture`.
#[test]
#[ignore = "benchmark"]
fn bench_matvec() {
    use std::time::Instant;
    let mut rng = Rng(4242);
    // (type, n rows, k): SmolLM2-135M's ffn_down (Q4_1) and output (Q8_0), Qwen2-0.5B's ffn_down
    // (Q4_K, Q6_K).
    let shapes = [
        (Q4_1, 576, 1536),
        (Q4_0, 576, 1536),
        (Q8_0, 576, 1536),
        (Q8_0, 49152, 576),
        (Q4_K, 896, 4864),
        (Q5_K, 896, 4864),
        (Q6_K, 896, 4864),
    ];
    let mut sets = vec![Kernels::Scalar];
    sets.extend(simd_sets());
    for ((ty, n, k), m) in shapes.into_iter().flat_map(|s| [(s, 1), (s, 4)]) {
        let w = random_weights(ty, n * k, Scales::Normal, &mut rng);
        let x: Vec<f32> = (0..m * k).map(|_| rng.normal()).collect();
        let xq = QuantizedActivations::new(ty, &x, m, k).unwrap();
        let mut out = vec![0.0f32; m * n];
        let mut line = format!("{ty} {n}x{k} m={m} ({:.1} MB):", w.len() as f64 / 1e6);
        for &kernels in &sets {
            // Warm up, then run for ~0.3 s.
            matmul_rows_with(kernels, ty, &w, k, &xq, 0..n, &mut out).unwrap();
            let start = Instant::now();
            let mut iters = 0u32;
            while start.elapsed().as_secs_f64() < 0.3 {
                matmul_rows_with(kernels, ty, &w, k, &xq, 0..n, &mut out).unwrap();
                iters += 1;
            }
            let secs = start.elapsed().as_secs_f64() / f64::from(iters);
            let gbs = (m * w.len()) as f64 / secs / 1e9;
            line += &format!(" {kernels:?} {gbs:.2} GB/s ({:.1} us)", secs * 1e6);
        }
        eprintln!("{line}");
    }
}
