//! Email verification tokens: PASETO v4.local (encrypted and authenticated), with the key's
//! PASERK id (`k4.lid.…`) in the footer so keys can rotate: the first configured key issues,
//! every configured key is accepted.

use pasetors::claims::{Claims, ClaimsValidationRules};
use pasetors::errors::{ClaimValidationError, Error as PasetoError};
use pasetors::footer::Footer;
use pasetors::keys::{Generate, SymmetricKey};
use pasetors::paserk::{FormatAsPaserk, Id};
use pasetors::token::UntrustedToken;
use pasetors::version4::V4;
use pasetors::{Local, local};
use std::collections::HashMap;
use std::time::Duration;

/// The `purpose` claim of every token this service issues for email verification.
pub const EMAIL_VERIFICATION: &str = "email_verification";

/// The `purpose` claim of the link (and code) that verifies the new address of a change.
pub const EMAIL_CHANGE: &str = "email_change";

/// The `purpose` claim of the link in a change-of-address notice, which cancels or undoes it.
pub const UNDO_EMAIL_CHANGE: &str = "undo_email_change";

/// Tokens are short strings; anything longer is refused before any work is done on it.
const MAX_TOKEN_LEN: usize = 2048;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("is not a PASETO v4.local token")]
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

/// What a valid token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerificationClaims {
    pub jti: String,
    pub user_id: String,
    pub email: String,
    /// The `traceparent` of the work that issued it (the registration's trace), so the click
    /// can link to it. Inside the encrypted payload, like every claim.
    pub trace: Option<String>,
}

#[derive(Debug, Clone)]
pub struct IssuedToken {
    pub token: String,
    pub jti: String,
    pub key_id: String,
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

struct Key {
    id: Id,
    id_text: String,
    key: SymmetricKey<V4>,
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
                Key { id_text: paserk(&id), id, key }
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

    pub fn issue(&self, user_id: &str, email: &str, lifetime: Duration) -> Result<IssuedToken, PasetoError> {
        self.issue_for(EMAIL_VERIFICATION, user_id, email, lifetime)
    }

    /// A token of `purpose` ([`EMAIL_VERIFICATION`], [`EMAIL_CHANGE`], [`UNDO_EMAIL_CHANGE`]; tests
    /// use others, to prove them refused).
    pub fn issue_for(
        &self,
        purpose: &str,
        user_id: &str,
        email: &str,
        lifetime: Duration,
    ) -> Result<IssuedToken, PasetoError> {
        let current = &self.keys[0];
        let jti = uuid::Uuid::new_v4().to_string();
        let mut claims = Claims::new_expires_in(&lifetime)?;
        claims.subject(user_id)?;
        claims.token_identifier(&jti)?;
        claims.add_additional("purpose", purpose)?;
        claims.add_additional("email", email)?;
        if let Some(traceparent) = verimail_server::telemetry::current_traceparent() {
            claims.add_additional("trace", traceparent)?;
        }
        let mut footer = Footer::new();
        footer.key_id(&current.id);
        let token = local::encrypt(&current.key, &claims, Some(&footer), None)?;
        let expires_at = chrono::Utc::now() + chrono::Duration::from_std(lifetime).unwrap_or(chrono::Duration::zero());
        Ok(IssuedToken { token, jti, key_id: current.id_text.clone(), expires_at })
    }

    /// Checks the key, the authentication tag, the expiry and the purpose: verifying an
    /// address (of a registration, or the new one of a change).
    pub fn open(&self, token: &str) -> Result<VerificationClaims, TokenError> {
        self.open_for(&[EMAIL_VERIFICATION, EMAIL_CHANGE], token)
    }

    /// As [`TokenKeys::open`], for a token of one of `purposes`.
    pub fn open_for(&self, purposes: &[&str], token: &str) -> Result<VerificationClaims, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
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
        let text = |name: &str| claims.get_claim(name).and_then(|v| v.as_str()).map(str::to_owned);
        if !text("purpose").is_some_and(|purpose| purposes.contains(&purpose.as_str())) {
            return Err(TokenError::WrongPurpose);
        }
        Ok(VerificationClaims {
            jti: text("jti").ok_or(TokenError::Invalid)?,
            user_id: text("sub").ok_or(TokenError::Invalid)?,
            email: text("email").ok_or(TokenError::Invalid)?,
            trace: text("trace"),
        })
    }
}

/// The footer this service writes: the PASERK id of the key that sealed the token. Read here
/// rather than with pasetors' `Footer::parse_bytes`, which compiles a regular expression on
/// every call (an eighth of auth-service's CPU while verifying). The footer is authenticated
/// with the token; it only says which key to try.
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

    #[test]
    fn a_token_opens_to_what_it_was_issued_for() {
        let keys = TokenKeys::generate().unwrap();
        let issued = keys.issue("user-1", "a@example.com", HOUR).unwrap();
        assert!(issued.token.starts_with("v4.local."));
        assert!(issued.key_id.starts_with("k4.lid."));
        let claims = keys.open(&issued.token).unwrap();
        assert_eq!(
            claims,
            VerificationClaims {
                jti: issued.jti,
                user_id: "user-1".into(),
                email: "a@example.com".into(),
                trace: None
            }
        );
    }

    #[test]
    fn every_token_has_its_own_jti() {
        let keys = TokenKeys::generate().unwrap();
        let a = keys.issue("u", "a@example.com", HOUR).unwrap();
        let b = keys.issue("u", "a@example.com", HOUR).unwrap();
        assert_ne!(a.jti, b.jti);
        assert_ne!(a.token, b.token);
    }

    #[test]
    fn a_tampered_token_is_invalid() {
        let keys = TokenKeys::generate().unwrap();
        let token = keys.issue("user-1", "a@example.com", HOUR).unwrap().token;
        let body_start = "v4.local.".len();
        let mut bytes = token.into_bytes();
        bytes[body_start + 10] = if bytes[body_start + 10] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(bytes).unwrap();
        assert_eq!(keys.open(&tampered), Err(TokenError::Invalid));
    }

    #[test]
    fn garbage_is_malformed() {
        let keys = TokenKeys::generate().unwrap();
        for garbage in ["", "hello", "v4.public.abc", "v2.local.abc", &"x".repeat(5000)] {
            assert_eq!(keys.open(garbage), Err(TokenError::Malformed), "{garbage:.20}");
        }
    }

    #[test]
    fn an_expired_token_says_so() {
        let keys = TokenKeys::generate().unwrap();
        let token = keys.issue("user-1", "a@example.com", Duration::from_secs(1)).unwrap().token;
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(keys.open(&token), Err(TokenError::Expired));
    }

    #[test]
    fn a_change_verifies_like_a_registration_and_an_undo_link_only_undoes() {
        let keys = TokenKeys::generate().unwrap();
        let change = keys.issue_for(EMAIL_CHANGE, "user-1", "new@example.com", HOUR).unwrap().token;
        assert_eq!(keys.open(&change).unwrap().email, "new@example.com");
        assert_eq!(keys.open_for(&[UNDO_EMAIL_CHANGE], &change), Err(TokenError::WrongPurpose));
        let undo = keys.issue_for(UNDO_EMAIL_CHANGE, "user-1", "old@example.com", HOUR).unwrap().token;
        assert_eq!(keys.open(&undo), Err(TokenError::WrongPurpose), "an undo link verifies nothing");
        assert_eq!(keys.open_for(&[UNDO_EMAIL_CHANGE], &undo).unwrap().email, "old@example.com");
    }

    #[test]
    fn a_token_for_another_purpose_is_refused() {
        let keys = TokenKeys::generate().unwrap();
        let token = keys.issue_for("password_reset", "user-1", "a@example.com", HOUR).unwrap().token;
        assert_eq!(keys.open(&token), Err(TokenError::WrongPurpose));
    }

    #[test]
    fn keys_rotate_old_tokens_still_open_unknown_keys_do_not() {
        let old = TokenKeys::generate().unwrap();
        let new = TokenKeys::generate().unwrap();
        let old_token = old.issue("user-1", "a@example.com", HOUR).unwrap().token;
        let rotated = TokenKeys::from_paserk(&[new.current_paserk(), old.current_paserk()]).unwrap();
        assert_eq!(rotated.open(&old_token).unwrap().user_id, "user-1");
        let fresh = rotated.issue("user-2", "b@example.com", HOUR).unwrap();
        assert_eq!(new.open(&fresh.token).unwrap().user_id, "user-2", "the first key issues");
        assert_eq!(new.open(&old_token), Err(TokenError::UnknownKey));
    }

    #[test]
    fn bad_key_configuration_is_refused() {
        assert!(TokenKeys::from_paserk(&["not-a-key"]).is_err());
        assert!(TokenKeys::from_paserk(&["ab".repeat(31)]).is_err(), "62 hex digits");
        assert!(TokenKeys::from_paserk(&["zz".repeat(32)]).is_err(), "not hex");
        let raw = TokenKeys::from_paserk(&["0123456789abcdef".repeat(4)]).expect("a raw key in hex");
        let token = raw.issue("u", "a@example.com", HOUR).unwrap().token;
        assert!(raw.open(&token).is_ok());
        assert!(TokenKeys::from_paserk::<&str>(&[]).is_err());
    }
}
