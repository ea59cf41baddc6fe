//! What every email kind looks like where it is read: its links short enough for every mail
//! client and scanner, and its HTML laid out in a 600-pixel-wide reading pane (Chromium) with
//! nothing to scroll sideways. Screenshots go to the test artifacts folder.

use crate::{EMAIL_WAIT, STATUS_WAIT};
use verimail_proto::user::v1::{ChangeEmailRequest, UserStatus};
use verimail_system_tests::browser::Browser;
use verimail_system_tests::chrome::Chrome;
use verimail_system_tests::{ReceivedMail, Stack, eventually, with_bearer};

const PASSWORD: &str = "correct horse battery";

/// Longest link an email may carry: some clients and scanners break or cut longer ones.
const MAX_LINK: usize = 200;

/// A verified account of `email`, and its access token.
async fn verified(stack: &Stack, email: &str) -> String {
    let user_id = stack.register(email, PASSWORD).await;
    let link = stack.smtp.wait_for_verification(email, EMAIL_WAIT).await.verification_link();
    assert_eq!(Browser::new(&stack.gateway_url).click(&link).await.kind(), "verified");
    assert!(stack.wait_for_status(&user_id, UserStatus::Verified, STATUS_WAIT).await);
    stack.sign_in(email, PASSWORD).await.expect("SignIn").access_token
}

/// Waits for the email to `to` whose subject is `subject`.
async fn titled(stack: &Stack, to: &str, subject: &str) -> ReceivedMail {
    let find = || stack.smtp.to(to).into_iter().find(|m| m.header("Subject").as_deref() == Some(subject));
    eventually(&format!("{subject:?} to {to}"), EMAIL_WAIT, || async { find().is_some() }).await;
    find().expect("the email")
}

/// Every http(s) link of the text part.
fn links(mail: &ReceivedMail) -> Vec<String> {
    let text = mail.part("text/plain");
    text.split_whitespace().filter(|word| word.starts_with("http")).map(str::to_owned).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_email_kind_has_short_links_and_fits_a_600_pixel_pane() {
    let stack = Stack::start().await;
    // A registration's verification email, then the notice of a second registration.
    let token = verified(&stack, "ada@example.com").await;
    stack.register("ada@example.com", PASSWORD).await;
    // A change of address: the new address's verification, the current one's notice; a
    // change to a taken address: its owner's notice.
    let change = ChangeEmailRequest { new_email: "ada@example.org".into(), ..Default::default() };
    stack.plain_users().change_email(with_bearer(change, &token)).await.expect("ChangeEmail");
    let bea = verified(&stack, "bea@example.com").await;
    let to_taken = ChangeEmailRequest { new_email: "ada@example.com".into(), ..Default::default() };
    stack.plain_users().change_email(with_bearer(to_taken, &bea)).await.expect("ChangeEmail");

    let kinds = [
        ("verification", "ada@example.com", "Verify your email address"),
        ("signup_attempted", "ada@example.com", "Someone tried to sign up with your address"),
        ("email_change_verification", "ada@example.org", "Confirm your new email address"),
        ("email_change_notice", "ada@example.com", "Your email address is being changed"),
        ("change_attempted", "ada@example.com", "Someone tried to move an account to your address"),
    ];
    let chrome = Chrome::start().await;
    chrome.set_viewport(600, 900).await;
    let pages = tempfile::tempdir().expect("a folder for the HTML parts");
    // The measure itself: an unbreakable line wider than the pane is seen.
    let wide = pages.path().join("wide.html");
    std::fs::write(&wide, format!("<!doctype html><p><code>{}</code></p>", "x".repeat(120))).expect("write");
    chrome.client.goto(&format!("file://{}", wide.display())).await.expect("open the wide page");
    let (laid_out, pane) = chrome.layout_width().await;
    assert!(laid_out > pane, "a 120-character unbroken line measured {laid_out} px in {pane} px");
    for (kind, to, subject) in kinds {
        let mail = titled(&stack, to, subject).await;
        for link in links(&mail) {
            println!("{kind}: a link of {} characters", link.len());
            assert!(link.len() < MAX_LINK, "{kind}: a link of {} characters: {link}", link.len());
        }
        let page = pages.path().join(format!("{kind}.html"));
        std::fs::write(&page, mail.part("text/html")).expect("write the HTML part");
        chrome.client.goto(&format!("file://{}", page.display())).await.expect("open the HTML part");
        let (laid_out, pane) = chrome.layout_width().await;
        let shot = chrome.screenshot(&format!("email-{kind}-600px")).await;
        assert_eq!(pane, 600, "the reading pane");
        assert!(laid_out <= pane, "{kind}: laid out {laid_out} px wide in a {pane} px pane; see {}", shot.display());
    }
    chrome.close().await;
}
