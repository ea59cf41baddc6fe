//! What each email says: the template for its kind, in the user's language, with the token
//! and code auth-service issues for it (a sample, nothing issued, for a preview).

use super::{Courier, EmailRequest, Failure};
use tracing::Instrument;
use verimail_events::bus::HandlerError;
use verimail_mail::{Rendered, VerificationEmail, page_link};
use verimail_proto::auth::v1::{IssueVerificationTokenRequest, IssueVerificationTokenResponse, TokenPurpose};
use verimail_proto::subjects;

impl Courier {
    /// The email `kind` (the event type that asks for it) for `request`: what is sent, or with
    /// `preview` what would be (auth-service answers a sample token and issues nothing).
    pub(super) async fn compose(&self, request: &EmailRequest, kind: &str, preview: bool) -> Result<Rendered, Failure> {
        match kind {
            // The owner of an address someone tried to register, or to move an account to: a
            // notice, no token.
            subjects::USERS_SIGNUP_ATTEMPTED => {
                let template = if request.by_email_change { "change_attempted" } else { "signup_attempted" };
                let context = minijinja::context! { email => &request.email };
                Ok(self.render(request, template, &context)?)
            }
            subjects::USERS_EMAIL_CHANGE_NOTICE => self.change_notice(request, preview).await,
            subjects::USERS_PASSWORD_RESET_REQUESTED => self.password_reset(request, preview).await,
            subjects::USERS_PASSWORD_CHANGED => {
                let context = minijinja::context! { email => &request.email, reset => request.reset };
                Ok(self.render(request, "password_changed", &context)?)
            }
            _ => self.verification_email(request, kind, preview).await,
        }
    }

    /// A token (and for verification a code) from auth-service, for `request`'s email (with
    /// `preview`, a sample: nothing is issued).
    async fn issue(
        &self,
        request: &EmailRequest,
        purpose: TokenPurpose,
        preview: bool,
    ) -> Result<IssueVerificationTokenResponse, Failure> {
        let mut auth = self.auth.clone();
        let issue = auth.issue_verification_token(IssueVerificationTokenRequest {
            user_id: request.user_id.clone(),
            email: request.email.clone(),
            // A registration (first, or again while unverified) voids the links and codes of
            // earlier ones; an email of an earlier one is not sent.
            registration_event_id: request.belongs_to.clone(),
            purpose: purpose as i32,
            preview,
        });
        let span = tracing::info_span!(
            "grpc.client",
            otel.name = "verimail.auth.v1.AuthService/IssueVerificationToken",
            otel.kind = "client",
            rpc.system = "grpc",
        );
        Ok(tokio::time::timeout(self.send_timeout, issue.instrument(span))
            .await
            .map_err(|_| HandlerError::Retry(format!("auth-service: no answer within {:?}", self.send_timeout)))?
            .map_err(|status| match status.code() {
                tonic::Code::InvalidArgument => {
                    HandlerError::Permanent(format!("auth-service refused: {}", status.message())).into()
                }
                tonic::Code::FailedPrecondition if superseded(&status) => {
                    Failure::Rejected("not sent: a later registration of the address has its own email".into())
                }
                tonic::Code::FailedPrecondition if account_gone(&status) => {
                    Failure::Rejected("not sent: the account was deleted".into())
                }
                _ => HandlerError::Retry(format!("auth-service: {}", status.message())).into(),
            })?
            .into_inner())
    }

    /// The notice to the current address of a change, with the link that cancels or undoes it.
    async fn change_notice(&self, request: &EmailRequest, preview: bool) -> Result<Rendered, Failure> {
        let issued = self.issue(request, TokenPurpose::UndoEmailChange, preview).await?;
        let link = page_link(&self.public_base_url, "/email-change/undo", Some(&issued.token), &request.locale);
        let context = minijinja::context! {
            email => &request.email,
            new_email => &request.new_email,
            link => link,
            expires_at => &issued.expires_at,
        };
        Ok(self.render(request, "email_change_notice", &context)?)
    }

    /// A password reset's link and code (the reset's id is its event's).
    async fn password_reset(&self, request: &EmailRequest, preview: bool) -> Result<Rendered, Failure> {
        let issued = self.issue(request, TokenPurpose::PasswordReset, preview).await?;
        let context = minijinja::context! {
            email => &request.email,
            link => page_link(&self.public_base_url, "/reset-password", Some(&issued.token), &request.locale),
            expires_at => &issued.expires_at,
            code => &issued.code,
            code_page => page_link(&self.public_base_url, "/reset-password", None, &request.locale),
        };
        Ok(self.render(request, "password_reset", &context)?)
    }

    /// The email `template` for `request`, in the user's language.
    fn render(
        &self,
        request: &EmailRequest,
        template: &str,
        content: &impl serde::Serialize,
    ) -> Result<Rendered, HandlerError> {
        self.templates.render(template, &request.locale, content).map_err(HandlerError::Permanent)
    }

    /// A token and a code from auth-service, in the verification email.
    async fn verification_email(&self, request: &EmailRequest, kind: &str, preview: bool) -> Result<Rendered, Failure> {
        let purpose = match kind {
            subjects::USERS_EMAIL_CHANGE_REQUESTED => TokenPurpose::VerifyEmailChange,
            _ => TokenPurpose::VerifyEmail,
        };
        let issued = self.issue(request, purpose, preview).await?;
        let content = VerificationEmail {
            email: &request.email,
            link: page_link(&self.public_base_url, "/verify-email", Some(&issued.token), &request.locale),
            expires_at: &issued.expires_at,
            code: &issued.code,
            code_expires_at: &issued.code_expires_at,
            code_page: page_link(&self.public_base_url, "/verify-code", None, &request.locale),
            kind,
        };
        Ok(self.render(request, "verification", &content)?)
    }
}

/// Whether auth-service refused because the account was deleted.
fn account_gone(status: &tonic::Status) -> bool {
    use verimail_proto::reasons;
    matches!(reasons::of(status).as_str(), reasons::ACCOUNT_EXPIRED | reasons::ACCOUNT_DELETED)
}

/// Whether auth-service refused because a later registration of the user had its email.
fn superseded(status: &tonic::Status) -> bool {
    verimail_proto::reasons::of(status) == verimail_proto::reasons::REGISTRATION_SUPERSEDED
}
