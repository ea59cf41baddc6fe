//! Who mail is from: `MAIL_FROM`, and the shape of the domains DKIM and the bounce addresses
//! name.

use lettre::message::Mailbox;
use verimail_server::config::{ConfigError, Vars};

/// The sender when `MAIL_FROM` is not set.
pub const DEFAULT_FROM: &str = "Verimail <no-reply@verimail.localhost>";

/// `MAIL_FROM` (default [`DEFAULT_FROM`]).
pub fn mail_from(vars: &Vars) -> Result<Mailbox, ConfigError> {
    let raw = vars.string("MAIL_FROM", DEFAULT_FROM);
    raw.parse().map_err(|e| ConfigError::new("MAIL_FROM", format!("{raw:?} is not a mailbox: {e}")))
}

/// Dot-separated labels of letters, digits and inner hyphens (a selector may have dots too).
pub fn is_domain(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}
