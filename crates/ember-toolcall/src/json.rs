//! Incremental JSON scanning over an append-only text buffer, for the streaming tool-call parser
//! (the role llama.cpp's `common/json-partial.cpp` plays, done differently: instead of "healing" a
//! truncated document and re-parsing it after every token, these scanners keep their state and
//! only ever look at new bytes).
//!
//! * [`ValueScan`] finds where one JSON value ends (depth and string state only; the value is
//!   parsed with serde_json once it is complete, which does the real validation);
//! * [`StrDecoder`] decodes a JSON string as it arrives, so text inside a string can be streamed
//!   (the generic format's `response`);
//! * [`ObjWalk`] walks the keys of one object and hands each value to its caller.
//!
//! Positions are byte offsets into the buffer; every scanner stops only on ASCII bytes or at the
//! end of the buffer, so positions are always char boundaries.

/// Outcome of advancing a scanner over the buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step<T> {
    /// Finished.
    Ready(T),
    /// The buffer ends before the scanner could decide.
    More,
    /// The text cannot be what was expected.
    Bad(String),
}

/// Deepest nesting a scanned value may have (serde_json's own limit is 128).
const MAX_DEPTH: u32 = 128;
/// Longest object key the walker accepts (keys of tool-call objects are short words).
const MAX_KEY_LEN: usize = 256;

/// JSON whitespace.
pub(crate) fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// First position at or after `pos` that is not JSON whitespace.
pub(crate) fn skip_ws(buf: &str, mut pos: usize) -> usize {
    let b = buf.as_bytes();
    while pos < b.len() && is_ws(b[pos]) {
        pos += 1;
    }
    pos
}

/// How `buf[pos..]` relates to a literal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lit {
    /// The literal is there; its end.
    Match(usize),
    /// The buffer ends with a proper prefix of the literal.
    Partial,
    /// Something else is there.
    No,
}

pub(crate) fn match_lit(buf: &str, pos: usize, lit: &str) -> Lit {
    let rest = &buf.as_bytes()[pos.min(buf.len())..];
    let lit = lit.as_bytes();
    if rest.len() >= lit.len() {
        if rest.starts_with(lit) {
            Lit::Match(pos + lit.len())
        } else {
            Lit::No
        }
    } else if lit.starts_with(rest) {
        Lit::Partial
    } else {
        Lit::No
    }
}

/// Finds the end of one JSON value that starts at a given position (its first byte).
#[derive(Debug, Clone)]
pub(crate) struct ValueScan {
    /// Next byte to look at.
    pub pos: usize,
    start: usize,
    depth: u32,
    in_str: bool,
    esc: bool,
    /// The value is a bare scalar (number, `true`, `false`, `null`).
    scalar: bool,
}

impl ValueScan {
    pub fn new(start: usize) -> Self {
        ValueScan {
            pos: start,
            start,
            depth: 0,
            in_str: false,
            esc: false,
            scalar: false,
        }
    }

    /// Where the value starts.
    pub fn start(&self) -> usize {
        self.start
    }

    /// Advances over the buffer; `Ready(end)` is the position just after the value.
    pub fn step(&mut self, buf: &str) -> Step<usize> {
        let b = buf.as_bytes();
        if self.pos == self.start {
            let Some(&c) = b.get(self.pos) else {
                return Step::More;
            };
            match c {
                b'{' | b'[' => self.depth = 1,
                b'"' => self.in_str = true,
                b'-' | b'0'..=b'9' | b't' | b'f' | b'n' => self.scalar = true,
                _ => return Step::Bad(format!("{:?} cannot start a JSON value", char::from(c))),
            }
            self.pos += 1;
        }
        while self.pos < b.len() {
            let c = b[self.pos];
            if self.scalar {
                if c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.') {
                    self.pos += 1;
                    continue;
                }
                return Step::Ready(self.pos);
            }
            self.pos += 1;
            if self.in_str {
                if self.esc {
                    self.esc = false;
                } else if c == b'\\' {
                    self.esc = true;
                } else if c == b'"' {
                    self.in_str = false;
                    if self.depth == 0 {
                        return Step::Ready(self.pos);
                    }
                }
                continue;
            }
            match c {
                b'"' => self.in_str = true,
                b'{' | b'[' => {
                    self.depth += 1;
                    if self.depth > MAX_DEPTH {
                        return Step::Bad("JSON nested too deeply".into());
                    }
                }
                b'}' | b']' => {
                    self.depth -= 1;
                    if self.depth == 0 {
                        return Step::Ready(self.pos);
                    }
                }
                _ => {}
            }
        }
        Step::More
    }
}

/// Decodes a JSON string incrementally; starts just after the opening quote.
#[derive(Debug, Clone)]
pub(crate) struct StrDecoder {
    /// Next byte to decode.
    pub pos: usize,
}

fn hex4(b: &[u8]) -> Option<u32> {
    let s = std::str::from_utf8(b.get(..4)?).ok()?;
    u32::from_str_radix(s, 16).ok()
}

impl StrDecoder {
    pub fn new(pos: usize) -> Self {
        StrDecoder { pos }
    }

    /// Appends what can be decoded now to `out`; `Ready(end)` is just after the closing quote.
    /// An escape sequence (or surrogate pair) cut by the end of the buffer waits for more.
    pub fn step(&mut self, buf: &str, out: &mut String) -> Step<usize> {
        let b = buf.as_bytes();
        loop {
            let rest = &buf[self.pos..];
            // Copy the run of plain characters in one go.
            let run = rest
                .bytes()
                .position(|c| c == b'"' || c == b'\\' || c < 0x20)
                .unwrap_or(rest.len());
            out.push_str(&rest[..run]);
            self.pos += run;
            let Some(&c) = b.get(self.pos) else {
                return Step::More;
            };
            match c {
                b'"' => return Step::Ready(self.pos + 1),
                b'\\' => {}
                _ => return Step::Bad("control character inside a JSON string".into()),
            }
            let Some(&e) = b.get(self.pos + 1) else {
                return Step::More;
            };
            let simple = match e {
                b'"' => Some('"'),
                b'\\' => Some('\\'),
                b'/' => Some('/'),
                b'b' => Some('\u{8}'),
                b'f' => Some('\u{c}'),
                b'n' => Some('\n'),
                b'r' => Some('\r'),
                b't' => Some('\t'),
                b'u' => None,
                _ => return Step::Bad("invalid escape in a JSON string".into()),
            };
            if let Some(ch) = simple {
                out.push(ch);
                self.pos += 2;
                continue;
            }
            let esc = &b[self.pos + 2..];
            if esc.len() < 4 {
                return Step::More;
            }
            let Some(u) = hex4(esc) else {
                return Step::Bad("invalid \\u escape in a JSON string".into());
            };
            let (ch, used) = if (0xD800..0xDC00).contains(&u) {
                // A high surrogate must be followed by an escaped low one.
                let tail = &esc[4..];
                if tail.len() < 6 {
                    if tail.is_empty() || tail.starts_with(&b"\\u"[..tail.len().min(2)]) {
                        return Step::More;
                    }
                    return Step::Bad("lone surrogate in a JSON string".into());
                }
                match (tail.starts_with(b"\\u"), hex4(&tail[2..])) {
                    (true, Some(lo)) if (0xDC00..0xE000).contains(&lo) => (
                        char::from_u32(0x10000 + ((u - 0xD800) << 10) + (lo - 0xDC00)),
                        12,
                    ),
                    _ => return Step::Bad("lone surrogate in a JSON string".into()),
                }
            } else {
                (char::from_u32(u), 6)
            };
            match ch {
                Some(ch) => out.push(ch),
                None => return Step::Bad("lone surrogate in a JSON string".into()),
            }
            self.pos += used;
        }
    }
}

/// Walks one JSON object: yields each key with the position where its value starts; the caller
/// consumes the value (with whatever scanner suits it) and reports where it ended.
#[derive(Debug, Clone)]
pub(crate) struct ObjWalk {
    pos: usize,
    st: WalkSt,
}

#[derive(Debug, Clone)]
enum WalkSt {
    /// At the `{`.
    Open,
    /// After `{`: a key or `}`.
    First,
    /// After `,`: a key.
    Next,
    /// Inside a key.
    Key(StrDecoder, String),
    /// After the key: `:`.
    Colon(String),
    /// After `:`: whitespace, then the value.
    Value(String),
    /// The caller is consuming a value.
    Caller,
    /// After a value: `,` or `}`.
    After,
    Done,
}

/// What [`ObjWalk::step`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Walk {
    /// A key; its value starts at the position (the caller must call [`ObjWalk::value_done`]).
    Key(String, usize),
    /// The closing `}`; the position just after it.
    End(usize),
}

impl ObjWalk {
    /// `pos` is the position of the `{`.
    pub fn new(pos: usize) -> Self {
        ObjWalk {
            pos,
            st: WalkSt::Open,
        }
    }

    pub fn step(&mut self, buf: &str) -> Step<Walk> {
        let b = buf.as_bytes();
        loop {
            if !matches!(
                self.st,
                WalkSt::Key(..) | WalkSt::Caller | WalkSt::Done | WalkSt::Open
            ) {
                self.pos = skip_ws(buf, self.pos);
            }
            let c = b.get(self.pos).copied();
            match &mut self.st {
                WalkSt::Open => match c {
                    None => return Step::More,
                    Some(b'{') => {
                        self.pos += 1;
                        self.st = WalkSt::First;
                    }
                    Some(_) => return Step::Bad("expected a JSON object".into()),
                },
                WalkSt::First | WalkSt::Next => match c {
                    None => return Step::More,
                    Some(b'"') => {
                        self.pos += 1;
                        self.st = WalkSt::Key(StrDecoder::new(self.pos), String::new());
                    }
                    Some(b'}') if matches!(self.st, WalkSt::First) => {
                        self.pos += 1;
                        self.st = WalkSt::Done;
                        return Step::Ready(Walk::End(self.pos));
                    }
                    Some(_) => return Step::Bad("expected a key in a JSON object".into()),
                },
                WalkSt::Key(dec, key) => match dec.step(buf, key) {
                    Step::Ready(_) if key.len() > MAX_KEY_LEN => {
                        return Step::Bad("JSON object key too long".into());
                    }
                    Step::Ready(end) => {
                        self.pos = end;
                        self.st = WalkSt::Colon(std::mem::take(key));
                    }
                    Step::More if key.len() > MAX_KEY_LEN => {
                        return Step::Bad("JSON object key too long".into());
                    }
                    Step::More => return Step::More,
                    Step::Bad(e) => return Step::Bad(e),
                },
                WalkSt::Colon(key) => match c {
                    None => return Step::More,
                    Some(b':') => {
                        self.pos += 1;
                        self.st = WalkSt::Value(std::mem::take(key));
                    }
                    Some(_) => return Step::Bad("expected ':' after a key".into()),
                },
                WalkSt::Value(key) => {
                    if c.is_none() {
                        return Step::More;
                    }
                    let key = std::mem::take(key);
                    self.st = WalkSt::Caller;
                    return Step::Ready(Walk::Key(key, self.pos));
                }
                WalkSt::Caller => return Step::Bad("internal: value not consumed".into()),
                WalkSt::After => match c {
                    None => return Step::More,
                    Some(b',') => {
                        self.pos += 1;
                        self.st = WalkSt::Next;
                    }
                    Some(b'}') => {
                        self.pos += 1;
                        self.st = WalkSt::Done;
                        return Step::Ready(Walk::End(self.pos));
                    }
                    Some(_) => return Step::Bad("expected ',' or '}' in a JSON object".into()),
                },
                WalkSt::Done => return Step::Bad("internal: object already closed".into()),
            }
        }
    }

    /// The caller consumed the current value, which ended at `end`.
    pub fn value_done(&mut self, end: usize) {
        self.pos = end;
        self.st = WalkSt::After;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Feeds `text` one byte-prefix at a time (at char boundaries) and returns the first Ready.
    fn scan_prefixes(text: &str) -> Step<usize> {
        let mut s = ValueScan::new(0);
        for end in (1..=text.len()).filter(|&e| text.is_char_boundary(e)) {
            match s.step(&text[..end]) {
                Step::More => continue,
                other => return other,
            }
        }
        Step::More
    }

    #[test]
    fn value_scan_finds_ends() {
        assert_eq!(
            scan_prefixes(r#"{"a": "}\"]", "b": [1, {}]} tail"#),
            Step::Ready(27)
        );
        assert_eq!(scan_prefixes(r#""x\"y" tail"#), Step::Ready(6));
        assert_eq!(scan_prefixes("12.5e3,"), Step::Ready(6));
        assert_eq!(scan_prefixes("true}"), Step::Ready(4));
        assert_eq!(scan_prefixes("{\"a\": 1"), Step::More);
        assert!(matches!(scan_prefixes("}"), Step::Bad(_)));
        let deep = "[".repeat(200);
        assert!(matches!(scan_prefixes(&deep), Step::Bad(_)));
    }

    #[test]
    fn str_decoder_handles_split_escapes() {
        let text = r#"a\"b\\c\u00e9\ud83d\ude00\n€""#;
        let mut whole = String::new();
        assert_eq!(
            StrDecoder::new(0).step(text, &mut whole),
            Step::Ready(text.len())
        );
        assert_eq!(whole, "a\"b\\cé😀\n€");
        // Every prefix decodes to a prefix of the whole, and all prefixes together to the whole.
        let mut d = StrDecoder::new(0);
        let mut acc = String::new();
        for end in (0..=text.len()).filter(|&e| text.is_char_boundary(e)) {
            let r = d.step(&text[..end], &mut acc);
            assert!(whole.starts_with(&acc), "{acc:?}");
            if end == text.len() {
                assert_eq!(r, Step::Ready(text.len()));
            }
        }
        assert_eq!(acc, whole);
        for bad in [r#"\x""#, r#"\ud83d\u0041""#, r#"\ude00""#, "a\u{1}\""] {
            assert!(
                matches!(
                    StrDecoder::new(0).step(bad, &mut String::new()),
                    Step::Bad(_)
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn obj_walk_yields_keys() {
        let text = r#"{ "name" : "f", "arguments": {"x": [1]} }"#;
        let mut w = ObjWalk::new(0);
        let mut keys = vec![];
        loop {
            match w.step(text) {
                Step::Ready(Walk::Key(k, at)) => {
                    let mut s = ValueScan::new(at);
                    let Step::Ready(end) = s.step(text) else {
                        panic!()
                    };
                    keys.push((k, text[at..end].to_owned()));
                    w.value_done(end);
                }
                Step::Ready(Walk::End(end)) => {
                    assert_eq!(end, text.len());
                    break;
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(
            keys,
            vec![
                ("name".into(), "\"f\"".into()),
                ("arguments".into(), "{\"x\": [1]}".into())
            ]
        );
        assert!(matches!(ObjWalk::new(0).step("[1]"), Step::Bad(_)));
        assert!(matches!(ObjWalk::new(0).step("{1: 2}"), Step::Bad(_)));
        assert_eq!(ObjWalk::new(0).step("{ \"na"), Step::More);
        assert_eq!(ObjWalk::new(0).step("{}"), Step::Ready(Walk::End(2)));
    }

    #[test]
    fn literals() {
        assert_eq!(match_lit("ab<tool", 2, "<tool_call>"), Lit::Partial);
        assert_eq!(
            match_lit("ab<tool_call>x", 2, "<tool_call>"),
            Lit::Match(13)
        );
        assert_eq!(match_lit("ab<tx", 2, "<tool_call>"), Lit::No);
        assert_eq!(match_lit("ab", 2, "<"), Lit::Partial);
    }
}
