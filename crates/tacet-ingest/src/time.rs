//! RFC 3339 timestamps to epoch milliseconds.
//!
//! Every event carries one, so parsing it is on the hot path. Producers
//! almost always write the one shape `YYYY-MM-DDTHH:MM:SS[.fff…](Z|±HH:MM)`;
//! that shape is parsed here by position. Anything else (a lowercase `t`, a
//! leap second, an out-of-range field, trailing text) goes to chrono, which
//! stays the authority: the property test below holds the two equal.

use std::cell::Cell;

use tacet_core::EventTime;

/// RFC 3339 to epoch milliseconds, `None` when it is not a valid timestamp.
pub fn parse_rfc3339(s: &str) -> Option<EventTime> {
    match fast(s.as_bytes()) {
        Some(ms) => Some(ms),
        None => chrono::DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|t| t.timestamp_millis()),
    }
}

thread_local! {
    /// The `YYYY-MM-DDTHH:MM` last read on this thread, as 16 bytes, and
    /// its minute in epoch milliseconds before the offset is applied.
    /// Events come in time order, near enough, so most share the minute of
    /// the one before and only `SS.fff` and the offset are left to read.
    /// Starts as sixteen 0xff bytes, which no `&str` holds.
    static LAST_MINUTE: Cell<(u128, i64)> = const { Cell::new((u128::MAX, 0)) };
}

/// The common shape, or `None` to let chrono decide.
fn fast(b: &[u8]) -> Option<EventTime> {
    if b.len() < 20 || b[16] != b':' {
        return None;
    }
    let prefix: &[u8; 16] = b[..16].try_into().expect("sixteen bytes");
    let key = u128::from_le_bytes(*prefix);
    let minute_ms = match LAST_MINUTE.get() {
        (last, ms) if last == key => ms,
        _ => {
            let ms = minute_millis(prefix)?;
            LAST_MINUTE.set((key, ms));
            ms
        }
    };
    let second = digits(&b[17..19])?;
    // Second 60 (a leap second) is chrono's to interpret.
    if second > 59 {
        return None;
    }
    let mut rest = &b[19..];
    let mut millis = 0i64;
    if let [b'.', tail @ ..] = rest {
        let n = tail.iter().take_while(|c| c.is_ascii_digit()).count();
        // chrono reads at most nanoseconds; longer fractions are its call.
        if n == 0 || n > 9 {
            return None;
        }
        // Milliseconds truncate the fraction, as chrono's timestamp_millis does.
        for (i, &c) in tail[..n.min(3)].iter().enumerate() {
            millis += i64::from(c - b'0') * [100, 10, 1][i];
        }
        rest = &tail[n..];
    }
    let offset_minutes = match rest {
        [b'Z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let hours = digits(&[*h1, *h2])?;
            let minutes = digits(&[*m1, *m2])?;
            if hours > 23 || minutes > 59 {
                return None;
            }
            let total = hours * 60 + minutes;
            if *sign == b'-' { -total } else { total }
        }
        _ => return None,
    };
    Some(minute_ms + (second - offset_minutes * 60) * 1_000 + millis)
}

/// `YYYY-MM-DDTHH:MM` as the epoch milliseconds of that minute (as if it
/// were UTC), or `None` unless it is a real date, hour and minute.
fn minute_millis(prefix: &[u8; 16]) -> Option<i64> {
    let [year, month, day, hour, minute] = date_hour_minute(prefix)?;
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || minute > 59 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    Some((days * 86_400 + hour * 3_600 + minute * 60) * 1_000)
}

/// `YYYY-MM-DDTHH:MM` as year, month, day, hour and minute, or `None` if a
/// separator is not in its place or a digit is not a digit. Two 8-byte
/// words checked at once instead of 12 digits one by one: every event's
/// time passes through here.
#[inline]
fn date_hour_minute(b: &[u8; 16]) -> Option<[i64; 5]> {
    const ZEROS: u64 = 0x3030_3030_3030_3030;
    const SIXES: u64 = 0x0606_0606_0606_0606;
    const HIGH: u64 = 0xf0f0_f0f0_f0f0_f0f0;
    // Little-endian: byte i of the text is bits 8i..8i+8 of its word.
    // `YYYY-MM-`: digits in bytes 0-3 and 5-6, `-` in 4 and 7.
    const DATE_DIGITS: u64 = 0x00ff_ff00_ffff_ffff;
    const DATE_SEPARATORS: u64 = 0x2d00_002d_0000_0000;
    // `DDTHH:MM`: digits in bytes 0-1, 3-4 and 6-7, `T` in 2, `:` in 5.
    const TIME_DIGITS: u64 = 0xffff_00ff_ff00_ffff;
    const TIME_SEPARATORS: u64 = 0x0000_3a00_0054_0000;
    let date = u64::from_le_bytes(b[..8].try_into().expect("eight bytes"));
    let time = u64::from_le_bytes(b[8..].try_into().expect("eight bytes"));
    // A byte is a digit when its high nibble is 3 both as it is and plus 6
    // (0x3a-0x3f become 0x40-0x45). A carry out of a byte that is no digit
    // or separator can only upset the bytes after it, and the word already
    // fails on that byte.
    let well_formed = |word: u64, digits: u64, separators: u64| {
        word & !digits == separators
            && word & digits & HIGH == ZEROS & digits
            && word.wrapping_add(SIXES) & digits & HIGH == ZEROS & digits
    };
    if !well_formed(date, DATE_DIGITS, DATE_SEPARATORS) || !well_formed(time, TIME_DIGITS, TIME_SEPARATORS) {
        return None;
    }
    let digit = |word: u64, i: u32| ((word >> (8 * i)) & 0x0f) as i64;
    let pair = |word: u64, i: u32| digit(word, i) * 10 + digit(word, i + 1);
    Some([
        pair(date, 0) * 100 + pair(date, 2),
        pair(date, 5),
        pair(time, 0),
        pair(time, 3),
        pair(time, 6),
    ])
}

/// ASCII digits as a number; `None` if any byte is not a digit.
#[inline]
fn digits(b: &[u8]) -> Option<i64> {
    b.iter()
        .try_fold(0i64, |n, &c| c.is_ascii_digit().then(|| n * 10 + i64::from(c - b'0')))
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let shifted_month = (month + 9) % 12;
    let day_of_year = (153 * shifted_month + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn chrono_millis(s: &str) -> Option<EventTime> {
        chrono::DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|t| t.timestamp_millis())
    }

    #[test]
    fn the_common_shapes_take_the_fast_path_and_agree_with_chrono() {
        for s in [
            "2026-11-22T08:00:00.919Z",
            "2026-11-22T08:00:00Z",
            "1970-01-01T00:00:00Z",
            "1969-12-31T23:59:59.999Z",
            "2024-02-29T12:30:45.1+02:00",
            "2000-03-01T00:00:00.123456789-05:30",
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59.999+23:59",
        ] {
            assert!(fast(s.as_bytes()).is_some(), "{s} should be fast");
            assert_eq!(parse_rfc3339(s), chrono_millis(s), "{s}");
        }
    }

    #[test]
    fn everything_else_is_left_to_chrono() {
        for s in [
            "2026-11-22t08:00:00Z",            // lowercase t
            "2026-11-22 08:00:00Z",            // space
            "2016-12-31T23:59:60Z",            // leap second
            "2023-02-29T00:00:00Z",            // no such day
            "2026-13-01T00:00:00Z",            // no such month
            "2026-11-22T24:00:00Z",            // no such hour
            "2026-11-22T08:00:00.Z",           // empty fraction
            "2026-11-22T08:00:00",             // no offset
            "2026-11-22T08:00:00Zjunk",        // trailing text
            "2026-11-22T08:00:00+0200",        // offset without colon
            "2026-11-22T08:00:00.1234567890Z", // beyond nanoseconds
            "+2026-11-22T08:00:00Z",
            "",
        ] {
            assert!(fast(s.as_bytes()).is_none(), "{s} should not be fast");
            assert_eq!(parse_rfc3339(s), chrono_millis(s), "{s}");
        }
    }

    #[test]
    fn every_ascii_byte_in_every_place_of_the_date_and_time_agrees_with_chrono() {
        let valid = b"2024-02-29T12:30:45.123+02:00";
        for at in 0..19 {
            for byte in 0u8..0x80 {
                let mut s = valid.to_vec();
                s[at] = byte;
                let s = String::from_utf8(s).expect("ASCII");
                assert_eq!(parse_rfc3339(&s), chrono_millis(&s), "{s:?}");
            }
        }
    }

    proptest! {
        /// Any string of the fast path's shape, valid or not, parses exactly
        /// as chrono parses it.
        #[test]
        fn agrees_with_chrono_on_the_fast_shape(
            year in 0i64..=9999,
            month in 0i64..=13,
            day in 0i64..=32,
            hour in 0i64..=25,
            minute in 0i64..=60,
            second in 0i64..=61,
            fraction in proptest::option::of("[0-9]{0,10}"),
            offset in prop_oneof![
                Just("Z".to_string()),
                (prop_oneof![Just('+'), Just('-')], 0i64..=24, 0i64..=60)
                    .prop_map(|(s, h, m)| format!("{s}{h:02}:{m:02}")),
                "[+Zz -]{0,3}[0-9:]{0,5}",
            ],
        ) {
            let fraction = fraction.map(|f| format!(".{f}")).unwrap_or_default();
            let s = format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}{fraction}{offset}");
            prop_assert_eq!(parse_rfc3339(&s), chrono_millis(&s), "{}", s);
        }

        /// A valid timestamp with any one of its first 19 bytes replaced
        /// (by a neighbour of the digits or separators in ASCII, a letter,
        /// or a non-ASCII character): the fast path's byte checks hold.
        #[test]
        fn agrees_with_chrono_with_one_byte_out_of_place(
            at in 0usize..19,
            byte in prop_oneof![
                Just('/'), Just(':'), Just(';'), Just('?'), Just('-'), Just('T'), Just('t'),
                Just(' '), Just('\u{e9}'), proptest::char::range('0', '9'),
            ],
        ) {
            let mut s: Vec<char> = "2024-02-29T12:30:45.123+02:00".chars().collect();
            s[at] = byte;
            let s: String = s.into_iter().collect();
            prop_assert_eq!(parse_rfc3339(&s), chrono_millis(&s), "{}", s);
        }

        /// Model check of the remembered minute: timestamps of a few
        /// minutes (valid or not, other seconds, fractions and offsets)
        /// in any order on one thread each parse as chrono parses them,
        /// whatever minute the one before left remembered.
        #[test]
        fn a_remembered_minute_agrees_with_chrono(
            stamps in prop::collection::vec((
                prop::sample::select(vec![
                    "2026-11-22T08:00", "2026-11-22T08:01", "2024-02-29T23:59", "2023-02-29T00:00",
                    "2026-11-22T24:00", "2026-11-22t08:00", "1969-12-31T23:59",
                ]),
                0i64..=61,
                proptest::option::of("[0-9]{1,4}"),
                prop::sample::select(vec!["Z", "+02:00", "-05:30", "+24:00", "", "Zx"]),
            ), 1..30),
        ) {
            for (minute, second, fraction, offset) in stamps {
                let fraction = fraction.map(|f| format!(".{f}")).unwrap_or_default();
                let s = format!("{minute}:{second:02}{fraction}{offset}");
                prop_assert_eq!(parse_rfc3339(&s), chrono_millis(&s), "{}", s);
            }
        }

        /// Arbitrary text never makes the two disagree either.
        #[test]
        fn agrees_with_chrono_on_any_text(s in "[0-9T:.Z+-]{18,32}") {
            prop_assert_eq!(parse_rfc3339(&s), chrono_millis(&s), "{}", s);
        }
    }
}
