//! Journey attributes and a non-canonical trace id, packed into one small
//! byte blob per journey: `[slot u8 | flags][tag][payload]…`, strings as a
//! varint length and their bytes. A transfer's five attributes take 45 bytes
//! here (one 48-byte allocation) instead of ~250 as boxed values.

use tacet_core::{AttrSlot, AttrValue};

const TAG_STR: u8 = 0;
const TAG_NUM: u8 = 1;
const TAG_TRUE: u8 = 2;
const TAG_FALSE: u8 = 3;
/// The trace id text of a non-canonical trace.
const TAG_TRACE_TEXT: u8 = 4;
/// Set on values that came from the journey's start event, which wins.
const FROM_START: u8 = 0x80;
/// Longest string kept (a two-byte varint length): 32 KiB.
const MAX_STR: usize = (1 << 15) - 1;

#[derive(Default)]
pub(crate) struct Blob(Option<Box<[u8]>>);

impl Blob {
    pub(crate) fn clear(&mut self) {
        self.0 = None;
    }

    fn entries(&self) -> Entries<'_> {
        Entries {
            rest: self.0.as_deref().unwrap_or(&[]),
        }
    }

    pub(crate) fn trace_text(&self) -> Option<&str> {
        self.entries()
            .find(|e| e.tag == TAG_TRACE_TEXT)
            .map(|e| std::str::from_utf8(e.payload).expect("stored from &str"))
    }

    #[cfg(test)]
    pub(crate) fn attr(&self, slot: AttrSlot) -> Option<AttrValue<'_>> {
        self.entries()
            .find(|e| e.tag != TAG_TRACE_TEXT && e.slot == slot)
            .map(|e| match e.tag {
                TAG_STR => AttrValue::Str(std::str::from_utf8(e.payload).expect("stored from &str")),
                TAG_NUM => AttrValue::Num(f64::from_le_bytes(e.payload.try_into().expect("8 bytes"))),
                TAG_TRUE => AttrValue::Bool(true),
                _ => AttrValue::Bool(false),
            })
    }

    pub(crate) fn set_trace_text(&mut self, text: &str) {
        let mut out = self.0.take().map(Vec::from).unwrap_or_default();
        push(&mut out, 0, TAG_TRACE_TEXT, text.as_bytes());
        // A fresh exact-size allocation: shrinking in place would keep the larger block.
        self.0 = Some(Box::from(&out[..]));
    }

    /// Merges an event's attributes: a slot keeps its first value unless the
    /// new one comes from the start event and the old one did not.
    pub(crate) fn merge(&mut self, attrs: &[(AttrSlot, AttrValue<'_>)], from_start: bool) {
        // One pass over the blob: which slots are present, which from the start.
        let (mut present, mut from_start_mask) = (0u128, 0u128);
        for e in self.entries().filter(|e| e.tag != TAG_TRACE_TEXT) {
            present |= 1 << e.slot;
            if e.flags & FROM_START != 0 {
                from_start_mask |= 1 << e.slot;
            }
        }
        let mut replaced = 0u128;
        for (slot, _) in attrs {
            let bit = 1u128 << (*slot & 0x7f);
            if present & bit == 0 || (from_start && from_start_mask & bit == 0) {
                replaced |= bit;
            }
        }
        if replaced == 0 {
            return;
        }
        let mut out = Vec::with_capacity(self.0.as_ref().map_or(0, |b| b.len()) + 64);
        for e in self.entries() {
            if e.tag == TAG_TRACE_TEXT || replaced & (1 << e.slot) == 0 {
                push(&mut out, e.slot as u8 | e.flags, e.tag, e.payload);
            }
        }
        let flags = if from_start { FROM_START } else { 0 };
        for (slot, value) in attrs {
            let bit = 1u128 << (*slot & 0x7f);
            if replaced & bit == 0 {
                continue;
            }
            replaced &= !bit; // a slot listed twice keeps its first value
            let head = *slot as u8 | flags;
            match value {
                AttrValue::Str(s) => {
                    let mut end = s.len().min(MAX_STR);
                    while !s.is_char_boundary(end) {
                        end -= 1;
                    }
                    push(&mut out, head, TAG_STR, &s.as_bytes()[..end]);
                }
                AttrValue::Num(n) => push(&mut out, head, TAG_NUM, &n.to_le_bytes()),
                AttrValue::Bool(true) => push(&mut out, head, TAG_TRUE, &[]),
                AttrValue::Bool(false) => push(&mut out, head, TAG_FALSE, &[]),
            }
        }
        // A fresh exact-size allocation: shrinking in place would keep the larger block.
        self.0 = Some(Box::from(&out[..]));
    }

    /// Every attribute value by slot, in one pass: `f(slot, value)`.
    pub(crate) fn for_each_attr<'s>(&'s self, mut f: impl FnMut(AttrSlot, AttrValue<'s>)) {
        for e in self.entries() {
            let value = match e.tag {
                TAG_TRACE_TEXT => continue,
                TAG_STR => match std::str::from_utf8(e.payload) {
                    Ok(s) => AttrValue::Str(s),
                    Err(_) => continue,
                },
                TAG_NUM => AttrValue::Num(f64::from_le_bytes(e.payload.try_into().unwrap_or_default())),
                TAG_TRUE => AttrValue::Bool(true),
                _ => AttrValue::Bool(false),
            };
            f(e.slot, value);
        }
    }

    /// The packed bytes, for a state snapshot.
    pub(crate) fn as_bytes(&self) -> Option<&[u8]> {
        self.0.as_deref()
    }

    /// A blob from snapshot bytes, or `None` when they are not a well-formed
    /// blob (checked here so that reading it later never goes out of bounds).
    pub(crate) fn from_bytes(bytes: &[u8]) -> Option<Blob> {
        let mut rest = bytes;
        while !rest.is_empty() {
            let [_, tag, tail @ ..] = rest else {
                return None;
            };
            rest = match *tag {
                TAG_STR | TAG_TRACE_TEXT => {
                    let (len, head) = match tail {
                        [b, ..] if *b < 0x80 => (*b as usize, 1),
                        [b0, b1, ..] => ((*b0 & 0x7f) as usize | (*b1 as usize) << 7, 2),
                        _ => return None,
                    };
                    let payload = tail.get(head..head + len)?;
                    std::str::from_utf8(payload).ok()?;
                    &tail[head + len..]
                }
                TAG_NUM => tail.get(8..)?,
                TAG_TRUE | TAG_FALSE => tail,
                _ => return None,
            };
        }
        Some(Blob((!bytes.is_empty()).then(|| Box::from(bytes))))
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        self.0.as_ref().map_or(0, |b| b.len())
    }
}

fn push(out: &mut Vec<u8>, head: u8, tag: u8, payload: &[u8]) {
    out.push(head);
    out.push(tag);
    match tag {
        TAG_STR | TAG_TRACE_TEXT => {
            // Varint length: one byte below 128, two up to MAX_STR.
            let len = payload.len();
            if len < 0x80 {
                out.push(len as u8);
            } else {
                out.push(0x80 | (len & 0x7f) as u8);
                out.push((len >> 7) as u8);
            }
            out.extend_from_slice(payload);
        }
        _ => out.extend_from_slice(payload),
    }
}

struct Entry<'a> {
    slot: AttrSlot,
    flags: u8,
    tag: u8,
    payload: &'a [u8],
}

struct Entries<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Entries<'a> {
    type Item = Entry<'a>;

    fn next(&mut self) -> Option<Entry<'a>> {
        let [head, tag, rest @ ..] = self.rest else {
            return None;
        };
        let (payload, rest) = match *tag {
            TAG_STR | TAG_TRACE_TEXT => {
                let (len, head) = if rest[0] < 0x80 {
                    (rest[0] as usize, 1)
                } else {
                    ((rest[0] & 0x7f) as usize | (rest[1] as usize) << 7, 2)
                };
                (&rest[head..head + len], &rest[head + len..])
            }
            TAG_NUM => (&rest[..8], &rest[8..]),
            _ => (&rest[..0], rest),
        };
        self.rest = rest;
        Some(Entry {
            slot: (head & !FROM_START) as AttrSlot,
            flags: head & FROM_START,
            tag: *tag,
            payload,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_value_wins_unless_start_overrides() {
        let mut b = Blob::default();
        b.set_trace_text("order-17");
        b.merge(&[(0, AttrValue::Num(250.0)), (1, AttrValue::Str("EUR"))], false);
        b.merge(&[(1, AttrValue::Str("USD")), (2, AttrValue::Bool(true))], false);
        assert_eq!(b.attr(1), Some(AttrValue::Str("EUR")));
        assert_eq!(b.attr(2), Some(AttrValue::Bool(true)));
        b.merge(&[(0, AttrValue::Num(99.5))], true);
        assert_eq!(b.attr(0), Some(AttrValue::Num(99.5)));
        b.merge(&[(0, AttrValue::Num(1.0))], true);
        assert_eq!(b.attr(0), Some(AttrValue::Num(99.5)), "the first start value stays");
        assert_eq!(b.trace_text(), Some("order-17"));
        assert_eq!(b.attr(3), None);
    }

    #[test]
    fn long_strings_round_trip_and_are_capped() {
        let mut b = Blob::default();
        let long = "x".repeat(300);
        let huge = "y".repeat(40_000);
        b.merge(
            &[
                (0, AttrValue::Str(&long)),
                (1, AttrValue::Str(&huge)),
                (2, AttrValue::Str("é")),
            ],
            false,
        );
        assert_eq!(b.attr(0), Some(AttrValue::Str(long.as_str())));
        assert_eq!(b.attr(1), Some(AttrValue::Str(&huge[..MAX_STR])));
        assert_eq!(b.attr(2), Some(AttrValue::Str("é")));
    }
}
