//! The contracts: the code generated from `proto/`, and the names that go with it on the wire
//! (JetStream streams, subjects and headers of `events.proto`, ErrorInfo reasons of the
//! services' statuses), defined once here for every service, the gateway, the tests and the bench.
//! Behaviour does not belong here.

/// Everything in `proto/`, encoded, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/verimail_descriptor.bin"));

#[allow(clippy::doc_lazy_continuation, clippy::doc_overindented_list_items, clippy::large_enum_variant)]
pub mod user {
    pub mod v1 {
        tonic::include_proto!("verimail.user.v1");
    }
}

#[allow(clippy::doc_lazy_continuation, clippy::doc_overindented_list_items, clippy::large_enum_variant)]
pub mod auth {
    pub mod v1 {
        tonic::include_proto!("verimail.auth.v1");
    }
}

#[allow(clippy::doc_lazy_continuation, clippy::doc_overindented_list_items, clippy::large_enum_variant)]
pub mod email {
    pub mod v1 {
        tonic::include_proto!("verimail.email.v1");
    }
}

#[allow(clippy::doc_lazy_continuation, clippy::doc_overindented_list_items, clippy::large_enum_variant)]
pub mod events {
    pub mod v1 {
        tonic::include_proto!("verimail.events.v1");
    }
}

#[allow(clippy::doc_lazy_continuation, clippy::doc_overindented_list_items, clippy::large_enum_variant)]
pub mod ops {
    pub mod v1 {
        tonic::include_proto!("verimail.ops.v1");
    }
}

/// The streams that keep the events of `events.proto`, and the subjects each holds.
pub mod streams {
    /// Events owned by user-service.
    pub const USERS: &str = "USERS";
    pub const USERS_SUBJECTS: &str = "users.>";
    /// Events owned by auth-service.
    pub const AUTH: &str = "AUTH";
    pub const AUTH_SUBJECTS: &str = "auth.>";
    /// Events owned by email-service.
    pub const EMAIL: &str = "EMAIL";
    pub const EMAIL_SUBJECTS: &str = "email.>";
    /// Messages every attempt failed on, one subject per consumer: `parked.<durable>`.
    pub const PARKED: &str = "PARKED";
    pub const PARKED_SUBJECTS: &str = "parked.>";
    /// The subject a consumer's parked messages go to.
    pub fn parked_subject(durable: &str) -> String {
        format!("parked.{durable}")
    }
}

/// The NATS headers every event carries (see docs/events.md), and those of a parked message.
pub mod headers {
    /// The event id: JetStream drops a second publish of it within the duplicate window.
    pub const MSG_ID: &str = "Nats-Msg-Id";
    /// The event's own id. Equal to `Nats-Msg-Id` but on a replay, which needs a new message id
    /// to pass JetStream's de-duplication while it stays the same event.
    pub const EVENT_ID: &str = "Verimail-Event-Id";
    /// The subject the event was published on.
    pub const EVENT_TYPE: &str = "Verimail-Event-Type";
    /// A parked message: the subject it came from, the error, and the attempts made.
    pub const PARKED_SUBJECT: &str = "Verimail-Parked-Subject";
    pub const PARKED_ERROR: &str = "Verimail-Parked-Error";
    pub const PARKED_ATTEMPTS: &str = "Verimail-Parked-Attempts";
    /// The user the event is about (its `user_id`), so that a user's messages can be found
    /// without decoding them (the parked ones of a deleted user are removed).
    pub const USER_ID: &str = "Verimail-User-Id";
}

/// The subject each event of `events.proto` is published on.
pub mod subjects {
    /// `UserRegistered`
    pub const USERS_REGISTERED: &str = "users.registered";
    /// `VerificationRequested`
    pub const USERS_VERIFICATION_REQUESTED: &str = "users.verification_requested";
    /// `SignUpAttempted`
    pub const USERS_SIGNUP_ATTEMPTED: &str = "users.signup_attempted";
    /// `UserVerified`: for other services; none of Verimail's consumes it.
    pub const USERS_VERIFIED: &str = "users.verified";
    /// `UserDeleted`: every service erases what it holds of the user.
    pub const USERS_DELETED: &str = "users.deleted";
    /// `EmailChangeRequested`: the verification email to the new address.
    pub const USERS_EMAIL_CHANGE_REQUESTED: &str = "users.email_change_requested";
    /// `EmailChangeNotice`: the notice to the current address, with the undo link.
    pub const USERS_EMAIL_CHANGE_NOTICE: &str = "users.email_change_notice";
    /// `EmailChanged`: an account's address changed (or changed back).
    pub const USERS_EMAIL_CHANGED: &str = "users.email_changed";
    /// `PasswordResetRequested`: the reset email (link and code).
    pub const USERS_PASSWORD_RESET_REQUESTED: &str = "users.password_reset_requested";
    /// `PasswordChanged`: the notice that the password changed.
    pub const USERS_PASSWORD_CHANGED: &str = "users.password_changed";
    /// `SessionsRevoked`: sessions ended; their access tokens are refused from now on.
    pub const USERS_SESSIONS_REVOKED: &str = "users.sessions_revoked";
    /// `EmailChangeUndoRequested`: the notice's link was used.
    pub const AUTH_EMAIL_CHANGE_UNDO_REQUESTED: &str = "auth.email_change_undo_requested";
    /// `EmailVerified`
    pub const AUTH_EMAIL_VERIFIED: &str = "auth.email_verified";
    /// `AddressUndeliverable`: an address went on email-service's suppression list.
    pub const EMAIL_ADDRESS_UNDELIVERABLE: &str = "email.address_undeliverable";
    /// `AddressDeliverable`: an operator lifted an address's suppression.
    pub const EMAIL_ADDRESS_DELIVERABLE: &str = "email.address_deliverable";
}

/// An event of `events.proto`: the subject it is published on, and the two fields every event
/// has (its id, the `Nats-Msg-Id`, and the user it is about, for order and erasure).
pub trait Event: prost::Message + prost::Name {
    const SUBJECT: &'static str;
    fn event_id(&self) -> &str;
    fn user_id(&self) -> &str;
}

macro_rules! events_on_subjects {
    ($($message:ident => $subject:ident,)*) => {
        $(impl Event for events::v1::$message {
            const SUBJECT: &'static str = subjects::$subject;
            fn event_id(&self) -> &str {
                &self.event_id
            }
            fn user_id(&self) -> &str {
                &self.user_id
            }
        })*
    };
}

events_on_subjects! {
    UserRegistered => USERS_REGISTERED,
    VerificationRequested => USERS_VERIFICATION_REQUESTED,
    SignUpAttempted => USERS_SIGNUP_ATTEMPTED,
    UserVerified => USERS_VERIFIED,
    UserDeleted => USERS_DELETED,
    EmailChangeRequested => USERS_EMAIL_CHANGE_REQUESTED,
    EmailChangeNotice => USERS_EMAIL_CHANGE_NOTICE,
    EmailChanged => USERS_EMAIL_CHANGED,
    SessionsRevoked => USERS_SESSIONS_REVOKED,
    PasswordResetRequested => USERS_PASSWORD_RESET_REQUESTED,
    PasswordChanged => USERS_PASSWORD_CHANGED,
    EmailChangeUndoRequested => AUTH_EMAIL_CHANGE_UNDO_REQUESTED,
    EmailVerified => AUTH_EMAIL_VERIFIED,
    AddressUndeliverable => EMAIL_ADDRESS_UNDELIVERABLE,
    AddressDeliverable => EMAIL_ADDRESS_DELIVERABLE,
}

/// The google.rpc.ErrorInfo reasons of FAILED_PRECONDITION (and PERMISSION_DENIED) answers, by the service that gives
/// them; clients (the gateway) tell the cases apart by these, never by the message.
pub mod reasons {
    /// The ErrorInfo domain of auth-service's reasons.
    pub const AUTH_DOMAIN: &str = "auth.verimail";
    pub const TOKEN_EXPIRED: &str = "TOKEN_EXPIRED";
    pub const TOKEN_REVOKED: &str = "TOKEN_REVOKED";
    pub const CODE_EXPIRED: &str = "CODE_EXPIRED";
    pub const CODE_LOCKED: &str = "CODE_LOCKED";
    pub const CODE_REVOKED: &str = "CODE_REVOKED";
    /// A link or code asked for a registration that a newer one of the address replaced.
    pub const REGISTRATION_SUPERSEDED: &str = "REGISTRATION_SUPERSEDED";
    /// A link or code of an account deleted because it was never verified in time: the
    /// address is free to register again.
    pub const ACCOUNT_EXPIRED: &str = "ACCOUNT_EXPIRED";
    /// A link or code of an account deleted on request.
    pub const ACCOUNT_DELETED: &str = "ACCOUNT_DELETED";
    /// A single-use link (an undo link) used before.
    pub const TOKEN_USED: &str = "TOKEN_USED";

    /// The ErrorInfo domain of user-service's reasons (and of the client library's).
    pub const USER_DOMAIN: &str = "user.verimail";
    /// SignIn with the right password for an address not verified yet; the client library's
    /// `RequireVerified` answers an unverified caller's token with it too (PERMISSION_DENIED).
    pub const EMAIL_NOT_VERIFIED: &str = "EMAIL_NOT_VERIFIED";
    /// An access token alone may change the address or delete the account only within
    /// REAUTH_WINDOW_SECONDS of signing in (PERMISSION_DENIED): give the password, or sign in again.
    pub const REAUTHENTICATION_REQUIRED: &str = "REAUTHENTICATION_REQUIRED";

    /// The reason a status carries (empty when it has none).
    pub fn of(status: &tonic::Status) -> String {
        use tonic_types::StatusExt;
        status.get_details_error_info().map(|info| info.reason).unwrap_or_default()
    }
}
