//! Bounces as they come back: the listener they come back to (SMTP, on the bounce domain),
//! and what a message that came back does. The addresses and the classifier, which need no
//! I/O, are in `verimail_mail::bounce`.

pub mod inbox;
pub mod listener;
