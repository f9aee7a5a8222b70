//! The Engine issue's greedy acceptance rule on every reference model (llama, qwen2, deepseek2)
//! available (tests/data, `../shared/models` when beside the checkout, SmolLM2 via `EMBER_SMOLLM2`):
//! free-running greedy decoding from `prompt_ids`, compared with llama.cpp's `greedy_ids`.
//!
//! Per record: either the ids are identical, or at the first step where they differ ember's token
//! is in llama.cpp's top-10 with a logit within τ of llama.cpp's top-1 (τ = 0.15 for F16/F32 files,
//! 1.5 for quantized ones).
//!
//! Per model, how many records may diverge at all. A count over "the records present" meant
//! different things on different record sets (71 in the repository, 214 with `../shared`): one
//! model with many near-ties decided it. The bound is now per model and comes from llama.cpp's own
//! self-disagreement on that model: the reference README measures, teacher-forced over every
//! record, the rms logit difference σ between llama.cpp with flash attention on and off (a change
//! of summation order only, like ember's kernels against ggml's). With logit errors of that size a
//! step whose llama.cpp top-1 margin is m flips with probability Φ(−m/σ) (this reproduces the
//! argmax flips llama.cpp itself shows: 22 predicted for SmolLM2's 399 steps against 15 seen,
//! 4.7 against 4 for tiny-deepseek-v3-q4_k_m); a record diverges somewhere with probability
//! p = 1 − Π(1 − Φ(−m/σ)) over its steps. The divergent records of a model must not exceed the
//! 99.9th percentile of the count such independent records give (Poisson-binomial over the p's):
//! ember may be as noisy as llama.cpp switching flash attention on, and a real numerical defect
//! (divergences where llama.cpp's margins are large against σ) still fails. Models the README did
//! not measure take the figure of their class: the measured F16 one for F16/F32 files, the measured
//! quantized model of the same architecture otherwise. Runs on the CPU (Flex) and, with the `wgpu`
//! feature, on the GPU.
#![allow(clippy::unwrap_used)]

use burn::tensor::Device;
use common::{data, ids, models};
use ember_gguf::GgufFile;
use ember_model::{LoadOptions, Model};
use serde_json::Value;

mod common;

/// Argmax with the lowest id winning an exact tie (as the reference was made).
fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best as u32
}

/// llama.cpp's flash-attention on/off rms logit difference (reference README) for `stem`, or the
/// figure of its class (see the header).
fn noise_sigma(stem: &str) -> f64 {
    const MEASURED: [(&str, f64); 5] = [
        ("smollm2-135m-instruct-q4_1", 0.26),
        ("tiny-qwen2-f16", 0.013),
        ("tiny-qwen2-q4_k_m", 0.31),
        ("tiny-llama-q8_0", 0.21),
        ("tiny-deepseek-v3-q4_k_m", 0.56),
    ];
    if let Some(&(_, s)) = MEASURED.iter().find(|(m, _)| *m == stem) {
        return s;
    }
    if is_float(stem) {
        return 0.013;
    }
    let arch = ["tiny-llama-", "tiny-qwen2-", "tiny-deepseek-"]
        .into_iter()
        .find(|a| stem.starts_with(a))
        .unwrap_or_else(|| panic!("{stem}: no noise figure for this model's class"));
    MEASURED
        .iter()
        .find(|(m, _)| m.starts_with(arch) && !is_float(m))
        .map(|&(_, s)| s)
        .unwrap()
}

fn is_float(stem: &str) -> bool {
    stem.ends_with("-f16") || stem.ends_with("-f32")
}

/// Complementary error function (Numerical Recipes' `erfcc`, relative error below 1.2e-7).
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = [
        -1.265_512_23,
        1.000_023_68,
        0.374_091_96,
        0.096_784_18,
        -0.186_288_06,
        0.278_868_07,
        -1.135_203_98,
        1.488_515_87,
        -0.822_152_23,
        0.170_872_77,
    ];
    let mut acc = 0.0;
    for c in poly.iter().rev() {
        acc = acc * t + c;
    }
    let r = t * (-z * z + acc).exp();
    if x >= 0.0 { r } else { 2.0 - r }
}

/// The probability that a replay with logit noise `sigma` diverges somewhere in a record whose
/// steps have llama.cpp top-1 margins `margins`.
fn divergence_probability(margins: &[f64], sigma: f64) -> f64 {
    let stay: f64 = margins
        .iter()
        .map(|&m| 1.0 - 0.5 * erfc(m / (sigma * std::f64::consts::SQRT_2)))
        .product();
    1.0 - stay
}

/// The smallest count k with P(X > k) <= `alpha`, X the number of successes of independent trials
/// with probabilities `p` (Poisson-binomial, by dynamic programming).
fn upper_quantile(p: &[f64], alpha: f64) -> usize {
    let mut dist = vec![1.0];
    for &pi in p {
        let mut next = vec![0.0; dist.len() + 1];
        for (k, &d) in dist.iter().enumerate() {
            next[k] += d * (1.0 - pi);
            next[k + 1] += d * pi;
        }
        dist = next;
    }
    let mut tail: f64 = dist.iter().sum();
    for (k, &d) in dist.iter().enumerate() {
        tail -= d;
        if tail <= alpha {
            return k;
        }
    }
    p.len()
}

/// The share of a model's records allowed beyond llama.cpp's own noise: one in a thousand.
const ALPHA: f64 = 1e-3;

#[derive(Debug, Default)]
struct Tally {
    records: usize,
    identical: usize,
    failures: Vec<String>,
}

fn check_model(path: &str, stem: &str, device: &Device, opts: LoadOptions, tally: &mut Tally) {
    let tau = if is_float(stem) { 0.15 } else { 1.5 };
    let sigma = noise_sigma(stem);
    let file = GgufFile::open(path).unwrap();
    let model = Model::load_with_options(&file, device, opts, &mut |_, _| {}).unwrap();
    let text = std::fs::read_to_string(data(&format!("reference/{stem}/greedy.jsonl"))).unwrap();
    let (mut same, mut n, mut p) = (0, 0, Vec::new());
    for (rec, line) in text.lines().enumerate() {
        let r: Value = serde_json::from_str(line).unwrap();
        let prompt = ids(&r["prompt_ids"]);
        let want = ids(&r["greedy_ids"]);
        let margins: Vec<f64> = r["top1_margin"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m.as_f64().unwrap())
            .collect();
        p.push(divergence_probability(&margins, sigma));
        let mut cache = model.new_cache(prompt.len() + want.len());
        let mut input = prompt;
        let mut got = Vec::new();
        for _ in 0..want.len() {
            let logits = model.forward(&input, &mut cache, false).unwrap();
            let row = logits.into_data().try_to_vec::<f32>().unwrap();
            let id = argmax(&row);
            got.push(id);
            input = vec![id];
        }
        n += 1;
        tally.records += 1;
        let Some(step) = got.iter().zip(&want).position(|(a, b)| a != b) else {
            same += 1;
            tally.identical += 1;
            continue;
        };
        let top = r["top10"][step].as_array().unwrap();
        let top1 = top[0][1].as_f64().unwrap();
        let ours = top
            .iter()
            .find(|p| p[0].as_u64().unwrap() == u64::from(got[step]))
            .map(|p| p[1].as_f64().unwrap());
        eprintln!(
            "{stem} record {rec}: diverges at step {step} (llama.cpp margin {:.3}, ember's \
             token {:?} below llama.cpp's top-1)",
            margins[step],
            ours.map(|l| top1 - l)
        );
        match ours {
            Some(l) if top1 - l <= tau => {}
            _ => tally.failures.push(format!(
                "{stem} record {rec}: step {step} ember chose {} (llama.cpp logit {ours:?}), \
                 llama.cpp {} ({top1:.3}); tau {tau}",
                got[step], want[step]
            )),
        }
    }
    let diverged = n - same;
    let expected: f64 = p.iter().sum();
    let bound = upper_quantile(&p, ALPHA);
    eprintln!(
        "{stem}: {same}/{n} records identical; {diverged} diverge, llama.cpp's own noise \
         (sigma {sigma}) expects {expected:.2}, bound {bound}"
    );
    if diverged > bound {
        tally.failures.push(format!(
            "{stem}: {diverged} of {n} records diverge; llama.cpp's flash-attention noise (sigma \
             {sigma}) expects {expected:.2} and exceeds {bound} with probability below {ALPHA}"
        ));
    }
}

/// Checks every kept model (see the header for the rule).
fn check_all(device: &Device, opts: LoadOptions, keep: impl Fn(&str) -> bool) {
    let mut tally = Tally::default();
    for (path, stem) in models().into_iter().filter(|(_, s)| keep(s)) {
        check_model(&path, &stem, device, opts, &mut tally);
    }
    eprintln!("{tally:?}");
    assert!(tally.records >= 9, "too few records: {tally:?}");
    assert!(tally.failures.is_empty(), "{:#?}", tally.failures);
}

#[test]
fn greedy_matches_llama_cpp_on_cpu() {
    check_all(&Device::flex(), LoadOptions::default(), |_| true);
}

/// On the GPU, whose kernel dequantizes the blocks itself: the F16, Q8_0 and Q4_K_M (Q4_K + Q6_K)
/// tiny models (CI runs Mesa's software Vulkan on 2 cores, where SmolLM2's 432 greedy steps take
/// many minutes; on a real GPU set `EMBER_TEST_WGPU_ALL=1` to run every model). Every weight type
/// is checked against the dequantized product in `tests/qlinear.rs`.
#[cfg(feature = "wgpu")]
#[test]
fn greedy_matches_llama_cpp_on_wgpu() {
    let device = Device::wgpu(burn::tensor::DeviceKind::DefaultDevice);
    let all = std::env::var_os("EMBER_TEST_WGPU_ALL").is_some();
    check_all(&device, LoadOptions::default(), |s| {
        all || (s.starts_with("tiny-")
            && ["-f16", "-q8_0", "-q4_k_m"].iter().any(|t| s.ends_with(t)))
    });
}

/// On the GPU with the routed experts on the CPU (`ExpertPlacement::Cpu`, llama.cpp's
/// `--cpu-moe`): the deepseek2 models, whose activations cross to the CPU and back in every MoE
/// layer. They diverge more often than the dense ones because llama.cpp's own margins on them are
/// small against its noise (σ 0.56), which the per-model bound already accounts for: the rule is
/// the same as everywhere.
#[cfg(feature = "wgpu")]
#[test]
fn greedy_matches_llama_cpp_on_wgpu_with_cpu_experts() {
    let device = Device::wgpu(burn::tensor::DeviceKind::DefaultDevice);
    let opts = LoadOptions {
        experts: ember_model::ExpertPlacement::Cpu,
    };
    check_all(&device, opts, |s| s.starts_with("tiny-deepseek"));
}
