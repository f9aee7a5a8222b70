//! Stop strings over streamed text, following llama-server's stop handling
//! (`find_stopping_strings` with full and partial matches, tools/server): text that could be the
//! beginning of a stop string is held back until it either completes the stop string (and is
//! never emitted) or stops matching (and is released).
//!
//! Which stop wins when several match: the one that completes first in the character stream
//! (smallest end offset), then the one starting earlier, then the one listed first. Deciding by
//! completion makes the result independent of how the text is split into deltas: it is what a
//! server streaming one character at a time would do, since it stops as soon as any stop string
//! is complete. For example with stops `["bc", "abcd"]`, `"abcd"` stops at `"bc"`, emitting `"a"`.

/// What [`StopMatcher::push`] lets through.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StopOutcome {
    /// Text safe to send to the client now.
    pub text: String,
    /// The stop string that was hit, if any: generation should end. `text` then holds everything
    /// up to, not including, the stop string.
    pub stop: Option<String>,
}

impl StopOutcome {
    pub fn is_stop(&self) -> bool {
        self.stop.is_some()
    }
}

/// Incremental stop-string matcher for one generation.
#[derive(Debug, Clone, Default)]
pub struct StopMatcher {
    /// Non-empty stop strings, in the caller's order (the order breaks ties).
    stops: Vec<String>,
    /// Longest stop string in bytes: held-back text is always shorter than this.
    max_len: usize,
    /// Received but not yet emitted: a suffix that may start a stop string.
    pending: String,
    stopped: bool,
}

impl StopMatcher {
    /// Empty stop strings are ignored (they would match everywhere and stop immediately).
    pub fn new(stops: Vec<String>) -> Self {
        let stops: Vec<String> = stops.into_iter().filter(|s| !s.is_empty()).collect();
        let max_len = stops.iter().map(String::len).max().unwrap_or(0);
        Self {
            stops,
            max_len,
            pending: String::new(),
            stopped: false,
        }
    }

    /// Feed newly generated text. After a stop has been hit, further input is ignored.
    pub fn push(&mut self, delta: &str) -> StopOutcome {
        if self.stopped {
            return StopOutcome::default();
        }
        if self.stops.is_empty() {
            return StopOutcome {
                text: delta.to_owned(),
                stop: None,
            };
        }
        self.pending.push_str(delta);

        // A stop can only start inside `pending`: everything before it was released because no
        // suffix of it could begin a stop string. `find` gives each stop's earliest start, which
        // for a fixed string is also its earliest end.
        let best = self
            .stops
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                self.pending
                    .find(s.as_str())
                    .map(|at| (at + s.len(), at, i))
            })
            .min();
        if let Some((_, at, i)) = best {
            self.stopped = true;
            let mut text = std::mem::take(&mut self.pending);
            text.truncate(at);
            return StopOutcome {
                text,
                stop: self.stops.get(i).cloned(),
            };
        }

        let hold = self.held_from();
        let rest = self.pending.split_off(hold);
        StopOutcome {
            text: std::mem::replace(&mut self.pending, rest),
            stop: None,
        }
    }

    /// End of generation: release whatever was held back (empty after a stop).
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }

    /// Whether a stop string has been hit.
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// Text currently held back as a possible stop-string prefix.
    pub fn held_back(&self) -> &str {
        &self.pending
    }

    /// Byte offset of the longest suffix of `pending` that is a prefix of some stop string
    /// (`pending.len()` if none). Only char boundaries are tried, so nothing splits a character.
    /// Called when `pending` contains no complete stop, so any match found is a proper prefix
    /// and shorter than `max_len`.
    fn held_from(&self) -> usize {
        let len = self.pending.len();
        let first = len.saturating_sub(self.max_len.saturating_sub(1));
        (first..len)
            .filter(|&i| self.pending.is_char_boundary(i))
            .find(|&i| {
                let tail = self.pending.as_bytes().get(i..).unwrap_or_default();
                self.stops.iter().any(|s| s.as_bytes().starts_with(tail))
            })
            .unwrap_or(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matcher(stops: &[&str]) -> StopMatcher {
        StopMatcher::new(stops.iter().map(|s| (*s).to_owned()).collect())
    }

    /// Push `deltas` in order; return what was emitted in total (including `finish`) and the stop.
    fn run(stops: &[&str], deltas: &[&str]) -> (String, Option<String>) {
        let mut m = matcher(stops);
        let mut out = String::new();
        let mut stop = None;
        for d in deltas {
            let o = m.push(d);
            out.push_str(&o.text);
            if o.stop.is_some() {
                stop = o.stop;
            }
        }
        out.push_str(&m.finish());
        (out, stop)
    }

    fn chars(s: &str) -> Vec<String> {
        s.chars().map(String::from).collect()
    }

    #[test]
    fn no_stops_passes_through() {
        let mut m = matcher(&[]);
        assert_eq!(m.push("abc").text, "abc");
        assert_eq!(m.finish(), "");
        // Empty stop strings are ignored.
        let mut m = matcher(&["", ""]);
        assert_eq!(m.push("abc").text, "abc");
        assert!(!m.is_stopped());
    }

    #[test]
    fn stop_spanning_deltas() {
        let mut m = matcher(&["</s>"]);
        assert_eq!(m.push("Hello</").text, "Hello");
        assert_eq!(m.held_back(), "</");
        let o = m.push("s");
        assert_eq!((o.text.as_str(), o.is_stop()), ("", false));
        let o = m.push("> trailing");
        assert_eq!(o.text, "");
        assert_eq!(o.stop.as_deref(), Some("</s>"));
        assert!(m.is_stopped());
        // Nothing more comes out after a stop.
        assert_eq!(m.push("more"), StopOutcome::default());
        assert_eq!(m.finish(), "");
    }

    #[test]
    fn held_text_is_released_when_the_match_breaks() {
        let mut m = matcher(&["</s>"]);
        assert_eq!(m.push("a<").text, "a");
        assert_eq!(m.push("b").text, "<b");
        assert_eq!(m.push("</").text, "");
        assert_eq!(m.finish(), "</");
    }

    #[test]
    fn overlapping_prefixes() {
        let mut m = matcher(&["aab"]);
        assert_eq!(m.push("aa").text, "");
        // "aaa": the first 'a' can no longer start "aab", the last two still can.
        assert_eq!(m.push("a").text, "a");
        assert_eq!(m.held_back(), "aa");
        let o = m.push("bz");
        assert_eq!((o.text.as_str(), o.stop.as_deref()), ("", Some("aab")));

        assert_eq!(
            run(&["abab"], &["xab", "a", "b!"]),
            ("x".into(), Some("abab".into()))
        );
        assert_eq!(run(&["abab"], &["ab", "ac"]), ("abac".into(), None));
    }

    #[test]
    fn earliest_completed_stop_wins() {
        assert_eq!(
            run(&["world", "lo"], &["hello world"]),
            ("hel".into(), Some("lo".into()))
        );
        // "bc" completes before "abcd" although "abcd" starts earlier.
        assert_eq!(
            run(&["abcd", "bc"], &["abcd"]),
            ("a".into(), Some("bc".into()))
        );
        // Same end: the earlier start (longer string) wins, then list order.
        assert_eq!(
            run(&["c", "abc"], &["xabc"]),
            ("x".into(), Some("abc".into()))
        );
        assert_eq!(
            run(&["ab", "ab"], &["xab"]),
            ("x".into(), Some("ab".into()))
        );
    }

    #[test]
    fn result_does_not_depend_on_chunking() {
        let cases: &[(&[&str], &str)] = &[
            (&["abcd", "bc"], "xxabcdyy"),
            (&["</s>", "<|im_end|>"], "Hi <|im_<b>x</s> tail"),
            (&["aab", "ab"], "aaaab"),
            (&["日本", "本語"], "日曜日本語"),
            (&["never"], "some text without it"),
        ];
        for (stops, text) in cases {
            let whole = run(stops, &[text]);
            let per_char = chars(text);
            let per_char: Vec<&str> = per_char.iter().map(String::as_str).collect();
            assert_eq!(run(stops, &per_char), whole, "{stops:?} / {text:?}");
            // Every two-piece split at a char boundary.
            for (i, _) in text.char_indices() {
                let (a, b) = text.split_at(i);
                assert_eq!(run(stops, &[a, b]), whole, "{stops:?} / {a:?}+{b:?}");
            }
        }
    }

    #[test]
    fn utf8_is_never_split() {
        // "é" (C3 A9) and "è" (C3 A8) share their first byte: "è" must not be held as a prefix of
        // "é!", and nothing may be cut inside a character.
        let mut m = matcher(&["é!"]);
        assert_eq!(m.push("caè").text, "caè");
        assert_eq!(m.push("fé").text, "f");
        assert_eq!(m.held_back(), "é");
        let o = m.push("!");
        assert_eq!((o.text.as_str(), o.stop.as_deref()), ("", Some("é!")));

        let per_char = chars("日曜日本語");
        let per_char: Vec<&str> = per_char.iter().map(String::as_str).collect();
        assert_eq!(
            run(&["本語"], &per_char),
            ("日曜日".into(), Some("本語".into()))
        );
    }
}
