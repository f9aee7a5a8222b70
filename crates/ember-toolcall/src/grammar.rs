//! Grammars (llguidance's Lark dialect, `docs/syntax.md` in guidance-ai/llguidance) that make the
//! sampler produce well-formed calls in each family's syntax, with each tool's `parameters`
//! schema embedded through `%json` — the job llama.cpp's `common_chat_params_init_*` handlers do
//! with GBNF (common/chat.cpp).
//!
//! # Contract with the engine
//!
//! [`Grammar::lark`] describes the **whole** output and is applied from the first generated
//! token: compile it (`llguidance::api::TopLevelGrammar::from_lark`), build a `Matcher` over the
//! model's token trie (control tokens marked with the 0xFF byte, as llama.cpp's
//! `common/llguidance.cpp` does), mask every step, consume every sampled token; EOS is allowed
//! once the output is complete. That alone is correct; [`Grammar::triggers`] may be ignored.
//!
//! For `tool_choice: auto` the grammar is *lazy*: it lets free text through until a trigger (e.g.
//! `<tool_call>`), and from there on forces a complete, schema-valid call. Its free-text part
//! accepts exactly the texts that contain no trigger (with [`Grammar::triggers_at_start`]: that
//! do not start, after blanks, with one), so an engine that wants to skip mask computation in
//! free text may sample unconstrained while the generated text (special tokens rendered) holds no
//! trigger, and on the first one create the `Matcher`, `consume_tokens` everything generated so
//! far (accepted by construction), and constrain from there. Strict grammars
//! (`required`, a named tool, the generic format, structured output) have no triggers.
//!
//! Markup is written as quoted text unless [`GrammarOptions::special_tokens`] lists it, in which
//! case it is written as a special-token reference (`<|python_tag|>`), which llguidance resolves
//! against the tokenizer (and refuses to compile if the tokenizer lacks it). JSON is written in
//! one fixed layout (no free whitespace); between markup pieces at most [`MAX_BLANK`] blanks.

use serde_json::{Map, Value, json};

use crate::parse::{deepseek_markers as ds, hermes_markers as hm, llama3_markers as lm};
use crate::{Family, Tool, ToolChoice};

/// Longest run of whitespace the grammars allow between two pieces of call markup.
pub const MAX_BLANK: usize = 4;
/// Most calls one required/auto grammar allows in a row.
pub const MAX_CALLS: usize = 16;

/// A grammar for the engine's constrained sampler (see the module docs for what to do with it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grammar {
    /// llguidance Lark text for the whole output.
    pub lark: String,
    /// Where the constrained part of a lazy grammar begins; empty when strict.
    pub triggers: Vec<String>,
    /// The triggers only count at the very start of the output (after blanks): Llama 3, whose
    /// calls are the whole answer.
    pub triggers_at_start: bool,
}

/// Whether the output may or must begin with a reasoning block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Think {
    /// No reasoning block.
    #[default]
    None,
    /// The prompt opened `<think>` (DeepSeek-R1, V3.1 in thinking mode, Qwen 3 with thinking):
    /// free reasoning text, `</think>`, then the constrained answer.
    Open,
    /// The answer may start with a `<think>…</think>` block.
    Optional,
}

/// How grammars are written for a particular model and prompt.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GrammarOptions {
    /// Markup strings that are special (control) tokens in the model's vocabulary and appear in
    /// the engine's token trie only as such (0xFF-marked): they are referenced as tokens rather
    /// than spelled out. Strings not listed are matched as text.
    pub special_tokens: Vec<String>,
    /// Reasoning before the answer.
    pub think: Think,
    /// Most calls in one answer (OpenAI's `parallel_tool_calls: false` is 1); `None` is
    /// [`MAX_CALLS`].
    pub max_calls: Option<usize>,
}

impl GrammarOptions {
    /// The defaults for a family's stock prompts: DeepSeek-R1's prompt opens `<think>`.
    pub fn for_family(family: &Family) -> Self {
        GrammarOptions {
            special_tokens: Vec::new(),
            think: match family {
                Family::DeepSeekR1 => Think::Open,
                _ => Think::None,
            },
            max_calls: None,
        }
    }

    /// Options for a request, from the template and the prompt rendered with it: the reasoning
    /// block is [`Think::Open`] when the prompt ends inside `<think>` (R1, V3.1 and Qwen 3 with
    /// thinking on), [`Think::Optional`] when the template knows `<think>` but the prompt neither
    /// opened nor closed it (Qwen 3 style, the model decides), else [`Think::None`].
    pub fn for_prompt(template_source: &str, rendered_prompt: &str) -> Self {
        let think = if crate::prompt_opens_think(rendered_prompt) {
            Think::Open
        } else if template_source.contains("<think>")
            && !rendered_prompt.trim_end().ends_with("</think>")
        {
            Think::Optional
        } else {
            Think::None
        };
        GrammarOptions {
            special_tokens: Vec::new(),
            think,
            max_calls: None,
        }
    }

    fn is_special(&self, s: &str) -> bool {
        self.special_tokens.iter().any(|t| t == s)
            && s.starts_with('<')
            && s.ends_with('>')
            && !s[1..s.len() - 1].contains(|c: char| c == '<' || c == '>' || c.is_whitespace())
    }
}

/// A piece of a sequence: markup (maybe a special token) or plain text.
enum P<'a> {
    M(&'a str),
    T(&'a str),
}

/// Builds Lark text.
pub(crate) struct Lark<'a> {
    opts: &'a GrammarOptions,
    rules: Vec<String>,
}

impl<'a> Lark<'a> {
    pub fn new(opts: &'a GrammarOptions) -> Self {
        Lark {
            opts,
            rules: vec![
                "%llguidance {}".into(),
                format!("BLANK: /[ \\t\\r\\n]{{1,{MAX_BLANK}}}/"),
            ],
        }
    }

    pub fn rule(&mut self, r: String) {
        self.rules.push(r);
    }

    /// Lark for a sequence of pieces: adjacent text (and markup that is not special) is one
    /// quoted literal.
    fn seq(&self, parts: &[P]) -> String {
        let mut out: Vec<String> = Vec::new();
        let mut text = String::new();
        for p in parts {
            match p {
                P::M(m) if self.opts.is_special(m) => {
                    if !text.is_empty() {
                        out.push(quote(&std::mem::take(&mut text)));
                    }
                    out.push((*m).to_owned());
                }
                P::M(s) | P::T(s) => text.push_str(s),
            }
        }
        if !text.is_empty() {
            out.push(quote(&text));
        }
        out.join(" ")
    }

    /// The reasoning prefix rule, if any: returns the Lark to put before the body.
    pub fn think_prefix(&mut self) -> &'static str {
        let close = self.seq(&[P::M("</think>")]);
        let body = if self.opts.is_special("</think>") {
            "THINK_TEXT: /(?s:.*)/\nthink_body: THINK_TEXT? </think>".to_owned()
        } else {
            format!("think_body[lazy]: /(?s:.*)/ {close}")
        };
        match self.opts.think {
            Think::None => "",
            Think::Open => {
                self.rule(body);
                self.rule("think: think_body BLANK?".into());
                "think "
            }
            Think::Optional => {
                let open = self.seq(&[P::M("<think>")]);
                self.rule(body);
                self.rule(format!("think: {open} think_body BLANK?"));
                "think? "
            }
        }
    }

    /// Free text until `trigger`: adds `TEXT` (no trigger anywhere) and returns the Lark that
    /// matches "text, then the trigger".
    pub fn lazy_prefix(&mut self, trigger: &str) -> String {
        self.rule(format!(
            "TEXT: /(?s:.*)/ & ~/(?s:.*){}(?s:.*)/",
            regex_escape(trigger)
        ));
        if self.opts.is_special(trigger) {
            format!("TEXT? {trigger}")
        } else {
            self.rule(format!(
                "text_then_trigger[lazy]: /(?s:.*)/ {}",
                quote(trigger)
            ));
            "text_then_trigger".into()
        }
    }

    pub fn finish(self) -> String {
        let mut s = self.rules.join("\n");
        s.push('\n');
        s
    }
}

/// A Lark (JSON-syntax) string literal.
pub(crate) fn quote(s: &str) -> String {
    Value::String(s.to_owned()).to_string()
}

/// Escapes regex metacharacters (and the `/` delimiter) for a Lark `/.../` literal.
fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 2);
    for c in s.chars() {
        if "\\.+*?()|[]{}^$#&-~/".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A tool's `parameters` as an embedded `%json` schema, with lenient handling of keywords
/// llguidance does not implement (so any client schema compiles). The JSON is written in one fixed
/// layout, `{"k": v, "k2": [1, 2]}` (the separators models are trained on, OpenAI's strict form):
/// no free whitespace, so a small or random model cannot spend its tokens on blanks.
pub(crate) fn json_schema(schema: &Value) -> String {
    let mut s = match schema {
        Value::Object(m) => m.clone(),
        Value::Bool(true) => Map::new(),
        other => return format!("%json {other}"),
    };
    s.insert(
        "x-guidance".into(),
        json!({"whitespace_flexible": false, "item_separator": ", ", "key_separator": ": ", "lenient": true}),
    );
    format!("%json {}", Value::Object(s))
}

/// The rule names of the JSON call objects `{"name": "NAME", "<args_key>": {...}}` for `tools`
/// (the `n`-th tool's object is `obj{n}`, its arguments `args{n}`), joined as alternatives.
fn call_objects(l: &mut Lark, tools: &[&Tool], args_key: &str) -> String {
    let mut alts = Vec::with_capacity(tools.len());
    for (i, t) in tools.iter().enumerate() {
        l.rule(format!("args{i}: {}", json_schema(&t.parameters)));
        // One fixed layout, as the arguments: `{"name": "NAME", "<args_key>": {...}}`.
        l.rule(format!(
            "obj{i}: {} args{i} \"}}\"",
            quote(&format!(
                "{{\"name\": {}, {}: ",
                quote(&t.name),
                quote(args_key)
            )),
        ));
        alts.push(format!("obj{i}"));
    }
    alts.join(" | ")
}

/// The grammar that forces valid calls for `family` (see the module docs), with the family's
/// default options ([`GrammarOptions::for_family`]). `None` for `tool_choice: none` or no tools.
pub fn tool_grammar(family: &Family, tools: &[Tool], choice: &ToolChoice) -> Option<Grammar> {
    tool_grammar_with(family, tools, choice, &GrammarOptions::for_family(family))
}

/// [`tool_grammar`] with explicit options (special tokens of the model, reasoning prefix).
pub fn tool_grammar_with(
    family: &Family,
    tools: &[Tool],
    choice: &ToolChoice,
    opts: &GrammarOptions,
) -> Option<Grammar> {
    let selected: Vec<&Tool> = match choice {
        ToolChoice::None => return None,
        ToolChoice::Named(n) => tools.iter().filter(|t| &t.name == n).collect(),
        ToolChoice::Auto | ToolChoice::Required => tools.iter().collect(),
    };
    if selected.is_empty() {
        return None;
    }
    let auto = *choice == ToolChoice::Auto;
    let single = matches!(choice, ToolChoice::Named(_));
    // Further calls after the first: `(unit){0,n}`, nothing when only one is allowed.
    let extra = opts.max_calls.unwrap_or(MAX_CALLS).clamp(1, MAX_CALLS) - 1;
    let more = |unit: &str| {
        if extra == 0 {
            String::new()
        } else {
            format!(" ({unit}){{0,{extra}}}")
        }
    };
    let mut l = Lark::new(opts);
    let think = l.think_prefix();
    let mut triggers = Vec::new();
    let mut at_start = false;
    let body = match family {
        Family::Hermes => {
            let objs = call_objects(&mut l, &selected, "arguments");
            let open = l.seq(&[P::M(hm::TAG)]);
            let close = l.seq(&[P::M(hm::TAG_CLOSE)]);
            l.rule(format!("call_body: BLANK? ({objs}) BLANK? {close}"));
            l.rule(format!("call: {open} call_body"));
            if auto {
                triggers.push(hm::TAG.to_owned());
                let prefix = l.lazy_prefix(hm::TAG);
                format!("TEXT | {prefix} call_body{} BLANK?", more("BLANK? call"))
            } else if single {
                "BLANK? call BLANK?".to_owned()
            } else {
                format!("BLANK? call{} BLANK?", more("BLANK? call"))
            }
        }
        Family::Llama3 { python_tag } => {
            let objs = call_objects(&mut l, &selected, "parameters");
            l.rule(format!("call: {objs}"));
            let mut alts = Vec::new();
            if auto {
                triggers.push("{".to_owned());
                at_start = true;
                l.rule("TEXT: /[ \\t\\r\\n]*([^{ \\t\\r\\n](?s:.*))?/".into());
                alts.push("TEXT".to_owned());
            }
            alts.push("BLANK? call BLANK?".to_owned());
            if *python_tag && opts.is_special(lm::PYTHON_TAG) {
                if auto {
                    triggers.push(lm::PYTHON_TAG.to_owned());
                }
                alts.push(format!("{} BLANK? call BLANK?", lm::PYTHON_TAG));
            }
            alts.join(" | ")
        }
        Family::DeepSeekR1 | Family::DeepSeekV3 => {
            let r1 = *family == Family::DeepSeekR1;
            let mut alts = Vec::with_capacity(selected.len());
            for (i, t) in selected.iter().enumerate() {
                l.rule(format!("args{i}: {}", json_schema(&t.parameters)));
                let rule = if r1 {
                    let head = l.seq(&[
                        P::M(ds::CALL_BEGIN),
                        P::T("function"),
                        P::M(ds::SEP),
                        P::T(&t.name),
                        P::T("\n```json\n"),
                    ]);
                    let tail = l.seq(&[P::T("```"), P::M(ds::CALL_END)]);
                    format!("call{i}: {head} args{i} BLANK? {tail}")
                } else {
                    let head = l.seq(&[P::M(ds::CALL_BEGIN), P::T(&t.name), P::M(ds::SEP)]);
                    let tail = l.seq(&[P::M(ds::CALL_END)]);
                    format!("call{i}: {head} args{i} {tail}")
                };
                l.rule(rule);
                alts.push(format!("call{i}"));
            }
            l.rule(format!("call: {}", alts.join(" | ")));
            let sep = if r1 { "BLANK? " } else { "" };
            let calls = if single {
                "call".to_owned()
            } else {
                format!("call{}", more(&format!("{sep}call")))
            };
            let begin = l.seq(&[P::M(ds::CALLS_BEGIN)]);
            let end = l.seq(&[P::M(ds::CALLS_END)]);
            if auto {
                triggers.push(ds::CALLS_BEGIN.to_owned());
                let prefix = l.lazy_prefix(ds::CALLS_BEGIN);
                format!("TEXT | {prefix} {calls} {end} BLANK?")
            } else {
                format!("BLANK? {begin} {calls} {end} BLANK?")
            }
        }
        Family::Generic => {
            let objs = call_objects(&mut l, &selected, "arguments");
            l.rule(format!(
                "wrap_call: {} ({objs}) \"}}\"",
                quote("{\"tool_call\": ")
            ));
            if auto {
                l.rule("response: %json {\"type\": \"string\"}".into());
                l.rule(format!(
                    "wrap_response: {} response \"}}\"",
                    quote("{\"response\": ")
                ));
                "BLANK? (wrap_call | wrap_response) BLANK?".to_owned()
            } else {
                "BLANK? wrap_call BLANK?".to_owned()
            }
        }
    };
    l.rule(format!("start: {think}({body})"));
    Some(Grammar {
        lark: l.finish(),
        triggers,
        triggers_at_start: at_start,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes() {
        assert_eq!(quote("a\"b\n"), "\"a\\\"b\\n\"");
        assert_eq!(regex_escape("<tool_call>"), "<tool_call>");
        assert_eq!(regex_escape("a.b/c{"), "a\\.b\\/c\\{");
        let o = GrammarOptions {
            special_tokens: vec!["<|python_tag|>".into(), "<a b>".into()],
            think: Think::None,
            max_calls: None,
        };
        assert!(o.is_special("<|python_tag|>"));
        assert!(!o.is_special("<a b>"));
        assert!(!o.is_special("<tool_call>"));
    }

    #[test]
    fn thinking_from_the_prompt() {
        let t = |src: &str, prompt: &str| GrammarOptions::for_prompt(src, prompt).think;
        assert_eq!(t("<think>", "<｜Assistant｜><think>\n"), Think::Open);
        assert_eq!(t("<think>", "<｜Assistant｜><think></think>"), Think::None);
        assert_eq!(
            t("{{ '<think>' }}", "<|im_start|>assistant\n"),
            Think::Optional
        );
        assert_eq!(t("chatml", "<|im_start|>assistant\n"), Think::None);
    }
}
