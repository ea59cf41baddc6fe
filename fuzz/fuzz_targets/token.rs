//! Whatever arrives as a token, opening it returns an answer and never panics; a token that
//! opens was made with our key.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::LazyLock;
use verimail_auth::links::TokenKeys;

static KEYS: LazyLock<TokenKeys> =
    LazyLock::new(|| TokenKeys::from_paserk(&["0123456789abcdef".repeat(4)]).expect("a fixed test key"));

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        // Random input cannot forge our authentication tag.
        assert!(KEYS.open(text).is_err());
    }
});
