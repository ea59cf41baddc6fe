//! Retention on real parts: with retentions of two seconds, each swept table empties of what is
//! past its time while the stack runs (and keeps what is not), the counters say so, and a late
//! click on a deleted link still answers a page that makes sense: "expired".

use std::time::Duration;
use verimail_proto::user::v1::{DeleteUserRequest, SignOutRequest, UserStatus};
use verimail_system_tests::browser::Browser;
use verimail_system_tests::{Stack, StackOptions, eventually};

const PASSWORD: &str = "correct horse battery";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_table_keeps_its_rows_for_their_retention_and_a_late_click_still_makes_sense() {
    let two = |name: &'static str| (name, "2".to_owned());
    let common = [two("OUTBOX_RETENTION_SECONDS"), two("TOMBSTONE_RETENTION_SECONDS")];
    let options = StackOptions {
        token_lifetime: Duration::from_secs(3),
        code_lifetime: Duration::from_secs(3),
        access_token_lifetime: Duration::from_secs(1),
        auth_vars: [two("VERIFICATION_RETENTION_SECONDS")].into_iter().chain(common.clone()).collect(),
        user_vars: [two("SESSION_RETENTION_SECONDS"), two("EMAIL_CHANGE_RETENTION_SECONDS")]
            .into_iter()
            .chain(common.clone())
            .collect(),
        email_vars: [two("DELIVERY_RETENTION_SECONDS"), two("WEBHOOK_DELIVERY_RETENTION_SECONDS")]
            .into_iter()
            .chain(common)
            .collect(),
        ..StackOptions::default()
    };
    let stack = Stack::start_with(options).await;
    // Ann registers and leaves her link unclicked; Bob verifies, signs in and out; Cy verifies
    // and deletes his account.
    let ann = stack.register("ann@example.com", PASSWORD).await;
    let late_link =
        stack.smtp.wait_for_verification("ann@example.com", Duration::from_secs(20)).await.verification_link();
    stack.verified("bob@example.com", PASSWORD).await;
    let session = stack.sign_in("bob@example.com", PASSWORD).await.expect("SignIn");
    let request = SignOutRequest { refresh_token: session.refresh_token, everywhere: false };
    stack.plain_users().sign_out(request).await.expect("SignOut");
    let cy = stack.verified("cy@example.com", PASSWORD).await;
    let request = DeleteUserRequest { user_id: cy.clone(), ..Default::default() };
    stack.users.clone().delete_user(request).await.expect("DeleteUser");
    let count = |service: &'static str, table: &'static str| {
        let stack = &stack;
        async move { stack.query_text(service, &format!("SELECT COUNT(*) FROM {table}")).await }
    };
    // Everything was written.
    assert_ne!(count("auth", "verification_tokens").await, "0");
    assert_ne!(count("email", "deliveries").await, "0");
    assert_ne!(count("user", "sessions").await, "0");

    let swept = [
        ("auth", "verification_tokens"),
        ("auth", "verification_codes"),
        ("auth", "outbox"),
        ("auth", "deleted_users"),
        ("user", "sessions"),
        ("user", "retired_refresh_tokens"),
        ("user", "outbox"),
        ("user", "deleted_users"),
        ("email", "deliveries"),
        ("email", "deleted_users"),
    ];
    eventually("every swept table empties of what is past its time", Duration::from_secs(30), || async {
        for (service, table) in swept {
            if count(service, table).await != "0" {
                return false;
            }
        }
        true
    })
    .await;
    // What is not traffic stays: the accounts.
    assert_eq!(count("user", "users").await, "2", "Ann and Bob");
    assert_eq!(stack.status_of(&ann).await, UserStatus::Unverified);

    // Ann's link, its row deleted long after it expired: authentic, so "expired", not "invalid".
    let page = Browser::new(&stack.gateway_url).click(&late_link).await;
    assert_eq!((page.status, page.kind()), (410, "expired"), "{}", page.html);

    let metrics = verimail_server::metrics::render();
    for table in ["verification_tokens", "verification_codes", "sessions", "deliveries", "deleted_users", "outbox"] {
        let series = format!("verimail_retention_deleted_total{{table=\"{table}\"}} ");
        let deleted: f64 = metrics
            .lines()
            .filter_map(|line| line.strip_prefix(&series))
            .filter_map(|value| value.trim().parse::<f64>().ok())
            .sum();
        assert!(deleted > 0.0, "{table}: {metrics}");
        assert!(metrics.contains(&format!("verimail_retention_oldest_seconds{{table=\"{table}\"}}")), "{table}");
    }
}
