//! Bounces: the per-delivery envelope sender that brings them back, the listener they come
//! back to, what a message that came back says, and what it does.

pub mod address;
pub mod classify;
pub mod inbox;
pub mod listener;
