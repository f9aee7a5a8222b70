//! The deepseek2 path beyond greedy parity (which `greedy.rs` and `parity.rs` check): the MLA
//! cache really holds only the latent and the rope key, a prompt fed in chunks (each chunk at its
//! own rope positions, reading the cached latents) gives the logits of one batch, and sequences
//! batched together (several routes through the experts in one step) give their own logits.
#![allow(clippy::unwrap_used)]

use burn::tensor::Device;
use common::{data, last_logits_batched};
use ember_gguf::GgufFile;
use ember_model::Model;

mod common;

fn load(stem: &str) -> Model {
    let file = GgufFile::open(data(&format!("models/{stem}.gguf"))).unwrap();
    Model::load(&file, &Device::flex()).unwrap()
}

fn logits(t: burn::tensor::Tensor<2>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn mla_cache_holds_latent_and_rope_key_only() {
    for stem in ["tiny-deepseek-v3-q4_k_m", "tiny-deepseek-v2-lite-q4_k_m"] {
        let m = load(stem);
        let cfg = m.config();
        let mla = cfg.mla.as_ref().unwrap();
        assert_eq!((mla.kv_lora_rank, mla.qk_rope), (256, 16), "{stem}");
        assert_eq!(cfg.kv_bytes_per_token(), 3 * (256 + 16) * 2, "{stem}");
        let cache = m.new_cache(100);
        assert_eq!(cache.bytes(), 100 * cfg.kv_bytes_per_token(), "{stem}");
    }
    // A dense model keeps per-head K and V.
    let m = load("tiny-llama-f16");
    let cfg = m.config();
    assert_eq!(
        cfg.kv_bytes_per_token(),
        cfg.n_layer * 2 * cfg.n_head_kv * cfg.head_dim * 2
    );
    assert_eq!(m.new_cache(10).bytes(), 10 * cfg.kv_bytes_per_token());
}

#[test]
fn chunked_prefill_matches_one_batch() {
    let m = load("tiny-deepseek-v3-q4_k_m");
    let prompt: Vec<u32> = (0..23).map(|i| (i * 577 + 11) % 4000).collect();
    let mut one = m.new_cache(32);
    let want = logits(m.forward(&prompt, &mut one, false).unwrap());
    let mut chunked = m.new_cache(32);
    for c in prompt[..18].chunks(5) {
        m.forward(c, &mut chunked, false).unwrap();
    }
    let got = logits(m.forward(&prompt[18..], &mut chunked, false).unwrap());
    // Activations are quantized per row, so only the summation order differs.
    assert!(max_diff(&want, &got) < 1e-3, "{}", max_diff(&want, &got));
    assert_eq!(chunked.len(), prompt.len());
}

#[test]
fn batched_sequences_match_their_own_runs() {
    let m = load("tiny-deepseek-v3-q4_k_m");
    let a: Vec<u32> = (0..9).map(|i| (i * 131 + 7) % 4000).collect();
    let b: Vec<u32> = (0..4).map(|i| (i * 997 + 3) % 4000).collect();
    let alone = |p: &[u32]| {
        let mut c = m.new_cache(16);
        logits(m.forward(p, &mut c, false).unwrap())
    };
    let [got_a, got_b] = last_logits_batched(&m, &a, &b, 16);
    assert!(max_diff(&got_a, &alone(&a)) < 1e-3);
    assert!(max_diff(&got_b, &alone(&b)) < 1e-3);
}
