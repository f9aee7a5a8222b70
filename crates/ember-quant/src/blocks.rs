//! GGML quantization block layouts, byte for byte.
//!
//! Follows `ggml/src/ggml-common.h` (`block_q4_0` ... `block_q8_K`). Every struct here is
//! `#[repr(C)]`, has alignment 1 and no padding (the `f16`/`f32`/`i16` fields are kept as little-endian
//! byte arrays), so a block can be viewed in place inside a `&[u8]` at any offset with
//! [`as_blocks`] — no unsafe code, no alignment assumptions. Sizes are checked at compile time against
//! [`GgmlType::type_size`].

use bytemuck::{Pod, Zeroable};
use half::f16;

use crate::types::GgmlType;

/// Values per block of the legacy quants (`QK4_0`, `QK4_1`, `QK5_0`, `QK5_1`, `QK8_0`, `QK8_1`).
pub const QK: usize = 32;
/// Values per super-block of the K-quants (`QK_K`).
pub const QK_K: usize = 256;
/// Bytes of packed 6-bit scales/mins in Q4_K and Q5_K (`K_SCALE_SIZE`).
pub const K_SCALE_SIZE: usize = 12;

/// Decodes a little-endian IEEE half stored as two bytes.
#[inline]
pub fn f16_le(bytes: [u8; 2]) -> f32 {
    f16::from_bits(u16::from_le_bytes(bytes)).to_f32()
}

/// Decodes a little-endian bfloat16 stored as two bytes.
#[inline]
pub fn bf16_le(bytes: [u8; 2]) -> f32 {
    f32::from_bits(u32::from(u16::from_le_bytes(bytes)) << 16)
}

/// A GGML block type: a plain-bytes struct laid out exactly as ggml stores it.
pub trait Block: Pod {
    /// The tensor type whose data is a sequence of these blocks.
    const TYPE: GgmlType;
    /// Values per block.
    const VALUES: usize;
}

/// Views `bytes` as a slice of blocks, or `None` when the length is not a whole number of blocks.
/// Works at any alignment (every [`Block`] has alignment 1).
pub fn as_blocks<B: Block>(bytes: &[u8]) -> Option<&[B]> {
    bytemuck::try_cast_slice(bytes).ok()
}

macro_rules! block {
    ($(#[$m:meta])* $name:ident, $ty:ident, $values:expr, $size:expr, { $($(#[$fm:meta])* $f:ident : $ft:ty),* $(,)? }) => {
        $(#[$m])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
        pub struct $name {
            $($(#[$fm])* pub $f: $ft,)*
        }

        impl Block for $name {
            const TYPE: GgmlType = GgmlType::$ty;
            const VALUES: usize = $values;
        }

        const _: () = assert!(size_of::<$name>() == $size);
        const _: () = assert!(align_of::<$name>() == 1);
    };
}

block!(
    /// `block_q4_0`: 32 values, `x = d * (q - 8)` with 4-bit `q`.
    BlockQ4_0, Q4_0, QK, 18, {
        /// Scale (f16).
        d: [u8; 2],
        /// Nibbles: low nibble of byte `j` is value `j`, high nibble is value `j + 16`.
        qs: [u8; QK / 2],
    }
);

block!(
    /// `block_q4_1`: 32 values, `x = d * q + m` with 4-bit `q`.
    BlockQ4_1, Q4_1, QK, 20, {
        /// Scale (f16).
        d: [u8; 2],
        /// Minimum (f16).
        m: [u8; 2],
        /// Nibbles, as in Q4_0.
        qs: [u8; QK / 2],
    }
);

block!(
    /// `block_q5_0`: 32 values, `x = d * (q - 16)` with 5-bit `q`.
    BlockQ5_0, Q5_0, QK, 22, {
        /// Scale (f16).
        d: [u8; 2],
        /// Fifth bits, a little-endian u32: bit `j` belongs to value `j`.
        qh: [u8; 4],
        /// Low nibbles, as in Q4_0.
        qs: [u8; QK / 2],
    }
);

block!(
    /// `block_q5_1`: 32 values, `x = d * q + m` with 5-bit `q`.
    BlockQ5_1, Q5_1, QK, 24, {
        /// Scale (f16).
        d: [u8; 2],
        /// Minimum (f16).
        m: [u8; 2],
        /// Fifth bits, a little-endian u32.
        qh: [u8; 4],
        /// Low nibbles, as in Q4_0.
        qs: [u8; QK / 2],
    }
);

block!(
    /// `block_q8_0`: 32 values, `x = d * q` with signed 8-bit `q`.
    BlockQ8_0, Q8_0, QK, 34, {
        /// Scale (f16).
        d: [u8; 2],
        /// Quants.
        qs: [i8; QK],
    }
);

block!(
    /// `block_q8_1`: 32 values, `x = d * q`; `s = d * sum(q)` is carried for dot products.
    BlockQ8_1, Q8_1, QK, 36, {
        /// Scale (f16).
        d: [u8; 2],
        /// `d * sum(qs)` (f16).
        s: [u8; 2],
        /// Quants.
        qs: [i8; QK],
    }
);

block!(
    /// `block_q2_K`: 256 values in 16 groups of 16, 2-bit quants, 4-bit scales and mins.
    BlockQ2K, Q2_K, QK_K, 84, {
        /// Per group: scale in the low nibble, min in the high nibble.
        scales: [u8; QK_K / 16],
        /// 2-bit quants.
        qs: [u8; QK_K / 4],
        /// Super-block scale for the scales (f16).
        d: [u8; 2],
        /// Super-block scale for the mins (f16).
        dmin: [u8; 2],
    }
);

block!(
    /// `block_q3_K`: 256 values in 16 groups of 16, 3-bit quants, 6-bit scales.
    BlockQ3K, Q3_K, QK_K, 110, {
        /// High (third) bits of the quants.
        hmask: [u8; QK_K / 8],
        /// Low two bits of the quants.
        qs: [u8; QK_K / 4],
        /// Sixteen 6-bit scales, packed.
        scales: [u8; 12],
        /// Super-block scale (f16).
        d: [u8; 2],
    }
);

block!(
    /// `block_q4_K`: 256 values in 8 groups of 32, 4-bit quants, 6-bit scales and mins.
    BlockQ4K, Q4_K, QK_K, 144, {
        /// Super-block scale for the scales (f16).
        d: [u8; 2],
        /// Super-block scale for the mins (f16).
        dmin: [u8; 2],
        /// Eight 6-bit scales and eight 6-bit mins, packed.
        scales: [u8; K_SCALE_SIZE],
        /// 4-bit quants.
        qs: [u8; QK_K / 2],
    }
);

block!(
    /// `block_q5_K`: 256 values in 8 groups of 32, 5-bit quants, 6-bit scales and mins.
    BlockQ5K, Q5_K, QK_K, 176, {
        /// Super-block scale for the scales (f16).
        d: [u8; 2],
        /// Super-block scale for the mins (f16).
        dmin: [u8; 2],
        /// Eight 6-bit scales and eight 6-bit mins, packed as in Q4_K.
        scales: [u8; K_SCALE_SIZE],
        /// Fifth bits of the quants.
        qh: [u8; QK_K / 8],
        /// Low four bits of the quants.
        qs: [u8; QK_K / 2],
    }
);

block!(
    /// `block_q6_K`: 256 values in 16 groups of 16, 6-bit quants, signed 8-bit scales.
    BlockQ6K, Q6_K, QK_K, 210, {
        /// Low four bits of the quants.
        ql: [u8; QK_K / 2],
        /// High two bits of the quants.
        qh: [u8; QK_K / 4],
        /// Per-group scales.
        scales: [i8; QK_K / 16],
        /// Super-block scale (f16).
        d: [u8; 2],
    }
);

block!(
    /// `block_q8_K`: 256 values, `x = d * q`; group sums carried for dot products.
    BlockQ8K, Q8_K, QK_K, 292, {
        /// Scale (f32, little-endian).
        d: [u8; 4],
        /// Quants.
        qs: [i8; QK_K],
        /// Sum of each group of 16 quants (i16, little-endian).
        bsums: [[u8; 2]; QK_K / 16],
    }
);

impl BlockQ8K {
    /// The scale.
    #[inline]
    pub fn d(&self) -> f32 {
        f32::from_le_bytes(self.d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check<B: Block>() {
        assert_eq!(size_of::<B>(), B::TYPE.type_size(), "{}", B::TYPE);
        assert_eq!(B::VALUES, B::TYPE.block_size(), "{}", B::TYPE);
        assert_eq!(align_of::<B>(), 1, "{}", B::TYPE);
    }

    #[test]
    fn sizes_match_type_table() {
        check::<BlockQ4_0>();
        check::<BlockQ4_1>();
        check::<BlockQ5_0>();
        check::<BlockQ5_1>();
        check::<BlockQ8_0>();
        check::<BlockQ8_1>();
        check::<BlockQ2K>();
        check::<BlockQ3K>();
        check::<BlockQ4K>();
        check::<BlockQ5K>();
        check::<BlockQ6K>();
        check::<BlockQ8K>();
    }

    #[test]
    fn blocks_view_at_any_offset() {
        let bytes: Vec<u8> = (0..=255u8).cycle().take(1 + 2 * 18).collect();
        // Offset 1: deliberately odd.
        let blocks = as_blocks::<BlockQ4_0>(&bytes[1..]).expect("two whole blocks");
        assert_eq!(blocks.len(), 2);
        assert_eq!(blocks[0].d, [1, 2]);
        assert_eq!(blocks[1].d, [19, 20]);
        assert_eq!(blocks[1].qs[15], 36);
        assert!(as_blocks::<BlockQ4_0>(&bytes[2..]).is_none());
        assert_eq!(as_blocks::<BlockQ4_0>(&[]).map(<[_]>::len), Some(0));
    }

    #[test]
    fn field_order_follows_ggml() {
        // Q4_K: d, dmin, scales, qs.
        let mut bytes = [0u8; 144];
        bytes[0..2].copy_from_slice(&f16::from_f32(0.5).to_bits().to_le_bytes());
        bytes[2..4].copy_from_slice(&f16::from_f32(-2.0).to_bits().to_le_bytes());
        bytes[4] = 7;
        bytes[16] = 9;
        let b = &as_blocks::<BlockQ4K>(&bytes).expect("one block")[0];
        assert_eq!(f16_le(b.d), 0.5);
        assert_eq!(f16_le(b.dmin), -2.0);
        assert_eq!(b.scales[0], 7);
        assert_eq!(b.qs[0], 9);

        // Q8_K: f32 d first.
        let mut bytes = [0u8; 292];
        bytes[0..4].copy_from_slice(&1.25f32.to_le_bytes());
        bytes[4] = 0xff;
        let b = &as_blocks::<BlockQ8K>(&bytes).expect("one block")[0];
        assert_eq!(b.d(), 1.25);
        assert_eq!(b.qs[0], -1);
    }

    #[test]
    fn half_decoders() {
        assert_eq!(f16_le([0x00, 0x3c]), 1.0);
        assert_eq!(f16_le([0x00, 0xc0]), -2.0);
        assert_eq!(bf16_le([0x80, 0x3f]), 1.0);
        assert_eq!(bf16_le([0x40, 0xc0]), -3.0);
    }
}
