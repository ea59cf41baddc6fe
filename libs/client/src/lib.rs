//! The client side of Verimail, for the other services of a system that uses it.
//!
//! - [`Connection`]: a channel to a Verimail service (TLS, the service credential), and the
//!   clients on it: look users up with `UserService/GetUser` and `BatchGetUsers`.
//! - [`TokenVerifier`]: checks the access tokens `UserService/SignIn` hands out (PASETO
//!   v4.public, Ed25519) offline, with the public keys it fetches from auth-service
//!   (`AuthService/GetPublicKeys`) and caches; it refetches when a token names a key it does
//!   not know (a rotation), at most once per interval. It checks the signature, expiry,
//!   issuer and audience, and returns typed [`Claims`]. With
//!   [`TokenVerifier::with_revocations`] it follows the sessions that ended (sign-out, a
//!   password reset, a deleted account: `UserService/ListRevokedSessions`) and refuses their
//!   tokens within about a second.
//! - [`RequireVerified`]: a tower layer for a tonic server that lets through only calls with
//!   a valid bearer token of a verified address: UNAUTHENTICATED without a valid token,
//!   PERMISSION_DENIED (reason `EMAIL_NOT_VERIFIED`) for an address not verified yet. The
//!   handler finds the caller's [`Claims`] in the request's extensions.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use verimail_client::{Connection, RequireVerified, TokenVerifier};
//! let auth = Connection::new("http://127.0.0.1:50052")?;
//! let verifier = TokenVerifier::from_auth(auth.auth(), "verimail");
//! let claims = verifier.verify("v4.public.…").await?;
//! println!("{} ({}), verified: {}", claims.user_id, claims.email, claims.email_verified);
//! // A tonic server that only verified users may call:
//! // Server::builder().layer(RequireVerified::new(verifier)).add_service(...)
//! # let _ = RequireVerified::new(verifier);
//! # Ok(()) }
//! ```

mod connect;
mod layer;
mod revoked;
mod verify;

pub use connect::{ConnectError, Connection, ServiceToken, WithCredential};
pub use layer::{RequireVerified, RequireVerifiedService, bearer_token};

/// How every access token begins (PASETO v4.public): what tells one from another credential
/// that travels in `authorization: Bearer`.
pub const TOKEN_PREFIX: &str = "v4.public.";
pub use revoked::{RevocationSource, RevokedFuture, RevokedPage};
pub use verify::{Claims, KeySource, KeysFuture, StaticKeys, TokenVerifier, VerifyError};

/// The `iss` claim of Verimail's access tokens.
pub const ISSUER: &str = "verimail";
