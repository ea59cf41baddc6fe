//! Link tokens: what a verification email's link (and a change notice's) carries. A token is
//! 43 characters: a random 128-bit id (the `jti` of its row in `verification_tokens`) and a
//! 128-bit BLAKE2b MAC of that id, base64url. Everything else a click needs (the user, the
//! address, the purpose, the expiry, the trace it was issued in) stays in auth-service by
//! `jti`, so a link stays short enough for every mail client (issue 21), and nothing about
//! the user travels in it.
//!
//! The MAC is keyed from `AUTH_TOKEN_KEYS` (the first key issues, every key is tried), so
//! garbage and forged ids are refused without touching the database, and removing a key
//! retires its links. Links sent before this format (PASETO v4.local, with the key id in the
//! footer) still open until they expire: their `jti` leads to the same row.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use blake2::Blake2bMac;
use blake2::digest::consts::{U16, U32};
use blake2::digest::{KeyInit, Mac};
use pasetors::claims::ClaimsValidationRules;
use pasetors::keys::{Generate, SymmetricKey};
use pasetors::paserk::{FormatAsPaserk, Id};
use pasetors::token::UntrustedToken;
use pasetors::version4::V4;
use pasetors::{Local, local};
use std::collections::HashMap;
use std::time::Duration;

/// The purpose of a link that verifies a registration's address (stored as none).
pub const EMAIL_VERIFICATION: &str = "email_verification";

/// The purpose of the link (and code) that verifies the new address of a change.
pub const EMAIL_CHANGE: &str = "email_change";

/// The purpose of the link in a change-of-address notice, which cancels or undoes it.
pub const UNDO_EMAIL_CHANGE: &str = "undo_email_change";

/// The purpose of a password reset's link and code.
pub const PASSWORD_RESET: &str = "password_reset";

/// What a preview's link carries instead of a token: visibly a sample, and no token (it
/// cannot be decoded as one).
pub const SAMPLE_TOKEN: &str = "SAMPLE-this-is-a-preview-not-a-real-link";

/// What a preview shows instead of a code.
pub const SAMPLE_CODE: &str = "000000";

/// The length of a token: base64url of 32 bytes, unpadded.
pub const TOKEN_LEN: usize = 43;

/// Links of the earlier format are a few hundred bytes; anything longer is refused unread.
const MAX_LEGACY_LEN: usize = 2048;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("is not a link token")]
    Malformed,
    #[error("was issued with a key this service does not have")]
    UnknownKey,
    #[error("is invalid (altered or not issued by this service)")]
    Invalid,
    #[error("has expired")]
    Expired,
    #[error("is not an email verification token")]
    WrongPurpose,
}

#[derive(Debug, Clone)]
pub struct IssuedToken {
    pub token: String,
    pub jti: String,
    /// The PASERK id of the key that made it (codes issued beside it are keyed from it too).
    pub key_id: String,
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

type LinkMac = Blake2bMac<U16>;

struct Key {
    id_text: String,
    key: SymmetricKey<V4>,
    /// The MAC key of link tokens, derived from `key`.
    link: [u8; 32],
}

/// The keys this service holds.
pub struct TokenKeys {
    keys: Vec<Key>,
    by_id: HashMap<String, usize>,
}

impl TokenKeys {
    /// From PASERK `k4.local.…` strings or raw keys (64 hex digits); the first one issues new
    /// tokens.
    pub fn from_paserk<S: AsRef<str>>(paserks: &[S]) -> Result<TokenKeys, String> {
        let keys = paserks
            .iter()
            .enumerate()
            .map(|(i, text)| {
                let text = text.as_ref().trim();
                let refused = || format!("key {} is neither a PASERK k4.local key nor 64 hex digits", i + 1);
                if text.starts_with("k4.local.") {
                    return SymmetricKey::<V4>::try_from(text).map_err(|_| refused());
                }
                let raw = hex_key(text).ok_or_else(refused)?;
                SymmetricKey::<V4>::from(&raw).map_err(|_| refused())
            })
            .collect::<Result<Vec<_>, _>>()?;
        TokenKeys::new(keys)
    }

    /// One fresh random key (development only: tokens die with the process).
    pub fn generate() -> Result<TokenKeys, String> {
        TokenKeys::new(vec![SymmetricKey::<V4>::generate().map_err(|e| e.to_string())?])
    }

    fn new(keys: Vec<SymmetricKey<V4>>) -> Result<TokenKeys, String> {
        if keys.is_empty() {
            return Err("at least one key is needed".into());
        }
        let keys: Vec<Key> = keys
            .into_iter()
            .map(|key| {
                let id = Id::from(&key);
                let mut derive = keyed::<Blake2bMac<U32>>(key.as_bytes());
                derive.update(b"verimail/link-token/v1");
                Key { id_text: paserk(&id), link: derive.finalize().into_bytes().into(), key }
            })
            .collect();
        let by_id = keys.iter().enumerate().map(|(i, k)| (k.id_text.clone(), i)).collect();
        Ok(TokenKeys { keys, by_id })
    }

    /// Every key with its id, for deriving keys for other purposes (verification codes).
    pub fn raw_keys(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.keys.iter().map(|k| (k.id_text.as_str(), k.key.as_bytes()))
    }

    /// The issuing key as PASERK, for printing a generated key.
    pub fn current_paserk(&self) -> String {
        paserk(&self.keys[0].key)
    }

    /// A new token, valid for `lifetime` once its row is recorded (what it is for lives there).
    pub fn issue(&self, lifetime: Duration) -> IssuedToken {
        let current = &self.keys[0];
        let id = uuid::Uuid::new_v4();
        let mut raw = [0u8; 32];
        raw[..16].copy_from_slice(id.as_bytes());
        raw[16..].copy_from_slice(&link_tag(&current.link, id.as_bytes()));
        let expires_at = chrono::Utc::now() + chrono::Duration::from_std(lifetime).unwrap_or(chrono::Duration::zero());
        IssuedToken {
            token: URL_SAFE_NO_PAD.encode(raw),
            jti: id.to_string(),
            key_id: current.id_text.clone(),
            expires_at,
        }
    }

    /// The `jti` of an authentic token (one this service made with a key it still has): its
    /// row says what it is for and whether it is still good.
    pub fn open(&self, token: &str) -> Result<String, TokenError> {
        if token.starts_with("v4.local.") {
            return self.open_legacy(token);
        }
        let mut raw = [0u8; 32];
        if token.len() != TOKEN_LEN || URL_SAFE_NO_PAD.decode_slice(token, &mut raw) != Ok(32) {
            return Err(TokenError::Malformed);
        }
        let (id, tag) = raw.split_at(16);
        let authentic = self.keys.iter().any(|key| {
            let mut mac = keyed::<LinkMac>(&key.link);
            mac.update(id);
            mac.verify_slice(tag).is_ok()
        });
        match authentic {
            true => Ok(uuid::Uuid::from_slice(id).map_err(|_| TokenError::Malformed)?.to_string()),
            false => Err(TokenError::Invalid),
        }
    }

    /// A PASETO v4.local link of the earlier format: its key, tag and expiry checked, its jti.
    fn open_legacy(&self, token: &str) -> Result<String, TokenError> {
        use pasetors::errors::{ClaimValidationError, Error as PasetoError};
        if token.len() > MAX_LEGACY_LEN {
            return Err(TokenError::Malformed);
        }
        let untrusted = UntrustedToken::<Local, V4>::try_from(token).map_err(|_| TokenError::Malformed)?;
        let footer: KeyFooter =
            serde_json::from_slice(untrusted.untrusted_footer()).map_err(|_| TokenError::Malformed)?;
        let key = self.by_id.get(footer.kid).map(|&i| &self.keys[i].key).ok_or(TokenError::UnknownKey)?;
        let trusted =
            local::decrypt(key, &untrusted, &ClaimsValidationRules::new(), None, None).map_err(|e| match e {
                PasetoError::ClaimValidation(ClaimValidationError::Exp) => TokenError::Expired,
                _ => TokenError::Invalid,
            })?;
        let claims = trusted.payload_claims().ok_or(TokenError::Invalid)?;
        claims.get_claim("jti").and_then(|v| v.as_str()).map(str::to_owned).ok_or(TokenError::Invalid)
    }
}

/// The MAC of a token's id under a link key.
fn link_tag(key: &[u8; 32], id: &[u8]) -> [u8; 16] {
    let mut mac = keyed::<LinkMac>(key);
    mac.update(id);
    mac.finalize().into_bytes().into()
}

/// A BLAKE2b MAC keyed with a 32-byte key.
#[allow(clippy::expect_used, reason = "BLAKE2b takes keys of up to 64 bytes, and ours are 32")]
fn keyed<M: KeyInit>(key: &[u8]) -> M {
    M::new_from_slice(key).expect("a 32-byte key fits BLAKE2b")
}

/// The footer links of the earlier format carry: the PASERK id of the key that sealed them.
/// Read here rather than with pasetors' `Footer::parse_bytes`, which compiles a regular
/// expression on every call.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFooter<'a> {
    kid: &'a str,
}

/// 32 bytes from exactly 64 hex digits.
fn hex_key(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut key = [0u8; 32];
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(key)
}

/// A key or key id as its PASERK text.
#[allow(clippy::expect_used, reason = "writing to a String cannot fail")]
pub(crate) fn paserk(value: &impl FormatAsPaserk) -> String {
    let mut text = String::new();
    value.fmt(&mut text).expect("writing to a String cannot fail");
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    /// A link of the earlier format, as auth-service used to issue them.
    fn legacy(keys: &TokenKeys, jti: &str, lifetime: Duration) -> String {
        let current = &keys.keys[0];
        let mut claims = pasetors::claims::Claims::new_expires_in(&lifetime).unwrap();
        claims.subject("user-1").unwrap();
        claims.token_identifier(jti).unwrap();
        claims.add_additional("purpose", EMAIL_VERIFICATION).unwrap();
        claims.add_additional("email", "a@example.com").unwrap();
        let mut footer = pasetors::footer::Footer::new();
        footer.key_id(&Id::from(&current.key));
        local::encrypt(&current.key, &claims, Some(&footer), None).unwrap()
    }

    #[test]
    fn a_token_is_43_url_safe_characters_and_opens_to_its_jti() {
        let keys = TokenKeys::generate().unwrap();
        let issued = keys.issue(HOUR);
        assert_eq!(issued.token.len(), TOKEN_LEN);
        assert!(issued.token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'), "{}", issued.token);
        assert!(issued.key_id.starts_with("k4.lid."));
        assert_eq!(keys.open(&issued.token), Ok(issued.jti.clone()));
        let later = chrono::Utc::now() + chrono::Duration::minutes(59);
        assert!(issued.expires_at > later);
    }

    #[test]
    fn every_token_has_its_own_jti() {
        let keys = TokenKeys::generate().unwrap();
        let (a, b) = (keys.issue(HOUR), keys.issue(HOUR));
        assert_ne!(a.jti, b.jti);
        assert_ne!(a.token, b.token);
    }

    #[test]
    fn a_tampered_token_is_invalid_in_every_character() {
        let keys = TokenKeys::generate().unwrap();
        let token = keys.issue(HOUR).token;
        for i in 0..token.len() - 1 {
            let mut bytes = token.clone().into_bytes();
            bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
            let tampered = String::from_utf8(bytes).unwrap();
            assert_eq!(keys.open(&tampered), Err(TokenError::Invalid), "character {i}");
        }
    }

    #[test]
    fn garbage_is_malformed() {
        let keys = TokenKeys::generate().unwrap();
        let token = keys.issue(HOUR).token;
        let padded = format!("{token}=");
        let short = &token[..42];
        let bad_char = format!("{}+", &token[..42]);
        for garbage in ["", "hello", "v4.public.abc", "v4.local.", &padded, short, &bad_char, &"x".repeat(5000)] {
            assert_eq!(keys.open(garbage), Err(TokenError::Malformed), "{garbage:.20}");
        }
        assert_eq!(keys.open(&format!("v4.local.{}", "A".repeat(5000))), Err(TokenError::Malformed));
    }

    #[test]
    fn keys_rotate_old_tokens_still_open_removed_keys_do_not() {
        let old = TokenKeys::generate().unwrap();
        let new = TokenKeys::generate().unwrap();
        let old_token = old.issue(HOUR);
        let rotated = TokenKeys::from_paserk(&[new.current_paserk(), old.current_paserk()]).unwrap();
        assert_eq!(rotated.open(&old_token.token), Ok(old_token.jti));
        let fresh = rotated.issue(HOUR);
        assert_eq!(new.open(&fresh.token), Ok(fresh.jti), "the first key issues");
        assert_eq!(new.open(&old_token.token), Err(TokenError::Invalid));
    }

    #[test]
    fn links_of_the_earlier_format_open_until_they_expire() {
        let keys = TokenKeys::generate().unwrap();
        let jti = uuid::Uuid::new_v4().to_string();
        assert_eq!(keys.open(&legacy(&keys, &jti, HOUR)), Ok(jti.clone()));
        let lapsed = legacy(&keys, &jti, Duration::from_secs(1));
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(keys.open(&lapsed), Err(TokenError::Expired));
        let other = TokenKeys::generate().unwrap();
        assert_eq!(other.open(&legacy(&keys, &jti, HOUR)), Err(TokenError::UnknownKey));
        let mut tampered = legacy(&keys, &jti, HOUR).into_bytes();
        let at = "v4.local.".len() + 10;
        tampered[at] = if tampered[at] == b'A' { b'B' } else { b'A' };
        assert_eq!(keys.open(&String::from_utf8(tampered).unwrap()), Err(TokenError::Invalid));
    }

    #[test]
    fn bad_key_configuration_is_refused() {
        assert!(TokenKeys::from_paserk(&["not-a-key"]).is_err());
        assert!(TokenKeys::from_paserk(&["ab".repeat(31)]).is_err(), "62 hex digits");
        assert!(TokenKeys::from_paserk(&["zz".repeat(32)]).is_err(), "not hex");
        let raw = TokenKeys::from_paserk(&["0123456789abcdef".repeat(4)]).expect("a raw key in hex");
        let issued = raw.issue(HOUR);
        assert_eq!(raw.open(&issued.token), Ok(issued.jti));
        assert!(TokenKeys::from_paserk::<&str>(&[]).is_err());
    }
}
