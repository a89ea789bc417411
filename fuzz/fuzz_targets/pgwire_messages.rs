//! Any bytes as what a client sends `tacet serve-sql`: decoded as pgwire
//! decodes a connection's messages, first in the startup state and then as
//! regular messages, until the bytes run out or a message is refused; never
//! a panic and never an endless loop.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use pgwire::messages::{DecodeContext, PgWireFrontendMessage, ProtocolVersion};

fuzz_target!(|data: &[u8]| {
    for startup in [true, false] {
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
});
