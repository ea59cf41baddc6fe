//! Six-digit verification codes: typed by hand where a link cannot be opened. A code is
//! stored only as a keyed BLAKE2b MAC (its key derived from the token key that was current at
//! issue, named by its key id, so codes survive a key rotation like tokens do), and compared
//! in constant time.

use blake2::Blake2bMac;
use blake2::digest::consts::U32;
use blake2::digest::{KeyInit, Mac};
use rand::Rng;
use std::collections::HashMap;

/// Wrong codes an address's live codes take, from every client together, before they die
/// (the default of `CODE_MAX_WRONG_TRIES`). Each client has its own smaller allowance
/// (`RATE_LIMIT_CODE_PER_EMAIL`), so a stranger alone cannot lock the owner out.
pub const MAX_WRONG_TRIES: i32 = 20;

type CodeMac = Blake2bMac<U32>;

/// How an erased address begins.
pub const ERASED: &str = "erased:";

/// A MAC keyed with `key` (32 bytes: a v4.local token key, or one derived from it).
#[allow(clippy::expect_used, reason = "BLAKE2b takes keys of up to 64 bytes, and ours are 32")]
fn keyed(key: &[u8]) -> CodeMac {
    CodeMac::new_from_slice(key).expect("a 32-byte key fits BLAKE2b")
}

/// A code: exactly six ASCII digits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Code(String);

impl Code {
    /// A uniformly random code from a cryptographically secure generator.
    pub fn generate() -> Code {
        Code(format!("{:06}", rand::rng().random_range(0..1_000_000u32)))
    }

    /// What a user typed: spaces and dashes between digits are forgiven ("123 456").
    pub fn parse(typed: &str) -> Result<Code, &'static str> {
        let digits: String = typed.chars().filter(|c| !matches!(c, ' ' | '-')).collect();
        if typed.len() > 32 || digits.len() != 6 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err("must be the 6 digits from the email");
        }
        Ok(Code(digits))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// MAC keys, one per token key, by the token key's id.
pub struct CodeKeys {
    by_id: HashMap<String, [u8; 32]>,
}

impl CodeKeys {
    /// `keys`: (key id, raw token key) pairs.
    pub fn derive<'a>(keys: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> CodeKeys {
        let by_id = keys
            .into_iter()
            .map(|(id, key)| {
                let mut mac = keyed(key);
                mac.update(b"verimail/verification-code/v1");
                (id.to_owned(), mac.finalize().into_bytes().into())
            })
            .collect();
        CodeKeys { by_id }
    }

    /// What replaces the address of a deleted user's code made with the key `key_id`: a keyed
    /// hash, so that the code still finds its account ("this account was deleted") while the
    /// address itself is gone.
    pub fn erased_address(&self, key_id: &str, email: &str) -> Option<String> {
        let mut mac = keyed(self.by_id.get(key_id)?);
        mac.update(b"verimail/erased-address/v1\0");
        mac.update(email.as_bytes());
        let hash = mac.finalize().into_bytes();
        Some(format!("{ERASED}{}", verimail_server::hex(&hash)))
    }

    /// The erased forms of `email`, one per key.
    pub fn erased_addresses(&self, email: &str) -> Vec<String> {
        self.by_id.keys().filter_map(|key_id| self.erased_address(key_id, email)).collect()
    }

    fn mac(&self, key_id: &str, user_id: &str, code: &Code) -> Option<CodeMac> {
        let key = self.by_id.get(key_id)?;
        let mut mac = keyed(key);
        // Bound to the user: a code row copied to another user does not verify.
        mac.update(user_id.as_bytes());
        mac.update(&[0]);
        mac.update(code.as_str().as_bytes());
        Some(mac)
    }

    /// What is stored for `code`, with the key `key_id`.
    pub fn hash(&self, key_id: &str, user_id: &str, code: &Code) -> Option<Vec<u8>> {
        Some(self.mac(key_id, user_id, code)?.finalize().into_bytes().to_vec())
    }

    /// Constant-time comparison with a stored hash; false for a key this service no longer has.
    pub fn matches(&self, key_id: &str, user_id: &str, code: &Code, stored: &[u8]) -> bool {
        self.mac(key_id, user_id, code).is_some_and(|mac| mac.verify_slice(stored).is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> CodeKeys {
        CodeKeys::derive([("k1", &[7u8; 32][..]), ("k2", &[9u8; 32][..])])
    }

    #[test]
    fn codes_are_six_digits_and_vary() {
        let codes: std::collections::HashSet<_> = (0..200).map(|_| Code::generate().0).collect();
        assert!(codes.iter().all(|c| c.len() == 6 && c.bytes().all(|b| b.is_ascii_digit())));
        assert!(codes.len() > 190, "random, not repeated: {} distinct of 200", codes.len());
    }

    #[test]
    fn typed_codes_are_parsed_strictly_but_kindly() {
        assert_eq!(Code::parse("012345").unwrap().as_str(), "012345");
        assert_eq!(Code::parse(" 123 456 ").unwrap().as_str(), "123456");
        assert_eq!(Code::parse("123-456").unwrap().as_str(), "123456");
        for bad in ["", "12345", "1234567", "12345a", "١٢٣٤٥٦", "123456\0", "' OR 1=1 --", &"1".repeat(40)] {
            assert!(Code::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_code_matches_only_its_own_hash_user_and_key() {
        let keys = keys();
        let code = Code::parse("123456").unwrap();
        let stored = keys.hash("k1", "user-1", &code).unwrap();
        assert!(!stored.windows(6).any(|w| w == b"123456"), "never stored in plain text");
        assert!(keys.matches("k1", "user-1", &code, &stored));
        assert!(!keys.matches("k1", "user-1", &Code::parse("123457").unwrap(), &stored));
        assert!(!keys.matches("k1", "user-2", &code, &stored), "bound to the user");
        assert!(!keys.matches("k2", "user-1", &code, &stored), "bound to the key");
        assert!(!keys.matches("gone", "user-1", &code, &stored), "a removed key verifies nothing");
    }
}

/// What a typed code does, decided from the codes sent to the address alone (no I/O):
/// [`AuthGrpc::use_code`](crate::grpc) carries it out.
#[derive(Debug, PartialEq)]
pub enum Decision<'a> {
    /// The code was used before: its user is verified already, and nothing changes.
    AlreadyUsed(&'a crate::store::codes::Model),
    /// The code matches but no longer verifies; nothing changes.
    Refused(Refusal),
    /// A live code matches: mark it used (if it still is live then) and verify its user.
    Use(&'a crate::store::codes::Model),
    /// No code matches: a wrong try counts against each of these live codes.
    Wrong { live: Vec<String> },
}

/// Why a matching code no longer verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Revoked,
    Locked,
    Expired,
}

/// Decides what `code` does against the codes `sent` to its address (`matches` tells whether a
/// row is this code). A matching row decides: used, revoked, locked (`max_tries` wrong tries),
/// expired, or live. Without a match, every live row takes a wrong try.
pub fn decide<'a>(
    sent: &'a [crate::store::codes::Model],
    matches: impl Fn(&crate::store::codes::Model) -> bool,
    now: chrono::DateTime<chrono::Utc>,
    max_tries: i32,
) -> Decision<'a> {
    let live =
        |row: &crate::store::codes::Model| row.used_at.is_none() && row.revoked_at.is_none() && row.expires_at > now;
    match sent.iter().find(|row| matches(row)) {
        Some(row) if row.used_at.is_some() => Decision::AlreadyUsed(row),
        Some(row) if row.revoked_at.is_some() => Decision::Refused(Refusal::Revoked),
        Some(row) if row.wrong_tries >= max_tries => Decision::Refused(Refusal::Locked),
        Some(row) if row.expires_at <= now => Decision::Refused(Refusal::Expired),
        Some(row) => Decision::Use(row),
        None => Decision::Wrong { live: sent.iter().filter(|row| live(row)).map(|row| row.id.clone()).collect() },
    }
}

#[cfg(test)]
mod decide_tests {
    use super::*;
    use crate::store::codes::Model;
    use chrono::{Duration, Utc};

    fn row(id: &str, at: chrono::DateTime<Utc>) -> Model {
        Model {
            id: id.into(),
            user_id: format!("user-of-{id}"),
            email: "kim@example.com".into(),
            key_id: "k".into(),
            code_hash: id.as_bytes().to_vec(),
            issued_at: at - Duration::minutes(1),
            expires_at: at + Duration::minutes(10),
            wrong_tries: 0,
            used_at: None,
            revoked_at: None,
            registration_event_id: None,
            purpose: None,
        }
    }

    fn decide_for<'a>(sent: &'a [Model], typed: &str, now: chrono::DateTime<Utc>) -> Decision<'a> {
        decide(sent, |row| row.id == typed, now, 5)
    }

    #[test]
    fn a_live_matching_code_is_used() {
        let now = Utc::now();
        let sent = [row("a", now), row("b", now)];
        assert_eq!(decide_for(&sent, "b", now), Decision::Use(&sent[1]));
    }

    #[test]
    fn a_matching_code_that_no_longer_verifies_says_why_in_order_used_revoked_locked_expired() {
        let now = Utc::now();
        let mut used = row("a", now);
        used.used_at = Some(now);
        used.revoked_at = Some(now);
        assert_eq!(decide_for(std::slice::from_ref(&used), "a", now), Decision::AlreadyUsed(&used));
        let mut revoked = row("a", now);
        revoked.revoked_at = Some(now);
        revoked.wrong_tries = 5;
        assert_eq!(decide_for(&[revoked], "a", now), Decision::Refused(Refusal::Revoked));
        let mut locked = row("a", now);
        locked.wrong_tries = 5;
        locked.expires_at = now;
        assert_eq!(decide_for(&[locked], "a", now), Decision::Refused(Refusal::Locked));
        let mut expired = row("a", now);
        expired.wrong_tries = 4;
        expired.expires_at = now;
        assert_eq!(decide_for(&[expired], "a", now), Decision::Refused(Refusal::Expired));
    }

    #[test]
    fn a_wrong_code_counts_against_the_live_codes_only() {
        let now = Utc::now();
        let (mut used, mut revoked, mut expired) = (row("used", now), row("revoked", now), row("expired", now));
        used.used_at = Some(now);
        revoked.revoked_at = Some(now);
        expired.expires_at = now - Duration::seconds(1);
        let sent = [row("live-1", now), used, revoked, expired, row("live-2", now)];
        assert_eq!(decide_for(&sent, "typo", now), Decision::Wrong { live: vec!["live-1".into(), "live-2".into()] });
        assert_eq!(decide_for(&[], "typo", now), Decision::Wrong { live: vec![] });
    }
}
