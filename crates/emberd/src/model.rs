//! Opening a model file for the CLI: the GGUF, its tokenizer and its chat template, with errors
//! that name the file.

use anyhow::{Context, Result};
use ember_gguf::GgufFile;
use ember_tokenizer::Tokenizer;
use ember_tokenizer::template::{ChatTemplate, RenderRequest, TemplateError};
use std::path::Path;

/// Opens and validates a GGUF file.
pub fn open(path: &Path) -> Result<GgufFile> {
    GgufFile::open(path).with_context(|| format!("{}", path.display()))
}

/// The tokenizer of an open model.
pub fn tokenizer(file: &GgufFile) -> Result<Tokenizer> {
    Tokenizer::from_gguf(file.metadata())
        .with_context(|| format!("tokenizer of {}", describe(file)))
}

/// The chat template to use: `--template-file` when given (as llama.cpp's `--chat-template-file`),
/// else the model's `tokenizer.chat_template`.
pub fn chat_template(
    file: Option<&GgufFile>,
    template_file: Option<&Path>,
) -> Result<ChatTemplate> {
    let (source, origin) = match (template_file, file) {
        (Some(p), _) => (
            std::fs::read_to_string(p)
                .with_context(|| format!("cannot read template {}", p.display()))?,
            p.display().to_string(),
        ),
        (None, Some(f)) => {
            let s = f
                .metadata()
                .opt("tokenizer.chat_template", ember_gguf::Metadata::get_str)
                .with_context(|| describe(f))?
                .with_context(|| {
                    format!("{} has no chat template; pass --template-file", describe(f))
                })?;
            (s.to_owned(), describe(f))
        }
        (None, None) => anyhow::bail!("give --model or --template-file"),
    };
    ChatTemplate::new(&source).with_context(|| format!("chat template of {origin}"))
}

fn describe(file: &GgufFile) -> String {
    file.path()
        .map_or_else(|| "model".to_owned(), |p| p.display().to_string())
}

/// The model file to use: `--model` when given, else the default model (`default = true` in
/// models/), from the cache or fetched into it, its sha256 checked either way.
pub fn resolve(model: Option<&Path>) -> Result<std::path::PathBuf> {
    match model {
        Some(p) => Ok(p.to_owned()),
        None => crate::fetch::default_model(),
    }
}

/// Renders `messages` with `tmpl` (generation prompt on, the model's BOS/EOS texts, extra template
/// variables `vars`) and tokenizes the result with special tokens parsed, adding BOS only where
/// the model asks for it and the template did not write it (`no_bos` never adds it). Returns the
/// rendered text and the ids. `emberd run --chat` and the daemon's chat routes both build prompts
/// here, as llama.cpp does for llama-cli and llama-server.
pub fn chat_prompt(
    tok: &Tokenizer,
    tmpl: &ChatTemplate,
    messages: Vec<serde_json::Value>,
    vars: impl IntoIterator<Item = (String, serde_json::Value)>,
    no_bos: bool,
) -> Result<(String, Vec<u32>), TemplateError> {
    let name = |id: Option<u32>| id.and_then(|i| tok.token_text(i)).unwrap_or_default();
    let mut req = RenderRequest::new(messages)
        .with_generation_prompt(true)
        .with_special_tokens(name(tok.bos()), name(tok.eos()));
    let mut thinking_off = false;
    for (k, v) in vars {
        thinking_off |= k == "enable_thinking" && v == serde_json::Value::Bool(false);
        req = req.with_var(k, v);
    }
    let mut rendered = tmpl.render(&req)?;
    // Thinking switched off on a template that always opens `<think>` (DeepSeek-R1 and its
    // distills have no switch): the block is closed empty, as llama.cpp does for them.
    if thinking_off && ember_toolcall::prompt_opens_think(&rendered) {
        rendered.push_str("</think>\n\n");
    }
    // Templates write the BOS text themselves; add the token only where they do not.
    let bos_text = name(tok.bos());
    let add_bos =
        tok.add_bos() && !no_bos && (bos_text.is_empty() || !rendered.starts_with(bos_text));
    let mut ids = Vec::new();
    if add_bos {
        ids.extend(tok.bos());
    }
    ids.extend(tok.encode(&rendered, false, true));
    Ok((rendered, ids))
}
