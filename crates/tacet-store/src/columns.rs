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

/// A vector of a column's values that remembers how long it was when last
/// taken, so that the next file's rows reserve that in one step.
#[derive(Debug)]
struct Grown<T> {
    items: Vec<T>,
    taken: usize,
}

impl<T> Default for Grown<T> {
    fn default() -> Self {
        Self {
            items: Vec::new(),
            taken: 0,
        }
    }
}

impl<T> Grown<T> {
    #[inline]
    fn push(&mut self, item: T) {
        self.items.push(item);
    }

    fn len(&self) -> usize {
        self.items.len()
    }

    /// The items, leaving none behind.
    fn take(&mut self) -> Vec<T> {
        self.taken = self.items.len();
        std::mem::take(&mut self.items)
    }

    /// Room for as many items as were last taken.
    fn reserve_taken(&mut self) {
        self.items.reserve(self.taken.saturating_sub(self.items.len()));
    }
}

impl<T: Copy> Grown<T> {
    #[inline]
    fn extend_from_slice(&mut self, items: &[T]) {
        self.items.extend_from_slice(items);
    }
}

/// Which rows of a column hold a value.
#[derive(Debug, Default)]
struct Validity {
    valid: Grown<bool>,
    nulls: usize,
}

impl Validity {
    #[inline]
    fn push(&mut self, valid: bool) {
        self.valid.push(valid);
        self.nulls += usize::from(!valid);
    }

    fn reserve_taken(&mut self) {
        self.valid.reserve_taken();
    }

    /// The rows' validity for Arrow (none at all when every row has a
    /// value, as a builder leaves it), and empty again.
    fn finish(&mut self) -> Option<NullBuffer> {
        let valid = self.valid.take();
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

/// Offsets into a column's bytes or a list's values: starts with 0, one
/// more per value.
#[derive(Debug)]
struct Offsets(Grown<i32>);

impl Default for Offsets {
    fn default() -> Self {
        let mut offsets = Grown::default();
        offsets.push(0);
        Self(offsets)
    }
}

impl Offsets {
    #[inline]
    fn push(&mut self, len: usize) {
        self.0.push(offset(len));
    }

    /// Values so far.
    fn values(&self) -> usize {
        self.0.len() - 1
    }

    fn reserve_taken(&mut self) {
        self.0.reserve_taken();
    }

    /// The offsets for Arrow, and a lone 0 again.
    fn finish(&mut self) -> OffsetBuffer<i32> {
        let offsets = self.0.take();
        self.0.push(0);
        OffsetBuffer::new(ScalarBuffer::from(offsets))
    }
}

/// The offsets and bytes of `Utf8` values.
#[derive(Debug, Default)]
struct Utf8Values {
    offsets: Offsets,
    bytes: Grown<u8>,
}

impl Utf8Values {
    #[inline]
    fn push(&mut self, value: &str) {
        self.bytes.extend_from_slice(value.as_bytes());
        self.offsets.push(self.bytes.len());
    }

    /// An empty value (the slot of a null).
    #[inline]
    fn push_empty(&mut self) {
        self.offsets.push(self.bytes.len());
    }

    fn len(&self) -> usize {
        self.offsets.values()
    }

    fn reserve_taken(&mut self) {
        self.offsets.reserve_taken();
        self.bytes.reserve_taken();
    }

    /// Values and bytes there is room for.
    #[cfg(test)]
    fn reserved(&self) -> (usize, usize) {
        (
            self.offsets.0.items.capacity().saturating_sub(1),
            self.bytes.items.capacity(),
        )
    }

    /// Bytes of the values so far.
    #[inline]
    fn bytes(&self) -> usize {
        self.bytes.len()
    }

    /// The values with `nulls` as an array, and empty again.
    fn finish(&mut self, nulls: Option<NullBuffer>) -> StringArray {
        let offsets = self.offsets.finish();
        let bytes = Buffer::from_vec(self.bytes.take());
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

    /// Room for as many rows and bytes as the last file had.
    pub(crate) fn reserve_taken(&mut self) {
        self.values.reserve_taken();
        self.validity.reserve_taken();
    }

    /// Rows and bytes there is room for.
    #[cfg(test)]
    pub(crate) fn reserved(&self) -> (usize, usize) {
        self.values.reserved()
    }

    /// The column, and empty again.
    pub(crate) fn finish(&mut self) -> StringArray {
        let nulls = self.validity.finish();
        self.values.finish(nulls)
    }
}

/// A `List<Utf8>` column whose lists and items are never null.
#[derive(Debug, Default)]
pub(crate) struct StringLists {
    offsets: Offsets,
    items: Utf8Values,
}

impl StringLists {
    #[inline]
    pub(crate) fn push(&mut self, items: &[&str]) {
        for item in items {
            self.items.push(item);
        }
        self.offsets.push(self.items.len());
    }

    /// Bytes of the items so far.
    #[inline]
    pub(crate) fn bytes(&self) -> usize {
        self.items.bytes()
    }

    /// Room for as many lists, items and bytes as the last file had.
    pub(crate) fn reserve_taken(&mut self) {
        self.offsets.reserve_taken();
        self.items.reserve_taken();
    }

    /// Items and their bytes there is room for.
    #[cfg(test)]
    pub(crate) fn reserved(&self) -> (usize, usize) {
        self.items.reserved()
    }

    /// The column with `item` as its items' field, and empty again.
    pub(crate) fn finish(&mut self, item: FieldRef) -> Result<ListArray, arrow::error::ArrowError> {
        let offsets = self.offsets.finish();
        let items: ArrayRef = Arc::new(self.items.finish(None));
        ListArray::try_new(item, offsets, items, None)
    }
}

/// A column of a primitive type (integers, floats, timestamps).
#[derive(Debug)]
pub(crate) struct Primitives<T: ArrowPrimitiveType> {
    values: Grown<T::Native>,
    validity: Validity,
}

impl<T: ArrowPrimitiveType> Default for Primitives<T> {
    fn default() -> Self {
        Self {
            values: Grown::default(),
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

    /// Room for as many rows as the last file had.
    pub(crate) fn reserve_taken(&mut self) {
        self.values.reserve_taken();
        self.validity.reserve_taken();
    }

    /// The column, and empty again.
    pub(crate) fn finish(&mut self) -> PrimitiveArray<T> {
        PrimitiveArray::new(ScalarBuffer::from(self.values.take()), self.validity.finish())
    }
}

/// A `Boolean` column.
#[derive(Debug, Default)]
pub(crate) struct Bools {
    values: Grown<bool>,
    validity: Validity,
}

impl Bools {
    #[inline]
    pub(crate) fn push_option(&mut self, value: Option<bool>) {
        self.values.push(value.unwrap_or_default());
        self.validity.push(value.is_some());
    }

    /// Room for as many rows as the last file had.
    pub(crate) fn reserve_taken(&mut self) {
        self.values.reserve_taken();
        self.validity.reserve_taken();
    }

    /// The column, and empty again.
    pub(crate) fn finish(&mut self) -> BooleanArray {
        BooleanArray::new(BooleanBuffer::from(self.values.take()), self.validity.finish())
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

    /// A column's next file reserves, at its first row, the room its last
    /// file took, and only then (not while the last file is written).
    #[test]
    fn a_column_reserves_what_its_last_file_took() {
        let mut column = Strings::default();
        for value in ["a", "bc", "def"] {
            column.push(value);
        }
        column.finish();
        assert_eq!(
            column.values.bytes.items.capacity(),
            0,
            "nothing held while the file is written"
        );
        column.reserve_taken();
        assert!(column.values.bytes.items.capacity() >= 6);
        assert!(column.values.offsets.0.items.capacity() >= 4);
        assert!(column.validity.valid.items.capacity() >= 3);
        assert_eq!(column.finish().len(), 0, "room, not rows");
    }

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
                // As the writer does at a file's first row.
                strings.reserve_taken();
                lists.reserve_taken();
                times.reserve_taken();
                floats.reserve_taken();
                bools.reserve_taken();
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
