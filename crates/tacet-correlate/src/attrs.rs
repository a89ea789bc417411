//! Journey attributes and a non-canonical trace id, packed into one small
//! byte blob per journey: `[slot u8 | flags][tag][payload]…`, strings as a
//! varint length and their bytes. A transfer's five attributes take 45 bytes
//! here (one 48-byte allocation) instead of ~250 as boxed values.

use tacet_core::{AttrCow, AttrSlot, AttrValue};

const TAG_STR: u8 = 0;
const TAG_NUM: u8 = 1;
const TAG_TRUE: u8 = 2;
const TAG_FALSE: u8 = 3;
/// The trace id text of a non-canonical trace, up to `MAX_STR` bytes.
const TAG_TRACE_TEXT: u8 = 4;
/// A longer trace id text: an 8-byte length, then its bytes. Trace ids are
/// "any string" (SPEC §1), as long as a line; attribute strings are capped
/// instead. A tag of its own keeps the blobs of older snapshots readable.
const TAG_LONG_TRACE_TEXT: u8 = 5;
/// Set on values that came from the journey's start event, which wins.
const FROM_START: u8 = 0x80;
/// Longest string kept (a two-byte varint length): 32 KiB.
const MAX_STR: usize = (1 << 15) - 1;

fn is_trace_text(tag: u8) -> bool {
    tag == TAG_TRACE_TEXT || tag == TAG_LONG_TRACE_TEXT
}

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

    fn set_bytes(&mut self, bytes: &[u8]) {
        // A fresh exact-size allocation: shrinking in place would keep the larger block.
        self.0 = (!bytes.is_empty()).then(|| Box::from(bytes));
    }

    /// The trace id text, always the first entry when there is one.
    pub(crate) fn trace_text(&self) -> Option<&str> {
        self.entries()
            .next()
            .filter(|e| is_trace_text(e.tag))
            .map(|e| std::str::from_utf8(e.payload).expect("stored from &str"))
    }

    #[cfg(test)]
    pub(crate) fn attr(&self, slot: AttrSlot) -> Option<AttrValue<'_>> {
        self.entries()
            .find(|e| !is_trace_text(e.tag) && e.slot == slot)
            .map(|e| match e.tag {
                TAG_STR => AttrValue::Str(std::str::from_utf8(e.payload).expect("stored from &str")),
                TAG_NUM => AttrValue::Num(f64::from_le_bytes(e.payload.try_into().expect("8 bytes"))),
                TAG_TRUE => AttrValue::Bool(true),
                _ => AttrValue::Bool(false),
            })
    }

    /// Sets the trace id text (once, before any attribute).
    pub(crate) fn set_trace_text(&mut self, text: &str) {
        let mut out = Vec::new();
        let tag = if text.len() <= MAX_STR {
            TAG_TRACE_TEXT
        } else {
            TAG_LONG_TRACE_TEXT
        };
        push(&mut out, 0, tag, text.as_bytes());
        for e in self.entries().filter(|e| !is_trace_text(e.tag)) {
            push(&mut out, e.slot as u8 | e.flags, e.tag, e.payload);
        }
        self.set_bytes(&out);
    }

    /// Merges an event's attributes: a slot keeps its first value unless the
    /// new one comes from the start event and the old one did not. A changed
    /// blob is built in `scratch` (the caller's, reused: a first event's
    /// merge allocated a buffer of its own and then the blob) and copied
    /// into an exact-size allocation.
    pub(crate) fn merge(&mut self, attrs: &[(AttrSlot, AttrCow<'_>)], from_start: bool, scratch: &mut Vec<u8>) {
        // One pass over the blob: which slots are present, which from the start.
        let (mut present, mut from_start_mask) = (0u128, 0u128);
        for e in self.entries().filter(|e| !is_trace_text(e.tag)) {
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
        let out = scratch;
        out.clear();
        for e in self.entries() {
            if is_trace_text(e.tag) || replaced & (1 << e.slot) == 0 {
                push(out, e.slot as u8 | e.flags, e.tag, e.payload);
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
            match value.value() {
                AttrValue::Str(s) => {
                    let mut end = s.len().min(MAX_STR);
                    while !s.is_char_boundary(end) {
                        end -= 1;
                    }
                    push(out, head, TAG_STR, &s.as_bytes()[..end]);
                }
                AttrValue::Num(n) => push(out, head, TAG_NUM, &n.to_le_bytes()),
                AttrValue::Bool(true) => push(out, head, TAG_TRUE, &[]),
                AttrValue::Bool(false) => push(out, head, TAG_FALSE, &[]),
            }
        }
        self.set_bytes(out);
    }

    /// Every attribute value by slot, in one pass: `f(slot, value)`.
    pub(crate) fn for_each_attr<'s>(&'s self, mut f: impl FnMut(AttrSlot, AttrValue<'s>)) {
        for e in self.entries() {
            let value = match e.tag {
                TAG_TRACE_TEXT | TAG_LONG_TRACE_TEXT => continue,
                // SAFETY: string payloads are only ever written from a `&str`
                // cut at a char boundary (`merge`), or read from a snapshot
                // by `from_bytes`, which checks them: checking again for
                // every outcome row was a visible share of writing it.
                TAG_STR => AttrValue::Str(unsafe { std::str::from_utf8_unchecked(e.payload) }),
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
    /// blob (checked here so that reading it later never goes out of bounds,
    /// and a trace id text is only ever first).
    pub(crate) fn from_bytes(bytes: &[u8]) -> Option<Blob> {
        let mut rest = bytes;
        let mut first = true;
        while !rest.is_empty() {
            let [_, tag, tail @ ..] = rest else {
                return None;
            };
            if is_trace_text(*tag) && !first {
                return None;
            }
            first = false;
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
                TAG_LONG_TRACE_TEXT => {
                    let len = usize::try_from(u64::from_le_bytes(*tail.first_chunk::<8>()?)).ok()?;
                    let payload = tail.get(8..)?.get(..len)?;
                    std::str::from_utf8(payload).ok()?;
                    &tail[8 + len..]
                }
                TAG_NUM => tail.get(8..)?,
                TAG_TRUE | TAG_FALSE => tail,
                _ => return None,
            };
        }
        let mut blob = Blob::default();
        blob.set_bytes(bytes);
        Some(blob)
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
            debug_assert!(len <= MAX_STR, "longer strings are cut or tagged long");
            if len < 0x80 {
                out.push(len as u8);
            } else {
                out.push(0x80 | (len & 0x7f) as u8);
                out.push((len >> 7) as u8);
            }
            out.extend_from_slice(payload);
        }
        TAG_LONG_TRACE_TEXT => {
            out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
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
            TAG_LONG_TRACE_TEXT => {
                let (len, rest) = rest.split_at(8);
                // Written from a `usize` length (`push`) or checked to fit one (`from_bytes`).
                let len = u64::from_le_bytes(len.try_into().expect("8 bytes")) as usize;
                rest.split_at(len)
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
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    enum Value {
        Str(String),
        Num(f64),
        Bool(bool),
    }

    impl Value {
        fn as_attr(&self) -> AttrValue<'_> {
            match self {
                Value::Str(s) => AttrValue::Str(s),
                Value::Num(n) => AttrValue::Num(*n),
                Value::Bool(b) => AttrValue::Bool(*b),
            }
        }

        /// As an event carries it: strings borrowed from the record, or of
        /// their own (escaped text), by turns.
        fn as_cow(&self) -> AttrCow<'_> {
            match self {
                Value::Str(s) if s.len() % 2 == 0 => AttrCow::Str(s.as_str().into()),
                Value::Str(s) => AttrCow::Str(s.clone().into()),
                Value::Num(n) => AttrCow::Num(*n),
                Value::Bool(b) => AttrCow::Bool(*b),
            }
        }
    }

    fn value() -> impl Strategy<Value = Value> {
        prop_oneof![
            "[a-z]{0,12}".prop_map(Value::Str),
            (-1e6f64..1e6).prop_map(Value::Num),
            any::<bool>().prop_map(Value::Bool),
        ]
    }

    proptest! {
        /// The blob against a map of slot → (value, from start), through
        /// merges, a trace text set at any point, and snapshot round trips.
        #[test]
        fn merges_as_the_first_value_rule_says(
            merges in prop::collection::vec(
                (prop::collection::vec((0u16..40, value()), 0..6), any::<bool>()),
                0..12,
            ),
            text_at in 0usize..13,
            // Trace ids of every length class: one- and two-byte lengths
            // and the long tag past 32 KiB, multi-byte characters included.
            text in prop::sample::select(vec![8usize, 127, 128, 32_767, 32_768, 40_001])
                .prop_map(|n| "é".repeat(n / 2) + &"x".repeat(n % 2)),
        ) {
            let mut blob = Blob::default();
            // One scratch for every merge, as a shard keeps it: what an
            // earlier merge left there must not reach a later blob.
            let mut scratch = Vec::new();
            let mut model: BTreeMap<AttrSlot, (Value, bool)> = BTreeMap::new();
            for (i, (attrs, from_start)) in merges.iter().enumerate() {
                if i == text_at {
                    blob.set_trace_text(&text);
                }
                let values: Vec<(AttrSlot, AttrCow<'_>)> = attrs.iter().map(|(s, v)| (*s, v.as_cow())).collect();
                blob.merge(&values, *from_start, &mut scratch);
                let mut seen = Vec::new();
                for (slot, v) in attrs {
                    if seen.contains(slot) {
                        continue; // a slot listed twice keeps its first value
                    }
                    seen.push(*slot);
                    let replace = match model.get(slot) {
                        None => true,
                        Some((_, old_from_start)) => *from_start && !old_from_start,
                    };
                    if replace {
                        model.insert(*slot, (v.clone(), *from_start));
                    }
                }
                // Through a snapshot and back, half of the time.
                if i % 2 == 1 {
                    blob = Blob::from_bytes(blob.as_bytes().unwrap_or(&[])).expect("well formed");
                }
                for slot in 0u16..40 {
                    let expected = model.get(&slot).map(|(v, _)| v.as_attr());
                    prop_assert_eq!(blob.attr(slot), expected, "slot {}", slot);
                }
                prop_assert_eq!(blob.trace_text(), (i >= text_at).then_some(text.as_str()));
            }
        }
    }

    #[test]
    fn first_value_wins_unless_start_overrides() {
        let mut b = Blob::default();
        b.set_trace_text("order-17");
        b.merge(
            &[(0, AttrCow::Num(250.0)), (1, AttrCow::Str("EUR".into()))],
            false,
            &mut Vec::new(),
        );
        b.merge(
            &[(1, AttrCow::Str("USD".into())), (2, AttrCow::Bool(true))],
            false,
            &mut Vec::new(),
        );
        assert_eq!(b.attr(1), Some(AttrValue::Str("EUR")));
        assert_eq!(b.attr(2), Some(AttrValue::Bool(true)));
        b.merge(&[(0, AttrCow::Num(99.5))], true, &mut Vec::new());
        assert_eq!(b.attr(0), Some(AttrValue::Num(99.5)));
        b.merge(&[(0, AttrCow::Num(1.0))], true, &mut Vec::new());
        assert_eq!(b.attr(0), Some(AttrValue::Num(99.5)), "the first start value stays");
        assert_eq!(b.trace_text(), Some("order-17"));
        assert_eq!(b.attr(3), None);
    }

    #[test]
    fn a_trace_text_after_an_attribute_is_not_a_well_formed_blob() {
        let mut bytes = Vec::new();
        push(&mut bytes, 0, TAG_NUM, &1.0f64.to_le_bytes());
        push(&mut bytes, 0, TAG_TRACE_TEXT, b"order-17");
        assert!(Blob::from_bytes(&bytes).is_none());
        let mut b = Blob::default();
        b.merge(&[(0, AttrCow::Num(1.0))], false, &mut Vec::new());
        b.set_trace_text("order-17");
        let restored = Blob::from_bytes(b.as_bytes().unwrap()).expect("written first");
        assert_eq!(restored.trace_text(), Some("order-17"));
    }

    /// `for_each_attr` reads string payloads without checking their UTF-8
    /// again: a snapshot's blob must be refused here if one is not UTF-8.
    #[test]
    fn a_string_that_is_not_utf8_is_not_a_well_formed_blob() {
        for tag in [TAG_STR, TAG_TRACE_TEXT, TAG_LONG_TRACE_TEXT] {
            let mut bytes = Vec::new();
            push(&mut bytes, 0, tag, &[b'o', 0xff, b'k']);
            assert!(Blob::from_bytes(&bytes).is_none(), "tag {tag}");
        }
        let mut bytes = Vec::new();
        push(&mut bytes, 0, TAG_STR, "ok é".as_bytes());
        let blob = Blob::from_bytes(&bytes).expect("UTF-8");
        let mut values = Vec::new();
        blob.for_each_attr(|slot, v| values.push((slot, v)));
        assert_eq!(values, [(0, AttrValue::Str("ok é"))]);
    }

    #[test]
    fn long_strings_round_trip_and_are_capped() {
        let mut b = Blob::default();
        let long = "x".repeat(300);
        let huge = "y".repeat(40_000);
        b.merge(
            &[
                (0, AttrCow::Str(long.as_str().into())),
                (1, AttrCow::Str(huge.as_str().into())),
                (2, AttrCow::Str("é".into())),
            ],
            false,
            &mut Vec::new(),
        );
        assert_eq!(b.attr(0), Some(AttrValue::Str(long.as_str())));
        assert_eq!(b.attr(1), Some(AttrValue::Str(&huge[..MAX_STR])));
        assert_eq!(b.attr(2), Some(AttrValue::Str("é")));
    }

    /// A long trace id's entry is refused when cut short anywhere, when its
    /// length points past the blob, and when it is not first.
    #[test]
    fn a_damaged_long_trace_text_is_not_a_well_formed_blob() {
        let text = "t".repeat(MAX_STR + 1);
        let mut b = Blob::default();
        b.set_trace_text(&text);
        b.merge(&[(0, AttrCow::Num(1.0))], false, &mut Vec::new());
        let bytes = b.as_bytes().unwrap().to_vec();
        assert_eq!(bytes[1], TAG_LONG_TRACE_TEXT);
        assert_eq!(Blob::from_bytes(&bytes).unwrap().trace_text(), Some(text.as_str()));
        for cut in [3, 10, 11, 100, bytes.len() - 11] {
            assert!(Blob::from_bytes(&bytes[..cut]).is_none(), "cut at {cut}");
        }
        let mut huge = bytes.clone();
        huge[2..10].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(Blob::from_bytes(&huge).is_none());
        let mut second = Vec::new();
        push(&mut second, 0, TAG_NUM, &1.0f64.to_le_bytes());
        push(&mut second, 0, TAG_LONG_TRACE_TEXT, text.as_bytes());
        assert!(Blob::from_bytes(&second).is_none());
    }
}
