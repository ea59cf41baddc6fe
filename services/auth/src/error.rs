use crate::links::TokenError;
use sea_orm::DbErr;
use tonic::Status;
use verimail_proto::reasons;

/// Everything an auth-service request can fail with; converted to a gRPC status in one place.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{field}: {reason}")]
    InvalidArgument { field: &'static str, reason: String },
    #[error("token: {0}")]
    Token(#[from] TokenError),
    #[error("database error")]
    Db(#[from] DbErr),
    #[error("token issuing failed: {0}")]
    Issue(String),
    #[error("code: has expired; ask for a new email")]
    CodeExpired,
    #[error("code: too many wrong tries; ask for a new email")]
    CodeLocked,
    #[error("token: was revoked; ask for a new email")]
    TokenRevoked,
    #[error("token: was used already")]
    TokenUsed,
    #[error("code: was revoked; ask for a new email")]
    CodeRevoked,
    #[error("code: was used already")]
    CodeUsed,
    #[error("registration_event_id: a later registration of this user has had its email")]
    RegistrationSuperseded,
    /// The link's or code's account was deleted: never verified in time, or on request.
    #[error("the account was deleted")]
    AccountGone(verimail_events::erasure::Reason),
}

/// FAILED_PRECONDITION with a machine-readable reason beside the message.
fn failed_precondition(reason: &str, message: String) -> Status {
    verimail_server::grpc::with_reason(tonic::Code::FailedPrecondition, reasons::AUTH_DOMAIN, reason, message)
}

impl AuthError {
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        AuthError::InvalidArgument { field, reason: reason.into() }
    }
}

impl From<AuthError> for Status {
    fn from(err: AuthError) -> Status {
        match err {
            AuthError::InvalidArgument { field, reason } => verimail_server::grpc::invalid_argument(field, reason),
            AuthError::Token(TokenError::Expired) => {
                failed_precondition(reasons::TOKEN_EXPIRED, "token: has expired".into())
            }
            AuthError::CodeExpired => failed_precondition(reasons::CODE_EXPIRED, err.to_string()),
            AuthError::CodeLocked => failed_precondition(reasons::CODE_LOCKED, err.to_string()),
            AuthError::TokenRevoked => failed_precondition(reasons::TOKEN_REVOKED, err.to_string()),
            AuthError::TokenUsed | AuthError::CodeUsed => failed_precondition(reasons::TOKEN_USED, err.to_string()),
            AuthError::CodeRevoked => failed_precondition(reasons::CODE_REVOKED, err.to_string()),
            AuthError::RegistrationSuperseded => failed_precondition(reasons::REGISTRATION_SUPERSEDED, err.to_string()),
            AuthError::AccountGone(verimail_events::erasure::Reason::Expired) => failed_precondition(
                reasons::ACCOUNT_EXPIRED,
                "the account was not verified in time and has been deleted; register again".into(),
            ),
            AuthError::AccountGone(verimail_events::erasure::Reason::Requested) => {
                failed_precondition(reasons::ACCOUNT_DELETED, "the account was deleted".into())
            }
            AuthError::Token(token_error) => verimail_server::grpc::invalid_argument("token", token_error.to_string()),
            AuthError::Db(ref source) => verimail_events::db::status_of("auth", source),
            AuthError::Issue(ref reason) => {
                tracing::error!(%reason, "token issuing failed");
                Status::internal("internal error")
            }
        }
    }
}
