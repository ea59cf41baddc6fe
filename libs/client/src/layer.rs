//! `RequireVerified`: only callers with a valid access token of a verified address get through.

use crate::verify::{Claims, TokenVerifier, VerifyError};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tonic::Status;

/// A tower layer for a tonic server (all of it, `Server::builder().layer(…)`, or one service,
/// `RequireVerified::new(v).layer(OrdersServer::new(…))`, which keeps the service's name).
///
/// A call passes with `authorization: Bearer <access token>` whose token verifies (see
/// [`TokenVerifier`]) and says `email_verified: true`; the handler finds the [`Claims`] in
/// `request.extensions()`. Otherwise it is answered here: UNAUTHENTICATED for no token or one
/// that does not verify, PERMISSION_DENIED with ErrorInfo reason `EMAIL_NOT_VERIFIED` (domain
/// `user.verimail`) for an address not verified yet.
#[derive(Clone)]
pub struct RequireVerified {
    verifier: TokenVerifier,
}

impl RequireVerified {
    pub fn new(verifier: TokenVerifier) -> RequireVerified {
        RequireVerified { verifier }
    }

    /// The check on its own, for callers outside tower: the claims, or the status to answer.
    pub async fn check(&self, headers: &http::HeaderMap) -> Result<Claims, Status> {
        let token = bearer(headers).ok_or_else(|| {
            Status::unauthenticated("an access token is required: `authorization: Bearer <access token>` from SignIn")
        })?;
        let claims = self.verifier.verify(token).await.map_err(|e| match e {
            VerifyError::KeysUnavailable(reason) => {
                Status::unavailable(format!("cannot check access tokens now: {reason}"))
            }
            unchecked @ VerifyError::RevocationsUnavailable(_) => {
                Status::unavailable(format!("cannot check access tokens now: the token {unchecked}"))
            }
            other => Status::unauthenticated(format!("the access token {other}")),
        })?;
        if !claims.email_verified {
            use tonic_types::{ErrorDetails, StatusExt};
            return Err(Status::with_error_details(
                tonic::Code::PermissionDenied,
                "email: is not verified yet; verify it, then sign in again",
                ErrorDetails::with_error_info(
                    verimail_proto::reasons::EMAIL_NOT_VERIFIED,
                    verimail_proto::reasons::USER_DOMAIN,
                    std::collections::HashMap::<String, String>::new(),
                ),
            ));
        }
        Ok(claims)
    }
}

/// The token of `authorization: Bearer <token>` (the scheme in any case).
fn bearer(headers: &http::HeaderMap) -> Option<&str> {
    bearer_token(headers.get(http::header::AUTHORIZATION)?.to_str().ok()?)
}

/// The token of an `authorization` value `Bearer <token>` (the scheme in any case).
pub fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|token| !token.is_empty())
}

impl<S> tower::Layer<S> for RequireVerified {
    type Service = RequireVerifiedService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireVerifiedService { check: self.clone(), inner }
    }
}

/// The service [`RequireVerified`] wraps around another.
#[derive(Clone)]
pub struct RequireVerifiedService<S> {
    check: RequireVerified,
    inner: S,
}

impl<S, B> tower::Service<http::Request<B>> for RequireVerifiedService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>> + Clone + Send + 'static,
    S::Future: Send,
    B: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        // The clone is not ready; the one that was polled ready serves this call.
        let ready = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, ready);
        let check = self.check.clone();
        Box::pin(async move {
            match check.check(request.headers()).await {
                Ok(claims) => {
                    request.extensions_mut().insert(claims);
                    inner.call(request).await
                }
                Err(status) => Ok(status.into_http()),
            }
        })
    }
}

/// Keeps the wrapped service's name, so it is added to a server like the service itself.
impl<S: tonic::server::NamedService> tonic::server::NamedService for RequireVerifiedService<S> {
    const NAME: &'static str = S::NAME;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_bearer_token_is_taken() {
        let headers = |value: &str| {
            let mut headers = http::HeaderMap::new();
            headers.insert(http::header::AUTHORIZATION, value.parse().unwrap());
            headers
        };
        assert_eq!(bearer(&headers("Bearer v4.public.abc")), Some("v4.public.abc"));
        assert_eq!(bearer(&headers("bearer  v4.public.abc ")), Some("v4.public.abc"));
        assert_eq!(bearer(&headers("Basic dXNlcjpwYXNz")), None);
        assert_eq!(bearer(&headers("Bearer ")), None);
        assert_eq!(bearer(&http::HeaderMap::new()), None);
    }
}
