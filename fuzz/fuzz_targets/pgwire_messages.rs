//! Any bytes as what a client sends `tacet serve-sql`: decoded as pgwire
//! decodes a connection's messages, first in the startup state and then as
//! regular messages, until the bytes run out or a message is refused.
//!
//! pgwire 0.42.1 panics on some malformed messages (a `Parse` shorter than
//! its fields, found here). The server contains a panic to its connection's
//! task and gives the connection's slot back (tacet-sql's server, tested in
//! crates/tacet/tests/serve_sql_limits.rs), so a panic is caught here too;
//! what must never happen is what containment cannot help: an abort, an
//! endless loop or memory without bound.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use pgwire::messages::{DecodeContext, PgWireFrontendMessage, ProtocolVersion};

fn decode_all(data: &[u8], startup: bool) {
    let mut ctx = DecodeContext::new(ProtocolVersion::default());
    ctx.awaiting_frontend_ssl = startup;
    ctx.awaiting_frontend_startup = startup;
    let mut buf = BytesMut::from(data);
    for _ in 0..1024 {
        let before = buf.len();
        match PgWireFrontendMessage::decode(&mut buf, &ctx) {
            Ok(Some(_)) => {
                ctx.awaiting_frontend_ssl = false;
                ctx.awaiting_frontend_startup = false;
            }
            Ok(None) | Err(_) => break,
        }
        if buf.len() >= before {
            break;
        }
    }
}

fuzz_target!(|data: &[u8]| {
    // libfuzzer-sys aborts from its panic hook; this target lets a panic
    // unwind to `catch_unwind`, as a connection's task does in the server.
    static QUIET: std::sync::Once = std::sync::Once::new();
    QUIET.call_once(|| std::panic::set_hook(Box::new(|_| {})));
    for startup in [true, false] {
        let _ = std::panic::catch_unwind(|| decode_all(data, startup));
    }
});
