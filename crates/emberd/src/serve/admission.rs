//! Memory admission: before the model is loaded, estimate what it will hold resident (weights,
//! KV cache, scratch) and refuse a configuration that does not fit the budget, saying what would.
//!
//! The KV term is exact for ember-model's cache (`kv_cache.rs`: K and V per layer, `n_head_kv ×
//! head_dim` elements per token each — with MLA one latent of `kv_lora_rank + qk_rope` —
//! preallocated for `n_ctx` per slot). Weights count in full: they
//! are mmap'd, and a decode step touches every page, so they are resident in practice (llama.cpp's
//! `llama_model_size` counts them the same way). Scratch is an upper-bound formula, below.
//! Byte quantities as written in configs ([`ByteSize`]) and shown to people ([`human_bytes`]) live
//! here too.

use crate::serve::config::{KvDtype, int_or_str};
use ember_gguf::GgufFile;
use ember_model::ModelConfig;
use serde::{Deserialize, Deserializer};
use std::fmt;
use std::str::FromStr;

/// Fixed allowance for what is not tensors: the tokenizer's vocabulary and merges (~10–20 MiB for
/// a 150k-token model), the chat template, tokio and HTTP buffers, allocator slack.
pub const RUNTIME_OVERHEAD: u64 = 64 << 20;

/// Context lengths suggested in a refusal are multiples of this.
pub const CTX_STEP: usize = 256;

/// What the engine will be asked to hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub n_ctx: usize,
    pub slots: usize,
    pub kv_dtype: KvDtype,
    pub prefill_chunk: usize,
}

/// The model dimensions the estimate depends on (copied so a refusal can re-evaluate).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Dims {
    n_layer: u64,
    n_head: u64,
    /// KV-cache elements per token and layer (`ModelConfig::kv_elements_per_layer`).
    kv_elems: u64,
    n_embd: u64,
    n_ff: u64,
    n_vocab: u64,
}

/// Estimated resident bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Estimate {
    pub weights_bytes: u64,
    pub kv_bytes: u64,
    pub scratch_bytes: u64,
    /// Sum of the above (saturating).
    pub total: u64,
    pub shape: Shape,
    dims: Dims,
}

/// Estimates the memory `file` needs when run as `shape`.
///
/// - weights: every tensor's bytes as stored, on either backend: on the CPU they are the mmap's
///   pages; on wgpu the matrices are uploaded as their GGUF blocks (dequantized inside the matmul
///   kernel, `qlinear_cube.rs`), the routed experts stay in the mmap under `cpu_moe`, and the rest
///   (embedding rows, norms) are read from the mmap or held as f32 as stored.
/// - KV: `n_layer × kv_elements (2·n_head_kv·head_dim, or MLA's kv_lora_rank + qk_rope) ×
///   bytes(kv_dtype) × n_ctx × slots`.
/// - scratch, with `rows = max(prefill_chunk, slots)` (one prefill chunk, or one decode row per
///   slot, whichever is larger):
///   activations `rows × (6·n_embd + 3·n_ff) × 4` (residual, norm, q, k, v, attention output; FFN
///   gate, up, product, all f32), attention scores `rows × n_head × n_ctx × 4` (one layer at a
///   time), logits `slots × n_vocab × 4 × 2` (logits and the sampler's working copy), plus
///   [`RUNTIME_OVERHEAD`].
pub fn estimate(file: &GgufFile, cfg: &ModelConfig, shape: Shape) -> Estimate {
    let weights_bytes = file
        .tensors()
        .iter()
        .map(|t| t.n_bytes())
        .fold(0u64, u64::saturating_add);
    let dims = Dims {
        n_layer: cfg.n_layer as u64,
        n_head: cfg.n_head as u64,
        kv_elems: cfg.kv_elements_per_layer() as u64,
        n_embd: cfg.n_embd as u64,
        n_ff: cfg.n_ff as u64,
        n_vocab: cfg.n_vocab as u64,
    };
    compute(weights_bytes, dims, shape)
}

fn compute(weights_bytes: u64, d: Dims, shape: Shape) -> Estimate {
    let (n_ctx, slots) = (shape.n_ctx as u64, shape.slots as u64);
    let mul = |xs: &[u64]| xs.iter().fold(1u64, |a, &x| a.saturating_mul(x));
    let kv_bytes = mul(&[d.n_layer, d.kv_elems, shape.kv_dtype.bytes(), n_ctx, slots]);
    let rows = (shape.prefill_chunk as u64).max(slots);
    let act_per_row = d
        .n_embd
        .saturating_mul(6)
        .saturating_add(d.n_ff.saturating_mul(3));
    let scratch_bytes = [
        mul(&[rows, act_per_row, 4]),
        mul(&[rows, d.n_head, n_ctx, 4]),
        mul(&[slots, d.n_vocab, 4, 2]),
        RUNTIME_OVERHEAD,
    ]
    .into_iter()
    .fold(0u64, u64::saturating_add);
    let total = weights_bytes
        .saturating_add(kv_bytes)
        .saturating_add(scratch_bytes);
    Estimate {
        weights_bytes,
        kv_bytes,
        scratch_bytes,
        total,
        shape,
        dims: d,
    }
}

impl Estimate {
    /// The same model with another context length / slot count.
    fn with(&self, n_ctx: usize, slots: usize) -> Estimate {
        let shape = Shape {
            n_ctx,
            slots,
            ..self.shape
        };
        compute(self.weights_bytes, self.dims, shape)
    }

    /// The largest context (a multiple of [`CTX_STEP`], at most the requested one) that fits
    /// `budget` with the requested slots.
    pub fn max_ctx(&self, budget: u64) -> Option<usize> {
        let fits = |steps: usize| self.with(steps * CTX_STEP, self.shape.slots).total <= budget;
        // total grows with n_ctx: binary search over steps in [1, requested / STEP].
        let (mut lo, mut hi) = (0usize, self.shape.n_ctx / CTX_STEP);
        if hi == 0 || !fits(1) {
            return None;
        }
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            if fits(mid) { lo = mid } else { hi = mid - 1 }
        }
        Some(lo * CTX_STEP)
    }

    /// The largest slot count (at most the requested one) that fits `budget` at the requested
    /// context length.
    pub fn max_slots(&self, budget: u64) -> Option<usize> {
        let fits = |s: usize| self.with(self.shape.n_ctx, s).total <= budget;
        let (mut lo, mut hi) = (0usize, self.shape.slots);
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            if fits(mid) { lo = mid } else { hi = mid - 1 }
        }
        (lo > 0).then_some(lo)
    }
}

impl fmt::Display for Estimate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (weights {}, KV cache {} for {} × {} tokens, scratch {})",
            human_bytes(self.total),
            human_bytes(self.weights_bytes),
            human_bytes(self.kv_bytes),
            self.shape.slots,
            self.shape.n_ctx,
            human_bytes(self.scratch_bytes)
        )
    }
}

/// Why a configuration was refused, and what would fit instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub estimate: Estimate,
    pub budget: u64,
    /// The largest context that fits with the requested slots.
    pub max_ctx: Option<usize>,
    /// The largest slot count that fits with the requested context.
    pub max_slots: Option<usize>,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = &self.estimate;
        let budget = human_bytes(self.budget);
        write!(f, "the model needs {e}, over the memory budget of {budget}")?;
        if e.weights_bytes > self.budget {
            return write!(
                f,
                "; the weights alone exceed it by {}: choose a smaller model or a smaller quantization, or raise memory_budget",
                human_bytes(e.weights_bytes - self.budget)
            );
        }
        let (ctx, slots) = (e.shape.n_ctx, e.shape.slots);
        let mut options = Vec::new();
        if let Some(c) = self.max_ctx {
            options.push(format!("ctx_size {c} with {slots} slot(s)"));
        }
        if let Some(s) = self.max_slots.filter(|&s| s < slots) {
            options.push(format!("{s} slot(s) with ctx_size {ctx}"));
        }
        if options.is_empty() {
            let floor = e.with(CTX_STEP, 1);
            return write!(
                f,
                "; even 1 slot of {CTX_STEP} tokens needs {}: choose a smaller model or raise memory_budget",
                human_bytes(floor.total)
            );
        }
        write!(f, "; what fits: {}", options.join(", or "))?;
        if e.shape.kv_dtype == KvDtype::F32 {
            write!(f, " (kv_dtype f16 halves the KV cache)")?;
        }
        Ok(())
    }
}

impl std::error::Error for Refusal {}

/// Admits `estimate` if its total fits `budget`.
pub fn admit(estimate: &Estimate, budget: u64) -> Result<(), Box<Refusal>> {
    if estimate.total <= budget {
        return Ok(());
    }
    Err(Box::new(Refusal {
        estimate: *estimate,
        budget,
        max_ctx: estimate.max_ctx(budget),
        max_slots: estimate.max_slots(budget),
    }))
}

/// A byte count: an integer, or a string with a unit. `K`/`M`/`G`/`T` and `KiB`… are powers of
/// 1024 (as systemd's `MemoryMax=` reads them); `KB`/`MB`/`GB`/`TB` are powers of 1000.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kib" => 1 << 10,
            "m" | "mib" => 1 << 20,
            "g" | "gib" => 1 << 30,
            "t" | "tib" => 1 << 40,
            "kb" => 1_000,
            "mb" => 1_000_000,
            "gb" => 1_000_000_000,
            "tb" => 1_000_000_000_000,
            other => return Err(format!("unknown unit {other:?} in byte size {s:?}")),
        };
        let bad = || format!("{s:?} is not a byte size (e.g. \"1.5GiB\", \"800MB\", 1048576)");
        let n: f64 = num.parse().map_err(|_| bad())?;
        let bytes = n * scale as f64;
        if !bytes.is_finite() || bytes >= u64::MAX as f64 {
            return Err(bad());
        }
        Ok(ByteSize(bytes as u64))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&human_bytes(self.0))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        int_or_str(d, "a byte size (\"1.5GiB\", \"800MB\" or bytes)", |n| {
            u64::try_from(n)
                .map(ByteSize)
                .map_err(|_| format!("{n} is not a byte size"))
        })
    }
}

/// `1.5 GiB`, `800.0 MiB`, `512 B`: binary units, one decimal.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ember_gguf::{GgmlType, GgufWriter, Value};

    const MIB: u64 = 1 << 20;

    /// A llama-shaped GGUF: 2 layers, n_embd 64, 4 heads (2 KV heads of 16), n_ff 128, 100
    /// tokens; two F32 tensors and a Q8_0 matrix of known size stand in for the weights.
    fn tiny() -> (GgufFile, ModelConfig) {
        let u = |n: u32| Value::U32(n);
        let bytes = GgufWriter::new()
            .kv("general.architecture", Value::String("llama".into()))
            .kv("llama.embedding_length", u(64))
            .kv("llama.attention.head_count", u(4))
            .kv("llama.attention.head_count_kv", u(2))
            .kv("llama.block_count", u(2))
            .kv("llama.feed_forward_length", u(128))
            .kv("llama.vocab_size", u(100))
            .kv("llama.context_length", u(2048))
            .kv("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5))
            .tensor(
                "token_embd.weight",
                &[64, 100],
                GgmlType::F32,
                vec![0; 64 * 100 * 4],
            )
            .tensor("output_norm.weight", &[64], GgmlType::F32, vec![0; 64 * 4])
            .tensor(
                "blk.0.attn_q.weight",
                &[64, 64],
                GgmlType::Q8_0,
                vec![0; 64 * 64 / 32 * 34],
            )
            .to_bytes();
        let file = GgufFile::from_bytes(bytes).expect("gguf");
        let cfg = ModelConfig::from_gguf(file.metadata()).expect("config");
        (file, cfg)
    }

    fn shape(n_ctx: usize, slots: usize) -> Shape {
        Shape {
            n_ctx,
            slots,
            kv_dtype: KvDtype::F16,
            prefill_chunk: 32,
        }
    }

    #[test]
    fn the_estimate_follows_the_documented_formula() {
        let (file, cfg) = tiny();
        let e = estimate(&file, &cfg, shape(1024, 2));
        // As stored: f32 tensors 4 bytes a value, the Q8_0 matrix 34 bytes a block of 32 (on
        // wgpu too, where the blocks are uploaded as they are).
        assert_eq!(e.weights_bytes, (64 * 100 + 64) * 4 + 64 * 64 / 32 * 34);
        // 2 layers × (K, V) × 2 KV heads × 16 × 2 bytes × 1024 tokens × 2 slots.
        assert_eq!(e.kv_bytes, 2 * 2 * 2 * 16 * 2 * 1024 * 2);
        assert_eq!(
            e.kv_bytes / 1024 / 2,
            cfg.kv_bytes_per_token() as u64,
            "matches ember-model"
        );
        let act = 32 * (6 * 64 + 3 * 128) * 4;
        let scores = 32 * 4 * 1024 * 4;
        let logits = 2 * 100 * 4 * 2;
        assert_eq!(e.scratch_bytes, act + scores + logits + RUNTIME_OVERHEAD);
        assert_eq!(e.total, e.weights_bytes + e.kv_bytes + e.scratch_bytes);
        let f32_kv = estimate(
            &file,
            &cfg,
            Shape {
                kv_dtype: KvDtype::F32,
                ..shape(1024, 2)
            },
        );
        assert_eq!(f32_kv.kv_bytes, 2 * e.kv_bytes);
    }

    #[test]
    fn admits_what_fits() {
        let (file, cfg) = tiny();
        let e = estimate(&file, &cfg, shape(2048, 1));
        assert!(admit(&e, e.total).is_ok());
        assert!(admit(&e, 100 * MIB).is_ok());
    }

    #[test]
    fn a_refusal_names_the_largest_context_and_slot_count_that_fit() {
        let (file, cfg) = tiny();
        // A synthetic big model: same dims, weights 1 GiB, 8 slots × 32k context.
        let dims = estimate(&file, &cfg, shape(32768, 8)).dims;
        let e = compute(1 << 30, dims, shape(32768, 8));
        let budget = e.with(32768, 3).total + 1000;
        let r = admit(&e, budget).expect_err("too big");
        assert_eq!(r.max_slots, Some(3));
        let c = r.max_ctx.expect("a context fits");
        assert_eq!(c % CTX_STEP, 0);
        assert!(e.with(c, 8).total <= budget && e.with(c + CTX_STEP, 8).total > budget);
        let msg = r.to_string();
        assert!(msg.contains("over the memory budget of"), "{msg}");
        assert!(
            msg.contains(&format!(
                "what fits: ctx_size {c} with 8 slot(s), or 3 slot(s) with ctx_size 32768"
            )),
            "{msg}"
        );
    }

    #[test]
    fn weights_over_the_budget_say_by_how_much() {
        let (file, cfg) = tiny();
        let e = compute(
            3 << 30,
            estimate(&file, &cfg, shape(2048, 1)).dims,
            shape(2048, 1),
        );
        let r = admit(&e, 2 << 30).expect_err("weights too big");
        assert_eq!((r.max_ctx, r.max_slots), (None, None));
        let msg = r.to_string();
        assert!(
            msg.contains("the weights alone exceed it by 1.0 GiB"),
            "{msg}"
        );
        assert!(msg.contains("memory budget of 2.0 GiB"), "{msg}");
    }

    #[test]
    fn when_nothing_fits_beside_the_weights_the_floor_is_named() {
        let (file, cfg) = tiny();
        let e = compute(
            1 << 30,
            estimate(&file, &cfg, shape(2048, 1)).dims,
            shape(2048, 1),
        );
        let r = admit(&e, (1 << 30) + MIB).expect_err("no room for overhead");
        assert!(
            r.to_string()
                .contains("even 1 slot of 256 tokens needs 1.1 GiB"),
            "{r}"
        );
    }

    #[test]
    fn the_repository_tiny_llama_is_estimated_from_its_tensor_table() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/data/models/tiny-llama-f16.gguf"
        );
        let Ok(file) = GgufFile::open(path) else {
            return; // fixtures not checked out
        };
        let cfg = ModelConfig::from_gguf(file.metadata()).expect("config");
        let e = estimate(&file, &cfg, shape(256, 1));
        let sum: u64 = file.tensors().iter().map(|t| t.n_bytes()).sum();
        assert_eq!(e.weights_bytes, sum);
        assert!(e.weights_bytes <= file.file_len());
    }
}
