//! What every email kind looks like where it is read, in each language we ship: written in the
//! user's language (the nearest we have: `de-AT` gets German, `pt-BR` the default), its times
//! as people read them, its links short enough for every mail client and scanner, and its HTML
//! laid out in a 600-pixel-wide reading pane (Chromium) with nothing to scroll sideways.
//! Screenshots go to the test artifacts folder.

use crate::{EMAIL_WAIT, STATUS_WAIT};
use std::time::Duration;
use tonic::Code;
use verimail_proto::user::v1::{ChangeEmailRequest, UserStatus};
use verimail_system_tests::browser::Browser;
use verimail_system_tests::chrome::Chrome;
use verimail_system_tests::{ReceivedMail, Stack, StackOptions, eventually, with_bearer};

const PASSWORD: &str = "correct horse battery";

/// Longest link an email may carry: some clients and scanners break or cut longer ones.
const MAX_LINK: usize = 200;

/// Each email, its subject in each language (en, de, es), and a time phrase of its text.
const EMAILS: [(&str, [&str; 3], [&str; 3]); 7] = [
    (
        "verification",
        ["Verify your email address", "Bestätigen Sie Ihre E-Mail-Adresse", "Verifica tu dirección de correo"],
        ["expires in 24 hours", "läuft in 24 Stunden ab", "caduca en 24 horas"],
    ),
    (
        "signup_attempted",
        [
            "Someone tried to sign up with your address",
            "Jemand hat versucht, sich mit Ihrer Adresse zu registrieren",
            "Alguien intentó registrarse con tu dirección",
        ],
        ["", "", ""],
    ),
    (
        "email_change_verification",
        [
            "Confirm your new email address",
            "Bestätigen Sie Ihre neue E-Mail-Adresse",
            "Confirma tu nueva dirección de correo",
        ],
        ["the code expires in 1 hour", "der Code läuft in 1 Stunde ab", "el código caduca en 1 hora"],
    ),
    (
        "email_change_notice",
        [
            "Your email address is being changed",
            "Ihre E-Mail-Adresse wird geändert",
            "Se está cambiando tu dirección de correo",
        ],
        ["for 7 days", "7 Tage lang", "durante 7 días"],
    ),
    (
        "change_attempted",
        [
            "Someone tried to move an account to your address",
            "Jemand hat versucht, ein Konto auf Ihre Adresse umzustellen",
            "Alguien intentó cambiar una cuenta a tu dirección",
        ],
        ["", "", ""],
    ),
    (
        "password_reset",
        ["Reset your password", "Passwort zurücksetzen", "Restablece tu contraseña"],
        ["expire in 1 hour", "laufen in 1 Stunde ab", "caducan en 1 hora"],
    ),
    (
        "password_changed",
        ["Your password was changed", "Ihr Passwort wurde geändert", "Tu contraseña ha cambiado"],
        ["", "", ""],
    ),
];

async fn register(stack: &Stack, email: &str, locale: &str) -> Result<String, tonic::Status> {
    stack.try_register_in(email, PASSWORD, locale).await
}

/// The email to `to` whose subject is `subject`, once it arrived.
async fn titled(stack: &Stack, to: &str, subject: &str) -> ReceivedMail {
    let find = || stack.smtp.to(to).into_iter().find(|m| m.header("Subject").as_deref() == Some(subject));
    eventually(&format!("{subject:?} to {to}"), EMAIL_WAIT, || async { find().is_some() }).await;
    find().expect("the email")
}

/// A verified account of `email` in `locale`, and its access token.
async fn verified(stack: &Stack, email: &str, locale: &str, subject: &str) -> String {
    let user_id = register(stack, email, locale).await.expect("RegisterUser");
    let link = titled(stack, email, subject).await.verification_link();
    assert_eq!(Browser::new(&stack.gateway_url).click(&link).await.kind(), "verified");
    assert!(stack.wait_for_status(&user_id, UserStatus::Verified, STATUS_WAIT).await);
    stack.sign_in(email, PASSWORD).await.expect("SignIn").access_token
}

async fn change(stack: &Stack, token: &str, new_email: &str) {
    let request = ChangeEmailRequest { new_email: new_email.into(), ..Default::default() };
    stack.plain_users().change_email(with_bearer(request, token)).await.expect("ChangeEmail");
}

/// Every http(s) link of the text part.
fn links(mail: &ReceivedMail) -> Vec<String> {
    let text = mail.part("text/plain");
    text.split_whitespace().filter(|word| word.starts_with("http")).map(str::to_owned).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_email_kind_in_every_language_has_short_links_and_fits_a_600_pixel_pane() {
    let options = StackOptions { token_lifetime: Duration::from_secs(24 * 3600), ..StackOptions::default() };
    let stack = Stack::start_with(options).await;
    let chrome = Chrome::start().await;
    chrome.set_viewport(600, 900).await;
    let pages = tempfile::tempdir().expect("a folder for the HTML parts");
    // The measure itself: an unbreakable line wider than the pane is seen.
    let wide = pages.path().join("wide.html");
    std::fs::write(&wide, format!("<!doctype html><p><code>{}</code></p>", "x".repeat(120))).expect("write");
    chrome.client.goto(&format!("file://{}", wide.display())).await.expect("open the wide page");
    let (laid_out, pane) = chrome.layout_width().await;
    assert!(laid_out > pane, "a 120-character unbroken line measured {laid_out} px in {pane} px");

    // `de-AT` has no emails of its own: German is the nearest.
    for (n, (locale, asked)) in [("en", "en"), ("de", "de-AT"), ("es", "es")].into_iter().enumerate() {
        let subject = |email: &str| EMAILS.iter().find(|(name, ..)| *name == email).expect("an email").1[n];
        let (ada, ada_new, bea) = (
            format!("ada-{locale}@example.com"),
            format!("ada-{locale}@example.org"),
            format!("bea-{locale}@example.com"),
        );
        // A registration's verification email, then the notice of a second registration; a
        // change of address (the new address's verification, the current one's notice); a
        // change to a taken address (its owner's notice).
        let token = verified(&stack, &ada, asked, subject("verification")).await;
        register(&stack, &ada, "").await.expect("RegisterUser again");
        change(&stack, &token, &ada_new).await;
        let bea_token = verified(&stack, &bea, "", EMAILS[0].1[0]).await;
        change(&stack, &bea_token, &ada).await;
        // A password reset's email, and the notice once its code is used.
        let reset = verimail_proto::user::v1::RequestPasswordResetRequest { email: ada.clone(), ..Default::default() };
        stack.users.clone().request_password_reset(reset).await.expect("RequestPasswordReset");
        let code = titled(&stack, &ada, subject("password_reset")).await.verification_code();
        let reset = verimail_proto::user::v1::ResetPasswordRequest {
            email: ada.clone(),
            code,
            new_password: "a fresh purple teapot".into(),
            ..Default::default()
        };
        stack.plain_users().reset_password(reset).await.expect("ResetPassword");

        for (email, subjects, phrases) in EMAILS {
            let to = if email == "email_change_verification" { &ada_new } else { &ada };
            let mail = titled(&stack, to, subjects[n]).await;
            let (text, html) = (mail.part("text/plain"), mail.part("text/html"));
            assert!(text.replace('\n', " ").contains(phrases[n]), "{locale} {email}: no {:?} in\n{text}", phrases[n]);
            assert!(html.contains(&format!("<html lang=\"{locale}\">")), "{locale} {email}");
            assert!(!text.contains("T00:") && !text.contains(":00Z"), "{locale} {email}: an RFC 3339 time\n{text}");
            for link in links(&mail) {
                println!("{locale} {email}: a link of {} characters", link.len());
                assert!(link.len() < MAX_LINK, "{email}: a link of {} characters: {link}", link.len());
            }
            let page = pages.path().join(format!("{locale}-{email}.html"));
            std::fs::write(&page, html).expect("write the HTML part");
            chrome.client.goto(&format!("file://{}", page.display())).await.expect("open the HTML part");
            let (laid_out, pane) = chrome.layout_width().await;
            let shot = chrome.screenshot(&format!("email-{email}-{locale}-600px")).await;
            assert_eq!(pane, 600, "the reading pane");
            assert!(laid_out <= pane, "{email}: laid out {laid_out} px wide in {pane} px; see {}", shot.display());
        }
    }
    chrome.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_language_we_lack_gets_the_default_and_a_malformed_tag_is_refused() {
    let stack = Stack::start().await;
    let user_id = register(&stack, "cai@example.com", "pt-BR").await.expect("RegisterUser pt-BR");
    titled(&stack, "cai@example.com", EMAILS[0].1[0]).await;
    let user = stack.user(&user_id).await;
    assert_eq!(user.locale, "pt-BR", "kept as asked, for when Portuguese emails exist");

    // Canonical form, and a resend may change the language (German now).
    let user_id = register(&stack, "dov@example.com", "EN-gb").await.expect("RegisterUser");
    assert_eq!(stack.user(&user_id).await.locale, "en-GB");
    let resend =
        verimail_proto::user::v1::ResendVerificationRequest { email: "dov@example.com".into(), locale: "de".into() };
    stack.users.clone().resend_verification(resend).await.expect("ResendVerification");
    titled(&stack, "dov@example.com", EMAILS[0].1[1]).await;
    assert_eq!(stack.user(&user_id).await.locale, "de");

    for bad in ["english", "x-klingon", "de_DE", "de-u-co-phonebk", "und", "<b>"] {
        let refused = register(&stack, "eve@example.com", bad).await.expect_err(bad);
        assert_eq!(refused.code(), Code::InvalidArgument, "{bad}");
        assert_eq!(verimail_server::grpc::bad_request_field(&refused).as_deref(), Some("locale"), "{bad}");
    }
    assert_eq!(stack.query_text("user", "SELECT COUNT(*) FROM users WHERE email = 'eve@example.com'").await, "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_team_s_template_is_what_arrives_and_a_broken_one_stops_check_config_at_its_line() {
    let dir = tempfile::tempdir().expect("a templates folder");
    let write = |path: &str, text: &str| {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().expect("a folder")).expect("mkdir");
        std::fs::write(path, text).expect("write a template");
    };
    let templates = dir.path().to_string_lossy().into_owned();
    // One email overridden: its subject and text (the HTML stays built in).
    write("en/verification.subject", "Welcome to Teapot: confirm {{ email }}");
    write("en/verification.txt", "Teapot says hello.\n\nConfirm: {{ link }}\nCode: {{ code }}\n");
    let check = |env: Vec<(&'static str, String)>| async move {
        let mut env: Vec<(&str, &str)> = env.iter().map(|(n, v)| (*n, v.as_str())).collect();
        env.push(("VERIMAIL_ENV", "development"));
        let output = verimail_system_tests::procs::run_binary(
            "email-service",
            &["--check-config"],
            env,
            Duration::from_secs(20),
        )
        .await;
        (output.status.success(), verimail_system_tests::procs::printed(&output))
    };
    let (ok, said) = check(vec![("EMAIL_TEMPLATES_DIR", templates.clone())]).await;
    assert!(ok, "the override is accepted: {said}");

    let options =
        StackOptions { email_vars: vec![("EMAIL_TEMPLATES_DIR", templates.clone())], ..StackOptions::default() };
    let stack = Stack::start_with(options).await;
    let user_id = register(&stack, "tea@example.com", "").await.expect("RegisterUser");
    let mail = titled(&stack, "tea@example.com", "Welcome to Teapot: confirm tea@example.com").await;
    assert!(mail.part("text/plain").starts_with("Teapot says hello."), "{}", mail.part("text/plain"));
    assert!(mail.part("text/html").contains("Verify my email address"), "the built-in HTML stays");
    let link = mail.part("text/plain").lines().find_map(|l| l.strip_prefix("Confirm: ")).expect("the link").to_owned();
    assert_eq!(Browser::new(&stack.gateway_url).click(&link).await.kind(), "verified");
    assert!(stack.wait_for_status(&user_id, UserStatus::Verified, STATUS_WAIT).await);

    // A broken one: --check-config (and so the start) stops, naming the file and the line.
    write("de/signup_attempted.html", "<p>Guten Tag,</p>\n<p>{{ email }}</p>\n<p>{% if %}</p>\n");
    write("de/signup_attempted.txt", "x");
    write("de/signup_attempted.subject", "x");
    let (ok, said) = check(vec![("EMAIL_TEMPLATES_DIR", templates.clone())]).await;
    let broken = format!("{templates}/de/signup_attempted.html:3: syntax error");
    assert!(!ok && said.contains("EMAIL_TEMPLATES_DIR") && said.contains(&broken), "{said}");
    println!("--check-config said: {}", said.lines().find(|l| l.contains(&broken)).unwrap_or_default());
    // A variable the email does not give: the same, at its line.
    write("de/signup_attempted.html", "<p>{{ email }}</p>\n<p>{{ password }}</p>\n");
    let (ok, said) = check(vec![("EMAIL_TEMPLATES_DIR", templates)]).await;
    assert!(!ok && said.contains("de/signup_attempted.html:2: undefined value"), "{said}");
}

/// `text` with every "HH:MM UTC" written as "hh:mm UTC": a preview made a moment after a send
/// may be a minute later.
fn any_minute(text: &str) -> String {
    let mut out = text.replace("\r\n", "\n");
    let mut from = 0;
    while let Some(at) = out[from..].find(" UTC").map(|i| i + from) {
        if at >= 5 && out.is_char_boundary(at - 5) && out.as_bytes()[at - 3] == b':' {
            out.replace_range(at - 5..at, "hh:mm");
        }
        from = at + 4;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preview_is_the_email_a_send_writes_apart_from_its_token_and_issues_nothing() {
    use verimail_auth::links::{SAMPLE_CODE, SAMPLE_TOKEN};
    use verimail_proto::email::v1::{EmailKind, PreviewEmailRequest};
    let stack = Stack::start().await;
    let user_id = register(&stack, "pia@example.com", "es").await.expect("RegisterUser");
    let sent = titled(&stack, "pia@example.com", EMAILS[0].1[2]).await;
    let counts = || async {
        let tokens = stack.query_text("auth", "SELECT COUNT(*) FROM verification_tokens").await;
        let codes = stack.query_text("auth", "SELECT COUNT(*) FROM verification_codes").await;
        let deliveries = stack.query_text("email", "SELECT COUNT(*) FROM deliveries").await;
        (tokens, codes, deliveries, stack.smtp.to("pia@example.com").len())
    };
    let before = counts().await;

    let request = PreviewEmailRequest { kind: EmailKind::Verification as i32, user_id, ..Default::default() };
    let preview = stack.emails.clone().preview_email(request).await.expect("PreviewEmail").into_inner();
    assert_eq!(
        (preview.to.as_str(), preview.locale.as_str()),
        ("pia@example.com", "es"),
        "the user's address and language"
    );
    assert_eq!(Some(preview.subject.clone()), sent.header("Subject"));
    let as_preview = |part: String| {
        any_minute(
            &part.replace(&sent.verification_token(), SAMPLE_TOKEN).replace(&sent.verification_code(), SAMPLE_CODE),
        )
    };
    assert_eq!(as_preview(sent.part("text/plain")), any_minute(&preview.text), "the text, byte for byte");
    assert_eq!(as_preview(sent.part("text/html")), any_minute(&preview.html), "the HTML, byte for byte");
    assert!(preview.text.contains(SAMPLE_TOKEN), "the link is visibly a sample: {}", preview.text);
    // The sample link verifies nothing.
    let refused = stack.verify(SAMPLE_TOKEN).await.expect_err("a sample token");
    assert_eq!(refused.code(), Code::InvalidArgument);

    // Without a user: a sample address, any kind, any language.
    let request =
        PreviewEmailRequest { kind: EmailKind::EmailChangeNotice as i32, locale: "de-CH".into(), ..Default::default() };
    let notice = stack.emails.clone().preview_email(request).await.expect("PreviewEmail").into_inner();
    assert_eq!((notice.subject.as_str(), notice.locale.as_str()), (EMAILS[3].1[1], "de"));
    assert!(notice.text.contains("7 Tage lang"), "{}", notice.text);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(counts().await, before, "a preview issued, recorded or sent something");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_email_arrives_as_its_preview_and_shows_as_a_test_delivery() {
    use verimail_proto::email::v1::{DeliveryStatus, EmailKind, ListDeliveriesRequest, SendTestEmailRequest};
    let stack = Stack::start().await;
    let send = |kind: EmailKind, locale: &str, to: &str| {
        let request = SendTestEmailRequest { kind: kind as i32, locale: locale.into(), to: to.into() };
        let mut emails = stack.emails.clone();
        async move { emails.send_test_email(request).await.map(|reply| reply.into_inner().delivery.expect("a delivery")) }
    };
    let delivery = send(EmailKind::ChangeAttempted, "es", "ops@example.com").await.expect("SendTestEmail");
    assert_eq!(delivery.status(), DeliveryStatus::Sent);
    assert_eq!(
        (delivery.kind.as_str(), delivery.recipient.as_str()),
        ("test.users.signup_attempted", "ops@example.com")
    );
    titled(&stack, "ops@example.com", EMAILS[4].1[2]).await;

    // A verification email's link is the preview's sample: it verifies nobody.
    send(EmailKind::Verification, "", "ops@example.com").await.expect("SendTestEmail");
    let mail = titled(&stack, "ops@example.com", EMAILS[0].1[0]).await;
    let page = Browser::new(&stack.gateway_url).click(&mail.verification_link()).await;
    assert_eq!(page.kind(), "invalid", "{}", page.html);
    let listed =
        stack.deliveries(ListDeliveriesRequest { email: "ops@example.com".into(), ..Default::default() }).await;
    assert_eq!(listed.len(), 2, "both test emails are deliveries: {listed:?}");
    assert!(listed.iter().all(|d| d.kind.starts_with("test.")), "{listed:?}");

    // A server that refuses the address: the delivery says so.
    stack.smtp.reject("nobody-here@example.com");
    let failed = send(EmailKind::SignupAttempted, "de", "nobody-here@example.com").await.expect("SendTestEmail");
    assert_eq!(failed.status(), DeliveryStatus::Failed, "{failed:?}");
    assert!(failed.last_error.contains("550"), "{failed:?}");
    // Not retried by hand: another test email is the way, and the delivery stays as it was.
    let retry = verimail_proto::email::v1::RetryDeliveryRequest { event_id: failed.event_id.clone() };
    let refused = stack.emails.clone().retry_delivery(retry).await.expect_err("a test email retried");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    let get = verimail_proto::email::v1::GetDeliveryRequest { event_id: failed.event_id.clone() };
    let after = stack.emails.clone().get_delivery(get).await.expect("GetDelivery").into_inner().delivery;
    assert_eq!(after.as_ref(), Some(&failed), "the refused retry changed the delivery");
    for (kind, locale, to, field) in [
        (EmailKind::Unspecified, "", "ops@example.com", "kind"),
        (EmailKind::Verification, "english", "ops@example.com", "locale"),
        (EmailKind::Verification, "", "not an address", "to"),
        (EmailKind::Verification, "", "", "to"),
    ] {
        let refused = send(kind, locale, to).await.expect_err("bad input sent an email");
        assert_eq!(
            (refused.code(), verimail_server::grpc::bad_request_field(&refused).as_deref()),
            (Code::InvalidArgument, Some(field))
        );
    }
}
