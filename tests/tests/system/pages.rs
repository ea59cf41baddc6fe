//! The gateway's pages as people meet them, in each language we ship: every page reached the
//! way a user reaches it (a real link, a wrong code, a withdrawn link, a deleted account, a
//! rate limit, a service that does not answer), in headless Chromium whose Accept-Language
//! picks the language; each audited with axe-core (WCAG 2.0–2.2 A and AA, and axe's best
//! practices) at a phone's width and a desktop's, where it must show no serious or critical
//! violation and nothing to scroll sideways; screenshots of each go to the test artifacts
//! folder, and the audit of each to `pages-a11y-<lang>.json` there.

use crate::EMAIL_WAIT;
use fantoccini::Locator;
use std::time::Duration;
use verimail_proto::user::v1::{ChangeEmailRequest, DeleteUserRequest};
use verimail_system_tests::chrome::{Audit, Chrome};
use verimail_system_tests::{ReceivedMail, Stack, StackOptions, eventually, with_bearer};

const PASSWORD: &str = "correct horse battery";

/// Phone (a common 390 × 844 CSS-pixel screen) and desktop widths.
const SIZES: [(&str, u32, u32); 2] = [("phone", 390, 844), ("desktop", 1280, 800)];

/// One page as the browser showed it, and what the checker found.
#[derive(serde::Serialize)]
struct Seen {
    page: String,
    lang: String,
    size: &'static str,
    audit: Audit,
}

struct Tour {
    chrome: Chrome,
    /// The language the pages must be in.
    lang: &'static str,
    seen: Vec<Seen>,
}

impl Tour {
    /// The open page, once it is `kind` (or shows `#error`, with `error`): in the tour's
    /// language, audited and photographed at each size, with nothing wider than the screen.
    async fn check(&mut self, name: &str, kind: &str) {
        self.chrome.wait_for_page(kind).await;
        let lang = self.chrome.client.execute("return document.documentElement.lang;", vec![]).await.unwrap();
        assert_eq!(lang.as_str(), Some(self.lang), "the {name} page's lang");
        for (size, width, height) in SIZES {
            self.chrome.set_viewport(width, height).await;
            let (laid_out, screen) = self.chrome.layout_width().await;
            assert!(
                laid_out <= screen,
                "{} {name} at {size}: {laid_out} px laid out on a {screen} px screen",
                self.lang
            );
            self.chrome.screenshot(&format!("page-{}-{name}-{size}", self.lang)).await;
            let audit = self.chrome.audit().await;
            println!(
                "axe-core {}: {} {name} at {size}: {} rules passed, undecided: {:?}, violations: {}",
                audit.version,
                self.lang,
                audit.passes,
                audit.incomplete,
                if audit.violations.is_empty() {
                    "none".to_owned()
                } else {
                    audit
                        .violations
                        .iter()
                        .map(|v| format!("{} ({})", v.id, v.impact.as_deref().unwrap_or("?")))
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            );
            assert!(audit.serious().is_empty(), "{} {name} at {size}: {:#?}", self.lang, audit.serious());
            self.seen.push(Seen { page: name.to_owned(), lang: self.lang.to_owned(), size, audit });
        }
    }

    async fn goto(&self, url: &str) {
        self.chrome.client.goto(url).await.unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    /// Presses the page's button and waits (at most 15 s) until the browser has left the page:
    /// the click answers before the form's post does, and a page that follows with the same
    /// elements (a refused code, again) must not be read from the old document.
    async fn press(&self) {
        let page = self.chrome.client.find(Locator::Css("html")).await.unwrap();
        self.chrome.client.find(Locator::Css("button[type=submit]")).await.unwrap().click().await.unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while page.tag_name().await.is_ok() {
            assert!(std::time::Instant::now() < deadline, "the form's post left no page within 15 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Types `text` into the field `id` (emptied first).
    async fn fill(&self, id: &str, text: &str) {
        let field = self.chrome.client.find(Locator::Id(id)).await.unwrap();
        field.clear().await.unwrap();
        field.send_keys(text).await.unwrap();
    }

    /// Submits what the browser itself would refuse (a malformed address), as a page without
    /// the browser's checks would.
    async fn without_browser_checks(&self) {
        let script = "document.querySelectorAll('form').forEach(f => f.noValidate = true);";
        self.chrome.client.execute(script, vec![]).await.unwrap();
    }

    /// Waits for the error message of a form shown again.
    async fn wait_for_error(&self) {
        let found = self.chrome.client.wait().at_most(Duration::from_secs(15)).for_element(Locator::Id("error")).await;
        found.expect("the form's error message");
    }
}

async fn register(stack: &Stack, email: &str, locale: &str) -> String {
    stack.register_in(email, PASSWORD, locale).await
}

/// The `n`th email (from 1) to `to`, once it arrived.
async fn nth_mail(stack: &Stack, to: &str, n: usize) -> ReceivedMail {
    stack.smtp.wait_for(to, n, EMAIL_WAIT).await.swap_remove(n - 1)
}

/// The link of a change-of-address notice to `to`.
async fn undo_link(stack: &Stack, to: &str) -> String {
    let find = || stack.smtp.to(to).iter().find_map(ReceivedMail::undo_link);
    eventually("the change notice", EMAIL_WAIT, || async { find().is_some() }).await;
    find().expect("the notice's link")
}

/// The links of the reset emails to `to` so far, oldest first.
fn reset_links(stack: &Stack, to: &str) -> Vec<String> {
    let reset = |m: &&ReceivedMail| m.text_contains("/reset-password?token=");
    stack.smtp.to(to).iter().filter(reset).map(ReceivedMail::reset_link).collect()
}

/// The link of the reset email to `to` after the `before` earlier ones.
async fn reset_link(stack: &Stack, to: &str, before: usize) -> String {
    eventually("the reset email", EMAIL_WAIT, || async { reset_links(stack, to).len() > before }).await;
    reset_links(stack, to).pop().expect("the reset link")
}

/// Every page in `lang`, reached as a user reaches it, with the browser asking for `accept`.
async fn tour(lang: &'static str, accept: &str, headline: &str) {
    let options = StackOptions { code_max_wrong_tries: 3, ..StackOptions::default() };
    let stack = Stack::start_with(options).await;
    let gateway = stack.gateway_url.clone();
    // A gateway that allows one form post per client, and one whose services do not answer.
    let limited = stack.start_gateway(vec![("RATE_LIMIT_GATEWAY_PER_CLIENT", "1/3600".into())]).await;
    let down = stack
        .start_gateway(vec![("AUTH_GRPC_ADDR", "127.0.0.1:1".into()), ("USER_GRPC_ADDR", "127.0.0.1:1".into())])
        .await;
    let mut tour = Tour { chrome: Chrome::start_in(Some(accept)).await, lang, seen: Vec::new() };
    let [ada, bob, cyd, dee] = ["ada", "bob", "cyd", "dee"].map(|n| format!("{n}-{lang}@example.com"));

    // A link from a real email: the form, verified, verified before.
    register(&stack, &ada, lang).await;
    let link = nth_mail(&stack, &ada, 1).await.verification_link();
    tour.goto(&link).await;
    tour.check("confirm", "confirm").await;
    let h1 = tour.chrome.client.find(Locator::Css("h1")).await.unwrap().text().await.unwrap();
    assert_eq!(h1, headline, "the confirm page in {lang}");
    tour.press().await;
    tour.check("verified", "verified").await;
    tour.goto(&link).await;
    tour.press().await;
    tour.check("already_verified", "already-verified").await;

    // A link without its token; a path that is no page.
    tour.goto(&format!("{gateway}/verify-email")).await;
    tour.check("invalid", "invalid").await;
    tour.goto(&format!("{gateway}/no-such-page")).await;
    tour.check("not_found", "not-found").await;

    // Asking for a new link: a malformed address, then a real one.
    tour.goto(&format!("{gateway}/resend")).await;
    tour.check("resend", "resend").await;
    tour.without_browser_checks().await;
    tour.fill("email", "not an address").await;
    tour.press().await;
    tour.wait_for_error().await;
    tour.check("resend_error", "resend").await;
    tour.fill("email", &bob).await;
    tour.press().await;
    tour.check("resent", "resent").await;

    // The code: the form, a wrong code, then too many wrong codes.
    register(&stack, &bob, lang).await;
    let code = nth_mail(&stack, &bob, 1).await.verification_code();
    let wrong = if code == "000000" { "111111" } else { "000000" };
    tour.goto(&format!("{gateway}/verify-code")).await;
    tour.check("code", "code").await;
    tour.fill("email", &bob).await;
    tour.fill("code", wrong).await;
    tour.press().await;
    tour.wait_for_error().await;
    tour.check("code_error", "code").await;
    // Two more wrong codes reach the cap (3); then only the right code may tell it is locked.
    for _ in 0..2 {
        tour.fill("code", wrong).await;
        tour.press().await;
        tour.wait_for_error().await;
    }
    tour.fill("code", &code).await;
    tour.press().await;
    tour.check("code_locked", "code-locked").await;

    // A link withdrawn by a newer registration of the same address.
    register(&stack, &cyd, lang).await;
    let first = nth_mail(&stack, &cyd, 1).await.verification_link();
    register(&stack, &cyd, lang).await;
    nth_mail(&stack, &cyd, 2).await;
    tour.goto(&first).await;
    tour.press().await;
    tour.check("expired", "expired").await;

    // The link of an account deleted since.
    let dee_id = register(&stack, &dee, lang).await;
    let link = nth_mail(&stack, &dee, 1).await.verification_link();
    let request = DeleteUserRequest { user_id: dee_id, password: String::new() };
    stack.users.clone().delete_user(request).await.expect("DeleteUser as an operator");
    let auth_db = stack.database_url("auth");
    eventually("auth-service erases the deleted account", EMAIL_WAIT, || async {
        verimail_system_tests::find_in_database(&auth_db, "auth", &dee).await.is_empty()
    })
    .await;
    tour.goto(&link).await;
    tour.press().await;
    tour.check("account_gone", "account-gone").await;

    // A change of address, undone from the notice; the notice's link used again.
    let token = stack.sign_in(&ada, PASSWORD).await.expect("SignIn").access_token;
    let request = ChangeEmailRequest { new_email: format!("new-{ada}"), ..Default::default() };
    stack.plain_users().change_email(with_bearer(request, &token)).await.expect("ChangeEmail");
    let undo = undo_link(&stack, &ada).await;
    tour.goto(&undo).await;
    tour.check("undo_confirm", "undo-confirm").await;
    tour.press().await;
    tour.check("undone", "undone").await;
    tour.goto(&undo).await;
    tour.press().await;
    tour.check("undone_again", "undone").await;

    // Getting back in: the reset form, a malformed address, the email's link, a weak
    // password, the new one, the link again; and the code's form.
    tour.goto(&format!("{gateway}/forgot-password")).await;
    tour.check("forgot_password", "forgot-password").await;
    tour.without_browser_checks().await;
    tour.fill("email", "not an address").await;
    tour.press().await;
    tour.wait_for_error().await;
    tour.check("forgot_password_error", "forgot-password").await;
    // (The undo above sent ada a reset email of its own; the new one replaces it.)
    let before = reset_links(&stack, &ada).len();
    tour.fill("email", &ada).await;
    tour.press().await;
    tour.check("reset_sent", "reset-sent").await;
    let reset_link = reset_link(&stack, &ada, before).await;
    tour.goto(&reset_link).await;
    tour.check("reset_password", "reset-password").await;
    tour.fill("new_password", "password1").await;
    tour.press().await;
    tour.wait_for_error().await;
    tour.check("reset_password_error", "reset-password").await;
    tour.fill("new_password", "a fresh purple teapot").await;
    tour.press().await;
    tour.check("password_reset", "password-reset").await;
    tour.goto(&reset_link).await;
    tour.fill("new_password", "another fresh teapot").await;
    tour.press().await;
    tour.check("reset_refused", "reset-refused").await;
    tour.goto(&format!("{gateway}/reset-password")).await;
    tour.check("reset_code", "reset-password").await;

    // A notice's link when another account has taken the earlier address meanwhile.
    let eli = format!("eli-{lang}@example.com");
    let eli_id = stack.verified(&eli, PASSWORD).await;
    let token = stack.sign_in(&eli, PASSWORD).await.expect("SignIn").access_token;
    let request = ChangeEmailRequest { new_email: format!("new-{eli}"), ..Default::default() };
    stack.plain_users().change_email(with_bearer(request, &token)).await.expect("ChangeEmail");
    let undo = undo_link(&stack, &eli).await;
    let verify = stack.smtp.wait_for(&format!("new-{eli}"), 1, EMAIL_WAIT).await.remove(0).verification_link();
    verimail_system_tests::browser::Browser::new(&gateway).click(&verify).await;
    eventually("eli moves", EMAIL_WAIT, || async { stack.user(&eli_id).await.email != eli }).await;
    let taker = register(&stack, &eli, lang).await;
    let mails = stack.smtp.wait_for(&eli, 3, EMAIL_WAIT).await;
    let verification = |m: &&ReceivedMail| m.text_contains("/verify-email?token=");
    let latest = mails.iter().rev().find(verification).expect("the taker's email").verification_link();
    verimail_system_tests::browser::Browser::new(&gateway).click(&latest).await;
    assert!(stack.wait_for_status(&taker, verimail_proto::user::v1::UserStatus::Verified, EMAIL_WAIT).await);
    tour.goto(&undo).await;
    tour.press().await;
    tour.check("undo_taken", "undo-taken").await;

    // Too many posts from one client; services that do not answer.
    tour.goto(&format!("{limited}/resend")).await;
    tour.fill("email", &ada).await;
    tour.press().await;
    tour.chrome.wait_for_page("resent").await;
    tour.goto(&format!("{limited}/resend")).await;
    tour.fill("email", &ada).await;
    tour.press().await;
    tour.check("too_many", "too-many").await;
    tour.goto(&format!("{down}/resend")).await;
    tour.fill("email", &ada).await;
    tour.press().await;
    tour.check("unavailable", "unavailable").await;

    let report = verimail_system_tests::artifacts_dir().join(format!("pages-a11y-{lang}.json"));
    std::fs::write(&report, serde_json::to_string_pretty(&tour.seen).unwrap()).unwrap();
    let pages: std::collections::BTreeSet<&str> = tour.seen.iter().map(|s| s.page.as_str()).collect();
    assert_eq!(pages.len(), 27, "{pages:?}");
    tour.chrome.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_in_english_is_accessible_on_a_phone_and_a_desktop() {
    tour("en", "en-US,en;q=0.9", "Verify your email address").await;
}

/// `de-AT` has no pages of its own: German, the nearest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_in_german_is_accessible_on_a_phone_and_a_desktop() {
    tour("de", "de-AT", "E-Mail-Adresse bestätigen").await;
}

/// Spanish, though English is also named (with a lower quality).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_in_spanish_is_accessible_on_a_phone_and_a_desktop() {
    tour("es", "fr-FR,es;q=0.9,en;q=0.5", "Verifica tu dirección de correo").await;
}

/// A team's brand: its name, a colour too light for white text, its logo and one page of its
/// own, on a gateway configured with them; and a broken template stops the start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_teams_brand_logo_and_own_page_show_and_a_broken_template_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let templates = dir.path().to_string_lossy().into_owned();
    let logo = r##"<svg xmlns="http://www.w3.org/2000/svg" width="120" height="32"><rect width="120" height="32" rx="6" fill="#ffd60a"/><text x="10" y="22" font-family="sans-serif" font-size="16">Teapot</text></svg>"##;
    std::fs::write(dir.path().join("logo.svg"), logo).unwrap();
    std::fs::create_dir(dir.path().join("en")).unwrap();
    let own = "{% extends \"layout.html\" %}\n{% block title %}Welcome{% endblock %}\n{% block page %}verified{% endblock %}\n{% block content %}<h1>Welcome to Teapot, {{ email }}</h1>{% endblock %}\n";
    std::fs::write(dir.path().join("en/verified.html"), own).unwrap();
    let brand = vec![
        ("BRAND_NAME", "Teapot".to_owned()),
        ("BRAND_COLOR", "#FFD60A".to_owned()),
        ("GATEWAY_TEMPLATES_DIR", templates.clone()),
    ];
    let check = |vars: Vec<(&'static str, String)>| async move {
        let mut env: Vec<(&str, &str)> = vars.iter().map(|(n, v)| (*n, v.as_str())).collect();
        env.push(("VERIMAIL_ENV", "development"));
        let output =
            verimail_system_tests::procs::run_binary("gateway", &["--check-config"], env, Duration::from_secs(20))
                .await;
        (output.status.success(), verimail_system_tests::procs::printed(&output))
    };
    let (ok, said) = check(brand.clone()).await;
    assert!(ok, "the brand is accepted: {said}");

    let stack = Stack::start().await;
    let gateway = stack.start_gateway(brand.clone()).await;
    // The logo is served by the gateway, and the pages may show it.
    let http = reqwest::Client::new();
    let served = http.get(format!("{gateway}/brand/logo.svg")).send().await.unwrap();
    assert_eq!(served.status(), 200);
    assert_eq!(served.headers()["content-type"], "image/svg+xml");
    assert_eq!(served.text().await.unwrap(), logo);
    let page = http.get(format!("{gateway}/resend")).send().await.unwrap();
    let policy = page.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(policy.contains("img-src 'self'") && policy.contains("script-src 'none'"), "{policy}");
    let html = page.text().await.unwrap();
    assert!(
        html.contains("· Teapot</title>") && html.contains("<img src=\"&#x2f;brand&#x2f;logo.svg\" alt=\"Teapot\">"),
        "{html}"
    );
    // Yellow is too light for white text: the button's text is dark, and links and the focus
    // ring keep the text colour.
    assert!(html.contains("--brand: #ffd60a; --on-brand: #1f2328; --link: #1f2328; --focus: #1f2328;"), "{html}");

    let user_id = register(&stack, "tea@example.com", "").await;
    let link = nth_mail(&stack, "tea@example.com", 1).await.verification_link();
    let link = link.replace(&stack.gateway_url, &gateway);
    let mut tour = Tour { chrome: Chrome::start_in(Some("en")).await, lang: "en", seen: Vec::new() };
    tour.goto(&link).await;
    let loaded = tour.chrome.client.execute("return document.querySelector('header img').naturalWidth;", vec![]);
    assert_eq!(loaded.await.unwrap().as_u64(), Some(120), "the logo shows");
    tour.check("brand_confirm", "confirm").await;
    tour.press().await;
    tour.check("brand_verified", "verified").await;
    let h1 = tour.chrome.client.find(Locator::Css("h1")).await.unwrap().text().await.unwrap();
    assert_eq!(h1, "Welcome to Teapot, tea@example.com");
    // The checker is not blind: a field without a label and faint text on the same page are
    // serious violations.
    let spoil = "document.querySelector('main').insertAdjacentHTML('beforeend', \
        '<input type=text name=x><p style=\"color:#bbb\">faint</p>');";
    tour.chrome.client.execute(spoil, vec![]).await.unwrap();
    let audit = tour.chrome.audit().await;
    let found: Vec<&str> = audit.serious().iter().map(|v| v.id.as_str()).collect();
    assert!(found.contains(&"label") && found.contains(&"color-contrast"), "{:#?}", audit.violations);
    assert!(stack.wait_for_status(&user_id, verimail_proto::user::v1::UserStatus::Verified, crate::STATUS_WAIT).await);
    // German has no page of its own here: the built-in one, in the same brand.
    tour.chrome.close().await;
    let german = http.get(format!("{gateway}/resend")).header("accept-language", "de").send().await.unwrap();
    assert_eq!(german.headers()["content-language"], "de");
    let html = german.text().await.unwrap();
    assert!(
        html.contains("<html lang=\"de\">") && html.contains("Neuen Link senden") && html.contains("· Teapot</title>"),
        "{html}"
    );

    // A broken page: --check-config (and so the start) stops, naming the file and the line.
    std::fs::write(dir.path().join("en/verified.html"), own.replace("{{ email }}", "{{ email }")).unwrap();
    let (ok, said) = check(brand.clone()).await;
    let broken = format!("{templates}/en/verified.html:4: syntax error");
    assert!(!ok && said.contains("GATEWAY_TEMPLATES_DIR") && said.contains(&broken), "{said}");
    println!("--check-config said: {}", said.lines().find(|l| l.contains(&broken)).unwrap_or_default());
    // A variable the page does not give: the same, at its line.
    std::fs::write(dir.path().join("en/verified.html"), own.replace("{{ email }}", "{{ user.name }}")).unwrap();
    let (ok, said) = check(brand.clone()).await;
    assert!(!ok && said.contains("en/verified.html:4: undefined value"), "{said}");
    std::fs::write(dir.path().join("en/verified.html"), own).unwrap();
    // A colour that is not one; a logo URL beside a logo file.
    let mut wrong = brand.clone();
    wrong.push(("BRAND_COLOR", "yellow".into()));
    let (ok, said) = check(wrong).await;
    assert!(!ok && said.contains("BRAND_COLOR"), "{said}");
    let mut both = brand;
    both.push(("BRAND_LOGO_URL", "https://cdn.example.com/logo.svg".into()));
    let (ok, said) = check(both).await;
    assert!(!ok && said.contains("BRAND_LOGO_URL") && said.contains("one or the other"), "{said}");
}
