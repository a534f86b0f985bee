//! The client-message parser on arbitrary frames: it never panics, and every rejection
//! names a code and a reason.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard::signaling::protocol;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (reference, parsed) = protocol::parse(text);
    if let Err(rejected) = parsed {
        assert!(!rejected.message.is_empty(), "a rejection says why");
        assert_eq!(
            rejected.reference.map(|r| r.get()),
            reference.map(|r| r.get())
        );
    }
});
