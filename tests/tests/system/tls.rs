//! Mutual TLS between the services where certificates are configured: the whole flow runs
//! over it, and a caller without a certificate from the deployment's CA reaches no RPC.

use crate::{EMAIL_WAIT, STATUS_WAIT};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
use verimail_proto::user::v1::UserStatus;
use verimail_server::tls::GrpcTls;
use verimail_system_tests::browser::Browser;
use verimail_system_tests::pki::TestCa;
use verimail_system_tests::{Stack, StackOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_flow_runs_over_mutual_tls_and_callers_without_a_certificate_are_refused() {
    let ca = TestCa::new("Verimail test CA");
    let stack = Stack::start_with(StackOptions { tls: Some(ca.tls_pem("services")), ..Default::default() }).await;

    // Register (test → user-service), email (email-service → auth-service for the token),
    // click (gateway → auth-service), verified (test → user-service): every hop is mTLS.
    let user_id = stack.register("tess@example.com", "correct horse battery").await;
    let link = stack.smtp.wait_for("tess@example.com", 1, EMAIL_WAIT).await[0].verification_link();
    let page = Browser::new(&stack.gateway_url).click(&link).await;
    assert_eq!((page.status, page.kind()), (200, "verified"), "{}", page.html);
    assert!(stack.wait_for_status(&user_id, UserStatus::Verified, STATUS_WAIT).await);

    let other_ca = TestCa::new("Someone else's CA");
    let (our_cert, our_key) = ca.issue("operator");
    let (their_cert, their_key) = other_ca.issue("intruder");
    let tls = |cert: &str, key: &str, trusted: &TestCa| GrpcTls::new(cert.into(), key.into(), trusted.pem()).unwrap();
    let callers = [
        ("a plain-text caller", GrpcTls::off(), false),
        ("a certificate from another CA", tls(&their_cert, &their_key, &ca), false),
        ("a caller that trusts another CA", tls(&our_cert, &our_key, &other_ca), false),
        ("an operator's certificate from our CA", tls(&our_cert, &our_key, &ca), true),
    ];
    for addr in stack.grpc_addrs {
        for (who, tls, admitted) in &callers {
            let channel = tls.channel("test", &addr.to_string()).unwrap();
            let answer = HealthClient::new(channel).check(HealthCheckRequest { service: String::new() }).await;
            match admitted {
                true => assert_eq!(answer.expect(who).into_inner().status(), ServingStatus::Serving, "{who}"),
                false => assert_refused(answer, &format!("{who} at {addr}")),
            }
        }
    }

    // A caller with no certificate at all, though it trusts our CA, fails the handshake.
    let endpoint = tonic::transport::Endpoint::from_shared(format!("https://{}", stack.grpc_addrs[0]))
        .unwrap()
        .tls_config(
            tonic::transport::ClientTlsConfig::new().ca_certificate(tonic::transport::Certificate::from_pem(ca.pem())),
        )
        .unwrap();
    let answer = HealthClient::new(endpoint.connect_lazy()).check(HealthCheckRequest { service: String::new() }).await;
    assert_refused(answer, "no client certificate");
}

/// Refused at the connection: the call failed in the transport (TLS handshake, or a
/// plain-text HTTP/2 preface on a TLS port), never reaching a service.
fn assert_refused<T: std::fmt::Debug>(answer: Result<T, tonic::Status>, who: &str) {
    let status = answer.expect_err(who);
    let transport = std::error::Error::source(&status).is_some_and(|e| e.is::<tonic::transport::Error>());
    assert!(transport, "{who}: {status:?}");
}
