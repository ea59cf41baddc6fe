use crate::store::deliveries::DeliveryStatus;
use sea_orm::DbErr;
use tonic::Status;

/// Everything an email-service request can fail with; converted to a gRPC status in one place.
#[derive(Debug, thiserror::Error)]
pub enum EmailError {
    #[error("{field}: {reason}")]
    InvalidArgument { field: &'static str, reason: String },
    #[error("no delivery for event {0}")]
    NotFound(String),
    #[error("the delivery is {0:?}: only failed or parked deliveries are retried")]
    NotRetryable(DeliveryStatus),
    #[error("the delivery's account was deleted: its address is gone")]
    Erased,
    #[error("a {0} email is not retried: ask for it again (the user a change of address, an operator SendTestEmail)")]
    NotRetryableKind(String),
    #[error("the address is on the suppression list: RemoveSuppression first")]
    Suppressed,
    #[error("{0} is not on the suppression list")]
    NotSuppressed(String),
    #[error("email-service has written to no user {0} (or only before the account was deleted)")]
    NoMailForUser(String),
    #[error("no webhook endpoint {0}")]
    NoEndpoint(String),
    /// A preview could not be made: auth-service did not answer, or a template failed.
    #[error("{0}")]
    Unavailable(String),
    #[error("database error")]
    Db(#[from] DbErr),
}

impl EmailError {
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        EmailError::InvalidArgument { field, reason: reason.into() }
    }
}

impl From<EmailError> for Status {
    fn from(err: EmailError) -> Status {
        match err {
            EmailError::InvalidArgument { field, reason } => verimail_server::grpc::invalid_argument(field, reason),
            EmailError::NotFound(_)
            | EmailError::NotSuppressed(_)
            | EmailError::NoMailForUser(_)
            | EmailError::NoEndpoint(_) => Status::not_found(err.to_string()),
            EmailError::Unavailable(reason) => Status::unavailable(reason),
            EmailError::NotRetryable(_)
            | EmailError::Erased
            | EmailError::NotRetryableKind(_)
            | EmailError::Suppressed => Status::failed_precondition(err.to_string()),
            EmailError::Db(ref source) => verimail_events::db::status_of("email", source),
        }
    }
}
