//! `emberd run`: one prompt, one answer, streamed to stdout (or one JSON object with `--json`).
//! The flags are a contract other tools call (see the README).

use crate::backend::{self, Backend};
use crate::model;
use anyhow::{Context, Result, bail};
use clap::Args;
use ember_engine::constraint::{Constraint, ConstraintFactory, GrammarSpec};
use ember_engine::generate::{GenerateParams, generate};
use ember_engine::sampler::SamplingParams;
use ember_tokenizer::Tokenizer;
use ember_toolcall::{ResponseFormat, response_format_grammar};
use serde_json::json;
use std::io::Write;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["prompt", "prompt_file"])))]
pub struct RunArgs {
    /// GGUF model file (default: the default model of models/, fetched into the cache if missing).
    #[arg(long, short = 'm')]
    model: Option<PathBuf>,
    /// The prompt text.
    #[arg(long, short = 'p')]
    prompt: Option<String>,
    /// Read the prompt from a file.
    #[arg(long)]
    prompt_file: Option<PathBuf>,
    /// Wrap the prompt as a user message in the model's chat template.
    #[arg(long)]
    chat: bool,
    /// System message (with --chat).
    #[arg(long, requires = "chat")]
    system: Option<String>,
    /// Chat template file overriding the model's (with --chat).
    #[arg(long)]
    template_file: Option<PathBuf>,
    /// Do not add the BOS token even if the model asks for it.
    #[arg(long)]
    no_bos: bool,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 256)]
    max_tokens: usize,
    /// Sampling temperature; 0 = greedy.
    #[arg(long, default_value_t = 0.8)]
    temperature: f32,
    #[arg(long, default_value_t = 40)]
    top_k: i32,
    #[arg(long, default_value_t = 0.95)]
    top_p: f32,
    #[arg(long, default_value_t = 0.05)]
    min_p: f32,
    #[arg(long, default_value_t = 1.0)]
    repeat_penalty: f32,
    /// RNG seed (random when absent; the seed used is reported with --json).
    #[arg(long)]
    seed: Option<u64>,
    /// Stop string (repeatable).
    #[arg(long)]
    stop: Vec<String>,
    /// Context size in tokens (default: prompt + max-tokens, capped at the training context).
    #[arg(long)]
    ctx_size: Option<usize>,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Compute backend.
    #[arg(long, value_enum, default_value_t = Backend::Flex)]
    backend: Backend,
    /// Keep a mixture-of-experts model's routed experts on the CPU (mmap'd) and the rest on the
    /// GPU backend, like llama.cpp's --cpu-moe.
    #[arg(long)]
    cpu_moe: bool,
    /// Print one JSON object (prompt_ids, ids, text, finish_reason, usage, timings) at the end.
    #[arg(long)]
    json: bool,
    /// With --json: report the K largest logits of every generated step (`"top"`).
    #[arg(long, default_value_t = 0)]
    logits_top: usize,
    /// Constrain the output to JSON valid against this JSON schema file (constrained decoding).
    #[arg(long, conflicts_with = "grammar")]
    json_schema: Option<PathBuf>,
    /// Constrain the output to this grammar file (llguidance's Lark dialect; `%json {...}` embeds a
    /// schema, `/regex/` a regular expression).
    #[arg(long)]
    grammar: Option<PathBuf>,
}

/// The grammar `--json-schema` / `--grammar` ask for, compiled for this model's vocabulary.
fn constraint(args: &RunArgs, tok: &Tokenizer, n_vocab: usize) -> Result<Option<Constraint>> {
    let read = |f: &PathBuf| {
        std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))
    };
    let spec = if let Some(f) = &args.json_schema {
        let schema: serde_json::Value = serde_json::from_str(&read(f)?)
            .with_context(|| format!("{} is not JSON", f.display()))?;
        let format = ResponseFormat::from_json_schema(Some(&schema))?;
        let Some(g) = response_format_grammar(&format)? else {
            return Ok(None);
        };
        GrammarSpec {
            lark: g.lark,
            triggers: g.triggers,
            triggers_at_start: g.triggers_at_start,
        }
    } else if let Some(f) = &args.grammar {
        GrammarSpec {
            lark: read(f)?,
            ..GrammarSpec::default()
        }
    } else {
        return Ok(None);
    };
    let factory = ConstraintFactory::new(tok, n_vocab)?;
    Ok(Some(factory.compile(&spec)?))
}

pub fn run(args: &RunArgs) -> Result<()> {
    backend::init_threads(args.threads)?;
    let device = backend::device(args.backend)?;
    let path = model::resolve(args.model.as_deref())?;
    let t_load = Instant::now();
    let file = model::open(&path)?;
    let tok = model::tokenizer(&file)?;
    let m = backend::load_model(
        &file,
        &device,
        args.backend,
        args.cpu_moe,
        &path.display().to_string(),
    )?;
    let load_ms = t_load.elapsed().as_secs_f64() * 1e3;

    let text = match (&args.prompt, &args.prompt_file) {
        (Some(p), _) => p.clone(),
        (None, Some(f)) => {
            std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?
        }
        (None, None) => bail!("give --prompt or --prompt-file"),
    };
    let ids = if args.chat {
        let tmpl = model::chat_template(Some(&file), args.template_file.as_deref())?;
        let mut messages = Vec::new();
        if let Some(s) = &args.system {
            messages.push(json!({"role": "system", "content": s}));
        }
        messages.push(json!({"role": "user", "content": text}));
        model::chat_prompt(&tok, &tmpl, messages, [], args.no_bos)?.1
    } else {
        let mut ids = Vec::new();
        if tok.add_bos() && !args.no_bos {
            ids.extend(tok.bos());
        }
        ids.extend(tok.encode(&text, false, true));
        ids
    };

    // By default the cache holds exactly what this run can use (prompt + max_tokens, within the
    // training context), so a one-shot run on a board reserves no memory it cannot touch.
    let n_ctx = args.ctx_size.unwrap_or_else(|| {
        (ids.len() + args.max_tokens)
            .min(m.config().n_ctx_train)
            .max(ids.len() + 1)
    });
    if ids.len() >= n_ctx {
        bail!(
            "the prompt has {} tokens; the context holds {n_ctx} (raise --ctx-size)",
            ids.len()
        );
    }
    let mut cache = m.new_cache(n_ctx);
    let sampling = SamplingParams {
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        min_p: args.min_p,
        repeat_penalty: args.repeat_penalty,
        seed: args.seed,
        ..SamplingParams::default()
    };
    let params = GenerateParams {
        max_tokens: args.max_tokens,
        sampling,
        stop: args.stop.clone(),
        logits_top: if args.json { args.logits_top } else { 0 },
        constraint: constraint(args, &tok, m.config().n_vocab)?,
    };
    let mut out = std::io::stdout().lock();
    let mut steps = Vec::new();
    let result = generate(&m, &tok, &mut cache, &ids, &params, |ev| {
        if args.json {
            if ev.id.is_some() && args.logits_top > 0 {
                steps.push(json!(
                    ev.top
                        .iter()
                        .map(|&(id, l)| json!([id, l]))
                        .collect::<Vec<_>>()
                ));
            }
        } else if !ev.delta.is_empty()
            && (out.write_all(ev.delta.as_bytes()).is_err() || out.flush().is_err())
        {
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    })?;
    let t = &result.timings;
    if args.json {
        let per_s = |n: usize, ms: f64| n as f64 / (ms / 1e3).max(1e-9);
        let mut obj = json!({
            "prompt_ids": ids,
            "ids": result.tokens,
            "text": result.text,
            "finish_reason": result.finish_reason,
            "usage": {"prompt_tokens": t.prompt_n, "completion_tokens": t.predicted_n,
                      "total_tokens": t.prompt_n + t.predicted_n},
            "timings": {
                "load_ms": load_ms,
                "prefill_tok_s": per_s(t.prompt_n, t.prompt_ms),
                "decode_tok_s": per_s(t.predicted_n.saturating_sub(1), t.predicted_ms),
                "ttft_ms": t.ttft_ms,
                "prompt_n": t.prompt_n, "prompt_ms": t.prompt_ms,
                "predicted_n": t.predicted_n, "predicted_ms": t.predicted_ms,
            },
            "seed": result.seed,
        });
        if args.logits_top > 0 {
            obj["top"] = json!(steps);
        }
        writeln!(out, "{obj}")?;
    } else {
        writeln!(out)?;
        tracing::info!(
            "prompt {} tok in {:.0} ms, {} tok generated in {:.0} ms ({:.1} tok/s)",
            t.prompt_n,
            t.prompt_ms,
            t.predicted_n,
            t.predicted_ms,
            t.predicted_n as f64 / (t.predicted_ms / 1e3).max(1e-9)
        );
    }
    Ok(())
}
