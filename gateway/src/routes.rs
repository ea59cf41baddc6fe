//! The routes: every decision is made by a service over gRPC; the gateway only turns
//! answers into pages.

use crate::pages::{CodeError, Logo, Page, Pages, Proof, ResetError};
use axum::Extension;
use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Form, Query, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tonic::Code;
use tonic_health::pb::health_client::HealthClient;
use tracing::Instrument;
use verimail_proto::auth::v1::{
    VerifyEmailCodeRequest, VerifyEmailRequest, VerifyEmailResponse, VerifyOutcome,
    auth_service_client::AuthServiceClient,
};
use verimail_proto::reasons;
use verimail_proto::user::v1::{
    RequestPasswordResetRequest, ResendVerificationRequest, ResetPasswordRequest, UndoEmailChangeRequest,
    user_service_client::UserServiceClient,
};
use verimail_server::internal::{CLIENT_ADDRESS, Internal};
use verimail_server::limits::Limiter;

pub struct Gateway {
    pub auth: AuthServiceClient<Internal>,
    pub users: UserServiceClient<Internal>,
    /// Every page in every language, with the team's brand.
    pub pages: Arc<Pages>,
    /// The logo of the templates folder, served at its path.
    pub logo: Option<Logo>,
    /// The Content-Security-Policy of every response.
    pub content_security_policy: HeaderValue,
    pub posts_per_client: Limiter,
    /// Whose forwarding headers name the client.
    pub trusted_proxies: crate::client::TrustedProxies,
    /// From the request head to the response (a slow body included): 408 past it.
    pub request_timeout: Duration,
    /// The keys document, fetched from auth-service at most once per [`KEYS_FRESH`].
    pub keys: KeysCache,
    /// grpc.health.v1 of the services the pages call, for `/readyz`.
    pub upstreams: [(&'static str, HealthClient<Internal>); 2],
    /// user-service without the gateway's credential: the revocation feed is asked with the
    /// caller's own.
    pub users_as_caller: tonic::transport::Channel,
}

/// The access tokens' public keys, as JSON.
pub const KEYS_PATH: &str = "/.well-known/verimail-keys";
/// How long the gateway reuses the keys it fetched: at most one GetPublicKeys a second however
/// many verifiers ask, and a key that starts signing is published here within a second.
const KEYS_FRESH: Duration = Duration::from_secs(1);
/// How long clients and caches in between may keep the document. Short, because a verifier
/// that meets a token with a key id it does not know refetches to learn the new key (a
/// rotation); longer would refuse a new key's tokens for that long after a rotation.
const KEYS_MAX_AGE: Duration = Duration::from_secs(5);

/// The last keys document and when it was fetched.
#[derive(Default)]
pub struct KeysCache(tokio::sync::Mutex<Option<(std::time::Instant, Arc<str>)>>);

/// Forms are a few short fields: anything bigger is refused before it is read.
const MAX_FORM_BYTES: usize = 4 * 1024;
/// A link with its token is a few hundred bytes; longer targets are refused (414).
const MAX_URI_BYTES: usize = 2 * 1024;
/// A browser sends one or two KiB of headers; more is refused (431).
const MAX_HEADER_BYTES: usize = 8 * 1024;

pub fn router(gateway: Arc<Gateway>) -> Router {
    let mut router = Router::new();
    if let Some(logo) = &gateway.logo {
        router = router.route(&logo.path, get(logo_file));
    }
    router
        .route("/verify-email", get(confirm_page).post(verify))
        .route("/verify-code", get(code_page).post(verify_code))
        .route("/resend", get(resend_page).post(resend))
        .route("/email-change/undo", get(undo_page).post(undo))
        .route("/forgot-password", get(forgot_page).post(forgot))
        .route("/reset-password", get(reset_page).post(reset))
        .route(KEYS_PATH, get(public_keys))
        .route(REVOKED_PATH, get(revoked_sessions))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(gateway.clone(), limit_posts))
        .layer(axum::middleware::from_fn_with_state(gateway.clone(), choose_language))
        .layer(DefaultBodyLimit::max(MAX_FORM_BYTES))
        .layer(axum::middleware::from_fn_with_state(gateway.clone(), identify_client))
        .layer(axum::middleware::from_fn_with_state(gateway.clone(), limit_time))
        .layer(axum::middleware::from_fn(limit_request_head))
        .layer(axum::middleware::from_fn(trace_request))
        .layer(axum::middleware::map_response_with_state(gateway.clone(), security_headers))
        .with_state(gateway)
}

/// The language of the pages for a request ([`Pages::negotiate`]).
#[derive(Debug, Clone)]
struct Lang(String);

/// The language a link or a form's action asks for (`?lang=`): the links in emails carry the
/// user's, and every form posts it on, so each page of a flow is in the email's language.
#[derive(Deserialize)]
struct LangParams {
    lang: Option<String>,
}

async fn choose_language(State(gw): State<Arc<Gateway>>, mut request: axum::extract::Request, next: Next) -> Response {
    let asked = Query::<LangParams>::try_from_uri(request.uri()).ok().and_then(|Query(params)| params.lang);
    let lang = gw.pages.negotiate(asked.as_deref(), request.headers());
    request.extensions_mut().insert(Lang(lang));
    next.run(request).await
}

/// 404 with a page, for any path the gateway does not serve.
async fn not_found(State(gw): State<Arc<Gateway>>, Extension(Lang(lang)): Extension<Lang>) -> Response {
    gw.pages.render(StatusCode::NOT_FOUND, &lang, &Page::NotFound)
}

/// The logo file of the templates folder; browsers may keep it a day.
async fn logo_file(State(gw): State<Arc<Gateway>>) -> Response {
    let Some(logo) = &gw.logo else { return StatusCode::NOT_FOUND.into_response() };
    let headers = [(header::CONTENT_TYPE, logo.media_type), (header::CACHE_CONTROL, "public, max-age=86400")];
    (headers, logo.bytes.clone()).into_response()
}

/// A server span per request (named by method and path; the query, which holds tokens, is
/// left out); the services' spans for the calls it makes are its children.
async fn trace_request(request: axum::extract::Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    // The matched route and a known method, so invented paths and methods do not each make a
    // series (or a span name) of their own.
    let method = method_label(request.method());
    let route = request.extensions().get::<axum::extract::MatchedPath>().map_or("unmatched", |p| p.as_str()).to_owned();
    let span = tracing::info_span!(
        "http",
        otel.name = %format_args!("{method} {route}"),
        otel.kind = "server",
        http.request.method = %request.method(),
        url.path = request.uri().path(),
        http.response.status_code = tracing::field::Empty,
        trace_id = tracing::field::Empty,
    );
    verimail_server::telemetry::continue_trace_from_headers(&span, request.headers());
    let response = next.run(request).instrument(span.clone()).await;
    span.record("http.response.status_code", response.status().as_u16());
    let metrics = verimail_server::metrics::metrics();
    let route_key = verimail_server::metrics::MethodLabel { method: format!("{method} {route}") };
    metrics.http_duration.get_or_create(&route_key).observe(started.elapsed().as_secs_f64());
    let labels =
        verimail_server::metrics::HttpLabels { method: method.to_owned(), route, status: response.status().as_u16() };
    metrics.http_requests.get_or_create(&labels).inc();
    response
}

/// A request method as a label: the methods of HTTP itself by name, any other as `_OTHER`
/// (OpenTelemetry's name for it). A client may send any token as a method.
fn method_label(method: &axum::http::Method) -> &'static str {
    const KNOWN: [&str; 9] = ["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"];
    KNOWN.into_iter().find(|known| *known == method.as_str()).unwrap_or("_OTHER")
}

/// Oversized request targets and headers are refused before any handler or service sees them.
/// (hyper bounds what it buffers per connection; these are the limits a client meets.)
async fn limit_request_head(request: axum::extract::Request, next: Next) -> Response {
    let uri_bytes = request.uri().path_and_query().map_or(0, |target| target.as_str().len());
    if uri_bytes > MAX_URI_BYTES {
        let message = format!("The address is longer than {MAX_URI_BYTES} bytes.\n");
        return (StatusCode::URI_TOO_LONG, message).into_response();
    }
    // As on the wire: "name: value\r\n".
    let header_bytes: usize = request.headers().iter().map(|(name, value)| name.as_str().len() + value.len() + 4).sum();
    if header_bytes > MAX_HEADER_BYTES {
        let message = format!("The request headers are larger than {MAX_HEADER_BYTES} bytes.\n");
        return (StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, message).into_response();
    }
    next.run(request).await
}

/// A request not answered within the request timeout (its body still coming, say) gets 408.
async fn limit_time(State(gw): State<Arc<Gateway>>, request: axum::extract::Request, next: Next) -> Response {
    match tokio::time::timeout(gw.request_timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => (StatusCode::REQUEST_TIMEOUT, "The request took too long.\n").into_response(),
    }
}

/// The browser this request is for: the peer, or behind a trusted proxy the client it names.
#[derive(Debug, Clone, Copy)]
struct Client(IpAddr);

async fn identify_client(
    State(gw): State<Arc<Gateway>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut request: axum::extract::Request,
    next: Next,
) -> Response {
    let client = gw.trusted_proxies.client(peer.ip(), request.headers());
    request.extensions_mut().insert(Client(client));
    next.run(request).await
}

/// Every form post counts against its client's allowance (an IPv6 client's /64); over it:
/// 429 with Retry-After.
async fn limit_posts(
    State(gw): State<Arc<Gateway>>,
    Extension(Client(client)): Extension<Client>,
    Extension(Lang(lang)): Extension<Lang>,
    request: axum::extract::Request,
    next: Next,
) -> Response {
    if request.method() == Method::POST
        && let Err(status) = gw.posts_per_client.check(&verimail_server::limits::client_key(client)).await
    {
        return too_many(&gw, &lang, &status);
    }
    next.run(request).await
}

/// 429 with Retry-After (whole seconds) and a page, from a RESOURCE_EXHAUSTED status.
fn too_many(gw: &Gateway, lang: &str, status: &tonic::Status) -> Response {
    let wait = verimail_server::limits::retry_after(status).unwrap_or(Duration::from_secs(1));
    let seconds = verimail_server::limits::whole_seconds(wait);
    let mut response = gw.pages.render(StatusCode::TOO_MANY_REQUESTS, lang, &Page::TooMany { seconds });
    if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// A call on behalf of the browser at `client`: the services limit by its address, not ours.
fn on_behalf<T>(message: T, client: IpAddr) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Ok(value) = client.to_string().parse() {
        request.metadata_mut().insert(CLIENT_ADDRESS, value);
    }
    request
}

/// GET /.well-known/verimail-keys: what AuthService/GetPublicKeys answers, as JSON, for
/// verifiers in any language. Cacheable for five seconds; 503 while auth-service cannot answer.
async fn public_keys(State(gw): State<Arc<Gateway>>) -> Response {
    let mut cached = gw.keys.0.lock().await;
    let fresh = cached.as_ref().filter(|(at, _)| at.elapsed() < KEYS_FRESH).map(|(_, body)| body.clone());
    let body = match fresh {
        Some(body) => body,
        None => {
            let request = verimail_proto::auth::v1::GetPublicKeysRequest {};
            let reply = match gw.auth.clone().get_public_keys(request).await {
                Ok(reply) => reply.into_inner(),
                Err(status) => {
                    tracing::warn!(code = ?status.code(), message = status.message(), "public keys unavailable");
                    let mut response =
                        (StatusCode::SERVICE_UNAVAILABLE, "The keys cannot be fetched now; retry shortly.\n")
                            .into_response();
                    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
                    return response;
                }
            };
            let keys: Vec<serde_json::Value> = reply
                .keys
                .into_iter()
                .map(|key| serde_json::json!({ "kid": key.id, "paserk": key.paserk, "current": key.current }))
                .collect();
            let document = serde_json::json!({ "issuer": reply.issuer, "audience": reply.audience, "version": "v4", "purpose": "public", "keys": keys });
            let body: Arc<str> = document.to_string().into();
            *cached = Some((std::time::Instant::now(), body.clone()));
            body
        }
    };
    drop(cached);
    let cache_control = format!("public, max-age={}", KEYS_MAX_AGE.as_secs());
    let mut response = ([(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response();
    if let Ok(value) = HeaderValue::from_str(&cache_control) {
        response.headers_mut().insert(header::CACHE_CONTROL, value);
    }
    response
}

/// UserService/ListRevokedSessions as JSON, for verifiers outside Rust.
pub const REVOKED_PATH: &str = "/v1/revoked-sessions";

#[derive(Deserialize)]
struct FeedParams {
    #[serde(default)]
    after: u64,
    #[serde(default)]
    limit: u32,
}

/// GET /v1/revoked-sessions?after=CURSOR: the revocation feed (docs/events.md, "Revocation")
/// for verifiers that do not speak gRPC. The caller presents its own service credential
/// (`Authorization: Bearer <secret>`, a service granted `revocations`), which user-service
/// checks, names, counts and limits as if it had called ListRevokedSessions itself: the
/// gateway adds no authority of its own. Answers
/// `{"revoked":[{"session_id","user_id","tokens_expire_at"}],"cursor":N,"more":bool}`, or an
/// error as `{"error":{"code","message"}}` with the HTTP status of the gRPC one.
async fn revoked_sessions(
    State(gw): State<Arc<Gateway>>,
    headers: axum::http::HeaderMap,
    params: Result<Query<FeedParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Query(params) = match params {
        Ok(params) => params,
        Err(rejection) => {
            let message = format!("after and limit are whole numbers: {}", rejection.body_text());
            return json_error(StatusCode::BAD_REQUEST, "invalid_argument", &message);
        }
    };
    let credential = match headers.get(header::AUTHORIZATION) {
        None => verimail_server::internal::ServiceCredential::open(),
        Some(value) => {
            let secret = value.to_str().ok().and_then(verimail_server::internal::bearer_secret);
            match secret.map(verimail_server::internal::ServiceCredential::new) {
                Some(Ok(credential)) => credential,
                _ => {
                    let message = "present your service's secret as `Authorization: Bearer <secret>`";
                    return json_error(StatusCode::UNAUTHORIZED, "unauthenticated", message);
                }
            }
        }
    };
    let mut users = UserServiceClient::new(credential.channel(gw.users_as_caller.clone()));
    let request = verimail_proto::user::v1::ListRevokedSessionsRequest { after: params.after, limit: params.limit };
    let page = match users.list_revoked_sessions(request).await {
        Ok(reply) => reply.into_inner(),
        Err(status) => {
            let (http, code) = match status.code() {
                Code::InvalidArgument => (StatusCode::BAD_REQUEST, "invalid_argument"),
                Code::Unauthenticated => (StatusCode::UNAUTHORIZED, "unauthenticated"),
                Code::PermissionDenied => (StatusCode::FORBIDDEN, "permission_denied"),
                Code::ResourceExhausted => (StatusCode::TOO_MANY_REQUESTS, "resource_exhausted"),
                code => {
                    tracing::warn!(?code, message = status.message(), "revocation feed unavailable");
                    let mut response = json_error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "unavailable",
                        "the feed cannot be read now; retry shortly",
                    );
                    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                    return response;
                }
            };
            return json_error(http, code, status.message());
        }
    };
    let revoked: Vec<serde_json::Value> = page
        .revoked
        .into_iter()
        .map(|session| {
            serde_json::json!({
                "session_id": session.session_id,
                "user_id": session.user_id,
                "tokens_expire_at": session.tokens_expire_at,
            })
        })
        .collect();
    let body = serde_json::json!({ "revoked": revoked, "cursor": page.cursor, "more": page.more });
    ([(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

/// An API error: `{"error":{"code","message"}}`.
fn json_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({ "error": { "code": code, "message": message } });
    let mut response = (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}

/// Tokens ride in the URL, so nothing is cached and no Referer leaks them; no script runs at
/// all (a mail scanner that runs a page's scripts must find nothing that submits the form)
/// and forms go only to us.
async fn security_headers(State(gw): State<Arc<Gateway>>, mut response: Response) -> Response {
    let headers = response.headers_mut();
    // Pages hold tokens: never cached. (The keys document says otherwise for itself.)
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    let fixed = [
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ];
    for (name, value) in fixed {
        headers.insert::<HeaderName>(name, HeaderValue::from_static(value));
    }
    headers.insert(header::CONTENT_SECURITY_POLICY, gw.content_security_policy.clone());
    response
}

/// No script runs, styles are the page's own, images come from `image_sources` (the gateway,
/// and the origin of `BRAND_LOGO_URL`), forms go only to the gateway.
pub fn content_security_policy(image_sources: &str) -> Result<HeaderValue, axum::http::header::InvalidHeaderValue> {
    HeaderValue::from_str(&format!(
        "default-src 'none'; script-src 'none'; style-src 'unsafe-inline'; img-src {image_sources}; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ))
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

/// GET changes nothing, and the page does nothing by itself: mail scanners fetch links and run
/// their scripts, so verifying takes a person's press of the button (a plain form POST).
async fn confirm_page(
    State(gw): State<Arc<Gateway>>,
    Extension(Lang(lang)): Extension<Lang>,
    Query(params): Query<TokenParams>,
) -> Response {
    form_page(&gw, &lang, &params, |token| Page::Confirm { token })
}

/// The page with the form that POSTs a link's token; 400 for a link without one.
fn form_page(gw: &Gateway, lang: &str, params: &TokenParams, page: impl Fn(&str) -> Page) -> Response {
    let token = params.token.trim();
    if token.is_empty() {
        return gw.pages.render(StatusCode::BAD_REQUEST, lang, &Page::Invalid);
    }
    gw.pages.render(StatusCode::OK, lang, &page(token))
}

async fn verify(
    State(gw): State<Arc<Gateway>>,
    Extension(Client(client)): Extension<Client>,
    Extension(Lang(lang)): Extension<Lang>,
    Form(params): Form<TokenParams>,
) -> Response {
    let answer = gw.auth.clone().verify_email(on_behalf(VerifyEmailRequest { token: params.token }, client)).await;
    match answer {
        Ok(reply) => verified_page(&gw, &lang, reply.into_inner()),
        Err(status) => link_refused(&gw, &lang, &status, false),
    }
}

/// The page for a link (a verification's, or a change notice's when `change`) auth-service
/// refused: its account deleted, the link expired or revoked, invalid, or no answer.
fn link_refused(gw: &Gateway, lang: &str, status: &tonic::Status, change: bool) -> Response {
    match status.code() {
        Code::FailedPrecondition => match reasons::of(status).as_str() {
            why @ (reasons::ACCOUNT_EXPIRED | reasons::ACCOUNT_DELETED) => account_gone(gw, lang, why, Proof::Link),
            why => {
                let revoked = why == reasons::TOKEN_REVOKED;
                let page = Page::Expired { email: "", what: Proof::Link, revoked, change };
                gw.pages.render(StatusCode::GONE, lang, &page)
            }
        },
        Code::InvalidArgument => gw.pages.render(StatusCode::BAD_REQUEST, lang, &Page::Invalid),
        _ => unavailable(gw, lang, status),
    }
}

/// The link of a change-of-address notice: like a verification link, GET shows a form and only
/// the POST acts (mail scanners open links).
async fn undo_page(
    State(gw): State<Arc<Gateway>>,
    Extension(Lang(lang)): Extension<Lang>,
    Query(params): Query<TokenParams>,
) -> Response {
    form_page(&gw, &lang, &params, |token| Page::UndoConfirm { token })
}

async fn undo(
    State(gw): State<Arc<Gateway>>,
    Extension(Client(client)): Extension<Client>,
    Extension(Lang(lang)): Extension<Lang>,
    Form(params): Form<TokenParams>,
) -> Response {
    use verimail_proto::user::v1::UndoOutcome;
    let request = on_behalf(UndoEmailChangeRequest { token: params.token }, client);
    match gw.users.clone().undo_email_change(request).await {
        Ok(reply) => {
            let reply = reply.into_inner();
            let email = reply.email.as_str();
            match reply.outcome() {
                UndoOutcome::AddressTaken => gw.pages.render(StatusCode::CONFLICT, &lang, &Page::UndoTaken { email }),
                UndoOutcome::AlreadyUndone => {
                    gw.pages.render(StatusCode::OK, &lang, &Page::Undone { email, again: true })
                }
                _ => gw.pages.render(StatusCode::OK, &lang, &Page::Undone { email, again: false }),
            }
        }
        // Used before: the change it was for is already undone.
        Err(status) if reasons::of(&status) == reasons::TOKEN_USED => {
            gw.pages.render(StatusCode::OK, &lang, &Page::Undone { email: "", again: true })
        }
        Err(status) => link_refused(&gw, &lang, &status, true),
    }
}

/// 410 for a link or code of a deleted account: "register again" when it expired unverified.
fn account_gone(gw: &Gateway, lang: &str, why: &str, what: Proof) -> Response {
    let expired = why == reasons::ACCOUNT_EXPIRED;
    gw.pages.render(StatusCode::GONE, lang, &Page::AccountGone { expired, what })
}

/// The page after a successful check: verified now, or before.
fn verified_page(gw: &Gateway, lang: &str, reply: VerifyEmailResponse) -> Response {
    match reply.outcome() {
        VerifyOutcome::AlreadyVerified => gw.pages.render(StatusCode::OK, lang, &Page::AlreadyVerified),
        _ => gw.pages.render(StatusCode::OK, lang, &Page::Verified { email: &reply.email }),
    }
}

#[derive(Deserialize)]
struct CodeParams {
    #[serde(default)]
    email: String,
    #[serde(default)]
    code: String,
}

async fn code_page(
    State(gw): State<Arc<Gateway>>,
    Extension(Lang(lang)): Extension<Lang>,
    Query(params): Query<EmailParams>,
) -> Response {
    gw.pages.render(StatusCode::OK, &lang, &Page::Code { email: params.email.trim(), error: None })
}

async fn verify_code(
    State(gw): State<Arc<Gateway>>,
    Extension(Client(client)): Extension<Client>,
    Extension(Lang(lang)): Extension<Lang>,
    Form(params): Form<CodeParams>,
) -> Response {
    let email = params.email.trim().to_owned();
    let request = VerifyEmailCodeRequest { email: email.clone(), code: params.code };
    let email = email.as_str();
    match gw.auth.clone().verify_email_code(on_behalf(request, client)).await {
        Ok(reply) => verified_page(&gw, &lang, reply.into_inner()),
        Err(status) => match status.code() {
            Code::FailedPrecondition => match reasons::of(&status).as_str() {
                reasons::CODE_LOCKED => gw.pages.render(StatusCode::GONE, &lang, &Page::CodeLocked { email }),
                why @ (reasons::ACCOUNT_EXPIRED | reasons::ACCOUNT_DELETED) => {
                    account_gone(&gw, &lang, why, Proof::Code)
                }
                why => {
                    let revoked = why == reasons::CODE_REVOKED;
                    let page = Page::Expired { email, what: Proof::Code, revoked, change: false };
                    gw.pages.render(StatusCode::GONE, &lang, &page)
                }
            },
            Code::InvalidArgument => {
                let error = match verimail_server::grpc::bad_request_field(&status).as_deref() {
                    Some("email") => CodeError::Email,
                    _ => CodeError::Code,
                };
                gw.pages.render(StatusCode::BAD_REQUEST, &lang, &Page::Code { email, error: Some(error) })
            }
            _ => unavailable(&gw, &lang, &status),
        },
    }
}

async fn resend_page(State(gw): State<Arc<Gateway>>, Extension(Lang(lang)): Extension<Lang>) -> Response {
    gw.pages.render(StatusCode::OK, &lang, &Page::Resend { email: "", error: false })
}

async fn resend(
    State(gw): State<Arc<Gateway>>,
    Extension(Client(client)): Extension<Client>,
    Extension(Lang(lang)): Extension<Lang>,
    Form(params): Form<EmailParams>,
) -> Response {
    let email = params.email.trim().to_owned();
    let request = on_behalf(ResendVerificationRequest { email: email.clone(), ..Default::default() }, client);
    let answer = gw.users.clone().resend_verification(request).await;
    let (sent, refused) = (Page::Resent { email: &email }, Page::Resend { email: &email, error: true });
    asked_for_email(&gw, &lang, answer, &sent, &refused)
}

/// The answer to a form that asks for an email to an address: `sent` (202, whatever the
/// address), the form again when the address is malformed (400), or why not.
fn asked_for_email<T>(
    gw: &Gateway,
    lang: &str,
    answer: Result<T, tonic::Status>,
    sent: &Page,
    refused: &Page,
) -> Response {
    match answer {
        Ok(_) => gw.pages.render(StatusCode::ACCEPTED, lang, sent),
        Err(status) if status.code() == Code::InvalidArgument => {
            gw.pages.render(StatusCode::BAD_REQUEST, lang, refused)
        }
        Err(status) => unavailable(gw, lang, &status),
    }
}

async fn forgot_page(State(gw): State<Arc<Gateway>>, Extension(Lang(lang)): Extension<Lang>) -> Response {
    gw.pages.render(StatusCode::OK, &lang, &Page::ForgotPassword { email: "", error: false })
}

/// The same page for any address: whether it has an account is nobody's business here.
async fn forgot(
    State(gw): State<Arc<Gateway>>,
    Extension(Client(client)): Extension<Client>,
    Extension(Lang(lang)): Extension<Lang>,
    Form(params): Form<EmailParams>,
) -> Response {
    let email = params.email.trim().to_owned();
    let locale = lang.clone();
    let request = on_behalf(RequestPasswordResetRequest { email: email.clone(), locale }, client);
    let answer = gw.users.clone().request_password_reset(request).await;
    let (sent, refused) = (Page::ResetSent { email: &email }, Page::ForgotPassword { email: &email, error: true });
    asked_for_email(&gw, &lang, answer, &sent, &refused)
}

/// A reset link's page (or, without a token, the code's): a form asking for the new password.
/// Opening it changes nothing; only a person who types a password and presses the button does.
async fn reset_page(
    State(gw): State<Arc<Gateway>>,
    Extension(Lang(lang)): Extension<Lang>,
    Query(params): Query<TokenParams>,
) -> Response {
    let page = Page::ResetPassword { token: params.token.trim(), email: "", error: None };
    gw.pages.render(StatusCode::OK, &lang, &page)
}

#[derive(Deserialize)]
struct ResetParams {
    #[serde(default)]
    token: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    code: String,
    #[serde(default)]
    new_password: String,
}

async fn reset(
    State(gw): State<Arc<Gateway>>,
    Extension(Client(client)): Extension<Client>,
    Extension(Lang(lang)): Extension<Lang>,
    Form(params): Form<ResetParams>,
) -> Response {
    let (token, email) = (params.token.trim().to_owned(), params.email.trim().to_owned());
    let request = ResetPasswordRequest {
        token: token.clone(),
        email: email.clone(),
        code: params.code,
        new_password: params.new_password,
    };
    let status = match gw.users.clone().reset_password(on_behalf(request, client)).await {
        Ok(reply) => {
            let email = reply.into_inner().email;
            return gw.pages.render(StatusCode::OK, &lang, &Page::PasswordReset { email: &email });
        }
        Err(status) => status,
    };
    let form = |error| Page::ResetPassword { token: &token, email: &email, error: Some(error) };
    let refused = |why| gw.pages.render(StatusCode::GONE, &lang, &Page::ResetRefused { why });
    match (status.code(), reasons::of(&status).as_str()) {
        (Code::InvalidArgument, _) => match verimail_server::grpc::bad_request_field(&status).as_deref() {
            Some("new_password") => gw.pages.render(StatusCode::BAD_REQUEST, &lang, &form(ResetError::Password)),
            Some("email") => gw.pages.render(StatusCode::BAD_REQUEST, &lang, &form(ResetError::Email)),
            Some("code") => gw.pages.render(StatusCode::BAD_REQUEST, &lang, &form(ResetError::Code)),
            _ => gw.pages.render(StatusCode::BAD_REQUEST, &lang, &Page::ResetRefused { why: "invalid" }),
        },
        (Code::FailedPrecondition, why @ (reasons::ACCOUNT_EXPIRED | reasons::ACCOUNT_DELETED)) => {
            account_gone(&gw, &lang, why, if token.is_empty() { Proof::Code } else { Proof::Link })
        }
        (Code::FailedPrecondition, reasons::TOKEN_EXPIRED | reasons::CODE_EXPIRED) => refused("expired"),
        (Code::FailedPrecondition, reasons::TOKEN_REVOKED | reasons::CODE_REVOKED) => refused("revoked"),
        (Code::FailedPrecondition, reasons::TOKEN_USED) => refused("used"),
        (Code::FailedPrecondition, reasons::CODE_LOCKED) => refused("locked"),
        (Code::FailedPrecondition, _) => refused("invalid"),
        _ => unavailable(&gw, &lang, &status),
    }
}

fn unavailable(gw: &Gateway, lang: &str, status: &tonic::Status) -> Response {
    if status.code() == Code::ResourceExhausted {
        return too_many(gw, lang, status);
    }
    tracing::warn!(code = ?status.code(), message = status.message(), "service call failed");
    let mut response = gw.pages.render(StatusCode::SERVICE_UNAVAILABLE, lang, &Page::Unavailable);
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    response
}

/// 200 when every service the pages call reports SERVING, 503 otherwise; the body says
/// which answered what.
async fn readyz(State(gw): State<Arc<Gateway>>) -> Response {
    use tonic_health::pb::HealthCheckRequest;
    let checks = gw.upstreams.iter().map(|(name, client)| async move {
        let mut client = client.clone();
        let check = client.check(HealthCheckRequest { service: String::new() });
        let status = match tokio::time::timeout(Duration::from_secs(2), check).await {
            Ok(Ok(reply)) => reply.into_inner().status().as_str_name().trim_start_matches("SERVING_STATUS_").to_owned(),
            Ok(Err(status)) => format!("UNREACHABLE ({:?})", status.code()),
            Err(_) => "UNREACHABLE (no answer within 2 s)".to_owned(),
        };
        (name, status)
    });
    let answers = futures::future::join_all(checks).await;
    let ready = answers.iter().all(|(_, status)| status == "SERVING");
    let body: String = answers.iter().map(|(name, status)| format!("{name}: {status}\n")).collect();
    let code = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}
