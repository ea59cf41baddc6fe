//! Email parsing never panics, and what it accepts is normalized once and for all: parsing
//! the normalized form again gives the same address.
#![no_main]

use libfuzzer_sys::fuzz_target;
use verimail_user::password::Email;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(email) = Email::parse(text) {
        let again = Email::parse(email.as_str()).expect("a normalized address parses again");
        assert_eq!(again.as_str(), email.as_str());
        assert!(email.as_str().len() <= 254, "RFC 5321 length limit");
        assert!(!email.as_str().chars().any(char::is_whitespace));
    }
});
