//! Record headers read through librdkafka's C API, names as bytes.
//!
//! rdkafka's `Headers::iter` and `try_get` call `to_str().unwrap()` on each
//! header name, and a header name is whatever a producer wrote: one record
//! with a name that is not UTF-8 would panic the poll thread and stop
//! `tacet run`. This reader hands names out as bytes instead; the decoder
//! looks headers up by their configured (UTF-8) names, so nothing else
//! changes.

use std::ffi::CStr;
use std::marker::PhantomData;

use rdkafka::bindings as rdsys;
use rdkafka::message::BorrowedMessage;

/// The headers of one record: an iterator of (name, value) and a lookup.
#[derive(Clone, Copy)]
pub(crate) struct RecordHeaders<'m> {
    /// Null when the record has none.
    hdrs: *const rdsys::rd_kafka_headers_t,
    next: usize,
    _message: PhantomData<&'m [u8]>,
}

impl<'m> RecordHeaders<'m> {
    /// The headers of `msg`.
    pub(crate) fn of(msg: &'m BorrowedMessage<'_>) -> Self {
        // SAFETY: `msg.ptr()` is a live message for 'm.
        unsafe { Self::of_raw_message(msg.ptr()) }
    }

    /// # Safety
    /// `msg` is a live message that outlives `'m`.
    pub(crate) unsafe fn of_raw_message(msg: *mut rdsys::rd_kafka_message_t) -> Self {
        let mut hdrs = std::ptr::null_mut();
        // SAFETY: librdkafka keeps the headers it returns alive with the message.
        let err = unsafe { rdsys::rd_kafka_message_headers(msg, &mut hdrs) };
        let hdrs = match err {
            rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR => hdrs as *const _,
            _ => std::ptr::null(), // no headers (or none parsable): none to read
        };
        // SAFETY: null, or headers that live as long as `msg`.
        unsafe { Self::from_raw(hdrs) }
    }

    /// # Safety
    /// `hdrs` is null or valid headers that outlive `'m`.
    unsafe fn from_raw(hdrs: *const rdsys::rd_kafka_headers_t) -> Self {
        Self {
            hdrs,
            next: 0,
            _message: PhantomData,
        }
    }

    /// The value of the first header called `name`.
    pub(crate) fn get(self, name: &[u8]) -> Option<&'m [u8]> {
        let mut all = self;
        all.next = 0;
        all.find(|(n, _)| *n == name).and_then(|(_, v)| v)
    }
}

impl<'m> Iterator for RecordHeaders<'m> {
    type Item = (&'m [u8], Option<&'m [u8]>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.hdrs.is_null() {
            return None;
        }
        let (mut name, mut value, mut size) = (std::ptr::null(), std::ptr::null(), 0usize);
        // SAFETY: `hdrs` is valid for 'm (see `of`/`from_raw`); the out
        // pointers are ours; an index past the end is an error, not UB.
        let err = unsafe { rdsys::rd_kafka_header_get_all(self.hdrs, self.next, &mut name, &mut value, &mut size) };
        if err != rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            return None;
        }
        self.next += 1;
        // SAFETY: librdkafka stores names NUL-terminated, and names and
        // values live as long as the headers.
        let name = unsafe { CStr::from_ptr(name) }.to_bytes();
        let value = (!value.is_null()).then(|| unsafe { std::slice::from_raw_parts(value as *const u8, size) });
        Some((name, value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_are_not_utf8_are_read_not_panicked_on() {
        // SAFETY: headers made and destroyed here, read while alive.
        unsafe {
            let hdrs = rdsys::rd_kafka_headers_new(3);
            let add = |name: &[u8], value: Option<&[u8]>| {
                let (ptr, len) = value.map_or((std::ptr::null(), 0), |v| (v.as_ptr(), v.len() as isize));
                let err = rdsys::rd_kafka_header_add(hdrs, name.as_ptr().cast(), name.len() as isize, ptr.cast(), len);
                assert_eq!(err, rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR);
            };
            add(b"\xff\xfeodd", Some(b"x"));
            add(
                b"traceparent",
                Some(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            );
            add(b"empty", None);
            let headers = RecordHeaders::from_raw(hdrs);
            let all: Vec<_> = headers.collect();
            assert_eq!(
                all,
                vec![
                    (&b"\xff\xfeodd"[..], Some(&b"x"[..])),
                    (
                        &b"traceparent"[..],
                        Some(&b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"[..])
                    ),
                    (&b"empty"[..], None),
                ]
            );
            assert_eq!(headers.get(b"\xff\xfeodd"), Some(&b"x"[..]));
            assert_eq!(headers.get(b"empty"), None);
            assert_eq!(headers.get(b"missing"), None);
            assert_eq!(RecordHeaders::from_raw(std::ptr::null()).count(), 0);
            rdsys::rd_kafka_headers_destroy(hdrs);
        }
    }
}
