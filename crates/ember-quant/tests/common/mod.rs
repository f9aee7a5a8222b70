//! Helpers shared by the kernel tests: a small deterministic generator of test values.
#![allow(dead_code)] // each test file uses a different subset

use half::f16;

/// xorshift64: reproducible values without a dependency.
pub struct Rng(pub u64);

impl Rng {
    pub fn u32(&mut self) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 16) as u32
    }
    pub fn uniform(&mut self) -> f32 {
        (self.u32() & 0xff_ffff) as f32 / 16_777_216.0
    }
    /// Roughly normal, with rare outliers like real activations.
    pub fn normal(&mut self) -> f32 {
        let g = self.uniform() + self.uniform() + self.uniform() + self.uniform() - 2.0;
        if self.u32().is_multiple_of(64) {
            g * 20.0
        } else {
            g
        }
    }
    /// `±[1, 2) * 2^e`, `e` in `lo..=hi`.
    pub fn scale(&mut self, lo: i32, hi: i32) -> f32 {
        let m = 1.0 + (self.u32() & 0xffff) as f32 / 65536.0;
        let e = lo + (self.u32() % (hi - lo + 1) as u32) as i32;
        let s = if self.u32() & 1 == 1 { -1.0 } else { 1.0 };
        s * m * 2f32.powi(e)
    }
    pub fn half(&mut self, lo: i32, hi: i32) -> [u8; 2] {
        f16::from_f32(self.scale(lo, hi)).to_bits().to_le_bytes()
    }
}
