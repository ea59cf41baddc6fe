//! Access tokens: PASETO v4.public, signed with Ed25519 here and verified anywhere with the
//! public keys alone (AuthService/GetPublicKeys, the gateway's keys URL, the client crate).
//! The footer names the signing key by its PASERK id (`k4.pid.…`), so keys rotate: the first
//! configured key signs, every configured key is published for verifiers.

use crate::links::paserk;
use pasetors::claims::Claims;
use pasetors::footer::Footer;
use pasetors::keys::{AsymmetricKeyPair, AsymmetricPublicKey, AsymmetricSecretKey, Generate};
use pasetors::paserk::Id;
use pasetors::version4::V4;
use std::time::Duration;

/// The `iss` claim of every access token.
pub const ISSUER: &str = "verimail";

struct SigningKey {
    secret: AsymmetricSecretKey<V4>,
    id: Id,
    /// PASERK `k4.pid.…` and `k4.public.…`.
    id_text: String,
    public_paserk: String,
}

/// The Ed25519 keys access tokens are signed with: the first signs, all are published.
pub struct SigningKeys {
    keys: Vec<SigningKey>,
}

/// A key a verifier needs: its id, the key, and whether it signs new tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedKey {
    pub id: String,
    pub paserk: String,
    pub current: bool,
}

/// What an access token says about its holder.
#[derive(Debug, Clone)]
pub struct Holder<'a> {
    pub user_id: &'a str,
    pub email: &'a str,
    pub email_verified: bool,
    /// The session the token belongs to (`sid`).
    pub session_id: &'a str,
    /// When the password was last proven in that session (`auth_time`).
    pub auth_time: chrono::DateTime<chrono::Utc>,
}

pub struct SignedToken {
    pub token: String,
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

impl SigningKeys {
    /// From PASERK `k4.secret.…` strings (the Ed25519 key pair); the first one signs.
    pub fn from_paserk<S: AsRef<str>>(paserks: &[S]) -> Result<SigningKeys, String> {
        let secrets = paserks
            .iter()
            .enumerate()
            .map(|(i, text)| {
                AsymmetricSecretKey::<V4>::try_from(text.as_ref().trim())
                    .map_err(|_| format!("key {} is not a PASERK k4.secret key", i + 1))
            })
            .collect::<Result<Vec<_>, _>>()?;
        SigningKeys::new(secrets)
    }

    /// One fresh key pair (development only: tokens signed with it fail after a restart).
    pub fn generate() -> Result<SigningKeys, String> {
        let pair = AsymmetricKeyPair::<V4>::generate().map_err(|e| e.to_string())?;
        SigningKeys::new(vec![pair.secret])
    }

    fn new(secrets: Vec<AsymmetricSecretKey<V4>>) -> Result<SigningKeys, String> {
        if secrets.is_empty() {
            return Err("at least one key is needed".into());
        }
        let keys = secrets
            .into_iter()
            .map(|secret| {
                let public = AsymmetricPublicKey::<V4>::try_from(&secret).map_err(|e| e.to_string())?;
                let id = Id::from(&public);
                Ok(SigningKey { id_text: paserk(&id), public_paserk: paserk(&public), id, secret })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(SigningKeys { keys })
    }

    /// The signing key as PASERK `k4.secret.…`, for printing a generated one and for tests.
    pub fn current_paserk(&self) -> String {
        paserk(&self.keys[0].secret)
    }

    /// Every key's public half, the signing one first.
    pub fn published(&self) -> Vec<PublishedKey> {
        self.keys
            .iter()
            .enumerate()
            .map(|(i, key)| PublishedKey {
                id: key.id_text.clone(),
                paserk: key.public_paserk.clone(),
                current: i == 0,
            })
            .collect()
    }

    /// Signs a token for `holder`, valid for `lifetime`, for `audience`.
    pub fn sign(
        &self,
        holder: &Holder,
        audience: &str,
        lifetime: Duration,
    ) -> Result<SignedToken, pasetors::errors::Error> {
        let current = &self.keys[0];
        let mut claims = Claims::new_expires_in(&lifetime)?;
        claims.issuer(ISSUER)?;
        claims.audience(audience)?;
        claims.subject(holder.user_id)?;
        claims.token_identifier(&uuid::Uuid::now_v7().to_string())?;
        claims.add_additional("email", holder.email)?;
        claims.add_additional("email_verified", holder.email_verified)?;
        claims.add_additional("sid", holder.session_id)?;
        claims.add_additional("auth_time", holder.auth_time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))?;
        let mut footer = Footer::new();
        footer.key_id(&current.id);
        let token = pasetors::public::sign(&current.secret, &claims, Some(&footer), None)?;
        let expires_at = claims
            .get_claim("exp")
            .and_then(|exp| exp.as_str())
            .and_then(|exp| chrono::DateTime::parse_from_rfc3339(exp).ok())
            .map(|exp| exp.with_timezone(&chrono::Utc))
            .ok_or(pasetors::errors::Error::InvalidClaim)?;
        Ok(SignedToken { token, expires_at })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pasetors::claims::ClaimsValidationRules;
    use pasetors::token::UntrustedToken;

    const HOLDER: Holder = Holder {
        user_id: "0193-user",
        email: "ann@example.com",
        email_verified: true,
        session_id: "0193-session",
        auth_time: chrono::DateTime::<chrono::Utc>::UNIX_EPOCH,
    };

    #[test]
    fn a_token_verifies_with_the_published_key_and_names_it_in_the_footer() {
        let keys = SigningKeys::generate().unwrap();
        let signed = keys.sign(&HOLDER, "orders", Duration::from_secs(900)).unwrap();
        assert!(signed.token.starts_with("v4.public."), "{}", signed.token);
        let published = keys.published();
        assert_eq!(published.len(), 1);
        assert!(
            published[0].current
                && published[0].id.starts_with("k4.pid.")
                && published[0].paserk.starts_with("k4.public.")
        );
        let public = AsymmetricPublicKey::<V4>::try_from(published[0].paserk.as_str()).unwrap();
        let untrusted = UntrustedToken::<pasetors::Public, V4>::try_from(signed.token.as_str()).unwrap();
        let footer: serde_json::Value = serde_json::from_slice(untrusted.untrusted_footer()).unwrap();
        assert_eq!(footer["kid"], published[0].id);
        let mut rules = ClaimsValidationRules::new();
        rules.validate_audience_with("orders");
        rules.validate_issuer_with(ISSUER);
        let trusted = pasetors::public::verify(&public, &untrusted, &rules, None, None).unwrap();
        let claims = trusted.payload_claims().unwrap();
        assert_eq!(claims.get_claim("sub").unwrap(), "0193-user");
        assert_eq!(claims.get_claim("email").unwrap(), "ann@example.com");
        assert_eq!(claims.get_claim("email_verified").unwrap(), true);
        assert_eq!(claims.get_claim("sid").unwrap(), "0193-session");
        assert_eq!(claims.get_claim("auth_time").unwrap(), "1970-01-01T00:00:00Z");
        assert!(claims.get_claim("jti").is_some() && claims.get_claim("iat").is_some());
        let lifetime = signed.expires_at - chrono::Utc::now();
        assert!(lifetime <= chrono::Duration::seconds(900) && lifetime > chrono::Duration::seconds(890));
    }

    #[test]
    fn keys_rotate_the_first_signs_and_all_are_published() {
        let old = SigningKeys::generate().unwrap();
        let new = SigningKeys::generate().unwrap();
        let rotated = SigningKeys::from_paserk(&[new.current_paserk(), old.current_paserk()]).unwrap();
        let published = rotated.published();
        assert_eq!(published.len(), 2);
        assert_eq!(published[0], new.published()[0]);
        assert_eq!(published[1], PublishedKey { current: false, ..old.published()[0].clone() });
        let token = rotated.sign(&HOLDER, "a", Duration::from_secs(60)).unwrap().token;
        let untrusted = UntrustedToken::<pasetors::Public, V4>::try_from(token.as_str()).unwrap();
        let footer: serde_json::Value = serde_json::from_slice(untrusted.untrusted_footer()).unwrap();
        assert_eq!(footer["kid"], published[0].id);
    }

    #[test]
    fn bad_key_configuration_is_refused() {
        assert!(SigningKeys::from_paserk(&["not-a-key"]).is_err());
        let local = crate::links::TokenKeys::generate().unwrap().current_paserk();
        assert!(SigningKeys::from_paserk(&[local]).is_err(), "a k4.local key is not a signing key");
        assert!(SigningKeys::from_paserk::<&str>(&[]).is_err());
        let public = SigningKeys::generate().unwrap().published()[0].paserk.clone();
        assert!(SigningKeys::from_paserk(&[public]).is_err(), "a public key cannot sign");
    }
}
