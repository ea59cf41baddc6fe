//! A real SMTP server inside the test (mailin-embedded), keeping every message it receives.

use mailin_embedded::{Handler, Response, Server, response};
use std::collections::HashSet;
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use verimail_testkit::TcpDoor;

#[derive(Debug, Clone)]
pub struct ReceivedMail {
    /// The envelope sender (MAIL FROM), where bounces go.
    pub from: String,
    pub to: Vec<String>,
    pub raw: Vec<u8>,
    /// When the server accepted it (stored it and answered 250).
    pub accepted_at: std::time::SystemTime,
}

impl ReceivedMail {
    /// The decoded body of the first part with this MIME type.
    pub fn part(&self, mime: &str) -> String {
        let parsed = mailparse::parse_mail(&self.raw).expect("a parseable email");
        let found = std::iter::once(&parsed)
            .chain(parsed.subparts.iter())
            .find(|p| p.ctype.mimetype == mime)
            .unwrap_or_else(|| panic!("no {mime} part"));
        found.get_body().expect("a decodable body")
    }

    pub fn header(&self, name: &str) -> Option<String> {
        use mailparse::MailHeaderMap;
        mailparse::parse_mail(&self.raw).ok()?.headers.get_first_value(name)
    }

    /// The event this email was sent for: its Message-ID is `<event id@verimail>`. For a
    /// verification email of a registration, the registration; they order in time.
    pub fn event_id(&self) -> String {
        let id = self.header("Message-ID").expect("a Message-ID");
        id.trim().trim_start_matches('<').split('@').next().unwrap_or_default().to_owned()
    }

    /// A verification email (not a notice such as "someone tried to sign up").
    pub fn is_verification(&self) -> bool {
        self.header("Subject").as_deref() == Some("Verify your email address")
    }

    /// The 6-digit verification code in the plain-text part.
    pub fn verification_code(&self) -> String {
        let text = self.part("text/plain");
        text.split_whitespace()
            .find(|word| word.len() == 6 && word.bytes().all(|b| b.is_ascii_digit()))
            .unwrap_or_else(|| panic!("no verification code in:\n{text}"))
            .to_owned()
    }

    /// The verification link in the plain-text part.
    pub fn verification_link(&self) -> String {
        self.link_to("/verify-email?token=").unwrap_or_else(|| panic!("no verification link in:\n{}", self.text()))
    }

    /// The link of a change-of-address notice (it cancels the change) in the plain-text part.
    pub fn undo_link(&self) -> Option<String> {
        self.link_to("/email-change/undo?token=")
    }

    /// Whether the plain-text part contains `needle`.
    pub fn text_contains(&self, needle: &str) -> bool {
        self.text().contains(needle)
    }

    /// The link of a password-reset email, in the plain-text part.
    pub fn reset_link(&self) -> String {
        self.link_to("/reset-password?token=").unwrap_or_else(|| panic!("no reset link in:\n{}", self.text()))
    }

    /// The link to the page where the code is typed, in the plain-text part.
    pub fn code_page_link(&self) -> String {
        self.link_to("/verify-code").unwrap_or_else(|| panic!("no link to the code page in:\n{}", self.text()))
    }

    /// The first link in the plain-text part whose address contains `path`.
    fn link_to(&self, path: &str) -> Option<String> {
        // Without the punctuation of the sentence it ends, as mail clients make links of it.
        let link = self.text().split_whitespace().find(|word| word.contains(path)).map(str::to_owned)?;
        Some(link.trim_end_matches([':', '.', ',', ';', ')']).to_owned())
    }

    fn text(&self) -> String {
        self.part("text/plain")
    }

    /// The token of the verification link.
    pub fn verification_token(&self) -> String {
        token_of(&self.verification_link())
    }
}

/// The token a verification link carries (its `token` parameter, before a `lang`).
pub fn token_of(link: &str) -> String {
    let (_, token) = link.split_once("token=").unwrap_or_else(|| panic!("no token in {link}"));
    token.split('&').next().unwrap_or_default().to_owned()
}

#[derive(Default)]
struct Inbox {
    mails: Mutex<Vec<ReceivedMail>>,
    arrived: Notify,
    /// Recipients refused for good (550 to RCPT TO).
    rejected: Mutex<HashSet<String>>,
    /// Recipients refused for now (450 to RCPT TO).
    deferred: Mutex<HashSet<String>>,
    /// Stopping: every command gets 421 and nothing more is accepted.
    down: AtomicBool,
    /// SMTP sessions opened (HELO/EHLO), for tests of how often clients connect.
    sessions: std::sync::atomic::AtomicUsize,
}

impl Inbox {
    fn down(&self) -> bool {
        self.down.load(Ordering::SeqCst)
    }
}

#[derive(Clone)]
struct Collector {
    inbox: Arc<Inbox>,
    from: String,
    to: Vec<String>,
    data: Vec<u8>,
}

impl Handler for Collector {
    fn helo(&mut self, _ip: std::net::IpAddr, _domain: &str) -> Response {
        self.inbox.sessions.fetch_add(1, Ordering::SeqCst);
        if self.inbox.down() { response::NO_SERVICE } else { response::OK }
    }

    fn mail(&mut self, _ip: std::net::IpAddr, _domain: &str, _from: &str) -> Response {
        if self.inbox.down() { response::NO_SERVICE } else { response::OK }
    }

    fn rcpt(&mut self, to: &str) -> Response {
        if self.inbox.down() {
            response::NO_SERVICE
        } else if self.inbox.rejected.lock().expect("inbox lock").contains(to) {
            response::NO_MAILBOX
        } else if self.inbox.deferred.lock().expect("inbox lock").contains(to) {
            Response::custom(450, "4.2.1 Mailbox busy, try again later".into())
        } else {
            response::OK
        }
    }

    fn data_start(&mut self, _domain: &str, from: &str, _is8bit: bool, to: &[String]) -> Response {
        if self.inbox.down() {
            return response::NO_SERVICE;
        }
        self.from = from.to_owned();
        self.to = to.to_vec();
        self.data.clear();
        response::OK
    }

    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.data.extend_from_slice(buf);
        Ok(())
    }

    fn data_end(&mut self) -> Response {
        // Accepting is one step: stored and answered 250, or neither.
        if self.inbox.down() {
            return response::NO_SERVICE;
        }
        let mail = ReceivedMail {
            from: std::mem::take(&mut self.from),
            to: std::mem::take(&mut self.to),
            raw: std::mem::take(&mut self.data),
            accepted_at: std::time::SystemTime::now(),
        };
        self.inbox.mails.lock().expect("inbox lock").push(mail);
        self.inbox.arrived.notify_waiters();
        response::OK
    }
}

/// The server runs on its own threads until the test process ends; it holds no files. Clients
/// reach it through a front door on `port` that a test can close ([`SmtpServer::go_down`]):
/// each new connection closed at once, and every open connection cut, until [`SmtpServer::come_back`].
/// A clone is the same server.
#[derive(Clone)]
pub struct SmtpServer {
    port: u16,
    inbox: Arc<Inbox>,
    door: Arc<TcpDoor>,
}

impl SmtpServer {
    pub fn start() -> SmtpServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind SMTP port");
        let backend = listener.local_addr().expect("SMTP address");
        let inbox = Arc::new(Inbox::default());
        let mut server =
            Server::new(Collector { inbox: inbox.clone(), from: String::new(), to: Vec::new(), data: Vec::new() });
        // One thread per connection: enough for every pooled client connection at once.
        server.with_name("smtp.test").with_num_threads(64).with_tcp_listener(listener);
        std::thread::spawn(move || {
            if let Err(e) = server.serve() {
                panic!("SMTP server stopped: {e}");
            }
        });
        let door = TcpDoor::open(backend);
        SmtpServer { port: door.port(), inbox, door }
    }

    /// Refuses every RCPT TO for `address` with 550 from now on.
    pub fn reject(&self, address: &str) {
        self.inbox.rejected.lock().expect("inbox lock").insert(address.to_owned());
    }

    /// SMTP sessions opened so far (each HELO or EHLO).
    pub fn sessions(&self) -> usize {
        self.inbox.sessions.load(Ordering::SeqCst)
    }

    /// Refuses every RCPT TO for `address` with 450 (try again later) from now on.
    pub fn defer(&self, address: &str) {
        self.inbox.deferred.lock().expect("inbox lock").insert(address.to_owned());
    }

    /// Takes mail for `address` again.
    pub fn accept(&self, address: &str) {
        self.inbox.rejected.lock().expect("inbox lock").remove(address);
        self.inbox.deferred.lock().expect("inbox lock").remove(address);
    }

    /// Where it listens (its front door).
    pub fn addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Stops as a mail server does: new connections are refused, and open ones get 421
    /// ("service not available") to every command, so a message is either accepted and
    /// answered or neither. Until `come_back`.
    pub fn go_down(&self) {
        self.inbox.down.store(true, Ordering::SeqCst);
        self.door.refuse_new(true);
    }

    pub fn come_back(&self) {
        self.inbox.down.store(false, Ordering::SeqCst);
        self.door.refuse_new(false);
    }

    /// A lettre URL for it (plain SMTP on loopback).
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    pub fn all(&self) -> Vec<ReceivedMail> {
        self.inbox.mails.lock().expect("inbox lock").clone()
    }

    /// Every message received since the last call, handed over and kept no longer (a long run
    /// that reads each mail once).
    pub fn take_all(&self) -> Vec<ReceivedMail> {
        std::mem::take(&mut *self.inbox.mails.lock().expect("inbox lock"))
    }

    /// Every message sent to `address` so far.
    pub fn to(&self, address: &str) -> Vec<ReceivedMail> {
        self.all().into_iter().filter(|m| m.to.iter().any(|t| t == address)).collect()
    }

    /// Waits (at most `limit`) until `count` messages to `address` have arrived.
    pub async fn wait_for(&self, address: &str, count: usize, limit: Duration) -> Vec<ReceivedMail> {
        self.wait_for_where(address, count, limit, |_| true).await
    }

    /// Waits (at most `limit`) for a verification email to `address`. Other mail to the address
    /// (the notice of a second sign-up) is handled concurrently and may arrive first.
    pub async fn wait_for_verification(&self, address: &str, limit: Duration) -> ReceivedMail {
        self.wait_for_where(address, 1, limit, ReceivedMail::is_verification).await.remove(0)
    }

    async fn wait_for_where(
        &self,
        address: &str,
        count: usize,
        limit: Duration,
        wanted: impl Fn(&ReceivedMail) -> bool,
    ) -> Vec<ReceivedMail> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let arrived = self.inbox.arrived.notified();
            let mails: Vec<ReceivedMail> = self.to(address).into_iter().filter(&wanted).collect();
            if mails.len() >= count {
                return mails;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                panic!("{} of {count} wanted emails to {address} arrived within {limit:?}", mails.len());
            }
        }
    }
}
