//! The token verifier on arbitrary tokens: it never panics, and accepts nothing it did
//! not sign (the fuzzer cannot forge an HMAC, so any acceptance is a bug).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use switchboard::auth::{SigningSecret, TokenVerifier};

fn verifier() -> &'static TokenVerifier {
    static VERIFIER: OnceLock<TokenVerifier> = OnceLock::new();
    VERIFIER.get_or_init(|| {
        let secret = SigningSecret::new(b"fuzz-secret-0123456789-0123456789-abcdef".to_vec());
        TokenVerifier::new(
            &secret,
            "switchboard",
            "switchboard",
            std::time::Duration::from_secs(24 * 3600),
        )
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    assert!(
        verifier().verify(token).is_err(),
        "accepted a token it never signed"
    );
});
