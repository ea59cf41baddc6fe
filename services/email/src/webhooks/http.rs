//! The one request webhooks make: a POST over HTTP/1.1, to the addresses the guard lets
//! through (checked at each connection, so a name that moves inside reaches nothing), TLS
//! checked against the web's roots for https, no redirect followed, the whole exchange within
//! the timeout, and at most [`ANSWER_KEPT`] bytes of the answer read.

use super::guard;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use url::{Host, Url};

/// How much of an answer is read and kept.
pub const ANSWER_KEPT: usize = 1024;

/// What the endpoint answered: its status and the start of its body.
pub struct Answer {
    pub status: u16,
    pub body: String,
}

/// The client: TLS settings and the guard's switch.
pub struct Client {
    tls: Arc<rustls::ClientConfig>,
    allow_private: bool,
    timeout: Duration,
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

impl Client {
    pub fn new(allow_private: bool, timeout: Duration) -> Result<Client, String> {
        let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Client { tls: Arc::new(tls), allow_private, timeout })
    }

    /// POSTs `body` to `url` with `headers`: what came back, or why nothing did.
    pub async fn post(&self, url: &Url, headers: &[(&str, String)], body: String) -> Result<Answer, String> {
        match tokio::time::timeout(self.timeout, self.exchange(url, headers, body)).await {
            Ok(answered) => answered,
            Err(_) => Err(format!("no answer within {:?}", self.timeout)),
        }
    }

    async fn exchange(&self, url: &Url, headers: &[(&str, String)], body: String) -> Result<Answer, String> {
        let host = url.host().ok_or("no host")?;
        let port = url.port_or_known_default().ok_or("no port")?;
        let addrs = self.addresses(&host, port).await?;
        let mut tcp = None;
        let mut why = String::new();
        for addr in addrs {
            match tokio::net::TcpStream::connect(addr).await {
                Ok(stream) => {
                    tcp = Some(stream);
                    break;
                }
                Err(e) => why = format!("{addr}: {e}"),
            }
        }
        let tcp = tcp.ok_or_else(|| format!("could not connect: {why}"))?;
        let _ = tcp.set_nodelay(true);
        let io: Box<dyn Io> = if url.scheme() == "https" {
            let name = match &host {
                Host::Domain(name) => rustls::pki_types::ServerName::try_from(name.to_string()),
                Host::Ipv4(ip) => Ok(rustls::pki_types::ServerName::from(std::net::IpAddr::V4(*ip))),
                Host::Ipv6(ip) => Ok(rustls::pki_types::ServerName::from(std::net::IpAddr::V6(*ip))),
            }
            .map_err(|e| e.to_string())?;
            let tls = tokio_rustls::TlsConnector::from(self.tls.clone());
            Box::new(tls.connect(name, tcp).await.map_err(|e| format!("TLS: {e}"))?)
        } else {
            Box::new(tcp)
        };
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(io)).await.map_err(|e| e.to_string())?;
        let driven = tokio::spawn(connection);
        let authority = match url.port() {
            Some(port) => format!("{}:{port}", url.host_str().unwrap_or_default()),
            None => url.host_str().unwrap_or_default().to_owned(),
        };
        let target = match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_owned(),
        };
        let mut request = http::Request::post(target).header(http::header::HOST, authority);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let request = request.body(Full::new(Bytes::from(body))).map_err(|e| e.to_string())?;
        let response = sender.send_request(request).await.map_err(|e| error_chain(&e))?;
        let status = response.status().as_u16();
        let mut body = response.into_body();
        let mut kept = Vec::new();
        while kept.len() < ANSWER_KEPT {
            match body.frame().await {
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        kept.extend_from_slice(&data[..data.len().min(ANSWER_KEPT - kept.len())]);
                    }
                }
                _ => break,
            }
        }
        driven.abort();
        Ok(Answer { status, body: String::from_utf8_lossy(&kept).into_owned() })
    }

    /// Where `host` is: a literal address (checked), or a name's addresses the guard lets
    /// through; an error where none is left.
    async fn addresses(&self, host: &Host<&str>, port: u16) -> Result<Vec<SocketAddr>, String> {
        let found: Vec<SocketAddr> = match host {
            Host::Ipv4(ip) => vec![SocketAddr::from((*ip, port))],
            Host::Ipv6(ip) => vec![SocketAddr::from((*ip, port))],
            Host::Domain(name) => {
                tokio::net::lookup_host((*name, port)).await.map_err(|e| format!("{name}: {e}"))?.collect()
            }
        };
        let kept: Vec<SocketAddr> =
            found.iter().copied().filter(|addr| self.allow_private || guard::is_public(addr.ip())).collect();
        if kept.is_empty() {
            return Err(format!("{host} resolves to no public address ({found:?}): not a place webhooks go"));
        }
        Ok(kept)
    }
}

/// An error with its causes ("connection closed: broken pipe").
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
