//! Chat-template rendering checked byte for byte against Python Jinja2 / HF transformers output
//! (`tests/data/reference/**/template.jsonl`, see `tests/data/reference/README.md`).

use std::fs;
use std::path::{Path, PathBuf};

use ember_tokenizer::template::{ChatTemplate, RenderRequest};
use serde_json::Value;

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/data");

fn data(rel: &str) -> PathBuf {
    Path::new(DATA).join(rel)
}

/// The request of one reference record (the references were rendered without `strftime_now`).
fn request(record: &Value) -> RenderRequest {
    let text = |key: &str| record[key].as_str().unwrap_or_default().to_owned();
    RenderRequest {
        messages: record["messages"]
            .as_array()
            .cloned()
            .expect("record has messages"),
        add_generation_prompt: record["add_generation_prompt"].as_bool().unwrap_or(false),
        bos_token: text("bos_token"),
        eos_token: text("eos_token"),
        ..RenderRequest::default()
    }
}

fn records(path: &Path) -> Vec<Value> {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .collect()
}

/// `None` when equal, else a readable description of the first difference.
fn mismatch(got: &str, want: &str) -> Option<String> {
    if got == want {
        return None;
    }
    let pos = got
        .char_indices()
        .zip(want.chars())
        .find(|((_, a), b)| a != b)
        .map(|((i, _), _)| i)
        .unwrap_or_else(|| got.len().min(want.len()));
    let window = |s: &str| {
        let mut start = pos.saturating_sub(40).min(s.len());
        while !s.is_char_boundary(start) {
            start -= 1;
        }
        let mut end = (pos + 40).min(s.len());
        while !s.is_char_boundary(end) {
            end += 1;
        }
        format!("{:?}", &s[start..end])
    };
    Some(format!(
        "first difference at byte {pos} (got {} bytes, want {})\n    got:  ...{}...\n    want: ...{}...",
        got.len(),
        want.len(),
        window(got),
        window(want)
    ))
}

/// Renders every record (with its line number in the `.jsonl`) and returns the failures.
fn check<'a>(
    label: &str,
    template: &ChatTemplate,
    records: impl IntoIterator<Item = (usize, &'a Value)>,
) -> Vec<String> {
    let mut failures = Vec::new();
    for (i, record) in records {
        let want = record["rendered"].as_str().expect("record has rendered");
        match template.render(&request(record)) {
            Ok(got) => {
                if let Some(diff) = mismatch(&got, want) {
                    failures.push(format!("{label} line {}: {diff}", i + 1));
                }
            }
            Err(e) => failures.push(format!("{label} line {}: error {e}", i + 1)),
        }
    }
    failures
}

fn report(failures: &[String], total: usize) {
    assert!(
        failures.is_empty(),
        "{} of {total} records differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn standalone_templates_match_jinja2() {
    let records = records(&data("reference/chat-templates/template.jsonl"));
    assert!(!records.is_empty());
    let mut failures = Vec::new();
    for (i, record) in records.iter().enumerate() {
        let name = record["template"]
            .as_str()
            .expect("record names its template");
        let path = data(&format!("reference/vocab/templates/{name}"));
        let source =
            fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let template = ChatTemplate::new(&source)
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .with_strftime_now(false);
        failures.extend(check(name, &template, [(i, record)]));
    }
    report(&failures, records.len());
}

/// The `tokenizer.chat_template` stored in a GGUF file.
fn chat_template_of(model: &Path) -> String {
    let file =
        ember_gguf::GgufFile::open(model).unwrap_or_else(|e| panic!("{}: {e}", model.display()));
    let source = file.metadata().get_str("tokenizer.chat_template");
    source
        .unwrap_or_else(|e| panic!("{}: {e}", model.display()))
        .to_owned()
}

/// The GGUF file whose `tokenizer.chat_template` produced `reference/<dir>/template.jsonl`: the model
/// itself when present, else a sibling of the same family (all quantizations share a template).
fn model_for(dir: &str) -> Option<PathBuf> {
    match dir {
        "vocab-qwen2" => return Some(data("reference/vocab/ggml-vocab-qwen2.gguf")),
        "smollm2-135m-instruct-q4_1" => {
            let path = std::env::var_os("EMBER_SMOLLM2")
                .map(PathBuf::from)
                .or_else(|| {
                    std::env::var_os("HOME").map(|h| {
                        Path::new(&h).join(".cache/ember/models/SmolLM2-135M-Instruct.Q4_1.gguf")
                    })
                })?;
            return path.exists().then_some(path);
        }
        _ => {}
    }
    let exact = data(&format!("models/{dir}.gguf"));
    if exact.exists() {
        return Some(exact);
    }
    let family = |stem: &str| stem.rsplit_once('-').map(|(f, _)| f.to_owned());
    let want = family(dir)?;
    let mut siblings: Vec<PathBuf> = fs::read_dir(data("models"))
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|x| x == "gguf")
                && p.file_stem()
                    .and_then(|s| s.to_str())
                    .and_then(family)
                    .as_deref()
                    == Some(&want)
        })
        .collect();
    siblings.sort();
    siblings.into_iter().next()
}

/// SmolLM2-135M-Instruct's `chat_template` (HF `tokenizer_config.json`), used when the model file
/// (fetched separately, not in the repository) is absent.
const SMOLLM2_TEMPLATE: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}\
{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}\
{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}\
{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

#[test]
fn model_templates_match_jinja2() {
    let mut dirs: Vec<String> = fs::read_dir(data("reference"))
        .expect("reference dir")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("template.jsonl").exists())
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .filter(|d| d != "chat-templates")
        .collect();
    dirs.sort();
    assert!(!dirs.is_empty());
    let (mut failures, mut total, mut checked) = (Vec::new(), 0, 0);
    for dir in &dirs {
        let source = match model_for(dir) {
            Some(model) => chat_template_of(&model),
            None if dir.starts_with("smollm2") => {
                eprintln!(
                    "{dir}: model file absent (set EMBER_SMOLLM2), using the inline SmolLM2 template"
                );
                SMOLLM2_TEMPLATE.to_owned()
            }
            None => panic!("{dir}: no model file of this family in tests/data/models"),
        };
        let template = ChatTemplate::new(&source)
            .unwrap_or_else(|e| panic!("{dir}: {e}"))
            .with_strftime_now(false);
        let records = records(&data(&format!("reference/{dir}/template.jsonl")));
        total += records.len();
        checked += 1;
        failures.extend(check(dir, &template, records.iter().enumerate()));
    }
    eprintln!("checked {checked} reference dirs, {total} records");
    report(&failures, total);
}

/// Tool-call arguments and tool schemas must keep their JSON key order (Python dicts do, and
/// `tojson` prints them in that order). That needs serde_json's `preserve_order` feature.
#[test]
fn tojson_keeps_key_order() {
    let req: RenderRequest = serde_json::from_str(
        r#"{"messages": [{"role": "assistant", "content": null, "tool_calls": [{"type": "function",
            "function": {"name": "set", "arguments": {"zone": "kitchen", "level": 30, "dim": true}}}]}],
            "tools": [{"type": "function", "function": {"name": "set", "parameters": {"type": "object"}}}]}"#,
    )
    .expect("valid request");
    let src = "{{ messages[0].tool_calls[0].function.arguments | tojson }}|{{ tools[0] | tojson }}";
    let out = ChatTemplate::new(src)
        .and_then(|t| t.render(&req))
        .expect("renders");
    let want = r#"{"zone": "kitchen", "level": 30, "dim": true}|{"type": "function", "function": {"name": "set", "parameters": {"type": "object"}}}"#;
    let order_kept = serde_json::from_str::<Value>(r#"{"b": 0, "a": 0}"#)
        .ok()
        .and_then(|v| v.as_object().and_then(|m| m.keys().next().cloned()))
        .is_some_and(|k| k == "b");
    if order_kept {
        assert_eq!(out, want);
    } else {
        eprintln!(
            "WARNING: serde_json is built without `preserve_order`: JSON keys of messages/tools are \
             re-sorted, so `tojson` output differs from Python for unsorted objects"
        );
    }
}

#[test]
fn runaway_template_is_stopped() {
    let t = ChatTemplate::new(
        "{% for a in range(10000) %}{% for b in range(10000) %}{% for c in range(10000) %}x{% endfor %}{% endfor %}{% endfor %}",
    )
    .expect("compiles");
    let err = t
        .render(&RenderRequest::new(vec![]))
        .expect_err("must run out of fuel");
    assert!(err.to_string().contains("fuel"), "{err}");
}
