//! Offline verification of access tokens: PASETO v4.public, Ed25519, the key named by its
//! PASERK id (`k4.pid.…`) in the footer.

use crate::connect::WithCredential;
use pasetors::keys::AsymmetricPublicKey;
use pasetors::token::UntrustedToken;
use pasetors::version4::{PublicToken, V4};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use verimail_proto::auth::v1::{GetPublicKeysRequest, auth_service_client::AuthServiceClient};

/// Tokens are a few hundred bytes; anything far longer is refused before any work.
const MAX_TOKEN_LEN: usize = 4096;

/// Tokens [`TokenVerifier::verify`] remembers as verified (some 2 MB at most).
const MAX_REMEMBERED: usize = 10_000;

/// Why a token is not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("is not a PASETO v4.public token with a key id")]
    Malformed,
    #[error("was signed with a key the issuer does not publish")]
    UnknownKey,
    #[error("has an invalid signature (altered, or not signed by the issuer)")]
    BadSignature,
    #[error("has expired")]
    Expired,
    #[error("is not valid yet")]
    NotYetValid,
    #[error("is for another audience")]
    WrongAudience,
    #[error("has another issuer")]
    WrongIssuer,
    #[error("lacks a claim it must have: {0}")]
    MissingClaim(&'static str),
    #[error("the public keys could not be fetched: {0}")]
    KeysUnavailable(String),
    #[error("was revoked (its session ended: signed out, password changed, account deleted)")]
    Revoked,
    #[error("cannot be checked for revocation: the feed has not answered for {0} s")]
    RevocationsUnavailable(u64),
}

/// What a valid token says about its holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// `sub`: the user's id (a UUID).
    pub user_id: String,
    pub email: String,
    /// Whether the address was verified when the token was signed.
    pub email_verified: bool,
    /// `jti`: this token's id.
    pub token_id: String,
    pub audience: String,
    pub issued_at: chrono::DateTime<chrono::Utc>,
    pub expires_at: chrono::DateTime<chrono::Utc>,
    /// `sid`: the session the token belongs to; revoked with it.
    pub session_id: String,
    /// `auth_time`: when the password was last proven in that session.
    pub auth_time: chrono::DateTime<chrono::Utc>,
}

/// The claims as signed, borrowed from the payload.
#[derive(serde::Deserialize)]
struct Signed<'a> {
    #[serde(borrow)]
    sub: Option<&'a str>,
    email: Option<String>,
    email_verified: Option<bool>,
    jti: Option<String>,
    aud: Option<&'a str>,
    iss: Option<&'a str>,
    iat: Option<&'a str>,
    nbf: Option<&'a str>,
    exp: Option<&'a str>,
    sid: Option<String>,
    auth_time: Option<&'a str>,
}

#[derive(serde::Deserialize)]
struct KeyFooter<'a> {
    kid: &'a str,
}

/// The future [`KeySource::fetch`] answers with.
pub type KeysFuture<'a> = Pin<Box<dyn Future<Output = Result<Vec<(String, String)>, VerifyError>> + Send + 'a>>;

/// Where the public keys come from: pairs of PASERK id (`k4.pid.…`) and key
/// (`k4.public.…`).
pub trait KeySource: Send + Sync {
    fn fetch(&self) -> KeysFuture<'_>;
}

/// auth-service's `GetPublicKeys`.
impl KeySource for AuthServiceClient<WithCredential> {
    fn fetch(&self) -> KeysFuture<'_> {
        let mut client = self.clone();
        Box::pin(async move {
            let keys = client
                .get_public_keys(GetPublicKeysRequest {})
                .await
                .map_err(|status| VerifyError::KeysUnavailable(status.message().to_owned()))?
                .into_inner()
                .keys;
            Ok(keys.into_iter().map(|key| (key.id, key.paserk)).collect())
        })
    }
}

/// Keys given once (from configuration, or the keys URL fetched by other means).
pub struct StaticKeys(pub Vec<(String, String)>);

impl KeySource for StaticKeys {
    fn fetch(&self) -> KeysFuture<'_> {
        let keys = self.0.clone();
        Box::pin(async move { Ok(keys) })
    }
}

/// Verifies access tokens offline; cheap to clone (one key cache for all clones).
#[derive(Clone)]
pub struct TokenVerifier {
    inner: Arc<Inner>,
    /// The ended sessions, when the verifier follows a revocation feed.
    revoked: Option<Arc<crate::revoked::Revoked>>,
    /// Refuse every token once the feed has been silent this long (`None`: never).
    revocations_max_lag: Option<Duration>,
    audience: Arc<str>,
    leeway: Duration,
    refetch_interval: Duration,
    max_age: Duration,
}

/// The keys by id, and when they were fetched (never: `None`).
type Fetched = (Option<Instant>, HashMap<String, AsymmetricPublicKey<V4>>);

struct Inner {
    source: Box<dyn KeySource>,
    keys: RwLock<Fetched>,
    /// Tokens verified with the keys held now, and what they say.
    verified: RwLock<HashMap<Box<str>, Claims>>,
    /// When the keys were last fetched; held while fetching, so concurrent misses fetch once.
    fetched: tokio::sync::Mutex<Option<Instant>>,
}

impl TokenVerifier {
    /// Accepts tokens for `audience` (auth-service's `ACCESS_TOKEN_AUDIENCE`) signed with the
    /// keys from `source`. By default it allows 30 s of clock difference and refetches keys at
    /// most every 30 s.
    pub fn new(source: impl KeySource + 'static, audience: impl Into<String>) -> TokenVerifier {
        TokenVerifier {
            inner: Arc::new(Inner {
                source: Box::new(source),
                keys: RwLock::new((None, HashMap::new())),
                verified: RwLock::new(HashMap::new()),
                fetched: tokio::sync::Mutex::new(None),
            }),
            revoked: None,
            revocations_max_lag: None,
            audience: audience.into().into(),
            leeway: Duration::from_secs(30),
            refetch_interval: Duration::from_secs(30),
            max_age: Duration::from_secs(300),
        }
    }

    /// With the keys auth-service publishes (`AuthService/GetPublicKeys`).
    pub fn from_auth(auth: AuthServiceClient<WithCredential>, audience: impl Into<String>) -> TokenVerifier {
        TokenVerifier::new(auth, audience)
    }

    /// At most one fetch of the keys per `interval`, however many tokens name an unknown key.
    pub fn with_refetch_interval(mut self, interval: Duration) -> TokenVerifier {
        self.refetch_interval = interval;
        self
    }

    /// How long fetched keys are used before they are fetched again (default 5 minutes): a key
    /// the issuer stopped publishing verifies nothing after that.
    pub fn with_max_age(mut self, max_age: Duration) -> TokenVerifier {
        self.max_age = max_age;
        self
    }

    /// Follows a revocation feed (user-service's `ListRevokedSessions`: `Connection::users()`
    /// with `APP_SERVICE_TOKEN`), polled every `interval` (1 s keeps a revoked token alive for
    /// about a second): a token whose session ended is refused with [`VerifyError::Revoked`].
    /// Starts a task on the current tokio runtime. While the feed does not answer, tokens are
    /// checked against what it said last (see [`TokenVerifier::with_revocations_max_lag`]).
    pub fn with_revocations(mut self, source: impl crate::RevocationSource + 'static, interval: Duration) -> Self {
        self.revoked = Some(crate::revoked::Revoked::follow(source, interval));
        self
    }

    /// Fail closed: once the revocation feed has not answered for `lag` (or never has, `lag`
    /// after start), refuse every token with [`VerifyError::RevocationsUnavailable`].
    pub fn with_revocations_max_lag(mut self, lag: Duration) -> TokenVerifier {
        self.revocations_max_lag = Some(lag);
        self
    }

    /// How long ago the revocation feed last answered (`None`: not followed, or no answer yet).
    pub fn revocations_age(&self) -> Option<Duration> {
        self.revoked.as_ref().and_then(|revoked| revoked.age())
    }

    /// How far the issuer's clock and this one may differ.
    pub fn with_leeway(mut self, leeway: Duration) -> TokenVerifier {
        self.leeway = leeway;
        self
    }

    /// Checks `token`: its key (fetching the keys if it names one not seen yet, at most once
    /// per refetch interval), signature, expiry, issuer and audience.
    ///
    /// A token that verified is remembered (at most 10,000, until it expires or the keys are
    /// fetched again), so a caller's later calls with the same token cost a lookup instead of
    /// a signature check; its expiry is checked on every call.
    pub async fn verify(&self, token: &str) -> Result<Claims, VerifyError> {
        // When the keys cannot be fetched, those held so far still serve (if any).
        if self.stale()
            && let Err(unreachable) = self.refetch().await
            && self.is_empty()
        {
            return Err(unreachable);
        }
        let claims = match self.remembered(token) {
            Some(claims) => claims,
            None => {
                let claims = match self.verify_offline(token) {
                    Err(VerifyError::UnknownKey) => {
                        self.refetch().await?;
                        self.verify_offline(token)
                    }
                    done => done,
                }?;
                self.remember(token, &claims);
                claims
            }
        };
        self.not_revoked(&claims)?;
        Ok(claims)
    }

    /// Revoked when the feed names the token's session; RevocationsUnavailable when the feed
    /// has been silent longer than the maximum lag.
    fn not_revoked(&self, claims: &Claims) -> Result<(), VerifyError> {
        let Some(revoked) = &self.revoked else { return Ok(()) };
        if let Some(lag) = self.revocations_max_lag {
            let age = revoked.age().unwrap_or(Duration::MAX);
            if age > lag {
                return Err(VerifyError::RevocationsUnavailable(
                    age.min(Duration::from_secs(u32::MAX.into())).as_secs(),
                ));
            }
        }
        if revoked.contains(&claims.session_id) {
            return Err(VerifyError::Revoked);
        }
        Ok(())
    }

    /// The claims of `token` if it verified before and has not expired since.
    fn remembered(&self, token: &str) -> Option<Claims> {
        let verified = self.inner.verified.read().ok()?;
        let claims = verified.get(token)?;
        let leeway = chrono::Duration::from_std(self.leeway).unwrap_or_default();
        (chrono::Utc::now() <= claims.expires_at + leeway).then(|| claims.clone())
    }

    fn remember(&self, token: &str, claims: &Claims) {
        if let Ok(mut verified) = self.inner.verified.write() {
            if verified.len() >= MAX_REMEMBERED {
                // Bounded, and simple: start afresh (each caller's next call verifies once).
                verified.clear();
            }
            verified.insert(token.into(), claims.clone());
        }
    }

    /// Whether the keys were never fetched or are older than the maximum age.
    fn stale(&self) -> bool {
        self.inner.keys.read().map_or(true, |keys| keys.0.is_none_or(|at| at.elapsed() >= self.max_age))
    }

    fn is_empty(&self) -> bool {
        self.inner.keys.read().map_or(true, |keys| keys.1.is_empty())
    }

    /// As [`TokenVerifier::verify`], with the keys fetched so far only (UnknownKey for any
    /// other) and no memory of earlier tokens: the whole check every time, no waiting, no I/O.
    pub fn verify_offline(&self, token: &str) -> Result<Claims, VerifyError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(VerifyError::Malformed);
        }
        let untrusted = UntrustedToken::<pasetors::Public, V4>::try_from(token).map_err(|_| VerifyError::Malformed)?;
        let footer: KeyFooter =
            serde_json::from_slice(untrusted.untrusted_footer()).map_err(|_| VerifyError::Malformed)?;
        let trusted = {
            let keys = self.inner.keys.read().map_err(|_| VerifyError::KeysUnavailable("poisoned cache".into()))?;
            let key = keys.1.get(footer.kid).ok_or(VerifyError::UnknownKey)?;
            PublicToken::verify(key, &untrusted, None, None).map_err(|_| VerifyError::BadSignature)?
        };
        self.claims(trusted.payload())
    }

    fn claims(&self, payload: &str) -> Result<Claims, VerifyError> {
        let signed: Signed = serde_json::from_str(payload).map_err(|_| VerifyError::Malformed)?;
        let time = |name: &'static str, value: Option<&str>| {
            let value = value.ok_or(VerifyError::MissingClaim(name))?;
            chrono::DateTime::parse_from_rfc3339(value)
                .map(|at| at.with_timezone(&chrono::Utc))
                .map_err(|_| VerifyError::Malformed)
        };
        if signed.iss != Some(crate::ISSUER) {
            return Err(VerifyError::WrongIssuer);
        }
        if signed.aud != Some(&*self.audience) {
            return Err(VerifyError::WrongAudience);
        }
        let now = chrono::Utc::now();
        let leeway = chrono::Duration::from_std(self.leeway).unwrap_or_default();
        let expires_at = time("exp", signed.exp)?;
        if now > expires_at + leeway {
            return Err(VerifyError::Expired);
        }
        if let Some(nbf) = signed.nbf
            && now + leeway < time("nbf", Some(nbf))?
        {
            return Err(VerifyError::NotYetValid);
        }
        Ok(Claims {
            user_id: signed.sub.ok_or(VerifyError::MissingClaim("sub"))?.to_owned(),
            email: signed.email.ok_or(VerifyError::MissingClaim("email"))?,
            email_verified: signed.email_verified.ok_or(VerifyError::MissingClaim("email_verified"))?,
            token_id: signed.jti.ok_or(VerifyError::MissingClaim("jti"))?,
            audience: self.audience.to_string(),
            issued_at: time("iat", signed.iat)?,
            expires_at,
            session_id: signed.sid.ok_or(VerifyError::MissingClaim("sid"))?,
            auth_time: time("auth_time", signed.auth_time)?,
        })
    }

    /// Fetches the keys, unless they were fetched less than the refetch interval ago (then a
    /// token with an unknown key is simply refused).
    async fn refetch(&self) -> Result<(), VerifyError> {
        let mut fetched = self.inner.fetched.lock().await;
        if fetched.is_some_and(|at| at.elapsed() < self.refetch_interval) {
            return Ok(());
        }
        *fetched = Some(Instant::now());
        let listed = self.inner.source.fetch().await?;
        let mut keys = HashMap::with_capacity(listed.len());
        for (id, paserk) in listed {
            let key = AsymmetricPublicKey::<V4>::try_from(paserk.as_str())
                .map_err(|_| VerifyError::KeysUnavailable(format!("key {id} is not a PASERK k4.public key")))?;
            keys.insert(id, key);
        }
        // Retired keys leave the cache with the list that no longer has them.
        *self.inner.keys.write().map_err(|_| VerifyError::KeysUnavailable("poisoned cache".into()))? =
            (Some(Instant::now()), keys);
        // What the old keys verified is checked again with the new ones (a retired key's
        // tokens stop here).
        if let Ok(mut verified) = self.inner.verified.write() {
            verified.clear();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use verimail_auth::access::{Holder, SigningKeys};

    const ANN: Holder = Holder {
        user_id: "0193f1c2-0000-7000-8000-000000000001",
        email: "ann@example.com",
        email_verified: true,
        session_id: "0193f1c2-0000-7000-8000-0000000000aa",
        auth_time: chrono::DateTime::<chrono::Utc>::UNIX_EPOCH,
    };

    /// The keys of `signing`, counting the fetches.
    struct Counted(Vec<(String, String)>, Arc<AtomicUsize>);

    impl KeySource for Counted {
        fn fetch(&self) -> KeysFuture<'_> {
            self.1.fetch_add(1, Ordering::SeqCst);
            let keys = self.0.clone();
            Box::pin(async move { Ok(keys) })
        }
    }

    fn published(signing: &SigningKeys) -> Vec<(String, String)> {
        signing.published().into_iter().map(|key| (key.id, key.paserk)).collect()
    }

    fn sign(signing: &SigningKeys, holder: &Holder, audience: &str, lifetime: Duration) -> String {
        signing.sign(holder, audience, lifetime).unwrap().token
    }

    #[tokio::test]
    async fn a_token_verifies_to_its_claims_and_an_altered_one_does_not() {
        let signing = SigningKeys::generate().unwrap();
        let verifier = TokenVerifier::new(StaticKeys(published(&signing)), "orders");
        let token = sign(&signing, &ANN, "orders", Duration::from_secs(900));
        let claims = verifier.verify(&token).await.unwrap();
        assert_eq!(
            (claims.user_id.as_str(), claims.email.as_str(), claims.email_verified),
            (ANN.user_id, ANN.email, true)
        );
        assert_eq!(claims.audience, "orders");
        assert!(claims.expires_at > chrono::Utc::now() + chrono::Duration::seconds(890));
        let mut altered = token.into_bytes();
        let at = "v4.public.".len() + 20;
        altered[at] = if altered[at] == b'A' { b'B' } else { b'A' };
        let altered = String::from_utf8(altered).unwrap();
        assert_eq!(verifier.verify(&altered).await, Err(VerifyError::BadSignature));
        for garbage in ["", "v4.public.", "v4.local.abc", "hello", &"x".repeat(5000)] {
            assert_eq!(verifier.verify(garbage).await, Err(VerifyError::Malformed), "{garbage:.20}");
        }
    }

    #[tokio::test]
    async fn expiry_audience_and_key_are_checked() {
        let signing = SigningKeys::generate().unwrap();
        let verifier = TokenVerifier::new(StaticKeys(published(&signing)), "orders").with_leeway(Duration::ZERO);
        let other_audience = sign(&signing, &ANN, "billing", Duration::from_secs(60));
        assert_eq!(verifier.verify(&other_audience).await, Err(VerifyError::WrongAudience));
        let short = sign(&signing, &ANN, "orders", Duration::from_secs(1));
        assert!(verifier.verify(&short).await.is_ok());
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(verifier.verify(&short).await, Err(VerifyError::Expired));
        let stranger = SigningKeys::generate().unwrap();
        let forged = sign(&stranger, &ANN, "orders", Duration::from_secs(60));
        assert_eq!(verifier.verify(&forged).await, Err(VerifyError::UnknownKey));
    }

    #[tokio::test]
    async fn an_unknown_key_refetches_at_most_once_per_interval_and_retired_keys_stop_verifying() {
        let old = SigningKeys::generate().unwrap();
        let new = SigningKeys::generate().unwrap();
        let fetches = Arc::new(AtomicUsize::new(0));
        let verifier = TokenVerifier::new(Counted(published(&old), fetches.clone()), "orders");
        let by_old = sign(&old, &ANN, "orders", Duration::from_secs(60));
        assert!(verifier.verify(&by_old).await.is_ok());
        assert!(verifier.verify(&by_old).await.is_ok());
        assert_eq!(fetches.load(Ordering::SeqCst), 1, "cached after the first");
        let by_new = sign(&new, &ANN, "orders", Duration::from_secs(60));
        for _ in 0..5 {
            assert_eq!(verifier.verify(&by_new).await, Err(VerifyError::UnknownKey));
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 1, "unknown keys within the interval fetch nothing");

        // After a rotation the issuer publishes the new key first and retires the old one.
        let rotated = Arc::new(AtomicUsize::new(0));
        let verifier = TokenVerifier::new(Counted(published(&new), rotated.clone()), "orders")
            .with_refetch_interval(Duration::ZERO);
        assert!(verifier.verify(&by_new).await.is_ok());
        assert_eq!(verifier.verify(&by_old).await, Err(VerifyError::UnknownKey));
        assert_eq!(rotated.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_remembered_token_still_expires_and_a_refetch_forgets_what_was_verified() {
        let signing = SigningKeys::generate().unwrap();
        let fetches = Arc::new(AtomicUsize::new(0));
        let verifier = TokenVerifier::new(Counted(published(&signing), fetches.clone()), "orders")
            .with_leeway(Duration::ZERO)
            .with_refetch_interval(Duration::ZERO);
        let short = sign(&signing, &ANN, "orders", Duration::from_secs(1));
        for _ in 0..3 {
            assert!(verifier.verify(&short).await.is_ok());
        }
        assert_eq!(verifier.inner.verified.read().unwrap().len(), 1, "remembered");
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(verifier.verify(&short).await, Err(VerifyError::Expired), "remembered, and expired all the same");
        let long = sign(&signing, &ANN, "orders", Duration::from_secs(60));
        assert!(verifier.verify(&long).await.is_ok());
        verifier.refetch().await.unwrap();
        assert!(verifier.inner.verified.read().unwrap().is_empty(), "new keys check every token again");
    }

    #[tokio::test]
    async fn keys_older_than_the_maximum_age_are_fetched_again() {
        let signing = SigningKeys::generate().unwrap();
        let fetches = Arc::new(AtomicUsize::new(0));
        let verifier = TokenVerifier::new(Counted(published(&signing), fetches.clone()), "orders")
            .with_max_age(Duration::from_millis(200))
            .with_refetch_interval(Duration::ZERO);
        let token = sign(&signing, &ANN, "orders", Duration::from_secs(60));
        assert!(verifier.verify(&token).await.is_ok());
        assert!(verifier.verify(&token).await.is_ok());
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(verifier.verify(&token).await.is_ok());
        assert_eq!(fetches.load(Ordering::SeqCst), 2, "stale keys are fetched again");
    }
}
