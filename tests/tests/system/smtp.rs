//! How fast one email goes out over a pooled SMTP connection.

use std::time::{Duration, Instant};
use verimail_mail::{MailTarget, Mailer, Templates, VerificationEmail, page_link};
use verimail_system_tests::smtp::SmtpServer;

/// lettre writes a body and its closing `\r\n.\r\n` as two writes. With Nagle's algorithm on,
/// the second waits for the server's delayed ACK: 40 ms on every email (vendor/README.md).
/// With TCP_NODELAY a message on loopback takes about a millisecond; the bound below sits
/// between the two so that a busy machine (the suite runs in parallel) does not trip it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooled_connection_sends_each_email_without_a_nagle_stall() {
    let smtp = SmtpServer::start();
    let mailer =
        Mailer::new(&MailTarget::Smtp(verimail_server::config::SecretUrl::new(smtp.url())), Duration::from_secs(10))
            .unwrap();
    let templates = Templates::new("en").expect("the built-in templates");
    let from = "Verimail <no-reply@verimail.localhost>".parse().unwrap();
    let mut took = Vec::new();
    for n in 0..21 {
        let email = format!("nagle-{n}@example.com");
        let content = VerificationEmail {
            email: &email,
            link: page_link("http://127.0.0.1:8080", "/verify-email", Some("v4.local.token"), ""),
            expires_at: "2099-12-02T00:00:00Z",
            code: "123456",
            code_expires_at: "2099-12-01T01:00:00Z",
            code_page: "http://127.0.0.1:8080/verify-code".into(),
            kind: verimail_proto::subjects::USERS_REGISTERED,
        };
        let message =
            templates.render_email(&from, &email, &format!("nagle-{n}"), "verification", "en", &content).unwrap();
        let started = Instant::now();
        mailer.send(message, "").await.unwrap();
        took.push(started.elapsed());
    }
    assert_eq!(smtp.all().len(), 21);
    // The pool hands a connection back a moment after a send, so under load the next send may
    // open a second one; most still reuse one.
    assert!(smtp.sessions() <= 3, "{} sessions for 21 emails: the pool did not reuse them", smtp.sessions());
    // The first paid for the connection; the median of the other twenty.
    let mut reused = took[1..].to_vec();
    reused.sort();
    let median = reused[reused.len() / 2];
    assert!(median < Duration::from_millis(35), "median {median:?} per email on a pooled connection: {took:?}");
}
