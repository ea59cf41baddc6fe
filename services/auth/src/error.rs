use crate::token::TokenError;
use sea_orm::DbErr;
use tonic::Status;

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
}

impl AuthError {
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        AuthError::InvalidArgument { field, reason: reason.into() }
    }
}

impl From<AuthError> for Status {
    fn from(err: AuthError) -> Status {
        match err {
            AuthError::InvalidArgument { field, reason } => verimail_kit::grpc::invalid_argument(field, reason),
            AuthError::Token(TokenError::Expired) => Status::failed_precondition("token: has expired"),
            AuthError::Token(token_error) => verimail_kit::grpc::invalid_argument("token", token_error.to_string()),
            AuthError::Db(ref source @ (DbErr::Conn(_) | DbErr::ConnectionAcquire(_))) => {
                tracing::error!(error = %source, "database unavailable");
                Status::unavailable("the auth database is unavailable; retry later")
            }
            AuthError::Db(ref source) => {
                tracing::error!(error = %source, "database error");
                Status::internal("internal error")
            }
            AuthError::Issue(ref reason) => {
                tracing::error!(%reason, "token issuing failed");
                Status::internal("internal error")
            }
        }
    }
}
