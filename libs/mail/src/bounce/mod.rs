//! Bounces without I/O: the per-delivery envelope sender that brings them back, and what a
//! message that came back says.

pub mod address;
pub mod classify;
mod notice;
pub mod reason;
