//! `tokenize`, `detokenize` and `template`: text in on stdin, result out on stdout, exactly.
//!
//! Single mode reads all of stdin as one input. `--jsonl` is batch mode: one JSON value per line in,
//! one JSON value per line out, the model loaded once; a bad line stops the batch with an error that
//! names the line (lines before it were already answered).

use crate::model;
use anyhow::{Context, Result, bail};
use clap::Args;
use ember_tokenizer::template::{ChatTemplate, RenderRequest};
use std::io::{BufRead, Read, Write};
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct TokenizeArgs {
    /// GGUF model whose vocabulary to use.
    #[arg(long, short = 'm')]
    model: PathBuf,
    /// Treat special-token text (e.g. `<|im_end|>`) as plain text instead of special tokens.
    #[arg(long)]
    no_special: bool,
    /// Batch mode: each stdin line is a JSON string; each output line its JSON id array.
    #[arg(long)]
    jsonl: bool,
}

#[derive(Args, Debug)]
pub struct DetokenizeArgs {
    /// GGUF model whose vocabulary to use.
    #[arg(long, short = 'm')]
    model: PathBuf,
    /// Leave out the text of control tokens (BOS, `<|im_end|>`, ...).
    #[arg(long)]
    no_special: bool,
    /// Batch mode: each stdin line is a JSON id array; each output line a JSON string.
    #[arg(long)]
    jsonl: bool,
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("source").required(true).multiple(true).args(["model", "template_file"])))]
pub struct TemplateArgs {
    /// GGUF model: its chat template, and its BOS/EOS texts.
    #[arg(long, short = 'm')]
    model: Option<PathBuf>,
    /// Jinja template file; overrides the model's template.
    #[arg(long)]
    template_file: Option<PathBuf>,
    /// Batch mode: one request object per stdin line, one JSON string per output line.
    #[arg(long)]
    jsonl: bool,
}

pub fn tokenize(args: &TokenizeArgs) -> Result<()> {
    let file = model::open(&args.model)?;
    let tok = model::tokenizer(&file)?;
    let parse_special = !args.no_special;
    let mut out = std::io::stdout().lock();
    if args.jsonl {
        return for_each_line(|n, line| {
            let text: String = serde_json::from_str(line)
                .with_context(|| format!("stdin line {n}: expected a JSON string"))?;
            let ids = tok.encode(&text, false, parse_special);
            writeln!(out, "{}", serde_json::to_string(&ids)?)?;
            Ok(())
        });
    }
    let text = read_stdin_text()?;
    let ids = tok.encode(&text, false, parse_special);
    writeln!(out, "{}", serde_json::to_string(&ids)?)?;
    Ok(())
}

pub fn detokenize(args: &DetokenizeArgs) -> Result<()> {
    let file = model::open(&args.model)?;
    let tok = model::tokenizer(&file)?;
    let render_special = !args.no_special;
    let mut out = std::io::stdout().lock();
    if args.jsonl {
        return for_each_line(|n, line| {
            let ids: Vec<u32> = serde_json::from_str(line)
                .with_context(|| format!("stdin line {n}: expected a JSON array of token ids"))?;
            let text = tok
                .decode(&ids, render_special)
                .with_context(|| format!("stdin line {n}"))?;
            writeln!(out, "{}", serde_json::to_string(&text)?)?;
            Ok(())
        });
    }
    let input = read_stdin_text()?;
    let ids: Vec<u32> =
        serde_json::from_str(&input).context("stdin: expected a JSON array of token ids")?;
    // Raw bytes: ids that cut a UTF-8 character in half print exactly what the model produced.
    let bytes = tok.decode_bytes(&ids, render_special)?;
    out.write_all(&bytes)?;
    out.flush()?;
    Ok(())
}

pub fn template(args: &TemplateArgs) -> Result<()> {
    let file = args.model.as_deref().map(model::open).transpose()?;
    let tmpl = model::chat_template(file.as_ref(), args.template_file.as_deref())?;
    let tok = file.as_ref().map(model::tokenizer).transpose()?;
    let special = |id: Option<u32>| -> String {
        match (&tok, id) {
            (Some(t), Some(id)) => t.token_text(id).unwrap_or_default().to_owned(),
            _ => String::new(),
        }
    };
    let defaults = (
        special(tok.as_ref().and_then(|t| t.bos())),
        special(tok.as_ref().and_then(|t| t.eos())),
    );
    let mut out = std::io::stdout().lock();
    if args.jsonl {
        return for_each_line(|n, line| {
            let text = render(&tmpl, line, &defaults).with_context(|| format!("stdin line {n}"))?;
            writeln!(out, "{}", serde_json::to_string(&text)?)?;
            Ok(())
        });
    }
    let input = read_stdin_text()?;
    let text = render(&tmpl, &input, &defaults).context("stdin")?;
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

/// Renders one request; `bos_token`/`eos_token` absent from the request come from the model.
fn render(tmpl: &ChatTemplate, json: &str, (bos, eos): &(String, String)) -> Result<String> {
    let mut value: serde_json::Value = serde_json::from_str(json).context("invalid JSON")?;
    let Some(obj) = value.as_object_mut() else {
        bail!("expected a JSON object with \"messages\"");
    };
    if !obj.contains_key("messages") {
        bail!("missing \"messages\"");
    }
    obj.entry("bos_token").or_insert_with(|| bos.clone().into());
    obj.entry("eos_token").or_insert_with(|| eos.clone().into());
    let req: RenderRequest = serde_json::from_value(value).context("invalid request")?;
    Ok(tmpl.render(&req)?)
}

fn read_stdin_text() -> Result<String> {
    let mut buf = Vec::new();
    std::io::stdin()
        .lock()
        .read_to_end(&mut buf)
        .context("cannot read stdin")?;
    String::from_utf8(buf).map_err(|e| {
        anyhow::anyhow!(
            "stdin is not valid UTF-8 (byte {})",
            e.utf8_error().valid_up_to()
        )
    })
}

/// Calls `f(line_number, line)` for each stdin line (1-based; a final empty line is not a record).
fn for_each_line(mut f: impl FnMut(usize, &str) -> Result<()>) -> Result<()> {
    for (i, line) in std::io::stdin().lock().lines().enumerate() {
        let line = line.with_context(|| format!("stdin line {}: not valid UTF-8", i + 1))?;
        let line = line.strip_suffix('\r').unwrap_or(&line);
        f(i + 1, line)?;
    }
    Ok(())
}
