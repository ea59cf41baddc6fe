//! The inbound SMTP listener bounces come back to (`BOUNCE_SMTP_ADDR`). mailin speaks SMTP
//! (the protocol state machine, no I/O); this module does the I/O on tokio with bounds on
//! everything a stranger on the internet controls: connections at once, line length,
//! message size, recipients per message, idle time and session time. STARTTLS is offered
//! when `BOUNCE_TLS_CERT_FILE` and `BOUNCE_TLS_KEY_FILE` are set. Only bounce addresses we
//! issued are accepted at RCPT (550 for everything else); a message is answered 250 once
//! what it says is recorded, 451 if that failed (the sender tries again later).

use mailin::{Action, Handler, Response, SessionBuilder, response};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use verimail_mail::bounce::address::{BounceAddresses, NotOurs};
use verimail_server::config::{ConfigError, Vars};
use verimail_server::shutdown::Shutdown;

/// The bounds and identity of the listener.
#[derive(Clone)]
pub struct ListenerConfig {
    /// `BOUNCE_SMTP_ADDR`
    pub addr: String,
    /// `BOUNCE_MAX_MESSAGE_BYTES` (default 1 MiB): larger messages get 552.
    pub max_message_bytes: usize,
    /// `BOUNCE_MAX_CONNECTIONS` (default 100): more at once get 421 and are closed.
    pub max_connections: usize,
    /// `BOUNCE_MAX_CONNECTIONS_PER_PEER` (default 10, at most `max_connections`): from one
    /// client address (an IPv6 /64) at once; more get 421, so one host cannot take every slot.
    pub max_connections_per_peer: usize,
    /// `BOUNCE_RATE_PER_PEER` (default `120/60`, or `off`): messages one client address may
    /// send; past it MAIL gets 451 (a real MTA tries again later, nothing is lost).
    pub messages_per_peer: Option<verimail_server::limits::Rate>,
    /// What the greeting names (`BOUNCE_DOMAIN`).
    pub hostname: String,
    /// `BOUNCE_TLS_CERT_FILE` and `BOUNCE_TLS_KEY_FILE`: STARTTLS offered.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
}

impl std::fmt::Debug for ListenerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenerConfig")
            .field("addr", &self.addr)
            .field("max_message_bytes", &self.max_message_bytes)
            .field("max_connections", &self.max_connections)
            .field("max_connections_per_peer", &self.max_connections_per_peer)
            .field("messages_per_peer", &self.messages_per_peer)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// The longest line read (a command, or a line of a message): RFC 5321 allows 1000 bytes;
/// real mail breaks that, so more is read, but not without end.
const MAX_LINE: usize = 16 * 1024;
/// Recipients of one message: a bounce has one.
const MAX_RECIPIENTS: usize = 20;
/// Silence from the client this long ends the session (RFC 5321 asks servers for 5 minutes;
/// a bounce sender is an MTA, which is never that slow between lines).
const IDLE: Duration = Duration::from_secs(60);
/// A whole session, however busy.
const SESSION: Duration = Duration::from_secs(600);

impl ListenerConfig {
    /// `None` without `BOUNCE_SMTP_ADDR`. It needs the bounce addresses (`BOUNCE_DOMAIN`).
    pub fn from_vars(vars: &Vars, bounces: Option<&BounceAddresses>) -> Result<Option<ListenerConfig>, ConfigError> {
        let Some(addr) = vars.var("BOUNCE_SMTP_ADDR") else {
            for name in ["BOUNCE_TLS_CERT_FILE", "BOUNCE_TLS_KEY_FILE"] {
                if vars.var(name).is_some() {
                    return Err(ConfigError::new(name, "is for the bounce listener: set BOUNCE_SMTP_ADDR too"));
                }
            }
            return Ok(None);
        };
        let Some(bounces) = bounces else {
            return Err(ConfigError::new("BOUNCE_SMTP_ADDR", "needs BOUNCE_DOMAIN: the addresses it takes mail for"));
        };
        let max_message_bytes = vars.parse("BOUNCE_MAX_MESSAGE_BYTES", 1024 * 1024usize)?;
        if !(1024..=64 * 1024 * 1024).contains(&max_message_bytes) {
            return Err(ConfigError::new("BOUNCE_MAX_MESSAGE_BYTES", "must be from 1024 to 67108864"));
        }
        let max_connections = vars.parse("BOUNCE_MAX_CONNECTIONS", 100usize)?;
        if max_connections == 0 {
            return Err(ConfigError::new("BOUNCE_MAX_CONNECTIONS", "must be at least 1"));
        }
        let max_connections_per_peer = vars.parse("BOUNCE_MAX_CONNECTIONS_PER_PEER", 10usize)?.min(max_connections);
        if max_connections_per_peer == 0 {
            return Err(ConfigError::new("BOUNCE_MAX_CONNECTIONS_PER_PEER", "must be at least 1"));
        }
        let messages_per_peer = verimail_server::limits::rate(vars, "BOUNCE_RATE_PER_PEER", "120/60")?;
        let tls = match (vars.var("BOUNCE_TLS_CERT_FILE"), vars.var("BOUNCE_TLS_KEY_FILE")) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some(acceptor(&cert, &key)?),
            (Some(_), None) => {
                return Err(ConfigError::new("BOUNCE_TLS_KEY_FILE", "is needed with BOUNCE_TLS_CERT_FILE"));
            }
            (None, Some(_)) => {
                return Err(ConfigError::new("BOUNCE_TLS_CERT_FILE", "is needed with BOUNCE_TLS_KEY_FILE"));
            }
        };
        Ok(Some(ListenerConfig {
            addr,
            max_message_bytes,
            max_connections,
            max_connections_per_peer,
            messages_per_peer,
            hostname: bounces.domain.clone(),
            tls,
        }))
    }
}

/// A TLS acceptor from PEM files: the certificate chain and its private key.
fn acceptor(cert_file: &str, key_file: &str) -> Result<tokio_rustls::TlsAcceptor, ConfigError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    verimail_server::tls::install_crypto_provider();
    let certs = CertificateDer::pem_file_iter(cert_file)
        .and_then(|found| found.collect::<Result<Vec<_>, _>>())
        .map_err(|e| ConfigError::new("BOUNCE_TLS_CERT_FILE", format!("{cert_file}: {e}")))?;
    if certs.is_empty() {
        return Err(ConfigError::new("BOUNCE_TLS_CERT_FILE", format!("{cert_file}: no certificate in it")));
    }
    let key = PrivateKeyDer::from_pem_file(key_file)
        .map_err(|e| ConfigError::new("BOUNCE_TLS_KEY_FILE", format!("{key_file}: {e}")))?;
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| ConfigError::new("BOUNCE_TLS_KEY_FILE", format!("does not fit the certificate: {e}")))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// What the listener hands a received message to: the deliveries it is for and its bytes.
/// `Ok` once what it says is recorded (then the sender hears 250).
pub trait Receiver: Send + Sync + 'static {
    fn receive(&self, deliveries: Vec<String>, raw: Vec<u8>) -> impl Future<Output = Result<(), String>> + Send;
}

/// A bound listener; [`Listener::run`] serves it until shutdown.
pub struct Listener {
    listener: TcpListener,
    config: ListenerConfig,
    bounces: BounceAddresses,
}

impl Listener {
    pub async fn bind(config: ListenerConfig, bounces: BounceAddresses) -> anyhow::Result<Listener> {
        let listener = TcpListener::bind(&config.addr)
            .await
            .map_err(|e| anyhow::anyhow!("BOUNCE_SMTP_ADDR {}: {e}", config.addr))?;
        Ok(Listener { listener, config, bounces })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts sessions until `shutdown`; each runs on its own task, at most
    /// `max_connections` at once.
    pub async fn run<R: Receiver>(self, receiver: Arc<R>, shutdown: Shutdown) {
        let slots = Arc::new(tokio::sync::Semaphore::new(self.config.max_connections));
        let peers = Peers::new(self.config.max_connections_per_peer);
        let per_peer = Arc::new(verimail_server::limits::Limiter::new(
            "messages from this address",
            self.config.messages_per_peer,
        ));
        let config = Arc::new(self.config);
        tracing::info!(addr = %config.addr, tls = config.tls.is_some(), "bounce listener ready");
        loop {
            let accepted = tokio::select! {
                accepted = self.listener.accept() => accepted,
                () = shutdown.wait() => break,
            };
            let Ok((stream, peer)) = accepted else { continue };
            // The peer's own share first: a host over it takes no slot from the others.
            let Some(peer_slot) = peers.enter(peer.ip()) else {
                refuse(stream, "too_many_from_peer", "Too many connections from your address");
                continue;
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                refuse(stream, "too_many_connections", "Too many connections");
                continue;
            };
            let (config, bounces, receiver) = (config.clone(), self.bounces.clone(), receiver.clone());
            let per_peer = per_peer.clone();
            tokio::spawn(async move {
                let _slots = (slot, peer_slot);
                let session = session(stream, peer.ip(), &config, bounces, receiver, per_peer);
                let ended = tokio::time::timeout(SESSION, session).await;
                if let Ok(Err(e)) = ended {
                    tracing::debug!(%peer, error = %e, "bounce session ended");
                }
            });
        }
    }
}

/// 421 and close, counted under `why`.
fn refuse(mut stream: TcpStream, why: &'static str, what: &'static str) {
    crate::metrics::inbound_refused(why);
    tokio::spawn(async move {
        let _ = stream.write_all(format!("421 4.7.0 {what}, try again later\r\n").as_bytes()).await;
    });
}

/// Sessions open per client address (an IPv6 /64): only those with one open are held, so it
/// is never larger than the connections at once.
#[derive(Clone)]
struct Peers {
    max: usize,
    open: Arc<Mutex<std::collections::HashMap<String, usize>>>,
}

/// One session of a peer; leaving drops it.
struct PeerSlot {
    peers: Peers,
    key: String,
}

impl Peers {
    fn new(max: usize) -> Peers {
        Peers { max, open: Arc::default() }
    }

    fn enter(&self, ip: IpAddr) -> Option<PeerSlot> {
        let key = verimail_server::limits::client_key(ip);
        let mut open = self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = open.entry(key.clone()).or_default();
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(PeerSlot { peers: self.clone(), key })
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut open = self.peers.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// What one SMTP transaction gathered; shared by the mailin handler and the I/O loop.
#[derive(Default)]
struct Transaction {
    deliveries: Vec<String>,
    data: Vec<u8>,
    too_big: bool,
    /// What mailin is told at the end of DATA (the I/O loop answers the client itself).
    verdict: Option<Response>,
}

#[derive(Clone)]
struct Gatekeeper {
    bounces: BounceAddresses,
    /// Messages per client address.
    per_peer: Arc<verimail_server::limits::Limiter>,
    max_bytes: usize,
    transaction: Arc<Mutex<Transaction>>,
}

/// The transaction, whoever panicked while holding it (a plain record: nothing half-done to fear).
fn locked(transaction: &Mutex<Transaction>) -> std::sync::MutexGuard<'_, Transaction> {
    transaction.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Gatekeeper {
    fn with<T>(&self, f: impl FnOnce(&mut Transaction) -> T) -> T {
        f(&mut locked(&self.transaction))
    }
}

impl Handler for Gatekeeper {
    fn mail(&mut self, ip: IpAddr, _domain: &str, _from: &str) -> Response {
        self.with(|t| *t = Transaction::default());
        if self.per_peer.check_here(&verimail_server::limits::client_key(ip)).is_err() {
            crate::metrics::inbound_refused("too_many_messages");
            return Response::custom(451, "4.7.1 Too many messages from your address, try again later".into());
        }
        response::OK
    }

    fn rcpt(&mut self, to: &str) -> Response {
        match self.bounces.delivery_of(to) {
            Ok(delivery) => self.with(|t| {
                if t.deliveries.len() >= MAX_RECIPIENTS {
                    return Response::custom(452, "4.5.3 Too many recipients".into());
                }
                t.deliveries.push(delivery);
                response::OK
            }),
            Err(why) => {
                crate::metrics::inbound_refused(match why {
                    NotOurs::Domain => "not_our_domain",
                    NotOurs::Shape => "unknown_address",
                    NotOurs::Tag => "bad_tag",
                });
                Response::custom(550, "5.1.1 No such bounce address".into())
            }
        }
    }

    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        let max = self.max_bytes;
        self.with(|t| {
            if t.data.len() + buf.len() > max {
                t.too_big = true;
                t.data = Vec::new();
            } else if !t.too_big {
                t.data.extend_from_slice(buf);
            }
        });
        Ok(())
    }

    fn data_end(&mut self) -> Response {
        self.with(|t| t.verdict.take()).unwrap_or(response::INTERNAL_ERROR)
    }
}

type Stream = Box<dyn AsyncReadWrite>;
trait AsyncReadWrite: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> AsyncReadWrite for T {}

async fn session<R: Receiver>(
    stream: TcpStream,
    peer: IpAddr,
    config: &ListenerConfig,
    bounces: BounceAddresses,
    receiver: Arc<R>,
    per_peer: Arc<verimail_server::limits::Limiter>,
) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
    let mut builder = SessionBuilder::new(config.hostname.clone());
    if config.tls.is_some() {
        builder.enable_start_tls();
    }
    let transaction = Arc::new(Mutex::new(Transaction::default()));
    let gatekeeper =
        Gatekeeper { bounces, per_peer, max_bytes: config.max_message_bytes, transaction: transaction.clone() };
    let mut smtp = builder.build(peer, gatekeeper);
    let mut io: BufReader<Stream> = BufReader::new(Box::new(stream));
    write(&mut io, &smtp.greeting()).await?;
    let mut in_data = false;
    let mut line = Vec::with_capacity(256);
    loop {
        line.clear();
        let read = tokio::time::timeout(IDLE, read_line(&mut io, &mut line)).await;
        match read {
            Err(_) => {
                let _ = write(&mut io, &Response::custom(421, "4.4.2 Idle too long".into())).await;
                return Ok(());
            }
            Ok(Err(e)) => return Err(e),
            Ok(Ok(0)) => return Ok(()),
            Ok(Ok(_)) => {}
        }
        if line.len() > MAX_LINE {
            if !in_data {
                write(&mut io, &Response::custom(500, "5.5.2 Line too long".into())).await?;
                continue;
            }
            locked(&transaction).too_big = true;
        }
        if in_data && (line == b".\r\n" || line == b".\n") {
            in_data = false;
            let verdict = end_of_data(&transaction, receiver.as_ref()).await;
            // mailin stays in its DATA state after an error at the end of data, where RFC 5321
            // ends the transaction whatever the answer: it is told 250, the client our answer.
            locked(&transaction).verdict = Some(response::OK);
            let _ = smtp.process(&line);
            write(&mut io, &verdict).await?;
            continue;
        }
        if !in_data {
            null_sender_readable(&mut line);
        }
        let reply = smtp.process(&line);
        if reply.code == 354 {
            in_data = true;
        }
        match reply.action {
            Action::Reply => write(&mut io, &reply).await?,
            Action::NoReply => {}
            Action::Close => {
                write(&mut io, &reply).await?;
                return Ok(());
            }
            Action::UpgradeTls => {
                write(&mut io, &reply).await?;
                let Some(acceptor) = &config.tls else { return Ok(()) };
                // Nothing the client sent before the handshake may count after it.
                if !io.buffer().is_empty() {
                    return Ok(());
                }
                let tls = acceptor.accept(io.into_inner()).await?;
                io = BufReader::new(Box::new(tls));
                smtp.tls_active();
            }
        }
    }
}

/// The message the transaction holds, handed to `receiver` (unless it was too big): the
/// answer to its end of data.
async fn end_of_data<R: Receiver>(transaction: &Mutex<Transaction>, receiver: &R) -> Response {
    let (deliveries, raw, too_big) = {
        let mut t = locked(transaction);
        (std::mem::take(&mut t.deliveries), std::mem::take(&mut t.data), t.too_big)
    };
    if too_big {
        crate::metrics::inbound_refused("too_big");
        return Response::custom(552, "5.3.4 Message too big".into());
    }
    match receiver.receive(deliveries, raw).await {
        Ok(()) => response::OK,
        Err(e) => {
            tracing::warn!(error = %e, "a bounce could not be recorded; the sender will try again");
            Response::custom(451, "4.3.0 Could not record it now, try again later".into())
        }
    }
}

/// `MAIL FROM:<>`, the null reverse-path every bounce is sent with (RFC 5321 §4.5.5), is
/// what mailin 0.6's parser cannot read (it wants a path between the brackets): it reads
/// `MAIL FROM:<MAILER-DAEMON>` instead, which means the same to us (the sender is unused).
fn null_sender_readable(line: &mut Vec<u8>) {
    const NULL: &[u8] = b"mail from:<>";
    if line.len() >= NULL.len() && line[..NULL.len()].eq_ignore_ascii_case(NULL) {
        line.splice(NULL.len() - 1..NULL.len() - 1, b"MAILER-DAEMON".iter().copied());
    }
}

/// One line, up to and with its `\n`; what is past `MAX_LINE` is read and dropped (the line
/// counts as too long: more than `MAX_LINE` bytes are kept).
async fn read_line(io: &mut BufReader<Stream>, line: &mut Vec<u8>) -> std::io::Result<usize> {
    let mut total = 0;
    loop {
        let available = io.fill_buf().await?;
        if available.is_empty() {
            return Ok(total);
        }
        let (chunk, done) = match available.iter().position(|&b| b == b'\n') {
            Some(end) => (&available[..=end], true),
            None => (available, false),
        };
        let n = chunk.len();
        if line.len() <= MAX_LINE {
            line.extend_from_slice(&chunk[..n.min(MAX_LINE + 1 - line.len().min(MAX_LINE + 1))]);
        }
        io.consume(n);
        total += n;
        if done {
            return Ok(total);
        }
    }
}

async fn write(io: &mut BufReader<Stream>, reply: &Response) -> std::io::Result<()> {
    let bytes = reply.buffer()?;
    io.get_mut().write_all(&bytes).await?;
    io.get_mut().flush().await
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_null_sender_reads_as_mailer_daemon_and_others_stay() {
        let mut line = b"MAIL FROM:<> BODY=8BITMIME\r\n".to_vec();
        super::null_sender_readable(&mut line);
        assert_eq!(line, b"MAIL FROM:<MAILER-DAEMON> BODY=8BITMIME\r\n");
        let mut line = b"mail from:<a@b>\r\n".to_vec();
        super::null_sender_readable(&mut line);
        assert_eq!(line, b"mail from:<a@b>\r\n");
    }
}
