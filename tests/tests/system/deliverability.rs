//! Mail that arrives: DKIM signatures a receiver verifies.

use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncWriteExt as _;
use verimail_system_tests::procs::{printed, run_binary};
use verimail_system_tests::{Stack, StackOptions};

/// What a team sets for DKIM with `key` (a file of tests/data/dkim), MAIL_FROM below the
/// signing domain.
fn dkim_vars(key: &str) -> Vec<(&'static str, String)> {
    vec![
        ("MAIL_FROM", "Verimail <no-reply@mail.example.com>".to_owned()),
        ("DKIM_DOMAIN", "example.com".to_owned()),
        ("DKIM_SELECTOR", "verimail-test".to_owned()),
        ("DKIM_PRIVATE_KEY_FILE", format!("{}/data/dkim/{key}", env!("CARGO_MANIFEST_DIR"))),
    ]
}

/// dkimpy's verdict on `message` with the key from `record` (tests/dkim_verify.py): whether it
/// verifies, and what it said.
async fn dkimpy_verifies(message: &[u8], record: &str) -> (bool, String) {
    let script = format!("{}/dkim_verify.py", env!("CARGO_MANIFEST_DIR"));
    let mut child = tokio::process::Command::new("/usr/bin/python3")
        .args([script.as_str(), record])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 with python3-dkim and python3-nacl (apt-get install python3-dkim python3-nacl)");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(message).await.expect("write the message");
    drop(stdin);
    let output = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("dkimpy answers within 30 s")
        .expect("dkimpy runs");
    let said = printed(&output);
    assert!(!said.contains("ModuleNotFoundError"), "dkimpy is not installed: {said}");
    (output.status.success(), said)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mail_is_dkim_signed_and_dkimpy_verifies_it_with_the_printed_record() {
    for key in ["ed25519.pem", "rsa2048.pem"] {
        let vars = dkim_vars(key);
        let stack = Stack::start_with(StackOptions { email_vars: vars.clone(), ..StackOptions::default() }).await;
        let address = "signed@example.org";
        stack.register(address, "correct horse battery").await;
        let mail = stack.smtp.wait_for_verification(address, Duration::from_secs(10)).await;

        let env = vars.iter().map(|(name, value)| (*name, value.as_str()));
        let output = run_binary("email-service", &["--dkim-dns-record"], env, Duration::from_secs(30)).await;
        assert!(output.status.success(), "{}", printed(&output));
        let record = String::from_utf8(output.stdout).expect("text").trim().to_owned();
        assert!(record.starts_with("verimail-test._domainkey.example.com. IN TXT \"v=DKIM1;"), "{record}");

        let (verified, said) = dkimpy_verifies(&mail.raw, &record).await;
        assert!(verified, "{key}: dkimpy refuses the signature:\n{said}");
        // What a signature is for: a changed subject or body no longer verifies.
        let raw = String::from_utf8(mail.raw.clone()).expect("an ASCII message");
        let forged_subject = raw.replace("Subject: Verify your email address", "Subject: Urgent: reset your password");
        assert_ne!(forged_subject, raw);
        assert!(!dkimpy_verifies(forged_subject.as_bytes(), &record).await.0, "{key}: a changed subject verifies");
        let code = mail.verification_code();
        let forged_body = raw.replace(&code, "000000");
        assert_ne!(forged_body, raw);
        assert!(!dkimpy_verifies(forged_body.as_bytes(), &record).await.0, "{key}: a changed body verifies");
        // Nor can anyone re-dress it: a header put above ours (a verifier hashes the lowest
        // instance first), a header we did not send, or another Content-Type.
        for added in [
            "Subject: Urgent: reset your password",
            "From: Verimail <security@example.com>",
            "Reply-To: attacker@example.net",
            "Content-Type: text/plain",
        ] {
            let redressed = format!("{added}\r\n{raw}");
            assert!(!dkimpy_verifies(redressed.as_bytes(), &record).await.0, "{key}: verifies with {added:?} above");
        }
        println!("{key}: {record}\n  dkimpy: pass; changed subject or body, or a header added: fail");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_mail_leaves_from_its_delivery_s_own_bounce_address() {
    let vars = vec![
        ("BOUNCE_DOMAIN", "bounces.example.com".to_owned()),
        ("DELIVERY_HASH_KEY", "a-test-delivery-hash-key-0123456789abcdef".to_owned()),
    ];
    let stack = Stack::start_with(StackOptions { email_vars: vars.clone(), ..StackOptions::default() }).await;
    let mut seen = std::collections::HashSet::new();
    for address in ["one@example.org", "two@example.org"] {
        stack.register(address, "correct horse battery").await;
        let mail = stack.smtp.wait_for_verification(address, Duration::from_secs(10)).await;
        let key = verimail_email::address_key::AddressKey::from_secret(&vars[1].1);
        let bounces = verimail_mail::bounce::address::BounceAddresses::from_vars(
            &verimail_server::config::Vars::from_pairs(vars.clone()),
            key.secret(),
        )
        .unwrap()
        .unwrap();
        // Its delivery, named by the envelope sender: the event the Message-ID carries.
        assert_eq!(bounces.delivery_of(&mail.from), Ok(mail.event_id()), "{}", mail.from);
        assert!(mail.from.starts_with("bounce+") && mail.from.ends_with("@bounces.example.com"), "{}", mail.from);
        assert_eq!(
            mail.header("From").as_deref(),
            Some("Verimail <no-reply@verimail.localhost>"),
            "the header From stays"
        );
        assert!(seen.insert(mail.from.clone()), "one bounce address per delivery");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_refuses_an_unfit_key_by_name() {
    for (key, why) in [("rsa1024.pem", "1024 bits"), ("ed25519-public.pem", "public key"), ("p256.pem", "neither")] {
        let mut vars = dkim_vars(key);
        vars.push(("VERIMAIL_ENV", "development".to_owned()));
        let env = vars.iter().map(|(name, value)| (*name, value.as_str()));
        let output = run_binary("email-service", &["--check-config"], env, Duration::from_secs(30)).await;
        let said = printed(&output);
        assert!(
            !output.status.success() && said.contains("DKIM_PRIVATE_KEY_FILE") && said.contains(why),
            "{key}: {said}"
        );
    }
    let env = [("VERIMAIL_ENV", "development")];
    let output = run_binary("email-service", &["--dkim-dns-record"], env, Duration::from_secs(30)).await;
    assert!(!output.status.success() && printed(&output).contains("DKIM is not configured"), "{}", printed(&output));
}

/// Postfix from Debian's packages relays email-service's mail to the recipients' SMTP server,
/// which refuses one recipient for good and another for now. Postfix itself writes the
/// delivery status notifications and sends them to email-service's bounce listener: the hard
/// bounce suppresses its address (GetUser says so, a resend sends nothing), the soft one is
/// retried by Postfix, arrives, and suppresses nothing. The message that went through Postfix
/// still carries a DKIM signature that dkimpy verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_a_real_mta_bounces_come_back_and_suppress_and_signatures_survive_the_relay() {
    use verimail_proto::email::v1::{DeliveryStatus, ListDeliveriesRequest, ListSuppressionsRequest};
    use verimail_proto::user::v1::ResendVerificationRequest;
    let wait = Duration::from_secs(30);
    let (mta_port, bounce_port) = (verimail_testkit::free_port(), verimail_testkit::free_port());
    let mut email_vars = dkim_vars("rsa2048.pem");
    email_vars.extend([
        ("SMTP_URL", format!("smtp://127.0.0.1:{mta_port}")),
        ("BOUNCE_DOMAIN", "bounces.example.com".to_owned()),
        ("BOUNCE_SMTP_ADDR", format!("127.0.0.1:{bounce_port}")),
    ]);
    let stack = Stack::start_with(StackOptions { email_vars: email_vars.clone(), ..StackOptions::default() }).await;
    let bounce_addr = stack.bounce_addr.expect("the bounce listener");
    let postfix = verimail_system_tests::postfix::Postfix::start_on(
        mta_port,
        stack.smtp.addr(),
        "bounces.example.com",
        bounce_addr,
    );
    stack.smtp.reject("hard@example.org");
    stack.smtp.defer("soft@example.org");
    let mut ids = std::collections::HashMap::new();
    for address in ["fine@example.org", "hard@example.org", "soft@example.org"] {
        ids.insert(address, stack.register(address, "correct horse battery").await);
    }

    // Through the relay, the signature still verifies.
    let fine = stack.smtp.wait_for_verification("fine@example.org", wait).await;
    assert!(fine.raw.windows(9).any(|w| w == b"Received:"), "it went through Postfix");
    let env = email_vars.iter().filter(|(n, _)| n.starts_with("DKIM") || *n == "MAIL_FROM");
    let env = env.map(|(name, value)| (*name, value.as_str()));
    let record = run_binary("email-service", &["--dkim-dns-record"], env, Duration::from_secs(30)).await;
    let record = String::from_utf8(record.stdout).unwrap().trim().to_owned();
    let (verified, said) = dkimpy_verifies(&fine.raw, &record).await;
    assert!(verified, "after Postfix, dkimpy refuses the signature:\n{said}");

    // The hard bounce: Postfix's DSN comes back and suppresses the address.
    let suppressed = || async {
        let request = ListSuppressionsRequest { email: "hard@example.org".into(), ..Default::default() };
        stack.emails.clone().list_suppressions(request).await.expect("ListSuppressions").into_inner().suppressions
    };
    verimail_system_tests::eventually("Postfix's bounce suppresses hard@", wait, || async {
        !suppressed().await.is_empty()
    })
    .await;
    let hard = &suppressed().await[0];
    assert_eq!(
        (hard.reason.as_str(), hard.bounce_reason.as_str()),
        ("hard_bounce", "userunknown"),
        "log:\n{}",
        postfix.log()
    );
    verimail_system_tests::eventually("GetUser shows hard@ undeliverable", wait, || async {
        stack.user(&ids["hard@example.org"]).await.email_undeliverable.is_some()
    })
    .await;
    let request = ResendVerificationRequest { email: "hard@example.org".into(), ..Default::default() };
    stack.users.clone().resend_verification(request).await.expect("ResendVerification");
    let suppressed_delivery = ListDeliveriesRequest {
        email: "hard@example.org".into(),
        status: DeliveryStatus::Suppressed as i32,
        ..Default::default()
    };
    stack.delivery_where(suppressed_delivery, |_| true, wait).await;
    assert!(stack.smtp.to("hard@example.org").is_empty(), "nothing reached the refusing server's mailbox");

    // The soft one: Postfix warns of the delay (a soft bounce, counted), retries, delivers.
    let soft = ListDeliveriesRequest { email: "soft@example.org".into(), ..Default::default() };
    let warned = stack.delivery_where(soft.clone(), |d| d.bounces.iter().any(|b| b.class == "soft"), wait).await;
    println!("the soft bounce as recorded: {:?}", warned.bounces);
    stack.smtp.accept("soft@example.org");
    stack.smtp.wait_for("soft@example.org", 1, wait).await;
    let request = ListSuppressionsRequest { email: "soft@example.org".into(), ..Default::default() };
    let listed = stack.emails.clone().list_suppressions(request).await.unwrap().into_inner().suppressions;
    assert!(listed.is_empty(), "a soft bounce under the limit suppresses nothing: {listed:?}");
    assert!(stack.user(&ids["soft@example.org"]).await.email_undeliverable.is_none());
    println!("through Postfix: DKIM verified, hard bounce suppressed, soft bounce retried and delivered");
}

/// EMAIL_CHECK_DNS=true, against a DNS server inside the test: an address whose domain does
/// not exist, or has neither MX nor A record, or a null MX, is refused at RegisterUser and
/// ChangeEmail, naming the field; one with an MX or only an A record goes ahead, and so does
/// one whose lookup fails (a DNS outage stops nobody). Without the setting nothing is looked up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_email_check_dns_a_domain_that_cannot_receive_mail_is_refused() {
    use tonic::Code;
    use verimail_proto::user::v1::{ChangeEmailRequest, GetUserRequest, get_user_request};
    use verimail_system_tests::dns::{DnsServer, Entry};
    let dns = DnsServer::start(&[
        ("mail.example", Entry::Mx("mx.mail.example.")),
        ("host.example", Entry::A(std::net::Ipv4Addr::new(192, 0, 2, 1))),
        ("nullmx.example", Entry::Mx(".")),
        ("flaky.example", Entry::Fails),
    ])
    .await;
    let user_vars = vec![("EMAIL_CHECK_DNS", "true".to_owned()), ("EMAIL_DNS_SERVER", dns.addr.to_string())];
    let stack = Stack::start_with(StackOptions { user_vars, ..StackOptions::default() }).await;
    for address in ["a@mail.example", "b@host.example", "c@flaky.example"] {
        stack.try_register(address, "correct horse battery").await.unwrap_or_else(|e| panic!("{address}: {e:?}"));
    }
    for (address, why) in [("d@nowhere.example", "does not exist"), ("e@nullmx.example", "null MX")] {
        let refused = stack.try_register(address, "correct horse battery").await.unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{address}");
        assert_eq!(verimail_server::grpc::bad_request_field(&refused).as_deref(), Some("email"));
        assert!(refused.message().contains(why), "{address}: {}", refused.message());
        let lookup = GetUserRequest { key: Some(get_user_request::Key::Email(address.into())) };
        assert_eq!(stack.users.clone().get_user(lookup).await.unwrap_err().code(), Code::NotFound, "nothing written");
    }
    let change = ChangeEmailRequest {
        new_email: "moved@nowhere.example".into(),
        email: "a@mail.example".into(),
        password: "correct horse battery".into(),
        ..Default::default()
    };
    let refused = stack.plain_users().change_email(change).await.unwrap_err();
    assert_eq!(
        (refused.code(), verimail_server::grpc::bad_request_field(&refused).as_deref()),
        (Code::InvalidArgument, Some("new_email")),
        "{refused:?}"
    );
    // Off (the default): the same address registers.
    let unchecked = Stack::start().await;
    unchecked.try_register("d@nowhere.example", "correct horse battery").await.expect("no lookup without the setting");
}
