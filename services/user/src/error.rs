use sea_orm::DbErr;
use tonic::Status;

/// Everything a user-service request can fail with; converted to a gRPC status in one place.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("{field}: {reason}")]
    InvalidArgument { field: &'static str, reason: String },
    #[error("a user with this email already exists")]
    AlreadyExists,
    #[error("no such user")]
    NotFound,
    #[error("database error")]
    Db(#[from] DbErr),
    #[error("password hashing failed: {0}")]
    Hashing(String),
    #[error("rate limited")]
    Limited(Status),
    #[error("the email or the password is wrong")]
    WrongCredentials,
    #[error("email: is not verified yet; we have sent a new verification email")]
    NotVerified,
    /// A session, or what stands for one (a refresh token, an access token's `sid`), that
    /// cannot be used: UNAUTHENTICATED.
    #[error("{0}")]
    SessionEnded(&'static str),
    /// An access token alone, signed in too long ago, for an act that can take the account away.
    #[error(
        "{0}: give the password, or sign in again (an access token alone serves for REAUTH_WINDOW_SECONDS after signing in)"
    )]
    ReauthenticationRequired(&'static str),
    /// auth-service refused a reset's link or code: its answer, passed on (INVALID_ARGUMENT or
    /// FAILED_PRECONDITION with its reason).
    #[error("{}", .0.message())]
    Refused(Status),
    /// auth-service did not sign an access token.
    #[error("auth-service: {0}")]
    Auth(Status),
}

impl UserError {
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        UserError::InvalidArgument { field, reason: reason.into() }
    }
}

impl From<UserError> for Status {
    fn from(err: UserError) -> Status {
        match err {
            UserError::InvalidArgument { field, reason } => verimail_server::grpc::invalid_argument(field, reason),
            UserError::AlreadyExists => Status::already_exists(err.to_string()),
            UserError::NotFound => Status::not_found(err.to_string()),
            UserError::Db(ref source) => verimail_events::db::status_of("user", source),
            UserError::Limited(status) => status,
            UserError::Refused(status) => match status.code() {
                tonic::Code::InvalidArgument | tonic::Code::FailedPrecondition => status,
                _ => UserError::Auth(status).into(),
            },
            UserError::WrongCredentials | UserError::SessionEnded(_) => Status::unauthenticated(err.to_string()),
            UserError::ReauthenticationRequired(_) => verimail_server::grpc::with_reason(
                tonic::Code::PermissionDenied,
                verimail_proto::reasons::USER_DOMAIN,
                verimail_proto::reasons::REAUTHENTICATION_REQUIRED,
                err.to_string(),
            ),
            UserError::NotVerified => verimail_server::grpc::with_reason(
                tonic::Code::FailedPrecondition,
                verimail_proto::reasons::USER_DOMAIN,
                verimail_proto::reasons::EMAIL_NOT_VERIFIED,
                err.to_string(),
            ),
            UserError::Auth(status) => {
                tracing::error!(code = ?status.code(), message = status.message(), "auth-service did not sign an access token");
                match status.code() {
                    tonic::Code::Unavailable => Status::unavailable("auth-service is unavailable; retry"),
                    _ => Status::internal("internal error"),
                }
            }
            UserError::Hashing(ref reason) => {
                tracing::error!(%reason, "password hashing failed");
                Status::internal("internal error")
            }
        }
    }
}
