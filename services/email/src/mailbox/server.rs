//! The mailbox's web pages: the list newest first, each message with its text (links
//! clickable) and its HTML in a sandboxed frame that runs no script.

use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use std::path::PathBuf;
use verimail_server::shutdown::Shutdown;

/// Messages the list shows at most.
const LISTED: usize = 200;

/// A bound mailbox; [`Mailbox::run`] serves it until shutdown.
pub struct Mailbox {
    listener: tokio::net::TcpListener,
    dir: PathBuf,
}

impl Mailbox {
    pub async fn bind(addr: &str, dir: PathBuf) -> anyhow::Result<Mailbox> {
        let listener =
            tokio::net::TcpListener::bind(addr).await.map_err(|e| anyhow::anyhow!("MAILBOX_HTTP_ADDR {addr}: {e}"))?;
        Ok(Mailbox { listener, dir })
    }

    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }

    pub async fn run(self, shutdown: Shutdown) {
        if let Ok(addr) = self.listener.local_addr() {
            tracing::info!(url = %format!("http://{addr}/"), "development mailbox ready");
        }
        let app = axum::Router::new()
            .route("/", get(list))
            .route("/m/{file}", get(message))
            .layer(axum::middleware::from_fn(only_direct_hosts))
            .with_state(std::sync::Arc::new(self.dir));
        let served = axum::serve(self.listener, app).with_graceful_shutdown(async move { shutdown.wait().await });
        if let Err(e) = served.await {
            tracing::warn!(error = %e, "the development mailbox stopped");
        }
    }
}

type Dir = std::sync::Arc<PathBuf>;

/// 403 unless the request names the mailbox by an IP address or `localhost`. A web page the
/// developer opens could otherwise rebind a name of its own to 127.0.0.1 and read the mail
/// (DNS rebinding): its requests carry that name as their Host.
async fn only_direct_hosts(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let host = request.headers().get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or_default();
    if is_direct(host) {
        next.run(request).await
    } else {
        let message = "The development mailbox answers only at an IP address or localhost (Host header).\n";
        (StatusCode::FORBIDDEN, message).into_response()
    }
}

/// `host[:port]` names an IP address or localhost: nothing DNS could point elsewhere.
fn is_direct(host: &str) -> bool {
    match verimail_server::host::split(host) {
        Some((v6, true, _)) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        Some((name, false, _)) => name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::Ipv4Addr>().is_ok(),
        None => false,
    }
}

/// What the list shows of a message.
struct Summary {
    file: String,
    subject: String,
    to: String,
    date: String,
}

async fn list(State(dir): State<Dir>) -> Response {
    let mut files: Vec<(std::time::SystemTime, PathBuf)> = match std::fs::read_dir(dir.as_ref()) {
        Ok(entries) => entries
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
            .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
            .collect(),
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, format!("{}: {e}", dir.display())).into_response(),
    };
    files.sort_by_key(|(modified, _)| std::cmp::Reverse(*modified));
    let rows: String = files
        .iter()
        .take(LISTED)
        .filter_map(|(_, path)| summary(path))
        .map(|m| {
            format!(
                "<tr><td><a href=\"/m/{file}\">{subject}</a></td><td>{to}</td><td>{date}</td></tr>\n",
                file = escape(&m.file),
                subject = escape(&m.subject),
                to = escape(&m.to),
                date = escape(&m.date),
            )
        })
        .collect();
    let body = if rows.is_empty() {
        "<p>No mail yet. Register with grpcurl, then reload.</p>".to_owned()
    } else {
        format!(
            "<table><thead><tr><th>Subject</th><th>To</th><th>Date</th></tr></thead><tbody>\n{rows}</tbody></table>"
        )
    };
    page("Mailbox", &format!("<h1>Mailbox</h1><p>What email-service would have sent, newest first.</p>{body}"))
}

fn summary(path: &std::path::Path) -> Option<Summary> {
    use mailparse::MailHeaderMap;
    let raw = std::fs::read(path).ok()?;
    let (headers, _) = mailparse::parse_headers(&raw).ok()?;
    Some(Summary {
        file: path.file_name()?.to_string_lossy().into_owned(),
        subject: headers.get_first_value("Subject").unwrap_or_default(),
        to: headers.get_first_value("To").unwrap_or_default(),
        date: headers.get_first_value("Date").unwrap_or_default(),
    })
}

async fn message(State(dir): State<Dir>, Path(file): Path<String>) -> Response {
    // Only a file of the folder itself: a name of letters, digits and - with .eml.
    let name_ok = file
        .strip_suffix(".eml")
        .is_some_and(|stem| !stem.is_empty() && stem.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    let Some(raw) = name_ok.then(|| std::fs::read(dir.join(&file)).ok()).flatten() else {
        return (StatusCode::NOT_FOUND, page("Not found", "<h1>No such message</h1><p><a href=\"/\">Mailbox</a></p>"))
            .into_response();
    };
    let Ok(mail) = mailparse::parse_mail(&raw) else {
        return (StatusCode::UNPROCESSABLE_ENTITY, "not a readable message").into_response();
    };
    use mailparse::MailHeaderMap;
    let header = |name: &str| escape(&mail.headers.get_first_value(name).unwrap_or_default());
    let part = |mime: &str| {
        std::iter::once(&mail)
            .chain(mail.subparts.iter())
            .find(|p| p.ctype.mimetype == mime)
            .and_then(|p| p.get_body().ok())
    };
    let text =
        part("text/plain").map(|t| format!("<h2>Text</h2><pre>{}</pre>", linkify(&escape(&t)))).unwrap_or_default();
    // The HTML part in a frame that runs no script and cannot reach this page.
    let html = part("text/html")
        .map(|h| {
            format!(
                "<h2>HTML</h2><iframe title=\"The HTML part\" sandbox=\"allow-popups allow-popups-to-escape-sandbox\" srcdoc=\"{}\"></iframe>",
                escape(&h)
            )
        })
        .unwrap_or_default();
    let body = format!(
        "<p><a href=\"/\">Mailbox</a></p><h1>{subject}</h1><dl><dt>To</dt><dd>{to}</dd><dt>From</dt><dd>{from}</dd><dt>Date</dt><dd>{date}</dd></dl>{text}{html}",
        subject = header("Subject"),
        to = header("To"),
        from = header("From"),
        date = header("Date"),
    );
    page(&mail.headers.get_first_value("Subject").unwrap_or_default(), &body)
}

/// A page with a policy that allows no script at all.
fn page(title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} · Verimail dev mailbox</title><style>body{{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}}\
         table{{border-collapse:collapse;width:100%}}td,th{{text-align:left;padding:.4rem;border-bottom:1px solid #ddd}}\
         pre{{white-space:pre-wrap;background:#f6f6f6;padding:1rem}}iframe{{width:100%;height:32rem;border:1px solid #ccc}}</style></head>\
         <body>{body}</body></html>",
        title = escape(title),
    );
    let mut response = Html(html).into_response();
    let policy = "default-src 'none'; style-src 'unsafe-inline'; img-src data: https:; frame-src 'self'; base-uri 'none'; form-action 'none'";
    response.headers_mut().insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(policy));
    response.headers_mut().insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Escaped text with its http(s) links made clickable (they stay escaped in the attribute).
fn linkify(escaped: &str) -> String {
    escaped
        .split_inclusive(char::is_whitespace)
        .map(|word| {
            let trimmed = word.trim_end();
            if trimmed.starts_with("http://") || trimmed.starts_with("https://") {
                format!("<a href=\"{trimmed}\">{trimmed}</a>{}", &word[trimmed.len()..])
            } else {
                word.to_owned()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_and_its_links_are_clickable() {
        let shown = linkify(&escape("Open <this>:\nhttp://127.0.0.1:8080/verify-email?token=a%2Bb&x=1\nthanks"));
        assert!(shown.contains("&lt;this&gt;"), "{shown}");
        assert!(shown.contains("<a href=\"http://127.0.0.1:8080/verify-email?token=a%2Bb&amp;x=1\">"), "{shown}");
    }
}
