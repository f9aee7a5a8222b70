//! Python/Jinja2 behaviour that neither minijinja nor `minijinja_contrib::pycompat` provides: a few more
//! `str` methods (`rsplit`, `removeprefix`, `removesuffix`) and Jinja2's `wordcount` / `center` filters.

use minijinja::value::{Kwargs, Value, from_args};
use minijinja::{Error, ErrorKind, State};

/// `minijinja_contrib::pycompat::unknown_method_callback` plus the methods of this module.
pub(crate) fn unknown_method(
    state: &mut State<'_, '_>,
    value: &Value,
    method: &str,
    args: &[Value],
) -> Result<Value, Error> {
    if let Some(s) = value.as_str() {
        match method {
            "rsplit" => {
                let (sep, maxsplit, kwargs): (Option<Value>, Option<i64>, Kwargs) =
                    from_args(args)?;
                let sep = kwargs.get::<Option<Value>>("sep")?.or(sep);
                let maxsplit = kwargs
                    .get::<Option<i64>>("maxsplit")?
                    .or(maxsplit)
                    .unwrap_or(-1);
                kwargs.assert_all_used()?;
                let sep = match &sep {
                    Some(v) if !v.is_none() => Some(v.as_str().ok_or_else(|| {
                        Error::new(ErrorKind::InvalidOperation, "rsplit: sep must be a string")
                    })?),
                    _ => None,
                };
                return rsplit(s, sep, maxsplit).map(Value::from);
            }
            "removeprefix" | "removesuffix" => {
                let (affix,): (&str,) = from_args(args)?;
                let rest = if method == "removeprefix" {
                    s.strip_prefix(affix)
                } else {
                    s.strip_suffix(affix)
                };
                return Ok(Value::from(rest.unwrap_or(s)));
            }
            _ => {}
        }
    }
    minijinja_contrib::pycompat::unknown_method_callback(state, value, method, args)
}

/// Python `str.rsplit(sep=None, maxsplit=-1)`.
fn rsplit(s: &str, sep: Option<&str>, maxsplit: i64) -> Result<Vec<String>, Error> {
    let owned = |parts: Vec<&str>| parts.into_iter().map(str::to_owned).collect();
    match sep {
        Some("") => Err(Error::new(ErrorKind::InvalidOperation, "empty separator")),
        Some(sep) => match usize::try_from(maxsplit) {
            Ok(n) => {
                let mut parts: Vec<&str> = s.rsplitn(n.saturating_add(1), sep).collect();
                parts.reverse();
                Ok(owned(parts))
            }
            Err(_) => Ok(owned(s.split(sep).collect())),
        },
        None => {
            let Ok(max) = usize::try_from(maxsplit) else {
                return Ok(owned(s.split_whitespace().collect()));
            };
            let mut parts = Vec::new();
            let mut rest = s.trim_end();
            while !rest.is_empty() && parts.len() < max {
                match rest.char_indices().rev().find(|(_, c)| c.is_whitespace()) {
                    Some((i, c)) => {
                        parts.push(&rest[i + c.len_utf8()..]);
                        rest = rest[..i].trim_end();
                    }
                    None => {
                        parts.push(rest);
                        rest = "";
                    }
                }
            }
            if !rest.is_empty() {
                parts.push(rest);
            }
            parts.reverse();
            Ok(owned(parts))
        }
    }
}

/// Jinja2's `center(width=80)` (Python `str.center`).
pub(crate) fn center(s: &str, width: Option<usize>) -> String {
    let width = width.unwrap_or(80);
    let len = s.chars().count();
    if width <= len {
        return s.to_owned();
    }
    let margin = width - len;
    let left = margin / 2 + (margin & width & 1);
    format!("{}{s}{}", " ".repeat(left), " ".repeat(margin - left))
}

/// Jinja2's `wordcount`: the number of `\w+` runs.
pub(crate) fn wordcount(s: &str) -> usize {
    let word = |c: char| c.is_alphanumeric() || c == '_';
    s.split(|c: char| !word(c))
        .filter(|w| !w.is_empty())
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rsplit_matches_python() {
        let cases: [(&str, Option<&str>, i64, &[&str]); 6] = [
            ("a.b.c", Some("."), 1, &["a.b", "c"]),
            ("a.b.c", Some("."), -1, &["a", "b", "c"]),
            ("a.b.c", Some("."), 0, &["a.b.c"]),
            (" a b  c ", None, 1, &[" a b", "c"]),
            (" a b  c ", None, -1, &["a", "b", "c"]),
            ("   ", None, 1, &[]),
        ];
        for (s, sep, max, want) in cases {
            assert_eq!(
                rsplit(s, sep, max).ok().as_deref(),
                Some(
                    want.iter()
                        .map(|w| w.to_string())
                        .collect::<Vec<_>>()
                        .as_slice()
                )
            );
        }
        assert_eq!(wordcount("Hello, wörld_1 -- x"), 3);
        assert_eq!(center("abc", Some(7)), "  abc  ");
        assert_eq!(center("ab", Some(5)), "  ab ");
        assert_eq!(center("abc", Some(6)), " abc  ");
    }
}
