//! Tests of the whole chain: greedy, seeding, penalties through accept/prime, logit bias,
//! parameter validation and deserialization.

use super::*;

/// Only the processor under test enabled, temperature 1.
fn neutral(seed: u64) -> SamplingParams {
    SamplingParams {
        temperature: 1.0,
        top_k: 0,
        top_p: 1.0,
        min_p: 0.0,
        seed: Some(seed),
        ..SamplingParams::default()
    }
}

fn ln(probs: &[f32]) -> Vec<f32> {
    probs.iter().map(|p| p.ln()).collect()
}

fn sampler(params: &SamplingParams, n_vocab: usize) -> Sampler {
    match Sampler::new(params, n_vocab) {
        Ok(s) => s,
        Err(e) => panic!("sampler: {e}"),
    }
}

fn draw(s: &mut Sampler, logits: &[f32], n: usize) -> Vec<u32> {
    (0..n)
        .map(|_| match s.sample(logits) {
            Ok(t) => t,
            Err(e) => panic!("sample: {e}"),
        })
        .collect()
}

#[test]
fn defaults_match_llama_cpp_common() {
    let p = SamplingParams::default();
    assert_eq!(
        (p.temperature, p.top_k, p.top_p, p.min_p),
        (0.8, 40, 0.95, 0.05)
    );
    assert_eq!((p.repeat_penalty, p.penalty_last_n), (1.0, 64));
    assert_eq!((p.presence_penalty, p.frequency_penalty), (0.0, 0.0));
    assert_eq!(p.seed, None);
    assert!(!p.is_greedy());
    assert!(SamplingParams::greedy().is_greedy());
}

#[test]
fn greedy_is_argmax_with_lowest_id_tie() {
    let mut s = sampler(&SamplingParams::greedy(), 5);
    assert_eq!(draw(&mut s, &[0.0, 2.0, -1.0, 2.0, 1.0], 3), vec![1, 1, 1]);
    assert_eq!(s.last_candidates().len(), 1);
    assert_eq!(s.last_candidates()[0].p, 1.0);
    // Negative temperature is greedy too, as in llama.cpp.
    let mut s = sampler(
        &SamplingParams {
            temperature: -1.0,
            ..SamplingParams::default()
        },
        3,
    );
    assert_eq!(draw(&mut s, &[-3.0, -1.0, -2.0], 1), vec![1]);
}

#[test]
fn greedy_applies_penalties_and_bias() {
    let params = SamplingParams {
        repeat_penalty: 4.0,
        ..SamplingParams::greedy()
    };
    let mut s = sampler(&params, 3);
    let logits = [1.0, 3.0, 2.0];
    assert_eq!(s.sample_and_accept(&logits), Ok(1));
    // 3 / 4 < 2: token 2 now wins.
    assert_eq!(s.sample(&logits), Ok(2));

    let banned = SamplingParams {
        logit_bias: vec![(1, f32::NEG_INFINITY), (0, 0.5)],
        ..SamplingParams::greedy()
    };
    let mut s = sampler(&banned, 3);
    assert_eq!(s.sample(&logits), Ok(2));
    let boosted = SamplingParams {
        logit_bias: vec![(0, 5.0)],
        ..SamplingParams::greedy()
    };
    assert_eq!(sampler(&boosted, 3).sample(&logits), Ok(0));
}

#[test]
fn top_k_limits_the_draws() {
    let mut s = sampler(
        &SamplingParams {
            top_k: 2,
            ..neutral(7)
        },
        5,
    );
    let logits = ln(&[0.1, 0.3, 0.05, 0.25, 0.3]);
    let seen = draw(&mut s, &logits, 2000);
    assert!(seen.iter().all(|&t| t == 1 || t == 4), "{seen:?}");
    assert!(seen.contains(&1) && seen.contains(&4));
    assert_eq!(s.last_candidates().len(), 2);
    let total: f32 = s.last_candidates().iter().map(|t| t.p).sum();
    assert!((total - 1.0).abs() < 1e-6);
}

#[test]
fn chain_order_top_p_then_min_p() {
    // top-p 0.85 keeps {0.4, 0.3, 0.2}; min-p 0.6 then needs p >= 0.24 → {0.4, 0.3}.
    let params = SamplingParams {
        top_p: 0.85,
        min_p: 0.6,
        ..neutral(3)
    };
    let mut s = sampler(&params, 4);
    let seen = draw(&mut s, &ln(&[0.2, 0.4, 0.1, 0.3]), 1000);
    assert!(seen.iter().all(|&t| t == 1 || t == 3));
    let mut kept: Vec<u32> = s.last_candidates().iter().map(|t| t.id).collect();
    kept.sort_unstable();
    assert_eq!(kept, vec![1, 3]);
}

#[test]
fn low_temperature_approaches_greedy() {
    let logits = [1.0, 1.2, 0.9, 1.1];
    let mut s = sampler(
        &SamplingParams {
            temperature: 1e-3,
            ..neutral(11)
        },
        4,
    );
    assert!(draw(&mut s, &logits, 500).iter().all(|&t| t == 1));
    // At temperature 1 the same logits spread out.
    let mut s = sampler(&neutral(11), 4);
    let seen = draw(&mut s, &logits, 500);
    assert!(seen.iter().any(|&t| t != 1));
}

#[test]
fn same_seed_same_sequence_different_seed_differs() {
    let logits = ln(&[0.25, 0.25, 0.25, 0.25]);
    let a = draw(&mut sampler(&neutral(42), 4), &logits, 64);
    let b = draw(&mut sampler(&neutral(42), 4), &logits, 64);
    let c = draw(&mut sampler(&neutral(43), 4), &logits, 64);
    assert_eq!(a, b);
    assert_ne!(a, c);
    // reset() with a fixed seed replays the stream.
    let mut s = sampler(&neutral(42), 4);
    let first = draw(&mut s, &logits, 64);
    s.reset();
    assert_eq!(draw(&mut s, &logits, 64), first);
    assert_eq!(s.seed(), 42);
}

#[test]
fn random_seed_is_reported_and_varies() {
    let params = SamplingParams {
        seed: None,
        ..neutral(0)
    };
    let a = sampler(&params, 4);
    let b = sampler(&params, 4);
    assert_ne!(a.seed(), b.seed());
    // The reported seed reproduces the run.
    let logits = ln(&[0.25, 0.25, 0.25, 0.25]);
    let mut a = a;
    let replay = SamplingParams {
        seed: Some(a.seed()),
        ..params
    };
    assert_eq!(
        draw(&mut a, &logits, 32),
        draw(&mut sampler(&replay, 4), &logits, 32)
    );
}

#[test]
fn dist_statistics_through_the_chain() {
    let probs = [0.2f32, 0.5, 0.3];
    let mut s = sampler(&neutral(2024), 3);
    let n = 10_000;
    let mut counts = [0usize; 3];
    for t in draw(&mut s, &ln(&probs), n) {
        counts[t as usize] += 1;
    }
    for (count, p) in counts.iter().zip(probs) {
        let freq = *count as f32 / n as f32;
        assert!((freq - p).abs() < 0.02, "freq {freq} vs p {p}: {counts:?}");
    }
}

#[test]
fn penalties_use_accepted_and_primed_tokens() {
    let params = SamplingParams {
        frequency_penalty: 1.0,
        presence_penalty: 0.5,
        repeat_penalty: 2.0,
        penalty_last_n: 4,
        ..SamplingParams::greedy()
    };
    let mut s = sampler(&params, 3);
    s.prime(&[0, 0]);
    // token 0: 4 / 2 - (2 * 1 + 0.5) = -0.5 < 0 = token 1.
    assert_eq!(s.sample(&[4.0, 0.0, -1.0]), Ok(1));
    assert_eq!(s.last_candidates()[0].logit, 0.0);
    // sample() alone records nothing; accept() does.
    assert_eq!(s.sample(&[4.0, 0.0, -1.0]), Ok(1));
    s.accept(1);
    // token 1: 0 * 2 - (1 + 0.5) = -1.5; token 0 still -0.5 → 0 wins.
    assert_eq!(s.sample(&[4.0, 0.0, -1.0]), Ok(0));
    // Window of 4: after [0, 0, 1, 2, 2] the first 0 has left → count(0) = 1.
    s.accept(2);
    s.accept(2);
    // token 0: 4/2 - 1.5 = 0.5; token 1: 3/2 - 1.5 = 0; token 2: 5/2 - (2 + 0.5) = 0.
    assert_eq!(s.sample(&[4.0, 3.0, 5.0]), Ok(0));
    assert_eq!(s.last_candidates()[0].logit, 0.5);
    // Out-of-vocabulary ids are ignored, reset clears the history.
    s.accept(99);
    s.reset();
    assert_eq!(s.sample(&[4.0, 0.0, -1.0]), Ok(0));
    assert_eq!(s.last_candidates()[0].logit, 4.0);
}

#[test]
fn sampling_does_not_reallocate() {
    let mut s = sampler(&SamplingParams::default(), 1000);
    let logits: Vec<f32> = (0..1000).map(|i| ((i * 37) % 101) as f32 / 10.0).collect();
    let cap = s.cands.data.capacity();
    for _ in 0..10 {
        assert!(s.sample_and_accept(&logits).is_ok());
    }
    assert_eq!(s.cands.data.capacity(), cap);
}

#[test]
fn logits_errors() {
    let mut s = sampler(&SamplingParams::default(), 3);
    assert_eq!(
        s.sample(&[0.0; 2]),
        Err(SamplerError::LogitsLength {
            expected: 3,
            got: 2
        })
    );
    assert!(matches!(
        s.sample(&[0.0, f32::NAN, 1.0]),
        Err(SamplerError::InvalidLogit { token: 1, .. })
    ));
    assert!(matches!(
        s.sample(&[f32::INFINITY, 0.0, 1.0]),
        Err(SamplerError::InvalidLogit { token: 0, .. })
    ));
    assert_eq!(
        s.sample(&[f32::NEG_INFINITY; 3]),
        Err(SamplerError::AllMasked)
    );
    // The sampler is still usable after errors.
    assert!(s.sample(&[0.0, 1.0, 2.0]).is_ok());
}

#[test]
fn invalid_params_name_the_field() {
    let base = SamplingParams::default;
    let cases: Vec<(SamplingParams, &str)> = vec![
        (
            SamplingParams {
                temperature: f32::NAN,
                ..base()
            },
            "temperature",
        ),
        (
            SamplingParams {
                temperature: f32::INFINITY,
                ..base()
            },
            "temperature",
        ),
        (
            SamplingParams {
                top_p: 1.5,
                ..base()
            },
            "top_p",
        ),
        (
            SamplingParams {
                top_p: f32::NAN,
                ..base()
            },
            "top_p",
        ),
        (
            SamplingParams {
                min_p: -0.1,
                ..base()
            },
            "min_p",
        ),
        (
            SamplingParams {
                repeat_penalty: 0.0,
                ..base()
            },
            "repeat_penalty",
        ),
        (
            SamplingParams {
                presence_penalty: f32::NAN,
                ..base()
            },
            "presence_penalty",
        ),
        (
            SamplingParams {
                frequency_penalty: f32::NEG_INFINITY,
                ..base()
            },
            "frequency_penalty",
        ),
        (
            SamplingParams {
                penalty_last_n: -2,
                ..base()
            },
            "penalty_last_n",
        ),
        (
            SamplingParams {
                logit_bias: vec![(10, 1.0)],
                ..base()
            },
            "logit_bias",
        ),
        (
            SamplingParams {
                logit_bias: vec![(0, f32::NAN)],
                ..base()
            },
            "logit_bias",
        ),
        (
            SamplingParams {
                logit_bias: vec![(0, f32::INFINITY)],
                ..base()
            },
            "logit_bias",
        ),
    ];
    for (params, field) in cases {
        match Sampler::new(&params, 10) {
            Err(SamplerError::InvalidParam { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{field}: expected InvalidParam, got {other:?}"),
        }
    }
    assert_eq!(
        Sampler::new(&base(), 0).map(|_| ()),
        Err(SamplerError::InvalidVocab { n_vocab: 0 })
    );
    // Disabled-by-convention values are accepted.
    let ok = SamplingParams {
        top_k: -1,
        penalty_last_n: -1,
        top_p: 0.0,
        min_p: 1.0,
        presence_penalty: -1.5,
        ..base()
    };
    assert!(Sampler::new(&ok, 10).is_ok());
}

#[test]
fn deserializes_llama_server_requests() {
    let parse = |json: &str| match serde_json::from_str::<SamplingParams>(json) {
        Ok(p) => p,
        Err(e) => panic!("{json}: {e}"),
    };
    assert_eq!(parse("{}"), SamplingParams::default());
    let p = parse(
        r#"{"temperature": 0.2, "top_k": -1, "repeat_last_n": 128, "seed": 7,
            "logit_bias": [[5, -100.0]], "n_predict": 16}"#,
    );
    assert_eq!(p.temperature, 0.2);
    assert_eq!(p.top_k, -1);
    assert_eq!(p.penalty_last_n, 128);
    assert_eq!(p.seed, Some(7));
    assert_eq!(p.logit_bias, vec![(5, -100.0)]);
    assert_eq!(parse(r#"{"seed": -1}"#).seed, None);
    assert_eq!(parse(r#"{"seed": null}"#).seed, None);
    assert!(serde_json::from_str::<SamplingParams>(r#"{"seed": "x"}"#).is_err());
}
