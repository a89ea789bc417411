//! The decoder's fast path: one hand-written pass over an event line.
//!
//! serde_json drives a visitor through every token, mapped or not, and that
//! machinery was most of the decoding time. This scanner walks the bytes
//! once: at mapped levels it reads keys and looks them up in the pointer
//! trie, captures mapped scalars, and skips everything else with a strict
//! syntax check and nothing built.
//!
//! It does not decide anything on its own. Whenever a line is not the plain
//! case — any syntax it is not sure of, an escape in a key or a captured
//! string, a captured number that is not a short integer, nesting deeper than
//! [`MAX_DEPTH`] — it answers [`Scan::Fallback`] and the serde_json pass
//! decodes the line from scratch, errors included. What it does accept it
//! captures exactly as that pass would: same values, same order, duplicates
//! included. The decoder's property tests hold the two paths equal on
//! generated and mutated lines.

use std::borrow::Cow;

use serde::de::DeserializeSeed;

use crate::decode::{Fields, Node, NodeSeed, Raw};

/// Nesting deeper than this is left to serde_json (which skips ignored
/// values iteratively, at any depth).
pub(crate) const MAX_DEPTH: usize = 64;

/// What the fast path made of a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scan {
    /// `fields` hold what the serde_json pass would have captured.
    Done,
    /// Decode with serde_json instead (`fields` may be partly filled).
    Fallback,
}

/// Scans `line` (one JSON object) into `out`.
pub(crate) fn scan<'a>(line: &'a str, root: &Node, out: &mut Fields<'a>) -> Scan {
    let mut s = Scanner {
        text: line,
        bytes: line.as_bytes(),
        at: 0,
    };
    let done = (|| {
        s.whitespace();
        if s.peek()? != b'{' {
            return None; // serde_json's error, or not an object
        }
        s.at += 1;
        out.is_object = true;
        out.capture(&root.targets, Raw::Compound);
        s.object(Some(root), out, 1)?;
        s.whitespace();
        (s.at == s.bytes.len()).then_some(())
    })();
    match done {
        Some(()) => Scan::Done,
        None => Scan::Fallback,
    }
}

struct Scanner<'a> {
    text: &'a str,
    bytes: &'a [u8],
    at: usize,
}

/// `None` everywhere below means "fall back", never "invalid".
type Step<T = ()> = Option<T>;

impl<'a> Scanner<'a> {
    #[inline]
    fn peek(&self) -> Step<u8> {
        self.bytes.get(self.at).copied()
    }

    #[inline]
    fn whitespace(&mut self) {
        // Nearly always there is none: one test (every JSON whitespace byte
        // is at most a space).
        if self.bytes.get(self.at).is_some_and(|&b| b > b' ') {
            return;
        }
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.bytes.get(self.at) {
            self.at += 1;
        }
    }

    #[inline]
    fn eat(&mut self, byte: u8) -> Step {
        (self.peek()? == byte).then(|| self.at += 1)
    }

    /// The members of an object whose `{` was just read. `node` is the trie
    /// level of a mapped object, `None` for one that is only skipped.
    fn object(&mut self, node: Option<&Node>, out: &mut Fields<'a>, depth: usize) -> Step {
        if depth > MAX_DEPTH {
            return None;
        }
        if self.closes(b'}')? {
            return Some(());
        }
        match node {
            Some(node) => self.mapped_members(node, out, depth),
            None => loop {
                self.eat(b'"')?;
                self.skip_string()?;
                self.whitespace();
                self.eat(b':')?;
                self.whitespace();
                self.skip(out, depth)?;
                if !self.more(b'}')? {
                    return Some(());
                }
            },
        }
    }

    /// The members of a mapped object, from its first key's opening quote.
    ///
    /// Most of decoding happens here, so the common layout is read inline
    /// with the position in a local: the key predicted from the last line
    /// (the one that followed the previous key there), `:` right after it,
    /// a plain string or number value, `,"` or `}` right after that. Each
    /// step that finds anything else (whitespace, another kind of value, an
    /// unpredicted key) hands over to the general code for that step only,
    /// which accepts and refuses exactly as before.
    fn mapped_members(&mut self, node: &Node, out: &mut Fields<'a>, depth: usize) -> Step {
        let bytes = self.bytes;
        let mut at = self.at;
        let mut previous = 0;
        loop {
            if bytes.get(at) != Some(&b'"') {
                return None;
            }
            at += 1;
            let child = match node.predicted(previous, bytes.get(at..).unwrap_or_default()) {
                Some((id, child, len)) => {
                    at += len;
                    previous = id;
                    child
                }
                None => {
                    self.at = at;
                    let key = self.plain_string()?;
                    at = self.at;
                    let (id, child) = node.key_after(previous, key);
                    previous = id;
                    child
                }
            };
            if bytes.get(at) == Some(&b':') && bytes.get(at + 1).is_some_and(|&b| b > b' ') {
                at += 1;
            } else {
                self.at = at;
                self.whitespace();
                self.eat(b':')?;
                self.whitespace();
                at = self.at;
            }
            match (child, bytes.get(at)) {
                (Some(child), Some(b'"')) => {
                    let end = plain_string_end(bytes, at + 1)?;
                    // SAFETY: `bytes` is `self.text`'s bytes, `bytes[at]` is the
                    // opening `"` (matched just above) and `bytes[end]` the
                    // closing one (`plain_string_end` found it), so
                    // `at + 1 <= end < len`, and both ends are char boundaries:
                    // they follow and sit on ASCII bytes of valid UTF-8. This
                    // is most values of most lines; `get` checked all of it
                    // again (~100 instructions per record).
                    let value = unsafe { self.text.get_unchecked(at + 1..end) };
                    out.capture(&child.targets, Raw::Str(Cow::Borrowed(value)));
                    at = end + 1;
                }
                // An unmapped string: the plain case inline too (no call),
                // any escape or control character to the general skip.
                (None, Some(b'"')) => match plain_string_end(bytes, at + 1) {
                    Some(end) => at = end + 1,
                    None => {
                        self.at = at + 1;
                        self.skip_string()?;
                        at = self.at;
                    }
                },
                // A mapped amount or count: read as it is scanned.
                (Some(child), Some(b'-' | b'0'..=b'9')) => match plain_number(bytes, at) {
                    Some((raw, end)) => {
                        out.capture(&child.targets, raw);
                        at = end;
                    }
                    None => {
                        self.at = at;
                        self.mapped(child, out, depth)?;
                        at = self.at;
                    }
                },
                (Some(child), _) => {
                    self.at = at;
                    self.mapped(child, out, depth)?;
                    at = self.at;
                }
                (None, _) => {
                    self.at = at;
                    self.skip(out, depth)?;
                    at = self.at;
                }
            }
            match bytes.get(at) {
                Some(b',') if bytes.get(at + 1) == Some(&b'"') => at += 1,
                Some(b'}') => {
                    self.at = at + 1;
                    return Some(());
                }
                _ => {
                    self.at = at;
                    if !self.more(b'}')? {
                        return Some(());
                    }
                    at = self.at;
                }
            }
        }
    }

    /// The elements of an array whose `[` was just read; element `i` of a
    /// mapped array is looked up as key `"i"`, as the serde_json pass does.
    fn array(&mut self, node: Option<&Node>, out: &mut Fields<'a>, depth: usize) -> Step {
        if depth > MAX_DEPTH {
            return None;
        }
        if self.closes(b']')? {
            return Some(());
        }
        let mut index = 0usize;
        let mut digits = [0u8; 20];
        loop {
            let child = match node {
                Some(n) if !n.children.is_empty() => n.child(decimal(&mut digits, index)),
                _ => None,
            };
            match child {
                Some(child) => self.mapped(child, out, depth)?,
                None => self.skip(out, depth)?,
            }
            index += 1;
            if !self.more(b']')? {
                return Some(());
            }
        }
    }

    /// Right after an opening bracket: whether `close` follows at once.
    #[inline]
    fn closes(&mut self, close: u8) -> Step<bool> {
        self.whitespace();
        let empty = self.peek()? == close;
        if empty {
            self.at += 1;
        }
        Some(empty)
    }

    /// After a member or element: `true` past a `,` (another follows),
    /// `false` past `close`.
    #[inline]
    fn more(&mut self, close: u8) -> Step<bool> {
        self.whitespace();
        match self.peek()? {
            b',' => {
                self.at += 1;
                self.whitespace();
                Some(true)
            }
            c if c == close => {
                self.at += 1;
                Some(false)
            }
            _ => None,
        }
    }

    /// A value on a mapped path: captured into `node`'s targets.
    fn mapped(&mut self, node: &Node, out: &mut Fields<'a>, depth: usize) -> Step {
        let raw = match self.peek()? {
            b'{' => {
                self.at += 1;
                out.capture(&node.targets, Raw::Compound);
                return self.object(Some(node), out, depth + 1);
            }
            b'[' => {
                self.at += 1;
                out.capture(&node.targets, Raw::Compound);
                return self.array(Some(node), out, depth + 1);
            }
            b'"' => {
                self.at += 1;
                Raw::Str(Cow::Borrowed(self.plain_string()?))
            }
            b't' => self.literal(b"true").map(|()| Raw::Bool(true))?,
            b'f' => self.literal(b"false").map(|()| Raw::Bool(false))?,
            b'n' => self.literal(b"null").map(|()| Raw::Null)?,
            b'-' | b'0'..=b'9' => {
                let start = self.at;
                self.skip_number()?;
                let token = &self.text[start..self.at];
                match short_number(token) {
                    Some(raw) => raw,
                    // Any other number is read by serde_json itself, so that
                    // floats round and overflow exactly as in its full pass.
                    None => return number_by_serde(token, node, out),
                }
            }
            _ => return None,
        };
        out.capture(&node.targets, raw);
        Some(())
    }

    /// Skips any value, checking its syntax as serde_json's `ignore_value`
    /// does. (`out` is only passed through: nothing below is mapped.)
    fn skip(&mut self, out: &mut Fields<'a>, depth: usize) -> Step {
        match self.peek()? {
            b'{' => {
                self.at += 1;
                self.object(None, out, depth + 1)
            }
            b'[' => {
                self.at += 1;
                self.array(None, out, depth + 1)
            }
            b'"' => {
                self.at += 1;
                self.skip_string()
            }
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'-' | b'0'..=b'9' => self.skip_number(),
            _ => None,
        }
    }

    fn literal(&mut self, word: &[u8]) -> Step {
        let end = self.at + word.len();
        (self.bytes.get(self.at..end)? == word).then(|| self.at = end)
    }

    /// The rest of a string whose `"` was just read, when it has no escape
    /// and no control character (anything else falls back).
    #[inline(always)]
    fn plain_string(&mut self) -> Step<&'a str> {
        let start = self.at;
        let end = plain_string_end(self.bytes, start)?;
        self.at = end + 1;
        // Quotes are ASCII: both ends are char boundaries (`get` checks
        // anyway, so that no line can make this panic).
        self.text.get(start..end)
    }

    /// The rest of an ignored string: escapes checked for syntax only, as in
    /// serde_json's `ignore_str`.
    fn skip_string(&mut self) -> Step {
        loop {
            self.at = special_byte(self.bytes, self.at);
            match *self.bytes.get(self.at)? {
                b'"' => {
                    self.at += 1;
                    return Some(());
                }
                b'\\' => {
                    self.at += 1;
                    match *self.bytes.get(self.at)? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.at += 1,
                        b'u' => {
                            let hex = self.bytes.get(self.at + 1..self.at + 5)?;
                            if !hex.iter().all(u8::is_ascii_hexdigit) {
                                return None;
                            }
                            self.at += 5;
                        }
                        _ => return None,
                    }
                }
                _ => return None, // a control character
            }
        }
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`
    fn skip_number(&mut self) -> Step {
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        match self.peek()? {
            b'0' => {
                self.at += 1;
                if self.peek().is_some_and(|c| c.is_ascii_digit()) {
                    return None;
                }
            }
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.at += 1;
            if !self.peek().is_some_and(|c| c.is_ascii_digit()) {
                return None;
            }
            self.digits();
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.at += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.at += 1;
            }
            if !self.peek().is_some_and(|c| c.is_ascii_digit()) {
                return None;
            }
            self.digits();
        }
        Some(())
    }

    #[inline]
    fn digits(&mut self) {
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.at += 1;
        }
    }
}

/// Where the plain string (no escape, no control character) that starts
/// at `start` ends: its closing `"`. `None` for any other string.
#[inline(always)]
fn plain_string_end(bytes: &[u8], start: usize) -> Step<usize> {
    let end = special_byte(bytes, start);
    (*bytes.get(end)? == b'"').then_some(end)
}

/// The first `"`, `\\` or control character at or after `from` (or the
/// end): sixteen bytes per step with SSE2 while sixteen remain, then the
/// line's last sixteen once; a line shorter than sixteen bytes eight per
/// step, as serde_json's own string scan does.
#[inline]
fn special_byte(bytes: &[u8], mut from: usize) -> usize {
    // One compare per step, against the last start with sixteen bytes left:
    // a `get` per step also checked `from + 16` for overflow (~150
    // instructions per record).
    let Some(last_start) = bytes.len().checked_sub(16) else {
        return special_byte_swar(bytes, from);
    };
    while from <= last_start {
        // SAFETY: `from + 16 <= bytes.len()` (the loop's condition).
        let chunk = unsafe { bytes.get_unchecked(from..from + 16) };
        let found = specials16(chunk.try_into().expect("sixteen bytes"));
        if found != 0 {
            return from + found.trailing_zeros() as usize;
        }
        from += 16;
    }
    if from >= bytes.len() {
        return bytes.len();
    }
    // Fewer than sixteen bytes left: the line's last sixteen, with the bits
    // of the bytes before `from` shifted out. A line's last string always
    // ends here, and a byte at a time cost ~40 instructions per record.
    // SAFETY: `last_start + 16 == bytes.len()`.
    let chunk = unsafe { bytes.get_unchecked(last_start..) };
    let found = specials16(chunk.try_into().expect("sixteen bytes")) >> (from - last_start);
    if found != 0 {
        from + found.trailing_zeros() as usize
    } else {
        bytes.len()
    }
}

/// Whether every byte is below 0x80 (the decoder's check before UTF-8
/// validation). On a ~240-byte record this ORs fifteen 16-byte loads and
/// tests one mask: ~55 instructions (callgrind, decode bench), where
/// simdutf8 (which copies the line's tail into a 64-byte block) takes ~110
/// and `<[u8]>::is_ascii` (a word at a time) ~135.
#[cfg(target_arch = "x86_64")]
pub(crate) fn is_ascii(bytes: &[u8]) -> bool {
    use std::arch::x86_64::{__m128i, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128, _mm_setzero_si128};
    let Some(last_start) = bytes.len().checked_sub(16) else {
        return bytes.is_ascii();
    };
    let load = |at: usize| -> __m128i {
        debug_assert!(at <= last_start);
        // SAFETY: SSE2 is part of x86-64; every caller passes `at <=
        // last_start`, so the load reads sixteen bytes inside `bytes`.
        unsafe { _mm_loadu_si128(bytes.as_ptr().add(at).cast()) }
    };
    // SAFETY (all four intrinsics): SSE2 is part of x86-64.
    let mut high = unsafe { _mm_setzero_si128() };
    let mut at = 0;
    while at < last_start {
        high = unsafe { _mm_or_si128(high, load(at)) };
        at += 16;
    }
    // The last sixteen bytes, overlapping what was read: none is left out.
    high = unsafe { _mm_or_si128(high, load(last_start)) };
    unsafe { _mm_movemask_epi8(high) == 0 }
}

#[cfg(not(target_arch = "x86_64"))]
pub(crate) fn is_ascii(bytes: &[u8]) -> bool {
    bytes.is_ascii()
}

/// Bit `i` set where `chunk[i]` is `"`, `\\` or a control character.
#[cfg(target_arch = "x86_64")]
#[inline]
fn specials16(chunk: &[u8; 16]) -> u32 {
    use std::arch::x86_64::{
        _mm_cmpeq_epi8, _mm_loadu_si128, _mm_max_epu8, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8,
    };
    // SAFETY: SSE2 is part of x86-64 itself, so every x86-64 CPU runs these;
    // the one load reads `chunk`'s sixteen bytes, unaligned.
    unsafe {
        let x = _mm_loadu_si128(chunk.as_ptr().cast());
        let quote = _mm_cmpeq_epi8(x, _mm_set1_epi8(b'"' as i8));
        let backslash = _mm_cmpeq_epi8(x, _mm_set1_epi8(b'\\' as i8));
        // Unsigned `x < 0x20` is `max(x, 0x1f) == 0x1f`.
        let control = _mm_cmpeq_epi8(_mm_max_epu8(x, _mm_set1_epi8(0x1f)), _mm_set1_epi8(0x1f));
        _mm_movemask_epi8(_mm_or_si128(_mm_or_si128(quote, backslash), control)) as u32
    }
}

#[cfg(not(target_arch = "x86_64"))]
#[inline]
fn specials16(chunk: &[u8; 16]) -> u32 {
    chunk.iter().enumerate().fold(0, |mask, (i, &b)| {
        mask | u32::from(b == b'"' || b == b'\\' || b < 0x20) << i
    })
}

/// [`special_byte`] eight bytes per step.
#[inline]
fn special_byte_swar(bytes: &[u8], mut from: usize) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    while let Some(chunk) = bytes.get(from..from + 8) {
        let x = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
        let quote = x ^ (ONES * u64::from(b'"'));
        let backslash = x ^ (ONES * u64::from(b'\\'));
        // Per byte, the high bit is set where the byte is zero (or, for the
        // last term, below 0x20); the lowest such byte is exact.
        let found = ((quote.wrapping_sub(ONES) & !quote)
            | (backslash.wrapping_sub(ONES) & !backslash)
            | (x.wrapping_sub(ONES * 0x20) & !x))
            & HIGH;
        if found != 0 {
            return from + (found.trailing_zeros() / 8) as usize;
        }
        from += 8;
    }
    while bytes.get(from).is_some_and(|&c| c != b'"' && c != b'\\' && c >= 0x20) {
        from += 1;
    }
    from
}

/// Powers of ten exact in an `f64`, the divisors of short decimals.
const POW10: [f64; 16] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
];

/// A number token (already checked for syntax) that needs no rounding
/// decision, as serde_json hands it over: an integer of at most 18 digits
/// (`-0` is its float `-0.0`), or a decimal without exponent whose digits
/// fit in 15 (`375.59`). Anything else is `None`, for serde_json to read.
///
/// A decimal's value is its digits as an integer divided by a power of ten:
/// both are exact in an `f64` (below 2^53, at most 10^22), so the one IEEE
/// division is the correctly rounded result — the value serde_json computes
/// with the same division, and with the `float_roundtrip` feature by a
/// correctly rounding parser.
#[inline]
fn short_number(token: &str) -> Option<Raw<'static>> {
    let (negative, b) = match token.as_bytes() {
        [b'-', rest @ ..] => (true, rest),
        b => (false, b),
    };
    let (whole, fraction) = match memchr::memchr(b'.', b) {
        Some(dot) => (&b[..dot], Some(&b[dot + 1..])),
        None => (b, None),
    };
    let digits = |d: &[u8]| {
        d.iter()
            .try_fold(0u64, |n, &c| c.is_ascii_digit().then(|| n * 10 + u64::from(c - b'0')))
    };
    match fraction {
        None => {
            if whole.is_empty() || whole.len() > 18 {
                return None;
            }
            let n = digits(whole)? as i64;
            Some(match (negative, n) {
                (false, n) => Raw::Int(n),
                // serde_json turns `-0` into a float, as i64 has no -0.
                (true, 0) => Raw::Float(-0.0),
                (true, n) => Raw::Int(-n),
            })
        }
        Some(fraction) => {
            if whole.is_empty() || fraction.is_empty() || whole.len() + fraction.len() > 15 {
                return None;
            }
            let significand = digits(whole)? * 10u64.pow(fraction.len() as u32) + digits(fraction)?;
            let f = significand as f64 / POW10[fraction.len()];
            Some(Raw::Float(if negative { -f } else { f }))
        }
    }
}

/// The number at `start` in one pass, when it is the plain case
/// [`short_number`] reads: `-?(0|[1-9][0-9]*)(\.[0-9]+)?`, at most 18
/// digits for an integer and 15 for a decimal, and not followed by anything
/// that would continue a number (`.`, `e`, `E`, a digit). Its value — the
/// very value [`short_number`] gives the token — and where it ends; `None`
/// for anything else, which the general path reads (or refuses) as before.
#[inline(always)]
fn plain_number(bytes: &[u8], start: usize) -> Option<(Raw<'static>, usize)> {
    let negative = bytes.get(start) == Some(&b'-');
    let whole_start = start + usize::from(negative);
    let mut at = whole_start;
    let mut digits = 0u64;
    // At most 18 digits are taken: below 10^18, so no overflow.
    while let Some(&c @ b'0'..=b'9') = bytes.get(at) {
        if at - whole_start == 18 {
            return None;
        }
        digits = digits * 10 + u64::from(c - b'0');
        at += 1;
    }
    let whole = at - whole_start;
    if whole == 0 || (whole > 1 && bytes[whole_start] == b'0') {
        return None;
    }
    let raw = if bytes.get(at) == Some(&b'.') {
        at += 1;
        let fraction_start = at;
        while let Some(&c @ b'0'..=b'9') = bytes.get(at) {
            if whole + (at - fraction_start) >= 15 {
                return None;
            }
            digits = digits * 10 + u64::from(c - b'0');
            at += 1;
        }
        let fraction = at - fraction_start;
        if fraction == 0 {
            return None;
        }
        // As in `short_number`: both exact in an f64, one rounding.
        let f = digits as f64 / POW10[fraction];
        Raw::Float(if negative { -f } else { f })
    } else {
        match (negative, digits as i64) {
            (false, n) => Raw::Int(n),
            (true, 0) => Raw::Float(-0.0),
            (true, n) => Raw::Int(-n),
        }
    };
    match bytes.get(at) {
        Some(b'.' | b'e' | b'E' | b'0'..=b'9') => None,
        _ => Some((raw, at)),
    }
}

/// Captures a number token through serde_json, exactly as its full pass would.
fn number_by_serde<'a>(token: &'a str, node: &Node, out: &mut Fields<'a>) -> Step {
    let mut de = serde_json::Deserializer::from_str(token);
    NodeSeed::new(node, out).deserialize(&mut de).ok()?;
    de.end().ok()
}

/// `n` in decimal, written into `buffer` (room for any `usize`).
fn decimal(buffer: &mut [u8; 20], mut n: usize) -> &str {
    let mut at = buffer.len();
    loop {
        at -= 1;
        buffer[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    std::str::from_utf8(&buffer[at..]).expect("ASCII digits")
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::{decimal, is_ascii, plain_number, short_number, special_byte, special_byte_swar};
    use crate::decode::Raw;

    #[test]
    fn amounts_and_short_integers_need_no_serde_json() {
        for (token, expected) in [
            ("375.59", Raw::Float(375.59)),
            ("-12.5", Raw::Float(-12.5)),
            ("0.1", Raw::Float(0.1)),
            ("42", Raw::Int(42)),
            ("-7", Raw::Int(-7)),
        ] {
            let got = short_number(token).unwrap_or_else(|| panic!("{token} fell back"));
            assert_eq!(format!("{got:?}"), format!("{expected:?}"), "{token}");
        }
        assert_eq!(format!("{:?}", short_number("-0")), "Some(Float(-0.0))");
        // Left to serde_json: exponents, long digit strings.
        for token in ["1e3", "1.5E-2", "1234567890123456.7", "1234567890123456789"] {
            assert!(short_number(token).is_none(), "{token}");
        }
    }

    #[test]
    fn array_indexes_are_written_as_the_serde_json_pass_writes_them() {
        let mut buffer = [0u8; 20];
        for n in [0, 7, 10, 99, 12345, usize::MAX] {
            assert_eq!(decimal(&mut buffer, n), n.to_string());
        }
    }

    fn naive(bytes: &[u8], from: usize) -> usize {
        (from..bytes.len())
            .find(|&i| matches!(bytes[i], b'"' | b'\\' | 0..=0x1f))
            .unwrap_or(bytes.len())
    }

    /// The ASCII check in front of the UTF-8 validation reads every byte:
    /// a high byte at any position of a line of any length around its
    /// sixteen-byte steps (and its overlapping last step) is seen.
    #[test]
    fn is_ascii_sees_a_high_byte_anywhere() {
        for len in 0..80 {
            let line = vec![b'a'; len];
            assert!(is_ascii(&line), "len {len}");
            for at in 0..len {
                for high in [0x80, 0xc3, 0xff] {
                    let mut other = line.clone();
                    other[at] = high;
                    assert!(!is_ascii(&other), "len {len}, {high:#x} at {at}");
                }
            }
        }
    }

    /// Every length around the sixteen-byte steps, every start and every
    /// place of the one quote (or none): the scan's bound ends each step
    /// exactly where sixteen bytes are left.
    #[test]
    fn special_byte_finds_the_quote_at_every_edge_of_its_steps() {
        for len in 0..50 {
            for quote in (0..len).map(Some).chain([None]) {
                let mut bytes = vec![b'a'; len];
                if let Some(q) = quote {
                    bytes[q] = b'"';
                }
                for from in 0..=len {
                    assert_eq!(
                        special_byte(&bytes, from),
                        naive(&bytes, from),
                        "{len} {quote:?} {from}"
                    );
                }
            }
        }
    }

    proptest! {
        /// The sixteen- and eight-at-a-time scans find the same byte as one
        /// at a time.
        #[test]
        fn special_byte_is_the_first_quote_backslash_or_control(
            bytes in prop::collection::vec(prop_oneof![
                8 => 0x20u8..=0x7e,
                1 => Just(b'"'),
                1 => Just(b'\\'),
                1 => 0u8..0x20,
                2 => 0x80u8..=0xff,
            ], 0..80),
            from in 0usize..80,
        ) {
            let from = from.min(bytes.len());
            prop_assert_eq!(special_byte(&bytes, from), naive(&bytes, from));
            prop_assert_eq!(special_byte_swar(&bytes, from), naive(&bytes, from));
        }

        /// The one-pass reading of a plain number is `short_number`'s
        /// reading of the token, wherever it takes one, and it takes every
        /// plain one within the limits; followed by whatever a line has
        /// next (or by what would make it another number: then it declines).
        #[test]
        fn plain_numbers_read_in_one_pass_as_short_number_reads_them(
            token in prop_oneof![
                "-?(0|[1-9][0-9]{0,19})(\\.[0-9]{1,17})?",
                "-?[0-9]{1,4}(\\.[0-9]{1,3})?",
                "-?[1-9][0-9]{0,6}\\.[0-9]{2}",
            ],
            next in prop::sample::select(vec!["", ",", "}", "]", " ", "x", "e5", "E", ".x"]),
        ) {
            let line = format!("{token}{next}");
            let plain = plain_number(line.as_bytes(), 0);
            let continues = matches!(next.as_bytes().first(), Some(b'.' | b'e' | b'E'));
            if let Some((raw, end)) = &plain {
                prop_assert_eq!(*end, token.len(), "{}", line);
                prop_assert!(!continues, "{}", line);
                // Debug prints each float's shortest round trip: equal
                // text, equal bits (the sign of zero included).
                prop_assert_eq!(format!("{:?}", Some(raw)), format!("{:?}", short_number(&token)), "{}", line);
            }
            let well_formed = serde_json::from_str::<serde_json::Value>(&token).is_ok();
            let digits = token.bytes().filter(u8::is_ascii_digit).count();
            let within = if token.contains('.') { digits <= 15 } else { digits <= 18 };
            if well_formed && within && !continues {
                prop_assert!(plain.is_some(), "{} declined", line);
            }
        }

        /// A number read without serde_json is the very value serde_json
        /// reads, to the bit (the sign of zero included), and its kind:
        /// integer or float.
        #[test]
        fn short_numbers_are_read_as_serde_json_reads_them(
            token in prop_oneof![
                "-?(0|[1-9][0-9]{0,19})(\\.[0-9]{1,17})?",
                "-?[1-9][0-9]{0,6}\\.[0-9]{2}",
            ],
        ) {
            let serde: serde_json::Value = serde_json::from_str(&token).unwrap();
            // Within the limits the scanner reads the number itself.
            let digits = token.bytes().filter(u8::is_ascii_digit).count();
            prop_assert!(digits > 15 || short_number(&token).is_some(), "{} fell back", token);
            match short_number(&token) {
                None => {}
                Some(Raw::Int(n)) => prop_assert_eq!(serde.as_i64(), Some(n), "{}", token),
                Some(Raw::Float(f)) => {
                    prop_assert!(serde.is_f64(), "{}", token);
                    prop_assert_eq!(serde.as_f64().unwrap().to_bits(), f.to_bits(), "{}", token);
                }
                Some(other) => prop_assert!(false, "{token}: {other:?}"),
            }
        }
    }
}
