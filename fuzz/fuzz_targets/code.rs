//! Whatever is typed as a code, it is refused or it is exactly six ASCII digits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use verimail_auth::code::Code;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(code) = Code::parse(text) {
        assert_eq!(code.as_str().len(), 6);
        assert!(code.as_str().bytes().all(|b| b.is_ascii_digit()));
    }
});
