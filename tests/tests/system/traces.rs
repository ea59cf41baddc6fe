//! One trace per user action, across processes: the services (real binaries) export over
//! OTLP to a receiver inside the test, and the spans arrive joined by W3C trace context
//! carried in gRPC metadata, outbox rows and NATS message headers.

use crate::{EMAIL_WAIT, STATUS_WAIT};
use std::time::Duration;
use verimail_proto::user::v1::RegisterUserRequest;
use verimail_system_tests::batch::wait_until_verified;
use verimail_system_tests::browser::Browser;
use verimail_system_tests::otlp::{OtlpReceiver, ReceivedSpan, render_tree};
use verimail_system_tests::procs::{Part, ProcessStack};

const REGISTER: &str = "verimail.user.v1.UserService/RegisterUser";
const ISSUE: &str = "verimail.auth.v1.AuthService/IssueVerificationToken";
const VERIFY: &str = "verimail.auth.v1.AuthService/VerifyEmail";

fn find<'a>(spans: &'a [ReceivedSpan], service: &str, name: &str) -> Option<&'a ReceivedSpan> {
    spans.iter().find(|s| s.service == service && s.name == name)
}

/// The chain `names` (service, span name), each the parent of the next, in one trace.
fn chain<'a>(
    spans: &'a [ReceivedSpan],
    trace_id: &str,
    names: &[(&str, &str)],
) -> Result<Vec<&'a ReceivedSpan>, String> {
    // Depth first: two spans may share a name under one parent (email-service consumes
    // users.registered for the email and for webhooks), and only one leads on.
    fn walk<'a>(
        spans: &'a [ReceivedSpan],
        trace_id: &str,
        names: &[(&str, &str)],
        found: &mut Vec<&'a ReceivedSpan>,
    ) -> Result<(), String> {
        let Some(((service, name), rest)) = names.split_first() else { return Ok(()) };
        let parent = found.last().copied();
        let mut why = format!("no span {name} [{service}] under {:?}", parent.map(|s| &s.name));
        let candidates = spans.iter().filter(|s| {
            s.trace_id == trace_id
                && s.service == *service
                && s.name == *name
                && parent.is_none_or(|parent| s.parent_span_id == parent.span_id)
        });
        for span in candidates {
            found.push(span);
            match walk(spans, trace_id, rest, found) {
                Ok(()) => return Ok(()),
                Err(deeper) => {
                    why = deeper;
                    found.pop();
                }
            }
        }
        Err(why)
    }
    let mut found = Vec::new();
    walk(spans, trace_id, names, &mut found)?;
    Ok(found)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_and_its_click_each_make_one_trace_across_the_services_linked() {
    let receiver = OtlpReceiver::start().await;
    let mut stack = ProcessStack::start_with_env(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint.clone()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
        ("LOG_FORMAT", "json".to_owned()),
    ])
    .await;

    let request = RegisterUserRequest {
        email: "trace@example.com".into(),
        password: "correct horse battery".into(),
        ..Default::default()
    };
    let user_id = stack.users.clone().register_user(request).await.expect("RegisterUser").into_inner().user_id;
    let link = stack.smtp.wait_for("trace@example.com", 1, EMAIL_WAIT).await[0].verification_link();
    let page = Browser::new(&stack.gateway_url).click(&link).await;
    assert_eq!((page.status, page.kind()), (200, "verified"), "{}", page.html);
    assert!(wait_until_verified(&stack.users, &user_id, STATUS_WAIT).await);

    let registration = [
        ("user-service", REGISTER),
        ("user-service", "users.registered publish"),
        ("email-service", "users.registered process"),
        ("email-service", ISSUE),
        ("auth-service", ISSUE),
    ];
    let click = [
        ("gateway", "POST /verify-email"),
        ("auth-service", VERIFY),
        ("auth-service", "auth.email_verified publish"),
        ("user-service", "auth.email_verified process"),
    ];
    let complete = |spans: &[ReceivedSpan]| {
        let Some(register) = find(spans, "user-service", REGISTER) else { return false };
        let Some(post) = find(spans, "gateway", "POST /verify-email") else { return false };
        chain(spans, &register.trace_id, &registration).is_ok()
            && find(spans, "email-service", "smtp.send").is_some()
            && chain(spans, &post.trace_id, &click).is_ok()
    };
    let spans = receiver.wait_until(Duration::from_secs(20), complete).await;

    let register = find(&spans, "user-service", REGISTER).expect("the RegisterUser span arrived");
    let trace = &register.trace_id;
    let path = chain(&spans, trace, &registration).unwrap_or_else(|e| panic!("{e}\n{}", render_tree(&spans, trace)));
    let consume = path[2];
    let smtp = find(&spans, "email-service", "smtp.send").expect("the SMTP span arrived");
    assert_eq!((&smtp.trace_id, &smtp.parent_span_id), (trace, &consume.span_id), "SMTP send inside the consume span");

    let post = find(&spans, "gateway", "POST /verify-email").expect("the gateway's span arrived");
    let clicked = chain(&spans, &post.trace_id, &click)
        .unwrap_or_else(|e| panic!("{e}\n{}", render_tree(&spans, &post.trace_id)));
    assert_ne!(&post.trace_id, trace, "the click is a trace of its own");
    assert_eq!(clicked[1].links, vec![trace.clone()], "VerifyEmail links to the registration's trace");

    // Logs: JSON lines, and a line written while handling the event carries its trace id.
    let log = stack.log(Part::Email);
    let sent = log
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .find(|line| line["fields"]["message"] == "email sent")
        .unwrap_or_else(|| panic!("no 'email sent' line in\n{log}"));
    let trace_ids: Vec<&str> =
        sent["spans"].as_array().into_iter().flatten().filter_map(|s| s["trace_id"].as_str()).collect();
    assert_eq!(trace_ids, vec![trace.as_str()], "{sent}");
    assert_eq!(sent["fields"]["to"], "t***@example.com", "the address masked: {sent}");
    for part in [Part::User, Part::Auth, Part::Email, Part::Gateway] {
        assert!(!stack.log(part).contains("trace@example.com"), "an email address in the log of {part:?}");
    }
    // The debug setting shows addresses whole.
    stack.kill(Part::Email);
    stack.set_var(Part::Email, "LOG_EMAIL_ADDRESSES", "full");
    stack.start_part(Part::Email).await;
    let request = RegisterUserRequest {
        email: "whole@example.com".into(),
        password: "correct horse battery".into(),
        ..Default::default()
    };
    stack.users.clone().register_user(request).await.expect("RegisterUser");
    stack.smtp.wait_for("whole@example.com", 1, EMAIL_WAIT).await;
    // The line follows the SMTP answer by a moment.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !stack.log(Part::Email).contains(r#""to":"whole@example.com""#) {
        assert!(std::time::Instant::now() < deadline, "no whole address in\n{}", stack.log(Part::Email));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    println!("{}", render_tree(&spans, trace));
    println!("{}", render_tree(&spans, &post.trace_id));
}
