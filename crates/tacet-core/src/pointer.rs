//! RFC 6901 JSON pointers, parsed once when the config is loaded.

use std::fmt;

/// A parsed JSON pointer: `/a/b~1c` is the tokens `a`, `b/c`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JsonPointer {
    tokens: Vec<String>,
}

/// Why a string is not a JSON pointer we can use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PointerError {
    #[error("a JSON pointer must start with '/' (RFC 6901), got {0:?}")]
    MissingSlash(String),
    #[error("the empty pointer names the whole document, not a field")]
    WholeDocument,
    #[error("{0:?} has a '~' not followed by 0 or 1 (RFC 6901 allows only ~0 and ~1)")]
    BadEscape(String),
}

impl JsonPointer {
    /// Parses `text` as RFC 6901, rejecting the empty pointer (a field mapping
    /// must name a field).
    pub fn parse(text: &str) -> Result<Self, PointerError> {
        if text.is_empty() {
            return Err(PointerError::WholeDocument);
        }
        let Some(rest) = text.strip_prefix('/') else {
            return Err(PointerError::MissingSlash(text.to_owned()));
        };
        let tokens = rest
            .split('/')
            .map(|raw| unescape(raw).ok_or_else(|| PointerError::BadEscape(text.to_owned())))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { tokens })
    }

    /// The reference tokens, unescaped.
    pub fn tokens(&self) -> &[String] {
        &self.tokens
    }
}

fn unescape(raw: &str) -> Option<String> {
    if !raw.contains('~') {
        return Some(raw.to_owned());
    }
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '~' {
            match chars.next() {
                Some('0') => out.push('~'),
                Some('1') => out.push('/'),
                _ => return None,
            }
        } else {
            out.push(c);
        }
    }
    Some(out)
}

impl fmt::Display for JsonPointer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for token in &self.tokens {
            write!(f, "/{}", token.replace('~', "~0").replace('/', "~1"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rfc6901_examples() {
        assert_eq!(JsonPointer::parse("/foo").unwrap().tokens(), ["foo"]);
        assert_eq!(JsonPointer::parse("/a~1b").unwrap().tokens(), ["a/b"]);
        assert_eq!(JsonPointer::parse("/m~0n").unwrap().tokens(), ["m~n"]);
        assert_eq!(JsonPointer::parse("/a/0/b").unwrap().tokens(), ["a", "0", "b"]);
        assert_eq!(JsonPointer::parse("/").unwrap().tokens(), [""]);
        assert_eq!(JsonPointer::parse("/a~1b").unwrap().to_string(), "/a~1b");
    }

    #[test]
    fn rejects_what_rfc6901_rejects() {
        assert!(matches!(JsonPointer::parse("foo"), Err(PointerError::MissingSlash(_))));
        assert!(matches!(JsonPointer::parse(""), Err(PointerError::WholeDocument)));
        assert!(matches!(JsonPointer::parse("/a~2"), Err(PointerError::BadEscape(_))));
        assert!(matches!(JsonPointer::parse("/a~"), Err(PointerError::BadEscape(_))));
    }
}
