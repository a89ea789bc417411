//! Outcome columns filled row by row in plain vectors, and turned into
//! Arrow arrays once per file.
//!
//! Arrow's builders cost ~90 instructions for each value appended (an out of
//! line call, a null bitmap kept bit by bit, a list's child builder behind
//! it), ~1,800 per outcome row: a tenth of what a correlator thread spends
//! per record. Here a value is a push onto a `Vec`, and the validity of a
//! nullable column is one `bool` per row until the file is written.

use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, ListArray, PrimitiveArray, StringArray};
use arrow::buffer::{BooleanBuffer, Buffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow::datatypes::{ArrowPrimitiveType, FieldRef};

/// Which rows of a column hold a value.
#[derive(Debug, Default)]
struct Validity {
    valid: Vec<bool>,
    nulls: usize,
}

impl Validity {
    #[inline]
    fn push(&mut self, valid: bool) {
        self.valid.push(valid);
        self.nulls += usize::from(!valid);
    }

    /// The rows' validity for Arrow (none at all when every row has a
    /// value, as a builder leaves it), and empty again.
    fn finish(&mut self) -> Option<NullBuffer> {
        let valid = std::mem::take(&mut self.valid);
        (std::mem::take(&mut self.nulls) > 0).then(|| NullBuffer::from(valid))
    }
}

/// An offset into a column's bytes or a list's values.
#[inline]
fn offset(len: usize) -> i32 {
    // The writer keeps every column below 2 GiB: it writes a file once its
    // rows' strings pass `FLUSH_STRING_BYTES`, and no row adds more than a
    // line or the service names a shard keeps (see writer.rs).
    i32::try_from(len).expect("an outcome file's strings fit in 2 GiB")
}

/// The offsets and bytes of `Utf8` values.
#[derive(Debug)]
struct Utf8Values {
    /// Starts with 0; one more per value.
    offsets: Vec<i32>,
    bytes: Vec<u8>,
}

impl Default for Utf8Values {
    fn default() -> Self {
        Self {
            offsets: vec![0],
            bytes: Vec::new(),
        }
    }
}

impl Utf8Values {
    #[inline]
    fn push(&mut self, value: &str) {
        self.bytes.extend_from_slice(value.as_bytes());
        self.offsets.push(offset(self.bytes.len()));
    }

    /// An empty value (the slot of a null).
    #[inline]
    fn push_empty(&mut self) {
        self.offsets.push(offset(self.bytes.len()));
    }

    fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    /// Bytes of the values so far.
    #[inline]
    fn bytes(&self) -> usize {
        self.bytes.len()
    }

    /// The values with `nulls` as an array, and empty again.
    fn finish(&mut self, nulls: Option<NullBuffer>) -> StringArray {
        let offsets = OffsetBuffer::new(ScalarBuffer::from(std::mem::replace(&mut self.offsets, vec![0])));
        let bytes = Buffer::from_vec(std::mem::take(&mut self.bytes));
        // SAFETY: every value's bytes were appended whole from a `&str`, so
        // the bytes are UTF-8 and every offset (checked to start at 0 and
        // never decrease by `OffsetBuffer::new`) is a char boundary; the
        // callers pass one validity entry per value. (The checked
        // constructor would validate every byte again.)
        unsafe { StringArray::new_unchecked(offsets, bytes, nulls) }
    }
}

/// A `Utf8` column.
#[derive(Debug, Default)]
pub(crate) struct Strings {
    values: Utf8Values,
    validity: Validity,
}

impl Strings {
    #[inline]
    pub(crate) fn push(&mut self, value: &str) {
        self.values.push(value);
        self.validity.push(true);
    }

    #[inline]
    pub(crate) fn push_option(&mut self, value: Option<&str>) {
        match value {
            Some(value) => self.push(value),
            None => {
                self.values.push_empty();
                self.validity.push(false);
            }
        }
    }

    /// Bytes of the strings so far.
    #[inline]
    pub(crate) fn bytes(&self) -> usize {
        self.values.bytes()
    }

    /// The column, and empty again.
    pub(crate) fn finish(&mut self) -> StringArray {
        let nulls = self.validity.finish();
        self.values.finish(nulls)
    }
}

/// A `List<Utf8>` column whose lists and items are never null.
#[derive(Debug)]
pub(crate) struct StringLists {
    offsets: Vec<i32>,
    items: Utf8Values,
}

impl Default for StringLists {
    fn default() -> Self {
        Self {
            offsets: vec![0],
            items: Utf8Values::default(),
        }
    }
}

impl StringLists {
    #[inline]
    pub(crate) fn push(&mut self, items: &[&str]) {
        for item in items {
            self.items.push(item);
        }
        self.offsets.push(offset(self.items.len()));
    }

    /// Bytes of the items so far.
    #[inline]
    pub(crate) fn bytes(&self) -> usize {
        self.items.bytes()
    }

    /// The column with `item` as its items' field, and empty again.
    pub(crate) fn finish(&mut self, item: FieldRef) -> Result<ListArray, arrow::error::ArrowError> {
        let offsets = OffsetBuffer::new(ScalarBuffer::from(std::mem::replace(&mut self.offsets, vec![0])));
        let items: ArrayRef = Arc::new(self.items.finish(None));
        ListArray::try_new(item, offsets, items, None)
    }
}

/// A column of a primitive type (integers, floats, timestamps).
#[derive(Debug)]
pub(crate) struct Primitives<T: ArrowPrimitiveType> {
    values: Vec<T::Native>,
    validity: Validity,
}

impl<T: ArrowPrimitiveType> Default for Primitives<T> {
    fn default() -> Self {
        Self {
            values: Vec::new(),
            validity: Validity::default(),
        }
    }
}

impl<T: ArrowPrimitiveType> Primitives<T> {
    #[inline]
    pub(crate) fn push(&mut self, value: T::Native) {
        self.values.push(value);
        self.validity.push(true);
    }

    #[inline]
    pub(crate) fn push_option(&mut self, value: Option<T::Native>) {
        self.values.push(value.unwrap_or_default());
        self.validity.push(value.is_some());
    }

    /// The column, and empty again.
    pub(crate) fn finish(&mut self) -> PrimitiveArray<T> {
        PrimitiveArray::new(
            ScalarBuffer::from(std::mem::take(&mut self.values)),
            self.validity.finish(),
        )
    }
}

/// A `Boolean` column.
#[derive(Debug, Default)]
pub(crate) struct Bools {
    values: Vec<bool>,
    validity: Validity,
}

impl Bools {
    #[inline]
    pub(crate) fn push_option(&mut self, value: Option<bool>) {
        self.values.push(value.unwrap_or_default());
        self.validity.push(value.is_some());
    }

    /// The column, and empty again.
    pub(crate) fn finish(&mut self) -> BooleanArray {
        BooleanArray::new(
            BooleanBuffer::from(std::mem::take(&mut self.values)),
            self.validity.finish(),
        )
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{
        Array, BooleanBuilder, Float64Builder, ListBuilder, StringBuilder, TimestampMillisecondBuilder,
    };
    use arrow::datatypes::{DataType, Field, Float64Type, TimestampMillisecondType};
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Each column holds what arrow's own builder holds after the same
        /// appends: equal arrays, nulls and their absence included, and
        /// again after a first batch was taken out.
        #[test]
        fn columns_equal_what_arrow_builders_build(
            batches in prop::collection::vec(prop::collection::vec((
                proptest::option::of("[a-z\u{e9}\u{1f600}]{0,6}"),
                prop::collection::vec("[a-z]{0,4}", 0..4),
                proptest::option::of(any::<i64>()),
                proptest::option::of(any::<f64>()),
                proptest::option::of(any::<bool>()),
            ), 0..12), 1..3),
        ) {
            let item = Arc::new(Field::new("item", DataType::Utf8, true));
            let (mut strings, mut lists) = (Strings::default(), StringLists::default());
            let mut times = Primitives::<TimestampMillisecondType>::default();
            let (mut floats, mut bools) = (Primitives::<Float64Type>::default(), Bools::default());
            for rows in batches {
                let mut string_builder = StringBuilder::new();
                let mut list_builder = ListBuilder::new(StringBuilder::new());
                let mut time_builder = TimestampMillisecondBuilder::new();
                let mut float_builder = Float64Builder::new();
                let mut bool_builder = BooleanBuilder::new();
                for (s, list, t, f, b) in &rows {
                    strings.push_option(s.as_deref());
                    string_builder.append_option(s.as_deref());
                    let list: Vec<&str> = list.iter().map(String::as_str).collect();
                    lists.push(&list);
                    for x in &list {
                        list_builder.values().append_value(x);
                    }
                    list_builder.append(true);
                    times.push_option(*t);
                    time_builder.append_option(*t);
                    match f {
                        Some(f) => floats.push(*f),
                        None => floats.push_option(None),
                    }
                    float_builder.append_option(*f);
                    bools.push_option(*b);
                    bool_builder.append_option(*b);
                }
                let string_column = strings.finish();
                prop_assert_eq!(&string_column, &string_builder.finish());
                prop_assert_eq!(string_column.nulls().is_none(), rows.iter().all(|r| r.0.is_some()));
                prop_assert_eq!(lists.finish(item.clone()).unwrap(), list_builder.finish());
                prop_assert_eq!(times.finish(), time_builder.finish());
                prop_assert_eq!(floats.finish(), float_builder.finish());
                prop_assert_eq!(bools.finish(), bool_builder.finish());
            }
        }
    }
}
