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
