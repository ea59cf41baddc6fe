//! The routes: every decision is made by a service over gRPC; the gateway only turns
//! answers into pages.

use crate::pages::Pages;
use axum::Router;
use axum::extract::{Form, Query, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use minijinja::context;
use serde::Deserialize;
use std::sync::Arc;
use tonic::Code;
use tonic::transport::Channel;
use verimail_proto::auth::v1::{VerifyEmailRequest, VerifyOutcome, auth_service_client::AuthServiceClient};
use verimail_proto::user::v1::{ResendVerificationRequest, user_service_client::UserServiceClient};

pub struct Gateway {
    pub auth: AuthServiceClient<Channel>,
    pub users: UserServiceClient<Channel>,
    pub pages: Pages,
}

pub fn router(gateway: Arc<Gateway>) -> Router {
    Router::new()
        .route("/verify-email", get(confirm_page).post(verify))
        .route("/resend", get(resend_page).post(resend))
        .route("/static/submit.js", get(submit_script))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(gateway)
        .layer(axum::middleware::map_response(security_headers))
}

/// Tokens ride in the URL, so nothing is cached and no Referer leaks them; only our own
/// script runs and forms go only to us.
async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    let fixed = [
        (header::CACHE_CONTROL, "no-store"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    ];
    for (name, value) in fixed {
        headers.insert::<HeaderName>(name, HeaderValue::from_static(value));
    }
    response
}

#[derive(Deserialize)]
struct TokenParams {
    #[serde(default)]
    token: String,
}

#[derive(Deserialize)]
struct EmailParams {
    #[serde(default)]
    email: String,
}

/// GET changes nothing: mail scanners that prefetch links must not verify anyone.
async fn confirm_page(State(gw): State<Arc<Gateway>>, Query(params): Query<TokenParams>) -> Response {
    let token = params.token.trim();
    if token.is_empty() {
        return gw.pages.render(StatusCode::BAD_REQUEST, "invalid.html", context! { email => "" });
    }
    gw.pages.render(StatusCode::OK, "confirm.html", context! { token })
}

async fn verify(State(gw): State<Arc<Gateway>>, Form(params): Form<TokenParams>) -> Response {
    let answer = gw.auth.clone().verify_email(VerifyEmailRequest { token: params.token }).await;
    match answer {
        Ok(reply) => {
            let reply = reply.into_inner();
            match reply.outcome() {
                VerifyOutcome::AlreadyVerified => gw.pages.render(StatusCode::OK, "already_verified.html", context! {}),
                _ => gw.pages.render(StatusCode::OK, "verified.html", context! { email => reply.email }),
            }
        }
        Err(status) => match status.code() {
            Code::FailedPrecondition => gw.pages.render(StatusCode::GONE, "expired.html", context! { email => "" }),
            Code::InvalidArgument => gw.pages.render(StatusCode::BAD_REQUEST, "invalid.html", context! { email => "" }),
            _ => unavailable(&gw, &status),
        },
    }
}

async fn resend_page(State(gw): State<Arc<Gateway>>) -> Response {
    gw.pages.render(StatusCode::OK, "resend.html", context! { email => "" })
}

async fn resend(State(gw): State<Arc<Gateway>>, Form(params): Form<EmailParams>) -> Response {
    let email = params.email.trim().to_owned();
    let answer = gw.users.clone().resend_verification(ResendVerificationRequest { email: email.clone() }).await;
    match answer {
        Ok(_) => gw.pages.render(StatusCode::ACCEPTED, "resent.html", context! { email }),
        Err(status) if status.code() == Code::InvalidArgument => gw.pages.render(
            StatusCode::BAD_REQUEST,
            "resend.html",
            context! { email, error => "Please enter a valid email address." },
        ),
        Err(status) => unavailable(&gw, &status),
    }
}

fn unavailable(gw: &Gateway, status: &tonic::Status) -> Response {
    tracing::warn!(code = ?status.code(), message = status.message(), "service call failed");
    let mut response = gw.pages.render(StatusCode::SERVICE_UNAVAILABLE, "unavailable.html", context! {});
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    response
}

async fn submit_script() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], include_str!("../static/submit.js"))
}
