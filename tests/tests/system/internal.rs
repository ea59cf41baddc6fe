//! Internal RPCs answer only our services; only they may say on whose behalf they call.

use tonic::Code;
use tonic::metadata::MetadataValue;
use verimail_kit::internal::{CLIENT_ADDRESS, SERVICE_TOKEN, ServiceCredential};
use verimail_kit::limits::Rate;
use verimail_proto::auth::v1::{IssueVerificationTokenRequest, auth_service_client::AuthServiceClient};
use verimail_proto::email::v1::{ListDeliveriesRequest, email_service_client::EmailServiceClient};
use verimail_proto::ops::v1::{ListParkedRequest, parking_service_client::ParkingServiceClient};
use verimail_proto::user::v1::{
    GetUserRequest, RegisterUserRequest, ResendVerificationRequest, get_user_request,
    user_service_client::UserServiceClient,
};
use verimail_system_tests::{Stack, StackOptions, TEST_CREDENTIAL};

/// A request as an outsider sends it: no credential, or a wrong one.
fn outside<T>(message: T, wrong_credential: bool) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if wrong_credential {
        request.metadata_mut().insert(SERVICE_TOKEN, MetadataValue::from_static("not-the-credential-at-all"));
    }
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_rpcs_refuse_callers_without_the_service_credential() {
    let stack = Stack::start().await;
    let plain =
        |addr: std::net::SocketAddr| verimail_kit::tls::GrpcTls::off().channel("test", &addr.to_string()).unwrap();
    let [user_addr, auth_addr, email_addr] = stack.grpc_addrs;
    let user_id = "01937b5e-0000-7000-8000-000000000000";
    for wrong in [false, true] {
        let denied = [
            AuthServiceClient::new(plain(auth_addr))
                .issue_verification_token(outside(
                    IssueVerificationTokenRequest { user_id: user_id.into(), email: "a@example.com".into() },
                    wrong,
                ))
                .await
                .map(drop),
            UserServiceClient::new(plain(user_addr))
                .get_user(outside(
                    GetUserRequest { key: Some(get_user_request::Key::Email("a@example.com".into())) },
                    wrong,
                ))
                .await
                .map(drop),
            EmailServiceClient::new(plain(email_addr))
                .list_deliveries(outside(ListDeliveriesRequest { user_id: String::new(), limit: 10 }, wrong))
                .await
                .map(drop),
            ParkingServiceClient::new(plain(email_addr))
                .list_parked(outside(ListParkedRequest::default(), wrong))
                .await
                .map(drop),
        ];
        for (n, answer) in denied.into_iter().enumerate() {
            assert_eq!(
                answer.unwrap_err().code(),
                Code::Unauthenticated,
                "internal RPC {n}, wrong credential: {wrong}"
            );
        }
    }
    // Public RPCs need nothing.
    UserServiceClient::new(plain(user_addr))
        .register_user(RegisterUserRequest {
            email: "pub@example.com".into(),
            password: "correct horse battery".into(),
        })
        .await
        .expect("a public RPC");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_trusted_caller_may_name_the_client_it_calls_for() {
    let stack = Stack::start_with(StackOptions {
        limits: Some(Rate::new(3, std::time::Duration::from_secs(60))),
        ..StackOptions::default()
    })
    .await;
    let plain = verimail_kit::tls::GrpcTls::off().channel("test", &stack.grpc_addrs[0].to_string()).unwrap();
    let resend_as = |client: &'static str, trusted: bool| {
        let channel = plain.clone();
        async move {
            let mut request = tonic::Request::new(ResendVerificationRequest { email: format!("{client}@example.com") });
            request.metadata_mut().insert(CLIENT_ADDRESS, client.parse().unwrap());
            if trusted {
                let credential = ServiceCredential::new(TEST_CREDENTIAL).unwrap();
                return UserServiceClient::new(credential.channel(channel)).resend_verification(request).await;
            }
            UserServiceClient::new(channel).resend_verification(request).await
        }
    };
    // An outsider naming a new "client" each time is still one client: its own address.
    for client in ["10.0.0.1", "10.0.0.2", "10.0.0.3"] {
        resend_as(client, false).await.expect("within the limit");
    }
    assert_eq!(resend_as("10.0.0.4", false).await.unwrap_err().code(), Code::ResourceExhausted);
    // The gateway (trusted) speaks for many browsers: each has its own allowance.
    for client in ["10.0.1.1", "10.0.1.2", "10.0.1.3", "10.0.1.4", "10.0.1.5"] {
        resend_as(client, true).await.expect("a browser's own allowance");
    }
}
