//! Bounces, complaints and the suppression list: messages sent over SMTP to email-service's
//! bounce listener, as a recipient's MTA or a feedback loop sends them.

use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use verimail_proto::email::v1::{
    DeliveryStatus, GetDeliveryRequest, ListDeliveriesRequest, ListSuppressionsRequest, RemoveSuppressionRequest,
};
use verimail_proto::user::v1::{ChangeEmailRequest, DeleteUserRequest, ResendVerificationRequest, UserStatus};
use verimail_system_tests::smtp::ReceivedMail;
use verimail_system_tests::{Stack, StackOptions, eventually};

const HASH_KEY: &str = "a-test-delivery-hash-key-0123456789abcdef";

/// A stack whose mail leaves from bounce addresses at bounces.example.com, with a listener
/// for them; two soft bounces in a day suppress.
async fn bounce_stack() -> Stack {
    bounce_stack_with(Vec::new()).await
}

/// [`bounce_stack`], with more of email-service's settings.
async fn bounce_stack_with(more: Vec<verimail_system_tests::settings::Var>) -> Stack {
    let mut email_vars = vec![
        ("BOUNCE_DOMAIN", "bounces.example.com".to_owned()),
        ("BOUNCE_SMTP_ADDR", "127.0.0.1:0".to_owned()),
        ("BOUNCE_SOFT_LIMIT", "2".to_owned()),
        ("BOUNCE_MAX_MESSAGE_BYTES", "65536".to_owned()),
        ("DELIVERY_HASH_KEY", HASH_KEY.to_owned()),
    ];
    email_vars.extend(more);
    Stack::start_with(StackOptions { email_vars, ..StackOptions::default() }).await
}

/// An SMTP client that says exactly what a test wants, and reads each reply: over plain TCP,
/// or TLS after STARTTLS.
pub(crate) struct Client<S = TcpStream> {
    io: BufReader<S>,
}

impl Client<TcpStream> {
    async fn connect(stack: &Stack) -> Client {
        let mut client = Client::greeted(stack).await;
        let hello = client.command("EHLO relay.example.net").await;
        assert!(hello.starts_with("250"), "{hello}");
        client
    }

    /// Connected, the greeting read (and checked to be 220), nothing said.
    async fn greeted(stack: &Stack) -> Client {
        let mut client = Client::opened(stack).await;
        let greeting = client.reply().await;
        assert!(greeting.starts_with("220"), "{greeting}");
        client
    }

    async fn opened(stack: &Stack) -> Client {
        Client::opened_at(stack.bounce_addr.expect("the bounce listener")).await
    }

    async fn opened_at(addr: std::net::SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).await.expect("connect to the bounce listener");
        Client { io: BufReader::new(stream) }
    }

    /// Connected to the listener at `addr`, greeted and EHLO said.
    pub(crate) async fn connect_to(addr: std::net::SocketAddr) -> Client {
        let mut client = Client::opened_at(addr).await;
        assert!(client.reply().await.starts_with("220"));
        assert!(client.command("EHLO relay.example.net").await.starts_with("250"));
        client
    }

    /// STARTTLS, trusting `ca` (PEM) for the name localhost, and EHLO again.
    async fn starttls(mut self, ca: &str) -> Client<tokio_rustls::client::TlsStream<TcpStream>> {
        use rustls::pki_types::pem::PemObject;
        let ready = self.command("STARTTLS").await;
        assert!(ready.starts_with("220"), "{ready}");
        verimail_server::tls::install_crypto_provider();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(rustls::pki_types::CertificateDer::from_pem_slice(ca.as_bytes()).unwrap()).unwrap();
        let config = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let tls = connector.connect(name, self.io.into_inner()).await.expect("the TLS handshake");
        let mut client = Client { io: BufReader::new(tls) };
        let hello = client.command("EHLO relay.example.net").await;
        assert!(hello.starts_with("250") && !hello.contains("STARTTLS"), "{hello}");
        client
    }
}

impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin> Client<S> {
    /// The next reply (every line of a multi-line one), within 10 s.
    async fn reply(&mut self) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            let read = tokio::time::timeout(Duration::from_secs(10), self.io.read_line(&mut line)).await;
            let n = read.expect("a reply within 10 s").expect("read a reply");
            assert!(n > 0, "the listener closed the connection; so far: {all}");
            all.push_str(&line);
            if line.as_bytes().get(3) != Some(&b'-') {
                return all;
            }
        }
    }

    async fn command(&mut self, line: &str) -> String {
        self.io.get_mut().write_all(format!("{line}\r\n").as_bytes()).await.expect("write");
        self.reply().await
    }

    /// MAIL FROM:<>, a RCPT TO for each of `to`, and the message if any was accepted: the
    /// replies to RCPT, and to the end of DATA (empty when DATA was not reached).
    pub(crate) async fn send(&mut self, to: &[&str], message: &str) -> (Vec<String>, String) {
        assert!(self.command("MAIL FROM:<>").await.starts_with("250"));
        let mut rcpt = Vec::new();
        for address in to {
            rcpt.push(self.command(&format!("RCPT TO:<{address}>")).await);
        }
        if !rcpt.iter().any(|r| r.starts_with("250")) {
            assert!(self.command("RSET").await.starts_with("250"));
            return (rcpt, String::new());
        }
        assert!(self.command("DATA").await.starts_with("354"));
        let mut body = String::new();
        for line in message.lines() {
            if line.starts_with('.') {
                body.push('.');
            }
            body.push_str(line);
            body.push_str("\r\n");
        }
        body.push_str(".\r\n");
        self.io.get_mut().write_all(body.as_bytes()).await.expect("write the message");
        (rcpt, self.reply().await)
    }
}

/// A delivery status notification (RFC 3464) as Postfix writes it, about `recipient`.
pub(crate) fn dsn(recipient: &str, action: &str, status: &str) -> String {
    format!(
        "From: MAILER-DAEMON@relay.example.net (Mail Delivery System)\n\
         Subject: Undelivered Mail Returned to Sender\n\
         Auto-Submitted: auto-replied\n\
         MIME-Version: 1.0\n\
         Content-Type: multipart/report; report-type=delivery-status; boundary=\"b1\"\n\
         \n\
         --b1\n\
         Content-Type: text/plain\n\
         \n\
         Your message could not be delivered.\n\
         \n\
         --b1\n\
         Content-Type: message/delivery-status\n\
         \n\
         Reporting-MTA: dns; relay.example.net\n\
         \n\
         Final-Recipient: rfc822; {recipient}\n\
         Action: {action}\n\
         Status: {status}\n\
         Diagnostic-Code: smtp; {code} {status} <{recipient}>: mailbox says no\n\
         \n\
         --b1--\n",
        code = if status.starts_with('5') { "550" } else { "450" },
    )
}

fn complaint(recipient: &str) -> String {
    format!(
        "From: feedbackloop@isp.example\n\
         Subject: FW: Verify your email address\n\
         MIME-Version: 1.0\n\
         Content-Type: multipart/report; report-type=feedback-report; boundary=\"arf\"\n\
         \n\
         --arf\n\
         Content-Type: text/plain\n\
         \n\
         This is an abuse report.\n\
         \n\
         --arf\n\
         Content-Type: message/feedback-report\n\
         \n\
         Feedback-Type: abuse\n\
         Version: 1\n\
         Original-Rcpt-To: {recipient}\n\
         \n\
         --arf--\n"
    )
}

/// Registers `address` and waits for its verification email.
async fn registered(stack: &Stack, address: &str) -> ReceivedMail {
    stack.register(address, "correct horse battery").await;
    stack.smtp.wait_for_verification(address, Duration::from_secs(10)).await
}

/// Waits (at most 10 s) until GetUser shows the user's address undeliverable (`Some(reason)`)
/// or not (`None`).
async fn wait_for_undeliverable(stack: &Stack, user_id: &str, reason: Option<&str>) {
    eventually(&format!("GetUser shows {reason:?}"), Duration::from_secs(10), || async {
        stack.user(user_id).await.email_undeliverable.map(|u| u.reason).as_deref() == reason
    })
    .await;
}

async fn delivery(stack: &Stack, event_id: &str) -> verimail_proto::email::v1::Delivery {
    let request = GetDeliveryRequest { event_id: event_id.to_owned() };
    stack.emails.clone().get_delivery(request).await.expect("GetDelivery").into_inner().delivery.expect("a delivery")
}

async fn suppressions(
    stack: &Stack,
    email: &str,
    include_removed: bool,
) -> Vec<verimail_proto::email::v1::Suppression> {
    let request = ListSuppressionsRequest { email: email.to_owned(), include_removed, ..Default::default() };
    stack.emails.clone().list_suppressions(request).await.expect("ListSuppressions").into_inner().suppressions
}

async fn resend(stack: &Stack, email: &str) {
    stack
        .users
        .clone()
        .resend_verification(ResendVerificationRequest { email: email.into(), ..Default::default() })
        .await
        .expect("resend");
}

/// Waits (at most 10 s) for a delivery to `email` in `status`.
async fn wait_for_status(stack: &Stack, email: &str, status: DeliveryStatus) {
    let request = ListDeliveriesRequest { email: email.to_owned(), status: status as i32, ..Default::default() };
    stack.delivery_where(request, |_| true, Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hard_bounce_suppresses_the_address_and_a_resend_sends_nothing_until_it_is_lifted() {
    let stack = bounce_stack().await;
    let mail = registered(&stack, "ann@example.org").await;
    let mut client = Client::connect(&stack).await;
    let (rcpt, end) = client.send(&[&mail.from], &dsn("ann@example.org", "failed", "5.1.1")).await;
    assert!(rcpt[0].starts_with("250") && end.starts_with("250"), "{rcpt:?} {end}");

    let bounced = delivery(&stack, &mail.event_id()).await;
    assert_eq!(bounced.status(), DeliveryStatus::Bounced);
    assert_eq!(bounced.bounces.len(), 1);
    let bounce = &bounced.bounces[0];
    assert_eq!(
        (bounce.class.as_str(), bounce.reason.as_str(), bounce.status.as_str()),
        ("hard", "userunknown", "5.1.1")
    );
    assert!(bounced.last_error.contains("5.1.1"), "{}", bounced.last_error);
    let listed = suppressions(&stack, "ann@example.org", false).await;
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].reason.as_str(), listed[0].delivery_id.as_str()), ("hard_bounce", bounced.event_id.as_str()));
    assert_eq!(listed[0].bounce_reason, "userunknown", "why, beside what it did");
    // user-service heard (email.address_undeliverable): a product can ask for another address.
    wait_for_undeliverable(&stack, &bounced.user_id, Some("hard_bounce")).await;
    let announced: Vec<verimail_proto::events::v1::AddressUndeliverable> =
        verimail_system_tests::events_on(&stack.nats.url(), verimail_proto::subjects::EMAIL_ADDRESS_UNDELIVERABLE)
            .await;
    assert_eq!(
        announced.iter().map(|e| e.bounce_reason.as_str()).collect::<Vec<_>>(),
        ["userunknown"],
        "why, announced"
    );
    assert_eq!(stack.user(&bounced.user_id).await.email_undeliverable.unwrap().status, "5.1.1");

    // Resend answers as for any address; nothing goes out.
    resend(&stack, "ann@example.org").await;
    wait_for_status(&stack, "ann@example.org", DeliveryStatus::Suppressed).await;
    assert_eq!(stack.smtp.to("ann@example.org").len(), 1, "no second mail to a suppressed address");

    // An operator lifts it, with a reason: mail goes out again.
    let lift =
        RemoveSuppressionRequest { email: "ANN@example.org ".into(), reason: "the user fixed their mailbox".into() };
    let lifted = stack.emails.clone().remove_suppression(lift).await.expect("RemoveSuppression").into_inner();
    let lifted = lifted.suppression.expect("the suppression");
    assert!(!lifted.removed_at.is_empty() && lifted.removed_reason == "the user fixed their mailbox", "{lifted:?}");
    assert!(suppressions(&stack, "ann@example.org", false).await.is_empty());
    assert_eq!(suppressions(&stack, "ann@example.org", true).await.len(), 1, "the history stays");
    wait_for_undeliverable(&stack, &bounced.user_id, None).await;
    resend(&stack, "ann@example.org").await;
    stack.smtp.wait_for("ann@example.org", 2, Duration::from_secs(10)).await;
    let twice = RemoveSuppressionRequest { email: "ann@example.org".into(), reason: "twice".into() };
    assert_eq!(stack.emails.clone().remove_suppression(twice).await.unwrap_err().code(), tonic::Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soft_bounces_count_and_suppress_at_the_limit_complaints_at_once_auto_replies_never() {
    let stack = bounce_stack().await;
    let soft = registered(&stack, "soft@example.org").await;
    let loud = registered(&stack, "loud@example.org").await;
    let away = registered(&stack, "away@example.org").await;
    let mut client = Client::connect(&stack).await;

    assert!(client.send(&[&soft.from], &dsn("soft@example.org", "delayed", "4.4.1")).await.1.starts_with("250"));
    assert!(suppressions(&stack, "soft@example.org", false).await.is_empty(), "one soft bounce is not enough");
    assert_eq!(delivery(&stack, &soft.event_id()).await.status(), DeliveryStatus::Sent, "the MTA still retries");
    assert!(client.send(&[&soft.from], &dsn("soft@example.org", "failed", "4.2.2")).await.1.starts_with("250"));
    let listed = suppressions(&stack, "soft@example.org", false).await;
    assert_eq!(listed.first().map(|s| s.reason.as_str()), Some("soft_bounces"), "{listed:?}");
    assert_eq!(listed[0].bounce_reason, "mailboxfull", "the reason of the bounce that reached the limit");
    let reasons: Vec<String> = delivery(&stack, &soft.event_id()).await.bounces.into_iter().map(|b| b.reason).collect();
    assert_eq!(reasons, ["expired", "mailboxfull"], "each bounce with its reason");

    assert!(client.send(&[&loud.from], &complaint("loud@example.org")).await.1.starts_with("250"));
    assert_eq!(delivery(&stack, &loud.event_id()).await.status(), DeliveryStatus::Complained);
    assert_eq!(suppressions(&stack, "loud@example.org", false).await[0].reason, "complaint");

    let vacation = "From: away@example.org\nSubject: Out of office\nAuto-Submitted: auto-replied\n\nBack on Monday.\n";
    assert!(client.send(&[&away.from], vacation).await.1.starts_with("250"));
    let recorded = delivery(&stack, &away.event_id()).await;
    assert_eq!((recorded.status(), recorded.bounces[0].class.as_str()), (DeliveryStatus::Sent, "auto_reply"));
    assert_eq!(recorded.bounces[0].reason, "vacation");
    assert!(suppressions(&stack, "away@example.org", false).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_bounces_change_nothing() {
    let stack = bounce_stack().await;
    let mail = registered(&stack, "kept@example.org").await;
    let (local, domain) = mail.from.split_once('@').unwrap();
    let flipped = format!("{}{}@{domain}", &local[..local.len() - 1], if local.ends_with('0') { '1' } else { '0' });
    // A tag made with the key for a delivery that does not exist: accepted, and ignored.
    let bounces = verimail_mail::bounce::address::BounceAddresses::from_vars(
        &verimail_server::config::Vars::from_pairs([("BOUNCE_DOMAIN", "bounces.example.com")]),
        verimail_email::address_key::AddressKey::from_secret(HASH_KEY).secret(),
    )
    .unwrap()
    .unwrap();
    let unknown = bounces.for_delivery(&uuid::Uuid::now_v7().to_string()).unwrap().to_string();
    let mut client = Client::connect(&stack).await;
    for (address, why) in [
        (flipped.as_str(), "a wrong tag"),
        (&format!("{local}@example.com"), "another domain"),
        ("postmaster@bounces.example.com", "not a bounce address"),
        ("kept@example.org", "the user's own address"),
    ] {
        let (rcpt, _) = client.send(&[address], &dsn("kept@example.org", "failed", "5.1.1")).await;
        assert!(rcpt[0].starts_with("550"), "{why}: {rcpt:?}");
    }
    let (rcpt, end) = client.send(&[&unknown], &dsn("kept@example.org", "failed", "5.1.1")).await;
    assert!(rcpt[0].starts_with("250") && end.starts_with("250"), "a delivery we do not have: {rcpt:?} {end}");
    let kept = delivery(&stack, &mail.event_id()).await;
    assert_eq!((kept.status(), kept.bounces.len()), (DeliveryStatus::Sent, 0));
    assert!(suppressions(&stack, "", true).await.is_empty(), "nothing suppressed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_malformed_input_get_the_right_reply_and_the_listener_keeps_serving() {
    let stack = bounce_stack().await;
    let mail = registered(&stack, "big@example.org").await;
    let mut client = Client::connect(&stack).await;
    let huge = format!("Subject: big\n\n{}\n", "x".repeat(900).repeat(100));
    let (_, end) = client.send(&[&mail.from], &huge).await;
    assert!(end.starts_with("552"), "over BOUNCE_MAX_MESSAGE_BYTES: {end}");
    assert!(client.command(&format!("HELO {}", "h".repeat(20_000))).await.starts_with("500"), "a line too long");
    assert!(client.command("WHAT IS THIS").await.starts_with('5'), "an unknown command");
    assert!(client.command("DATA").await.starts_with("503"), "DATA before MAIL");
    // The same session, and a new one, still take a bounce.
    assert!(client.send(&[&mail.from], &dsn("big@example.org", "failed", "5.1.1")).await.1.starts_with("250"));
    let mut other = Client::connect(&stack).await;
    assert!(other.command("QUIT").await.starts_with("221"));
    assert_eq!(delivery(&stack, &mail.event_id()).await.bounces.len(), 1, "the oversized one was not recorded");
}

/// A thousand messages in a burst, over 8 connections: every one is recorded. Prints the rate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_inbound_messages_in_a_burst_are_all_classified() {
    const MESSAGES: usize = 1000;
    const CONNECTIONS: usize = 8;
    // Twenty messages a delivery, the history each keeps; one host here plays many MTAs.
    const TARGETS: usize = MESSAGES / verimail_email::suppression::BOUNCES_KEPT_PER_DELIVERY as usize;
    let stack = bounce_stack_with(vec![("BOUNCE_RATE_PER_PEER", "off".to_owned())]).await;
    let mut targets = Vec::new();
    for n in 0..TARGETS {
        let mail = registered(&stack, &format!("burst{n}@example.org")).await;
        targets.push((mail.from.clone(), mail.event_id()));
    }
    let corpus_dir = format!("{}/data/bounces", env!("CARGO_MANIFEST_DIR"));
    let corpus: Vec<String> = std::fs::read_dir(&corpus_dir)
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
        .map(|e| String::from_utf8_lossy(&std::fs::read(e.path()).unwrap()).into_owned())
        .filter(|text| !text.contains('\0'))
        .collect();
    let started = Instant::now();
    let mut sessions = Vec::new();
    for c in 0..CONNECTIONS {
        let mut client = Client::connect(&stack).await;
        let (targets, corpus) = (targets.clone(), corpus.clone());
        sessions.push(tokio::spawn(async move {
            for n in (c..MESSAGES).step_by(CONNECTIONS) {
                // Twenty in a row to each delivery: each sees twenty kinds of the corpus.
                let (to, _) = &targets[n / (MESSAGES / TARGETS) % targets.len()];
                let (_, end) = client.send(&[to], &corpus[n % corpus.len()]).await;
                assert!(end.starts_with("250"), "message {n}: {end}");
            }
        }));
    }
    for session in sessions {
        session.await.expect("a session");
    }
    let elapsed = started.elapsed();
    let mut recorded = 0;
    for (_, event_id) in &targets {
        recorded += delivery(&stack, event_id).await.bounces.len();
    }
    assert_eq!(recorded, MESSAGES, "every message recorded against its delivery");
    eventually("the suppression list holds every address", Duration::from_secs(5), || async {
        let request = ListSuppressionsRequest { page_size: 100, ..Default::default() };
        let listed = stack.emails.clone().list_suppressions(request).await.expect("ListSuppressions");
        listed.into_inner().suppressions.len() == TARGETS
    })
    .await;
    // Paged as the other list RPCs: newest first, a token to the next page, none after the last.
    let page = |token: String| {
        let mut emails = stack.emails.clone();
        let request = ListSuppressionsRequest { page_size: 40, page_token: token, ..Default::default() };
        async move { emails.list_suppressions(request).await.expect("ListSuppressions").into_inner() }
    };
    let first = page(String::new()).await;
    let second = page(first.next_page_token.clone()).await;
    assert_eq!((first.suppressions.len(), second.suppressions.len()), (40, TARGETS - 40));
    assert!(second.next_page_token.is_empty());
    let mut listed: Vec<String> =
        first.suppressions.iter().chain(&second.suppressions).map(|s| s.email.clone()).collect();
    listed.sort();
    listed.dedup();
    assert_eq!(listed.len(), TARGETS, "each address once across the pages");
    println!(
        "{MESSAGES} inbound messages ({} corpus kinds) over {CONNECTIONS} connections in {elapsed:?}: {:.0} messages/s classified and recorded",
        corpus.len(),
        MESSAGES as f64 / elapsed.as_secs_f64()
    );
}

/// A verified user's address starts to bounce: they change to another (the flag goes, mail
/// goes to the new one), and once the account is deleted nothing of either address is left
/// anywhere but keyed hashes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_address_clears_the_flag_and_a_deletion_leaves_no_address_behind() {
    const PASSWORD: &str = "correct horse battery";
    let stack = bounce_stack().await;
    let mail = registered(&stack, "old@bouncing.example").await;
    let user_id = delivery(&stack, &mail.event_id()).await.user_id;
    let browser = verimail_system_tests::browser::Browser::new(&stack.gateway_url);
    assert_eq!(browser.click(&mail.verification_link()).await.kind(), "verified");
    assert!(stack.wait_for_status(&user_id, UserStatus::Verified, Duration::from_secs(10)).await);
    let mut client = Client::connect(&stack).await;
    assert!(client.send(&[&mail.from], &dsn("old@bouncing.example", "failed", "5.1.1")).await.1.starts_with("250"));
    wait_for_undeliverable(&stack, &user_id, Some("hard_bounce")).await;

    let token = stack.sign_in("old@bouncing.example", PASSWORD).await.expect("SignIn").access_token;
    let change = ChangeEmailRequest { new_email: "new@fine.example".into(), ..Default::default() };
    stack.plain_users().change_email(verimail_system_tests::with_bearer(change, &token)).await.expect("ChangeEmail");
    let confirm = stack.smtp.wait_for("new@fine.example", 1, Duration::from_secs(10)).await.remove(0);
    assert!(browser.click(&confirm.verification_link()).await.kind().starts_with("verified"));
    eventually("the account moves to the new address", Duration::from_secs(10), || async {
        stack.user(&user_id).await.email == "new@fine.example"
    })
    .await;
    wait_for_undeliverable(&stack, &user_id, None).await;
    // The notice of the change went nowhere: the old address is suppressed.
    wait_for_status(&stack, "old@bouncing.example", DeliveryStatus::Suppressed).await;
    assert_eq!(stack.smtp.to("old@bouncing.example").len(), 1, "only the first email reached it");

    let request = DeleteUserRequest { user_id: user_id.clone(), password: String::new() };
    stack.users.clone().delete_user(request).await.expect("DeleteUser");
    let traces = || async {
        let mut found = stack.find_everywhere("bouncing.example").await;
        found.extend(stack.find_everywhere("fine.example").await);
        found
    };
    let settled = tokio::time::timeout(Duration::from_secs(10), async {
        while !traces().await.is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    assert!(settled.await.is_ok(), "left behind: {:?}", traces().await);
    // The bounced address stays suppressed, by its keyed hash alone.
    let left = suppressions(&stack, "old@bouncing.example", false).await;
    assert_eq!(left.len(), 1);
    assert!(left[0].email.starts_with("erased:") && left[0].detail.is_empty(), "{left:?}");
}

/// With BOUNCE_TLS_CERT_FILE and BOUNCE_TLS_KEY_FILE the listener offers STARTTLS, and a bounce
/// sent over TLS counts as any other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_starttls_a_bounce_counts_as_any_other() {
    let ca = verimail_system_tests::pki::TestCa::new("bounce-test-ca");
    let (cert, key) = ca.issue("verimail-bounces");
    let dir = tempfile::tempdir().unwrap();
    let (cert_file, key_file) = (dir.path().join("bounce.crt"), dir.path().join("bounce.key"));
    std::fs::write(&cert_file, cert).unwrap();
    std::fs::write(&key_file, key).unwrap();
    let email_vars = vec![
        ("BOUNCE_DOMAIN", "bounces.example.com".to_owned()),
        ("BOUNCE_SMTP_ADDR", "127.0.0.1:0".to_owned()),
        ("BOUNCE_TLS_CERT_FILE", cert_file.display().to_string()),
        ("BOUNCE_TLS_KEY_FILE", key_file.display().to_string()),
    ];
    let stack = Stack::start_with(StackOptions { email_vars, ..StackOptions::default() }).await;
    let mail = registered(&stack, "tls@example.org").await;
    let mut plain = Client::greeted(&stack).await;
    assert!(plain.command("EHLO relay.example.net").await.contains("STARTTLS"), "offered");
    let mut client = plain.starttls(&ca.pem()).await;
    let (rcpt, end) = client.send(&[&mail.from], &dsn("tls@example.org", "failed", "5.1.1")).await;
    assert!(rcpt[0].starts_with("250") && end.starts_with("250"), "{rcpt:?} {end}");
    assert_eq!(delivery(&stack, &mail.event_id()).await.status(), DeliveryStatus::Bounced);
}

/// BOUNCE_MAX_CONNECTIONS sessions at once; one more is told 421 and closed, and a place that
/// frees up is taken again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_bound_get_421_and_the_listener_keeps_serving() {
    let email_vars = vec![
        ("BOUNCE_DOMAIN", "bounces.example.com".to_owned()),
        ("BOUNCE_SMTP_ADDR", "127.0.0.1:0".to_owned()),
        ("BOUNCE_MAX_CONNECTIONS", "2".to_owned()),
    ];
    let stack = Stack::start_with(StackOptions { email_vars, ..StackOptions::default() }).await;
    let first = Client::connect(&stack).await;
    let _second = Client::connect(&stack).await;
    let mut third = Client::opened(&stack).await;
    let refused = third.reply().await;
    assert!(refused.starts_with("421"), "{refused}");
    drop(first);
    eventually("a freed place is taken again", Duration::from_secs(5), || async {
        let mut next = Client::opened(&stack).await;
        next.reply().await.starts_with("220")
    })
    .await;
}

/// A connection to the listener at `addr` from the loopback address `source` (127.0.0.x):
/// another host, as the listener counts them.
async fn opened_from(addr: std::net::SocketAddr, source: [u8; 4]) -> Client {
    let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
    socket.bind(std::net::SocketAddr::from((source, 0))).expect("bind a loopback source address");
    let stream = socket.connect(addr).await.expect("connect to the bounce listener");
    Client { io: BufReader::new(stream) }
}

/// One host may hold BOUNCE_MAX_CONNECTIONS_PER_PEER sessions and send BOUNCE_RATE_PER_PEER
/// messages: past them it hears 421 and 451, and the others are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_host_cannot_take_every_connection_nor_send_without_end() {
    let email_vars = vec![
        ("BOUNCE_DOMAIN", "bounces.example.com".to_owned()),
        ("BOUNCE_SMTP_ADDR", "127.0.0.1:0".to_owned()),
        ("BOUNCE_MAX_CONNECTIONS", "5".to_owned()),
        ("BOUNCE_MAX_CONNECTIONS_PER_PEER", "2".to_owned()),
        ("BOUNCE_RATE_PER_PEER", "3/600".to_owned()),
    ];
    let stack = Stack::start_with(StackOptions { email_vars, ..StackOptions::default() }).await;
    let addr = stack.bounce_addr.expect("the bounce listener");
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut client = opened_from(addr, [127, 0, 0, 2]).await;
        assert!(client.reply().await.starts_with("220"));
        held.push(client);
    }
    let mut third = opened_from(addr, [127, 0, 0, 2]).await;
    let refused = third.reply().await;
    assert!(refused.starts_with("421") && refused.contains("from your address"), "{refused}");
    let mut elsewhere = opened_from(addr, [127, 0, 0, 3]).await;
    assert!(elsewhere.reply().await.starts_with("220"), "another host still gets a place");

    // Messages: three from one host, then 451 (try later); another host is not counted with it.
    let mut busy = opened_from(addr, [127, 0, 0, 4]).await;
    assert!(busy.reply().await.starts_with("220"));
    assert!(busy.command("EHLO relay.example.net").await.starts_with("250"));
    for _ in 0..3 {
        assert!(busy.command("MAIL FROM:<>").await.starts_with("250"));
        assert!(busy.command("RSET").await.starts_with("250"));
    }
    let limited = busy.command("MAIL FROM:<>").await;
    assert!(limited.starts_with("451"), "{limited}");
    assert!(elsewhere.command("EHLO relay.example.net").await.starts_with("250"));
    assert!(elsewhere.command("MAIL FROM:<>").await.starts_with("250"));
}

/// Whoever has a bounce address can write to it as often and as long as they like: what is
/// kept of each message and of each delivery's history is bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_is_kept_of_bounces_is_bounded_per_message_and_per_delivery() {
    let stack = bounce_stack().await;
    stack.register("long@example.org", "correct horse battery").await;
    let mail = stack.smtp.wait_for_verification("long@example.org", Duration::from_secs(10)).await;
    // Folded over many lines, as a long header may be (a line is at most 16 KiB).
    let words = vec!["no such mailbox here"; 2_000].join("\n ");
    for n in 0..25 {
        let mut client = Client::connect(&stack).await;
        let message = dsn("long@example.org", "failed", "5.1.1").replace("mailbox says no", &format!("{n} {words}"));
        assert!(message.len() > 40_000);
        let (rcpt, end) = client.send(&[&mail.from], &message).await;
        assert!(rcpt[0].starts_with("250") && end.starts_with("250"), "{rcpt:?} {end}");
    }
    let kept = delivery(&stack, &mail.event_id()).await;
    assert_eq!(kept.bounces.len(), 20, "the newest 20");
    assert!(kept.bounces[0].diagnostic.contains("550 5.1.1 <long@example.org>: 5 no such"), "{:?}", kept.bounces[0]);
    for bounce in &kept.bounces {
        assert!(bounce.diagnostic.chars().count() <= 501, "{} characters", bounce.diagnostic.len());
    }
    let listed = suppressions(&stack, "long@example.org", false).await;
    assert_eq!(listed.len(), 1);
    assert!(listed[0].detail.chars().count() <= 520, "{} characters", listed[0].detail.len());
    let request = ListDeliveriesRequest { email: "long@example.org".into(), ..Default::default() };
    let answer = stack.emails.clone().list_deliveries(request).await.expect("ListDeliveries").into_inner();
    let size = prost::Message::encoded_len(&answer);
    assert!(size < 64 * 1024, "ListDeliveries answers {size} bytes");
}
