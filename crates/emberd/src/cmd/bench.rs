//! `emberd bench`: prefill and decode speed measured the way `llama-bench` measures them — `pp`:
//! one batch of `--prompt-tokens` tokens into an empty cache; `tg`: `--gen-tokens` tokens fed one
//! at a time into an empty cache — averaged over `--repeat` runs after one warm-up, plus load time,
//! time to first token (prefill + the first decode step), peak RSS, and the decode roofline:
//! weight bytes read per token × decode tok/s ÷ the memory bandwidth measured here.

use crate::backend::{self, Backend};
use crate::model;
use anyhow::{Result, bail};
use clap::Args;
use ember_model::KvCache;
use rayon::prelude::*;
use serde_json::json;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// GGUF model file (default: the default model of models/).
    #[arg(long, short = 'm')]
    model: Option<PathBuf>,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Prompt length of the prefill test.
    #[arg(long, default_value_t = 128)]
    prompt_tokens: usize,
    /// Tokens generated one at a time in the decode test.
    #[arg(long, default_value_t = 64)]
    gen_tokens: usize,
    /// Measured repetitions of each test (after one warm-up).
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Compute backend.
    #[arg(long, value_enum, default_value_t = Backend::Flex)]
    backend: Backend,
    /// Keep a mixture-of-experts model's routed experts on the CPU (mmap'd) and the rest on the
    /// GPU backend, like llama.cpp's --cpu-moe.
    #[arg(long)]
    cpu_moe: bool,
    /// Print one JSON object as the last line.
    #[arg(long)]
    json: bool,
}

pub fn run(args: &BenchArgs) -> Result<()> {
    if args.prompt_tokens == 0 || args.gen_tokens == 0 || args.repeat == 0 {
        bail!("--prompt-tokens, --gen-tokens and --repeat must be at least 1");
    }
    let threads = backend::init_threads(args.threads)?;
    let device = backend::device(args.backend)?;
    let path = model::resolve(args.model.as_deref())?;
    let t_load = Instant::now();
    let file = model::open(&path)?;
    let m = backend::load_model(
        &file,
        &device,
        args.backend,
        args.cpu_moe,
        &path.display().to_string(),
    )?;
    let load_ms = ms(t_load);
    let cfg = m.config();
    let n_ctx = args.prompt_tokens.max(args.gen_tokens) + 1;
    if n_ctx > cfg.n_ctx_train {
        bail!(
            "the tests need {n_ctx} positions; the model's context is {}",
            cfg.n_ctx_train
        );
    }
    // Token ids spread over the vocabulary, as llama-bench uses random ones (fixed here).
    let n_vocab = cfg.n_vocab as u64;
    let prompt: Vec<u32> = (0..args.prompt_tokens as u64)
        .map(|i| ((i * 2_654_435_761 + 1) % n_vocab) as u32)
        .collect();
    let mut cache = m.new_cache(n_ctx);

    let pp = |cache: &mut KvCache| -> Result<f64> {
        cache.reset();
        let t = Instant::now();
        sync(m.forward(&prompt, cache, false)?)?;
        Ok(ms(t))
    };
    let tg = |cache: &mut KvCache| -> Result<Vec<f64>> {
        cache.reset();
        let mut steps = Vec::with_capacity(args.gen_tokens);
        for i in 0..args.gen_tokens {
            let t = Instant::now();
            sync(m.forward(&[prompt[i % prompt.len()]], cache, false)?)?;
            steps.push(ms(t));
        }
        Ok(steps)
    };
    pp(&mut cache)?;
    tg(&mut cache)?;
    let mut pp_ms = Vec::new();
    let mut tg_ms = Vec::new();
    let mut first_step_ms = Vec::new();
    for _ in 0..args.repeat {
        pp_ms.push(pp(&mut cache)?);
        let steps = tg(&mut cache)?;
        first_step_ms.push(steps[0]);
        tg_ms.push(steps.iter().sum::<f64>());
    }
    let prefill_tok_s = mean(
        &pp_ms
            .iter()
            .map(|&t| args.prompt_tokens as f64 / (t / 1e3))
            .collect::<Vec<_>>(),
    );
    let decode_tok_s = mean(
        &tg_ms
            .iter()
            .map(|&t| args.gen_tokens as f64 / (t / 1e3))
            .collect::<Vec<_>>(),
    );
    let ttft_ms = mean(&pp_ms) + mean(&first_step_ms);
    // Before the bandwidth test, whose buffer would count.
    let peak_rss_mib = peak_rss_bytes().map(|b| b as f64 / (1u64 << 20) as f64);
    let bytes_per_token = ember_model::weight_bytes_per_token(&file, cfg);
    let kv_bytes_per_token = cfg.kv_bytes_per_token();
    let bandwidth = measure_bandwidth();
    let roofline = bytes_per_token as f64 * decode_tok_s / bandwidth;

    let mut out = std::io::stdout().lock();
    let name = path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    writeln!(
        out,
        "KV cache: {kv_bytes_per_token} bytes/token ({:.1} MiB for the {n_ctx} positions here)",
        (kv_bytes_per_token * n_ctx) as f64 / (1u64 << 20) as f64
    )?;
    writeln!(
        out,
        "| model | threads | test | tok/s | ttft ms | load ms | peak RSS MiB | roofline |"
    )?;
    writeln!(out, "|---|---|---|---|---|---|---|---|")?;
    let rss = peak_rss_mib.map_or("-".to_owned(), |r| format!("{r:.0}"));
    writeln!(
        out,
        "| {name} | {threads} | pp{} | {prefill_tok_s:.1} | {ttft_ms:.1} | {load_ms:.0} | {rss} | |",
        args.prompt_tokens
    )?;
    writeln!(
        out,
        "| {name} | {threads} | tg{} | {decode_tok_s:.1} | | | | {:.0}% of {:.1} GB/s ({:.1} MB/token) |",
        args.gen_tokens,
        roofline * 100.0,
        bandwidth / 1e9,
        bytes_per_token as f64 / 1e6
    )?;
    if args.json {
        let obj = json!({
            "model": path,
            "threads": threads,
            "backend": format!("{:?}", args.backend).to_lowercase(),
            "cpu_moe": args.cpu_moe,
            "prompt_tokens": args.prompt_tokens,
            "gen_tokens": args.gen_tokens,
            "repeat": args.repeat,
            "prefill_tok_s": prefill_tok_s,
            "decode_tok_s": decode_tok_s,
            "ttft_ms": ttft_ms,
            "load_ms": load_ms,
            "peak_rss_mib": peak_rss_mib,
            "weight_bytes_per_token": bytes_per_token,
            "kv_bytes_per_token": kv_bytes_per_token,
            "bandwidth_gb_s": bandwidth / 1e9,
            "roofline_fraction": roofline,
            "kernels": format!("{:?}", ember_quant::kernels::Kernels::active()),
        });
        writeln!(out, "{obj}")?;
    }
    Ok(())
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// Waits for the logits (GPU backends run asynchronously).
fn sync(logits: burn::tensor::Tensor<2>) -> Result<()> {
    logits
        .into_data()
        .try_to_vec::<f32>()
        .map(drop)
        .map_err(|e| anyhow::anyhow!("reading logits: {e:?}"))
}

/// Read bandwidth of this machine in bytes/s on the current thread pool: the best of a few sums
/// over a buffer much larger than the caches.
fn measure_bandwidth() -> f64 {
    const LEN: usize = 32 << 20; // u64s: 256 MiB
    let buf: Vec<u64> = (0..LEN as u64).collect();
    let mut best = 0f64;
    for _ in 0..4 {
        let t = Instant::now();
        let s: u64 = buf
            .par_chunks(1 << 16)
            .map(|c| c.iter().fold(0u64, |a, &x| a.wrapping_add(x)))
            .reduce(|| 0, u64::wrapping_add);
        std::hint::black_box(s);
        best = best.max((LEN * 8) as f64 / t.elapsed().as_secs_f64());
    }
    best
}

/// Peak resident set size of this process (Linux `VmHWM`).
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
