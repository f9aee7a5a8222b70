//! `emberd info`: what a GGUF file holds — architecture, parameters, quant types, context length,
//! hyperparameters, vocabulary and chat template — as text or as one JSON object (`--json`).

use crate::model;
use anyhow::Result;
use clap::Args;
use ember_gguf::{GgufFile, Value};
use serde_json::{Map, Value as Json, json};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct InfoArgs {
    /// GGUF model file.
    #[arg(long, short = 'm')]
    model: PathBuf,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(args: &InfoArgs) -> Result<()> {
    let file = model::open(&args.model)?;
    let info = collect(&file);
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&info)?)?;
    } else {
        out.write_all(render_text(&info).as_bytes())?;
    }
    Ok(())
}

/// llama.cpp's `llama_ftype` names for `general.file_type`.
fn file_type_name(ft: u32) -> Option<&'static str> {
    Some(match ft {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        7 => "Q8_0",
        8 => "Q5_0",
        9 => "Q5_1",
        10 => "Q2_K",
        11 => "Q3_K_S",
        12 => "Q3_K_M",
        13 => "Q3_K_L",
        14 => "Q4_K_S",
        15 => "Q4_K_M",
        16 => "Q5_K_S",
        17 => "Q5_K_M",
        18 => "Q6_K",
        19 => "IQ2_XXS",
        20 => "IQ2_XS",
        21 => "Q2_K_S",
        22 => "IQ3_XS",
        23 => "IQ3_XXS",
        24 => "IQ1_S",
        25 => "IQ4_NL",
        26 => "IQ3_S",
        27 => "IQ3_M",
        28 => "IQ2_S",
        29 => "IQ2_M",
        30 => "IQ4_XS",
        31 => "IQ1_M",
        32 => "BF16",
        36 => "TQ1_0",
        37 => "TQ2_0",
        38 => "MXFP4_MOE",
        _ => return None,
    })
}

fn to_json(v: &Value) -> Json {
    match v {
        Value::String(s) => s.clone().into(),
        Value::Bool(b) => (*b).into(),
        Value::Array(a) => match a {
            ember_gguf::Array::String(v) if v.len() <= 16 => json!(v),
            ember_gguf::Array::F32(v) if v.len() <= 16 => json!(v),
            _ => match a.as_i64_vec() {
                Some(v) if v.len() <= 16 => json!(v),
                _ => format!("array<{}>[{}]", a.elem_type_name(), a.len()).into(),
            },
        },
        v => match (v.as_int(), v.as_float()) {
            (Some(i), _) => i64::try_from(i).map_or_else(|_| i.to_string().into(), Json::from),
            (_, Some(f)) => json!(f),
            _ => Json::Null,
        },
    }
}

/// Everything `info` reports, as the JSON object `--json` prints.
fn collect(file: &GgufFile) -> Json {
    let meta = file.metadata();
    let arch = meta.get_str("general.architecture").ok();
    let str_key = |k: &str| meta.get_str(k).ok();

    let mut types: BTreeMap<&str, u64> = BTreeMap::new();
    let (mut params, mut bytes) = (0u64, 0u64);
    let mut unsupported = Vec::new();
    for t in file.tensors() {
        *types.entry(t.ggml_type().name()).or_default() += 1;
        params += t.n_elements();
        bytes += t.n_bytes();
        if !t.ggml_type().is_supported() {
            unsupported.push(json!({"name": t.name(), "type": t.ggml_type().name()}));
        }
    }

    let mut hparams = Map::new();
    if let Some(arch) = arch {
        let prefix = format!("{arch}.");
        for (k, v) in meta.iter() {
            if let Some(rest) = k.strip_prefix(&prefix) {
                hparams.insert(rest.to_owned(), to_json(v));
            }
        }
    }
    let ctx = hparams.get("context_length").cloned().unwrap_or(Json::Null);
    let file_type = meta.get_u32("general.file_type").ok();

    let vocab = match model::tokenizer(file) {
        Ok(t) => json!({
            "model": t.model_kind(),
            "pre": t.pre(),
            "size": t.n_vocab(),
            "bos_id": t.bos(),
            "eos_id": t.eos(),
            "eog_ids": t.eog_ids(),
            "add_bos": t.add_bos(),
            "add_eos": t.add_eos(),
        }),
        Err(e) => json!({ "error": format!("{e:#}") }),
    };

    // What the engine makes of the hyperparameters: KV cache per token (MLA stores only the latent
    // and the rope key) and weights read per decoded token (MoE reads only the selected experts).
    let engine = match ember_model::ModelConfig::from_gguf(meta) {
        Ok(cfg) => json!({
            "kv_bytes_per_token": cfg.kv_bytes_per_token(),
            "kv_layout": if cfg.mla.is_some() { "mla-latent" } else { "per-head-kv" },
            "weight_bytes_per_token": ember_model::weight_bytes_per_token(file, &cfg),
        }),
        Err(e) => json!({ "error": e.to_string() }),
    };

    json!({
        "file": file.path().map(|p| p.display().to_string()),
        "file_bytes": file.file_len(),
        "gguf_version": file.version(),
        "alignment": file.alignment(),
        "architecture": arch,
        "name": str_key("general.name"),
        "size_label": str_key("general.size_label"),
        "file_type": file_type.map(|f| file_type_name(f).map_or_else(|| format!("unknown ({f})"), str::to_owned)),
        "parameters": params,
        "tensor_bytes": bytes,
        "bits_per_weight": if params > 0 { (bytes as f64 * 8.0 / params as f64 * 100.0).round() / 100.0 } else { 0.0 },
        "tensor_count": file.tensors().len(),
        "tensor_types": types,
        "unsupported_tensors": unsupported,
        "context_length": ctx,
        "hparams": hparams,
        "vocab": vocab,
        "engine": engine,
        "chat_template": str_key("tokenizer.chat_template"),
        "metadata_entries": meta.len(),
    })
}

fn fmt_count(n: u64) -> String {
    match n {
        n if n >= 1_000_000_000 => format!("{:.2} B", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.2} M", n as f64 / 1e6),
        n if n >= 1_000 => format!("{:.2} K", n as f64 / 1e3),
        n => n.to_string(),
    }
}

fn plain(v: &Json) -> String {
    match v {
        Json::String(s) => s.clone(),
        Json::Null => "-".into(),
        v => v.to_string(),
    }
}

fn render_text(info: &Json) -> String {
    let mut s = String::new();
    let mut line = |k: &str, v: String| s.push_str(&format!("{k:<14}{v}\n"));
    let u = |k: &str| info[k].as_u64().unwrap_or(0);
    line(
        "file",
        format!(
            "{} ({:.1} MiB, GGUF v{})",
            plain(&info["file"]),
            u("file_bytes") as f64 / 1048576.0,
            u("gguf_version")
        ),
    );
    line("architecture", plain(&info["architecture"]));
    line("name", plain(&info["name"]));
    line(
        "parameters",
        format!("{} ({})", fmt_count(u("parameters")), u("parameters")),
    );
    line(
        "file type",
        format!(
            "{}, {} bits/weight",
            plain(&info["file_type"]),
            info["bits_per_weight"]
        ),
    );
    let types = info["tensor_types"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k} x{v}"))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    line("tensors", format!("{} ({types})", u("tensor_count")));
    if let Some(bad) = info["unsupported_tensors"]
        .as_array()
        .filter(|a| !a.is_empty())
    {
        line(
            "UNSUPPORTED",
            format!(
                "{} tensors, e.g. '{}' of type {}",
                bad.len(),
                plain(&bad[0]["name"]),
                plain(&bad[0]["type"])
            ),
        );
    }
    line("context", plain(&info["context_length"]));
    if let Some(h) = info["hparams"].as_object() {
        for (k, v) in h {
            line(&format!("  {k}"), plain(v));
        }
    }
    let e = &info["engine"];
    if let Some(err) = e.get("error") {
        line("engine", format!("cannot run: {}", plain(err)));
    } else {
        line(
            "KV cache",
            format!(
                "{} bytes/token (f16, {})",
                plain(&e["kv_bytes_per_token"]),
                plain(&e["kv_layout"])
            ),
        );
        line(
            "decode reads",
            format!(
                "{:.1} MB of weights/token",
                e["weight_bytes_per_token"].as_u64().unwrap_or(0) as f64 / 1e6
            ),
        );
    }
    let v = &info["vocab"];
    if let Some(err) = v.get("error") {
        line("vocab", format!("unusable: {}", plain(err)));
    } else {
        line(
            "vocab",
            format!(
                "{} tokens, model {}, pre {}, bos {}, eos {}, eog {}, add_bos {}",
                plain(&v["size"]),
                plain(&v["model"]),
                plain(&v["pre"]),
                plain(&v["bos_id"]),
                plain(&v["eos_id"]),
                plain(&v["eog_ids"]),
                plain(&v["add_bos"])
            ),
        );
    }
    let tmpl = match info["chat_template"].as_str() {
        Some(t) => format!(
            "{} bytes: {}",
            t.len(),
            t.lines()
                .next()
                .unwrap_or("")
                .chars()
                .take(60)
                .collect::<String>()
        ),
        None => "none".into(),
    };
    line("chat template", tmpl);
    s
}
