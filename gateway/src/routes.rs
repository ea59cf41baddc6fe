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
use verimail_proto::auth::v1::{
    VerifyEmailCodeRequest, VerifyEmailRequest, VerifyOutcome, auth_service_client::AuthServiceClient,
};
use verimail_proto::user::v1::{ResendVerificationRequest, user_service_client::UserServiceClient};

pub struct Gateway {
    pub auth: AuthServiceClient<Channel>,
    pub users: UserServiceClient<Channel>,
    pub pages: Pages,
}

pub fn router(gateway: Arc<Gateway>) -> Router {
    Router::new()
        .route("/verify-email", get(confirm_page).post(verify))
        .route("/verify-code", get(code_page).post(verify_code))
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

#[derive(Deserialize)]
struct CodeParams {
    #[serde(default)]
    email: String,
    #[serde(default)]
    code: String,
}

async fn code_page(State(gw): State<Arc<Gateway>>, Query(params): Query<EmailParams>) -> Response {
    gw.pages.render(StatusCode::OK, "code.html", context! { email => params.email.trim() })
}

async fn verify_code(State(gw): State<Arc<Gateway>>, Form(params): Form<CodeParams>) -> Response {
    use tonic_types::StatusExt;
    let email = params.email.trim().to_owned();
    let request = VerifyEmailCodeRequest { email: email.clone(), code: params.code };
    match gw.auth.clone().verify_email_code(request).await {
        Ok(reply) => {
            let reply = reply.into_inner();
            match reply.outcome() {
                VerifyOutcome::AlreadyVerified => gw.pages.render(StatusCode::OK, "already_verified.html", context! {}),
                _ => gw.pages.render(StatusCode::OK, "verified.html", context! { email => reply.email }),
            }
        }
        Err(status) => match status.code() {
            Code::FailedPrecondition => {
                let locked = status.get_details_error_info().is_some_and(|info| info.reason == "CODE_LOCKED");
                match locked {
                    true => gw.pages.render(StatusCode::GONE, "code_locked.html", context! { email }),
                    false => gw.pages.render(StatusCode::GONE, "expired.html", context! { email, what => "code" }),
                }
            }
            Code::InvalidArgument => {
                let error = match verimail_kit::grpc::bad_request_field(&status).as_deref() {
                    Some("email") => "Please enter the email address the code was sent to.",
                    _ => "That is not the code we sent to this address. Check the email and try again.",
                };
                gw.pages.render(StatusCode::BAD_REQUEST, "code.html", context! { email, error })
            }
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
