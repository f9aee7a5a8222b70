//! The engine service against a real model: batched, chunked and prefix-reusing generation gives
//! the same tokens as the one-sequence loop; a full queue refuses at once; a dropped stream frees
//! its slot; deadlines; closing ends the thread.
#![allow(clippy::unwrap_used)]

mod common;

use common::{data, load};
use ember_engine::generate::{FinishReason, GenerateParams, Generation, generate};
use ember_engine::sampler::SamplingParams;
use ember_engine::service::{
    EngineConfig, EngineError, EngineHandle, EngineThread, Event, EventStream, Finished, Request,
    SubmitError, spawn,
};
use ember_model::Model;
use ember_tokenizer::Tokenizer;
use std::time::{Duration, Instant};

/// The models to run: a quantized tiny model from the repository, and SmolLM2 when fetched.
fn model_paths() -> Vec<String> {
    let mut v = vec![data("models/tiny-qwen2-q4_0.gguf")];
    if let Ok(p) = std::env::var("EMBER_SMOLLM2") {
        v.push(p);
    }
    v
}

fn prompts(tok: &Tokenizer) -> Vec<Vec<u32>> {
    [
        "The capital of France is",
        "Once upon a time, in a small village by the sea, there lived an old fisherman who",
        "1, 2, 3, 4,",
        "Write a haiku about the moon.",
        "def fibonacci(n):",
        "The quick brown fox",
    ]
    .iter()
    .map(|t| tok.encode(t, true, false))
    .collect()
}

fn greedy(max_tokens: usize) -> GenerateParams {
    GenerateParams {
        max_tokens,
        sampling: SamplingParams {
            temperature: 0.0,
            ..SamplingParams::default()
        },
        stop: Vec::new(),
        logits_top: 0,
        constraint: None,
    }
}

fn request(prompt: &[u32], max_tokens: usize) -> Request {
    Request {
        prompt: prompt.to_vec(),
        params: greedy(max_tokens),
        deadline: None,
        start_by: None,
    }
}

/// Reads a stream to its end: the concatenated deltas and the final event.
fn drain(mut s: EventStream) -> (String, Result<Finished, EngineError>) {
    let mut text = String::new();
    while let Some(ev) = s.blocking_recv() {
        match ev {
            Event::Token(t) => text.push_str(&t.delta),
            Event::Done(f) => return (text, Ok(*f)),
            Event::Error(e) => return (text, Err(e)),
        }
    }
    panic!("stream ended without a final event");
}

fn reference(model: &Model, tok: &Tokenizer, prompt: &[u32], max: usize) -> Generation {
    let mut cache = model.new_cache(512);
    generate(model, tok, &mut cache, prompt, &greedy(max), |_| {
        std::ops::ControlFlow::Continue(())
    })
    .unwrap()
}

fn start(
    path: &str,
    cfg: EngineConfig,
) -> (EngineHandle, EngineThread, Vec<Generation>, Vec<Vec<u32>>) {
    let (model, tok) = load(path);
    let ps = prompts(&tok);
    let refs = ps.iter().map(|p| reference(&model, &tok, p, 24)).collect();
    let (h, t) = spawn(model, tok, cfg).unwrap();
    (h, t, refs, ps)
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn concurrent_batched_chunked_generation_matches_the_single_sequence_loop() {
    for path in model_paths() {
        let cfg = EngineConfig {
            slots: 4,
            n_ctx: 512,
            queue: 16,
            prefill_chunk: 5,
            prefix_reuse: true,
        };
        let (h, thread, refs, ps) = start(&path, cfg);
        // Every prompt twice, all at once: 4 slots decode in one batch while others prefill in
        // chunks of 5, and the second copy of each prompt reuses the first one's cache.
        let streams: Vec<_> = ps
            .iter()
            .chain(ps.iter())
            .map(|p| h.submit(request(p, 24)).unwrap())
            .collect();
        let results: Vec<_> = streams.into_iter().map(drain).collect();
        for (i, (text, fin)) in results.iter().enumerate() {
            let r = &refs[i % ps.len()];
            let fin = fin.as_ref().unwrap();
            assert_eq!(fin.generation.tokens, r.tokens, "{path}: prompt {i}");
            assert_eq!(fin.generation.text, r.text, "{path}: prompt {i}");
            assert_eq!(text, &r.text, "{path}: streamed text of prompt {i}");
            assert_eq!(fin.generation.finish_reason, r.finish_reason);
            // Evaluated prompt tokens: the cached ones are not counted (llama.cpp's prompt_n).
            assert_eq!(
                fin.generation.timings.prompt_n + fin.prompt_cached,
                ps[i % ps.len()].len()
            );
        }
        // Sequentially: the same prompt again reuses all of it but the last token.
        drain(h.submit(request(&ps[1], 24)).unwrap()).1.unwrap();
        let (_, fin) = drain(h.submit(request(&ps[1], 24)).unwrap());
        let fin = fin.unwrap();
        assert_eq!(fin.prompt_cached, ps[1].len() - 1, "{path}");
        assert_eq!(fin.generation.timings.prompt_n, 1, "{path}");
        assert_eq!(fin.generation.tokens, refs[1].tokens, "{path}");
        // A prompt extending a cached one reuses the shared part.
        let mut longer = ps[1].clone();
        longer.extend_from_slice(&refs[1].tokens[..4]);
        let (m, t) = load(&path);
        let want = reference(&m, &t, &longer, 8);
        let (_, fin) = drain(h.submit(request(&longer, 8)).unwrap());
        let fin = fin.unwrap();
        assert!(
            fin.prompt_cached >= ps[1].len(),
            "{path}: {}",
            fin.prompt_cached
        );
        assert_eq!(fin.generation.tokens, want.tokens, "{path}");
        assert!(h.stats().generated_tokens > 0 && h.stats().prompt_tokens > 0);
        h.close();
        drop(h);
        assert!(thread.join());
    }
}

#[test]
fn a_full_queue_refuses_at_once_and_a_dropped_stream_frees_its_slot() {
    let path = data("models/tiny-qwen2-q4_0.gguf");
    let cfg = EngineConfig {
        slots: 1,
        n_ctx: 4096,
        queue: 1,
        prefill_chunk: 4,
        prefix_reuse: false,
    };
    let (h, thread, refs, ps) = start(&path, cfg);
    // A long generation occupies the only slot...
    let mut long = h.submit(request(&ps[0], 4000)).unwrap();
    wait_until("the first request to start", || h.stats().active == 1);
    assert!(matches!(long.blocking_recv(), Some(Event::Token(_))));
    // ...one request may wait, the next is refused at once.
    let waiting = h.submit(request(&ps[2], 24)).unwrap();
    let t0 = Instant::now();
    let err = h.submit(request(&ps[3], 24)).unwrap_err();
    assert!(t0.elapsed() < Duration::from_millis(100));
    assert_eq!(
        err,
        SubmitError::Busy {
            queued: 1,
            capacity: 1
        }
    );
    assert_eq!(h.stats().queued, 1);
    // Dropping the long request's stream cancels it: the waiting one runs and matches.
    drop(long);
    let (text, fin) = drain(waiting);
    assert_eq!(text, refs[2].text);
    assert_eq!(fin.unwrap().generation.tokens, refs[2].tokens);
    wait_until("the slot to free", || h.stats().active == 0);

    // A long prompt cancelled during prefill stops within a chunk: the next request starts.
    let big: Vec<u32> = ps.iter().flatten().copied().cycle().take(3000).collect();
    let s = h.submit(request(&big, 4)).unwrap();
    wait_until("the long prefill to start", || h.stats().active == 1);
    let before = h.stats().prompt_tokens;
    drop(s);
    let (_, fin) = drain(h.submit(request(&ps[2], 24)).unwrap());
    assert_eq!(fin.unwrap().generation.tokens, refs[2].tokens);
    assert!(
        h.stats().prompt_tokens - before < 3000,
        "the cancelled prompt was prefilled to the end"
    );

    // Bad requests are refused at submission.
    assert_eq!(
        h.submit(request(&[], 4)).unwrap_err(),
        SubmitError::EmptyPrompt
    );
    assert!(matches!(
        h.submit(request(&vec![1; 4096], 4)).unwrap_err(),
        SubmitError::PromptTooLong {
            prompt: 4096,
            n_ctx: 4096
        }
    ));
    let mut bad = request(&ps[0], 4);
    bad.params.sampling.temperature = f32::NAN;
    assert!(matches!(
        h.submit(bad).unwrap_err(),
        SubmitError::BadParams(_)
    ));

    // A deadline that passed while queued: an error, not a run.
    let mut late = request(&ps[0], 4);
    late.deadline = Some(Instant::now());
    let (_, fin) = drain(h.submit(late).unwrap());
    assert_eq!(fin.unwrap_err(), EngineError::DeadlineExpired);
    // A deadline during generation ends it early with what was generated.
    let mut short = request(&ps[0], 4000);
    short.deadline = Some(Instant::now() + Duration::from_millis(200));
    let (_, fin) = drain(h.submit(short).unwrap());
    let fin = fin.unwrap();
    assert_eq!(fin.generation.finish_reason, FinishReason::Length);
    assert!(fin.generation.tokens.len() < 4000);
    // `start_by` (an MQTT Message Expiry) only bounds the wait for a slot: passed → not run; a
    // request that started in time runs to its end.
    let mut expired = request(&ps[0], 4);
    expired.start_by = Some(Instant::now());
    let (_, fin) = drain(h.submit(expired).unwrap());
    assert_eq!(fin.unwrap_err(), EngineError::DeadlineExpired);
    let mut in_time = request(&ps[0], 40);
    in_time.start_by = Some(Instant::now() + Duration::from_secs(60));
    let (_, fin) = drain(h.submit(in_time).unwrap());
    assert!(!fin.unwrap().generation.tokens.is_empty());

    // cancel_all: the running request ends Cancelled, new ones are refused, the thread ends.
    let running = h.submit(request(&ps[0], 4000)).unwrap();
    wait_until("the request to start", || h.stats().active == 1);
    h.cancel_all();
    let (_, fin) = drain(running);
    assert_eq!(
        fin.unwrap().generation.finish_reason,
        FinishReason::Cancelled
    );
    assert_eq!(
        h.submit(request(&ps[0], 4)).unwrap_err(),
        SubmitError::ShuttingDown
    );
    drop(h);
    assert!(thread.join());
}
