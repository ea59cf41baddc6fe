//! Headless Chromium opens the link from a real email and types a code, as a user would.

use crate::{EMAIL_WAIT, STATUS_WAIT};
use fantoccini::Locator;
use verimail_proto::user::v1::UserStatus;
use verimail_system_tests::Stack;
use verimail_system_tests::chrome::Chrome;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_opens_the_link_from_the_email_and_the_user_is_verified_by_the_click() {
    let stack = Stack::start().await;
    let user_id = stack.register("ivy@example.com", "correct horse battery").await;
    let link = stack.smtp.wait_for("ivy@example.com", 1, EMAIL_WAIT).await[0].verification_link();
    let chrome = Chrome::start().await;
    // A mail scanner does this much: open the link in a browser that runs the page's scripts.
    chrome.client.goto(&link).await.expect("open the link");
    chrome.wait_for_page("confirm").await;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    chrome.wait_for_page("confirm").await;
    assert_eq!(stack.status_of(&user_id).await, UserStatus::Unverified, "opening the link verified the address");
    // A person presses the button.
    chrome.client.find(Locator::Css("button[type=submit]")).await.unwrap().click().await.unwrap();
    chrome.wait_for_page("verified").await;
    assert!(stack.wait_for_status(&user_id, UserStatus::Verified, STATUS_WAIT).await);
    chrome.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_types_the_code_from_the_email_and_the_user_is_verified() {
    let stack = Stack::start().await;
    let user_id = stack.register("jon@example.com", "correct horse battery").await;
    let code = stack.smtp.wait_for("jon@example.com", 1, EMAIL_WAIT).await[0].verification_code();
    let chrome = Chrome::start().await;
    chrome.client.goto(&format!("{}/verify-code", stack.gateway_url)).await.expect("open the code page");
    chrome.wait_for_page("code").await;
    chrome.client.find(Locator::Id("email")).await.unwrap().send_keys("jon@example.com").await.unwrap();
    chrome.client.find(Locator::Id("code")).await.unwrap().send_keys(&code).await.unwrap();
    chrome.client.find(Locator::Css("button[type=submit]")).await.unwrap().click().await.unwrap();
    chrome.wait_for_page("verified").await;
    assert!(stack.wait_for_status(&user_id, UserStatus::Verified, STATUS_WAIT).await);
    chrome.close().await;
}

/// A German email's link opens German pages in a browser that asks for English, and the form
/// keeps the language for the page after it; so does a Spanish email's link to the code page.
/// An email to a user without a language leaves the choice to the browser.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_links_of_an_email_open_its_language_in_a_browser_that_asks_for_another() {
    let stack = Stack::start().await;
    let register = |email, locale| stack.register_in(email, "correct horse battery", locale);
    let chrome = Chrome::start_in(Some("en-US,en;q=0.9")).await;
    let page_lang = async || {
        let html = chrome.client.find(Locator::Css("html")).await.expect("the page");
        html.attr("lang").await.expect("its lang").unwrap_or_default()
    };

    let uma = register("uma@example.com", "de-AT").await;
    let link = stack.smtp.wait_for("uma@example.com", 1, EMAIL_WAIT).await[0].verification_link();
    assert!(link.ends_with("&lang=de-AT"), "{link}");
    chrome.client.goto(&link).await.expect("open the link");
    chrome.wait_for_page("confirm").await;
    assert_eq!(page_lang().await, "de", "the confirm page");
    chrome.client.find(Locator::Css("button[type=submit]")).await.unwrap().click().await.unwrap();
    chrome.wait_for_page("verified").await;
    assert_eq!(page_lang().await, "de", "the page after the form");
    assert!(stack.wait_for_status(&uma, UserStatus::Verified, STATUS_WAIT).await);

    let vic = register("vic@example.com", "es").await;
    let mail = stack.smtp.wait_for("vic@example.com", 1, EMAIL_WAIT).await.swap_remove(0);
    chrome.client.goto(&mail.code_page_link()).await.expect("open the code page");
    chrome.wait_for_page("code").await;
    assert_eq!(page_lang().await, "es", "the code page");
    chrome.client.find(Locator::Id("email")).await.unwrap().send_keys("vic@example.com").await.unwrap();
    chrome.client.find(Locator::Id("code")).await.unwrap().send_keys(&mail.verification_code()).await.unwrap();
    chrome.client.find(Locator::Css("button[type=submit]")).await.unwrap().click().await.unwrap();
    chrome.wait_for_page("verified").await;
    assert_eq!(page_lang().await, "es", "the page after the code");
    assert!(stack.wait_for_status(&vic, UserStatus::Verified, STATUS_WAIT).await);

    register("wes@example.com", "").await;
    let link = stack.smtp.wait_for("wes@example.com", 1, EMAIL_WAIT).await[0].verification_link();
    assert!(!link.contains("lang="), "{link}");
    chrome.client.goto(&link).await.expect("open the link");
    chrome.wait_for_page("confirm").await;
    assert_eq!(page_lang().await, "en", "the browser's language");
    chrome.close().await;
}

/// In development without SMTP_URL, email-service's mailbox lists what it would have sent;
/// Chromium opens the verification email there, follows its link, and the user is verified.
/// The mailbox runs no script: its pages forbid them and the HTML part sits in a sandbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_opens_the_email_in_the_dev_mailbox_and_its_link_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let email_vars = vec![
        ("SMTP_URL", String::new()),
        ("MAIL_DIR", dir.path().display().to_string()),
        ("MAILBOX_HTTP_ADDR", "127.0.0.1:0".to_owned()),
    ];
    let stack = Stack::start_with(verimail_system_tests::StackOptions { email_vars, ..Default::default() }).await;
    let user_id = stack.register("mia@example.com", "correct horse battery").await;
    verimail_system_tests::eventually("the email is written", EMAIL_WAIT, || async {
        std::fs::read_dir(dir.path()).unwrap().flatten().any(|e| e.path().extension().is_some_and(|x| x == "eml"))
    })
    .await;
    let mailbox = format!("http://{}", stack.mailbox_addr.expect("the mailbox"));
    let listed = reqwest::get(format!("{mailbox}/")).await.unwrap();
    let policy = listed.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(policy.contains("default-src 'none'") && !policy.contains("script-src"), "{policy}");
    let missing = reqwest::get(format!("{mailbox}/m/..%2Fsecret.eml")).await.unwrap();
    assert_eq!(missing.status().as_u16(), 404);
    // A page that rebinds a name of its own to 127.0.0.1 reads nothing: its Host is that name.
    let client = reqwest::Client::new();
    let rebound = client.get(format!("{mailbox}/")).header("host", "attacker.example:80").send().await.unwrap();
    assert_eq!(rebound.status().as_u16(), 403);
    let port = stack.mailbox_addr.expect("the mailbox").port();
    let local = client.get(format!("{mailbox}/")).header("host", format!("localhost:{port}")).send().await.unwrap();
    assert_eq!(local.status().as_u16(), 200);

    let chrome = Chrome::start().await;
    chrome.client.goto(&mailbox).await.expect("open the mailbox");
    chrome.client.find(Locator::LinkText("Verify your email address")).await.unwrap().click().await.unwrap();
    let frame = chrome.client.find(Locator::Css("iframe[sandbox]")).await.expect("the HTML part, sandboxed");
    let sandbox = frame.attr("sandbox").await.unwrap().unwrap_or_default();
    assert!(!sandbox.contains("allow-scripts"), "{sandbox}");
    chrome.client.find(Locator::Css("pre a[href*='/verify-email?token=']")).await.unwrap().click().await.unwrap();
    chrome.wait_for_page("confirm").await;
    chrome.client.find(Locator::Css("button[type=submit]")).await.unwrap().click().await.unwrap();
    chrome.wait_for_page("verified").await;
    assert!(stack.wait_for_status(&user_id, UserStatus::Verified, STATUS_WAIT).await);
    chrome.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_opens_a_reset_link_and_only_a_person_who_types_a_password_resets_it_once() {
    let stack = Stack::start().await;
    let old = "correct horse battery";
    stack.verified("kai@example.com", old).await;
    let request =
        verimail_proto::user::v1::RequestPasswordResetRequest { email: "kai@example.com".into(), ..Default::default() };
    stack.users.clone().request_password_reset(request).await.expect("RequestPasswordReset");
    let mails = stack.smtp.wait_for("kai@example.com", 2, EMAIL_WAIT).await;
    let link = mails[1].reset_link();
    let chrome = Chrome::start().await;
    // A mail scanner opens the link in a browser that runs the page's scripts, and waits.
    chrome.client.goto(&link).await.expect("open the link");
    chrome.wait_for_page("reset-password").await;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    chrome.wait_for_page("reset-password").await;
    stack.sign_in("kai@example.com", old).await.expect("opening the link changed the password");
    // A person types the new password and presses the button.
    let new = "seven purple teapots";
    chrome.client.find(Locator::Id("new_password")).await.unwrap().send_keys(new).await.unwrap();
    chrome.client.find(Locator::Css("button[type=submit]")).await.unwrap().click().await.unwrap();
    chrome.wait_for_page("password-reset").await;
    stack.sign_in("kai@example.com", new).await.expect("the new password signs in");
    let refused = stack.sign_in("kai@example.com", old).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "the old one does not");
    // The link works once.
    chrome.client.goto(&link).await.expect("open the link again");
    chrome.wait_for_page("reset-password").await;
    chrome.client.find(Locator::Id("new_password")).await.unwrap().send_keys("eight green kettles").await.unwrap();
    chrome.client.find(Locator::Css("button[type=submit]")).await.unwrap().click().await.unwrap();
    chrome.wait_for_page("reset-refused").await;
    stack.sign_in("kai@example.com", new).await.expect("still the password the person chose");
    chrome.close().await;
}
