//! The tonic service: the only place tokens are issued and checked.

use crate::claim::{Claimer, TokenUse};
use crate::code::{Code, CodeKeys};
use crate::error::AuthError;
use crate::store::{self, token};
use crate::token::TokenKeys;
use sea_orm::{ActiveValue::Set, DatabaseConnection, DatabaseTransaction, EntityTrait};
use std::sync::Arc;
use std::time::Duration;
use tonic::{Request, Response};
use verimail_events::outbox::{self, OutboxRelay};
use verimail_proto::auth::v1::{self as pb, auth_service_server::AuthService};
use verimail_proto::events::v1 as events;
use verimail_server::address::Email;
use verimail_server::admin::AdminCredential;
use verimail_server::internal::ServiceCredential;
use verimail_server::limits::Limiter;
use verimail_server::rfc3339;

pub struct AuthGrpc {
    pub db: DatabaseConnection,
    pub keys: Arc<TokenKeys>,
    /// Signs access tokens.
    pub signing_keys: Arc<crate::access::SigningKeys>,
    pub access_token_lifetime: Duration,
    pub audience: String,
    pub code_keys: Arc<CodeKeys>,
    pub token_lifetime: Duration,
    /// How long a change-of-address notice's link works.
    pub undo_lifetime: Duration,
    pub code_lifetime: Duration,
    pub verify_per_client: Limiter,
    /// Code checks per mailbox and client.
    pub code_per_email: Limiter,
    /// Wrong tries an address's codes take from all clients before they die.
    pub code_max_wrong_tries: i32,
    pub relay: OutboxRelay,
    /// Uses tokens, many clicks to a transaction under load.
    pub claimer: Claimer,
    /// The gateway's credential: who may name the browser it calls for.
    pub fronts: ServiceCredential,
    /// email-service's credential: who may have tokens issued.
    pub issuer: ServiceCredential,
    /// user-service's credential: who may have access tokens signed.
    pub signs_for: ServiceCredential,
    /// What RevokeVerificationTokens requires.
    pub admin: AdminCredential,
}

type GrpcResult<T> = Result<Response<T>, tonic::Status>;

#[tonic::async_trait]
impl AuthService for AuthGrpc {
    async fn issue_verification_token(
        &self,
        request: Request<pb::IssueVerificationTokenRequest>,
    ) -> GrpcResult<pb::IssueVerificationTokenResponse> {
        // Internal: only email-service may have tokens made; not the internet-facing gateway.
        self.issuer.require(&request, &[(&self.fronts, "the gateway"), (&self.signs_for, "user-service")])?;
        let request = request.into_inner();
        let user_id = user_id(&request.user_id)?;
        let email = Email::parse(&request.email).map_err(|reason| AuthError::invalid("email", reason))?;
        let email = email.as_str().to_owned();
        let undo = request.purpose() == pb::TokenPurpose::UndoEmailChange;
        if request.preview {
            return Ok(Response::new(self.preview(undo)));
        }
        if undo {
            let change = parse_registration("registration_event_id", &request.registration_event_id)?
                .ok_or_else(|| AuthError::invalid("registration_event_id", "an undo link needs the change id"))?;
            return Ok(Response::new(self.issue_undo(&user_id, &email, &change).await?));
        }
        // The new address of a change: a purpose of its own, bound to the change and the address.
        let change = request.purpose() == pb::TokenPurpose::VerifyEmailChange;
        let issued = self.keys.issue(self.token_lifetime);
        // A code beside the link. Earlier tokens and codes of the same registration stay valid
        // (two emails in flight); those of earlier registrations die.
        let registration = parse_registration("registration_event_id", &request.registration_event_id)?;
        let code = Code::generate();
        let now = chrono::Utc::now();
        let code_expires_at = now + chrono::Duration::from_std(self.code_lifetime).unwrap_or(chrono::Duration::zero());
        let code_hash = self
            .code_keys
            .hash(&issued.key_id, &user_id, &code)
            .ok_or_else(|| AuthError::Issue("no code key for the current token key".into()))?;
        let txn = verimail_events::db::begin_write(&self.db).await.map_err(AuthError::from)?;
        store::lock_user(&txn, &user_id).await.map_err(AuthError::from)?;
        // email-service behind on users.deleted: nothing for an account that is gone.
        not_deleted(&txn, &user_id).await?;
        if let Some(registration) = &registration {
            if store::superseded(&txn, &user_id, registration).await.map_err(AuthError::from)? {
                return Err(AuthError::RegistrationSuperseded.into());
            }
            let (tokens, codes) =
                store::revoke(&txn, &user_id, store::Revoked::Before(registration)).await.map_err(AuthError::from)?;
            if tokens + codes > 0 {
                tracing::info!(%user_id, tokens, codes, "tokens and codes of earlier registrations revoked");
            }
        }
        let recorded = change.then_some(crate::token::EMAIL_CHANGE);
        store::record_token(&txn, &issued, &user_id, &email, registration.as_deref(), recorded)
            .await
            .map_err(AuthError::from)?;
        store::code::Entity::insert(store::code::ActiveModel {
            id: Set(uuid::Uuid::now_v7().to_string()),
            user_id: Set(user_id),
            email: Set(email),
            key_id: Set(issued.key_id.clone()),
            code_hash: Set(code_hash),
            issued_at: Set(now),
            expires_at: Set(code_expires_at),
            wrong_tries: Set(0),
            used_at: Set(None),
            revoked_at: Set(None),
            registration_event_id: Set(registration),
        })
        .exec_without_returning(&txn)
        .await
        .map_err(AuthError::from)?;
        txn.commit().await.map_err(AuthError::from)?;
        Ok(Response::new(pb::IssueVerificationTokenResponse {
            token: issued.token,
            expires_at: rfc3339(issued.expires_at),
            code: code.as_str().to_owned(),
            code_expires_at: rfc3339(code_expires_at),
        }))
    }

    async fn verify_email(&self, request: Request<pb::VerifyEmailRequest>) -> GrpcResult<pb::VerifyEmailResponse> {
        self.verify_per_client.check(&self.fronts.client_of(&request))?;
        let raw = request.into_inner().token;
        let raw = raw.trim();
        if raw.is_empty() {
            return Err(AuthError::invalid("token", "is required").into());
        }
        let verified = async {
            let jti = self.keys.open(raw)?;
            let token_use = TokenUse { jti, trace: verimail_server::telemetry::current_traceparent() };
            let used = self.claimer.use_token(token_use).await?;
            Ok::<_, AuthError>((used.outcome, used))
        }
        .await;
        let (outcome, used) = counted("link", verified)?;
        // This click's trace links to the registration's, where the link was made.
        if let Some(traceparent) = &used.issued_in {
            verimail_server::telemetry::link_to(&tracing::Span::current(), traceparent);
        }
        if outcome == pb::VerifyOutcome::Verified {
            let email = verimail_server::telemetry::email(&used.email);
            tracing::info!(user_id = %used.user_id, %email, "email verified");
        }
        Ok(Response::new(pb::VerifyEmailResponse { outcome: outcome as i32, user_id: used.user_id, email: used.email }))
    }

    async fn verify_email_code(
        &self,
        request: Request<pb::VerifyEmailCodeRequest>,
    ) -> GrpcResult<pb::VerifyEmailResponse> {
        let client = self.fronts.client_of(&request);
        self.verify_per_client.check(&client)?;
        let request = request.into_inner();
        let address = Email::parse(&request.email).map_err(|reason| AuthError::invalid("email", reason))?;
        // Parsed first: a typo that is not a code spends nothing. Then each client has its own
        // allowance per mailbox, so a stranger's guesses do not use up the owner's.
        let code = Code::parse(&request.code).map_err(|reason| AuthError::invalid("code", reason))?;
        self.code_per_email.check(&format!("{} {client}", address.mailbox()))?;
        let (outcome, user_id) = counted("code", self.use_code(address.as_str(), &code).await)?;
        Ok(Response::new(pb::VerifyEmailResponse {
            outcome: outcome as i32,
            user_id,
            email: address.as_str().to_owned(),
        }))
    }

    async fn revoke_verification_tokens(
        &self,
        request: Request<pb::RevokeVerificationTokensRequest>,
    ) -> GrpcResult<pb::RevokeVerificationTokensResponse> {
        self.admin.require(&request)?;
        let user_id = user_id(&request.into_inner().user_id)?;
        let revoked = async {
            let txn = verimail_events::db::begin_write(&self.db).await?;
            let counts = store::revoke(&txn, &user_id, store::Revoked::All).await?;
            txn.commit().await.map(|()| counts)
        };
        let (tokens, codes) = revoked.await.map_err(AuthError::from)?;
        tracing::info!(%user_id, tokens, codes, "verification tokens and codes revoked");
        let count = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
        Ok(Response::new(pb::RevokeVerificationTokensResponse {
            revoked_tokens: count(tokens),
            revoked_codes: count(codes),
        }))
    }

    async fn issue_access_token(
        &self,
        request: Request<pb::IssueAccessTokenRequest>,
    ) -> GrpcResult<pb::IssueAccessTokenResponse> {
        // Only user-service, which has just checked the password, may have one signed.
        self.signs_for.require(&request, &[(&self.fronts, "the gateway"), (&self.issuer, "email-service")])?;
        let request = request.into_inner();
        let user_id = user_id(&request.user_id)?;
        let email = Email::parse(&request.email).map_err(|reason| AuthError::invalid("email", reason))?;
        let holder =
            crate::access::Holder { user_id: &user_id, email: email.as_str(), email_verified: request.email_verified };
        let signed = self
            .signing_keys
            .sign(&holder, &self.audience, self.access_token_lifetime)
            .map_err(|e| AuthError::Issue(e.to_string()))?;
        crate::metrics::access_token_signed(request.email_verified);
        Ok(Response::new(pb::IssueAccessTokenResponse {
            access_token: signed.token,
            expires_at: rfc3339(signed.expires_at),
        }))
    }

    async fn undo_email_change(
        &self,
        request: Request<pb::UndoEmailChangeRequest>,
    ) -> GrpcResult<pb::UndoEmailChangeResponse> {
        self.verify_per_client.check(&self.fronts.client_of(&request))?;
        let raw = request.into_inner().token;
        let raw = raw.trim();
        if raw.is_empty() {
            return Err(AuthError::invalid("token", "is required").into());
        }
        let jti = self.keys.open(raw).map_err(AuthError::from)?;
        let txn = verimail_events::db::begin_write(&self.db).await.map_err(AuthError::from)?;
        let claimed = store::claim_tokens(&txn, &[jti.as_str()], store::undoes()).await.map_err(AuthError::from)?;
        let Some(row) = claimed.into_values().next() else {
            let row = token::Entity::find_by_id(jti).one(&txn).await.map_err(AuthError::from)?;
            let row = row.ok_or(AuthError::Token(crate::token::TokenError::Invalid))?;
            not_deleted(&txn, &row.user_id).await?;
            return Err(match row {
                row if row.purpose.as_deref() != Some(crate::token::UNDO_EMAIL_CHANGE) => {
                    AuthError::Token(crate::token::TokenError::WrongPurpose)
                }
                row if row.used_at.is_some() => AuthError::TokenUsed,
                row if row.revoked_at.is_some() => AuthError::TokenRevoked,
                _ => AuthError::Token(crate::token::TokenError::Expired),
            }
            .into());
        };
        let change_id = row.registration_event_id.clone().ok_or(AuthError::Token(crate::token::TokenError::Invalid))?;
        // The change's links and codes die with it.
        let revoked =
            store::revoke(&txn, &row.user_id, store::Revoked::Of(&change_id)).await.map_err(AuthError::from)?;
        let event = events::EmailChangeUndoRequested {
            event_id: uuid::Uuid::now_v7().to_string(),
            user_id: row.user_id.clone(),
            email: row.email.clone(),
            occurred_at: rfc3339(chrono::Utc::now()),
            change_id: change_id.clone(),
        };
        let announced = outbox::OutboxEvent::new(
            event.event_id.clone(),
            &event.user_id,
            verimail_proto::subjects::AUTH_EMAIL_CHANGE_UNDO_REQUESTED,
            &event,
        );
        outbox::enqueue(&txn, announced).await.map_err(AuthError::from)?;
        txn.commit().await.map_err(AuthError::from)?;
        self.relay.wake();
        tracing::info!(user_id = %row.user_id, %change_id, revoked = ?revoked, "change of address cancelled or undone from its notice");
        Ok(Response::new(pb::UndoEmailChangeResponse { user_id: row.user_id, email: row.email }))
    }

    /// Public keys are public: no credential, the same answer for everyone.
    async fn get_public_keys(&self, _: Request<pb::GetPublicKeysRequest>) -> GrpcResult<pb::GetPublicKeysResponse> {
        let published = self.signing_keys.published().into_iter();
        Ok(Response::new(pb::GetPublicKeysResponse {
            keys: published.map(|key| pb::PublicKey { id: key.id, paserk: key.paserk, current: key.current }).collect(),
            audience: self.audience.clone(),
            issuer: crate::access::ISSUER.to_owned(),
        }))
    }
}

/// AccountGone when the user's account was deleted: nothing is issued or undone for it.
async fn not_deleted(txn: &DatabaseTransaction, user_id: &str) -> Result<(), AuthError> {
    match verimail_events::erasure::buried(txn, &[user_id]).await?.get(user_id) {
        Some(reason) => Err(AuthError::AccountGone(*reason)),
        None => Ok(()),
    }
}

/// An optional event id (a registration or a change) as its canonical text.
fn parse_registration(field: &'static str, raw: &str) -> Result<Option<String>, AuthError> {
    match raw.trim() {
        "" => Ok(None),
        id => uuid::Uuid::parse_str(id)
            .map(|id| Some(id.to_string()))
            .map_err(|_| AuthError::invalid(field, "must be a UUID (an event id)")),
    }
}

/// A user id as its canonical text; INVALID_ARGUMENT naming `user_id` otherwise.
fn user_id(raw: &str) -> Result<String, AuthError> {
    uuid::Uuid::parse_str(raw.trim())
        .map(|id| id.to_string())
        .map_err(|_| AuthError::invalid("user_id", "must be a UUID"))
}

/// Counts a verification by method and outcome (`verimail_verifications`), passing it on.
fn counted<T>(
    method: &'static str,
    result: Result<(pb::VerifyOutcome, T), AuthError>,
) -> Result<(pb::VerifyOutcome, T), AuthError> {
    let outcome = match &result {
        Ok((pb::VerifyOutcome::AlreadyVerified, _)) => "already_verified",
        Ok(_) => "verified",
        Err(AuthError::Token(crate::token::TokenError::Expired) | AuthError::CodeExpired) => "expired",
        Err(AuthError::CodeLocked) => "locked",
        Err(AuthError::TokenRevoked | AuthError::CodeRevoked) => "revoked",
        Err(AuthError::TokenUsed) => "already_verified",
        Err(AuthError::Token(_) | AuthError::InvalidArgument { .. }) => "invalid",
        Err(AuthError::AccountGone(_)) => "account_deleted",
        Err(AuthError::Db(_) | AuthError::Issue(_) | AuthError::RegistrationSuperseded) => "error",
    };
    crate::metrics::verification(method, outcome);
    result
}

impl AuthGrpc {
    /// What an issue now would answer, with a sample token and code; nothing is recorded.
    fn preview(&self, undo: bool) -> pb::IssueVerificationTokenResponse {
        let now = chrono::Utc::now();
        let after = |lifetime: std::time::Duration| {
            rfc3339(now + chrono::Duration::from_std(lifetime).unwrap_or(chrono::Duration::zero()))
        };
        let (lifetime, code, code_expires_at) = match undo {
            true => (self.undo_lifetime, String::new(), String::new()),
            false => (self.token_lifetime, crate::token::SAMPLE_CODE.to_owned(), after(self.code_lifetime)),
        };
        pb::IssueVerificationTokenResponse {
            token: crate::token::SAMPLE_TOKEN.to_owned(),
            expires_at: after(lifetime),
            code,
            code_expires_at,
        }
    }

    /// The link of a change-of-address notice: single use, for `undo_lifetime`, no code.
    async fn issue_undo(
        &self,
        user_id: &str,
        email: &str,
        change: &str,
    ) -> Result<pb::IssueVerificationTokenResponse, AuthError> {
        let purpose = crate::token::UNDO_EMAIL_CHANGE;
        let issued = self.keys.issue(self.undo_lifetime);
        let txn = verimail_events::db::begin_write(&self.db).await?;
        not_deleted(&txn, user_id).await?;
        store::record_token(&txn, &issued, user_id, email, Some(change), Some(purpose)).await?;
        txn.commit().await?;
        Ok(pb::IssueVerificationTokenResponse {
            token: issued.token,
            expires_at: rfc3339(issued.expires_at),
            code: String::new(),
            code_expires_at: String::new(),
        })
    }

    /// Checks `code` against every code sent to `email` (constant time each), in one write
    /// transaction. A match is used up (and verifies, unless the user already is); only a
    /// match may say that its code expired, was revoked or is locked. Every miss answers the
    /// same, whether or not the address has codes: the wrong-code error, after the same
    /// statements (the counting update runs even when it matches no row).
    ///
    /// A miss counts one wrong try against every live code of the address, in one statement
    /// whose condition is checked row by row as it updates, so concurrent misses never count
    /// past the cap (PostgreSQL re-checks `wrong_tries < cap` on the row it waited for).
    async fn use_code(&self, email: &str, code: &Code) -> Result<(pb::VerifyOutcome, String), AuthError> {
        use crate::code::{Decision, Refusal};
        use sea_orm::sea_query::{Expr, ExprTrait};
        use sea_orm::{ColumnTrait, QueryFilter};
        use store::code as codes;
        let max_tries = self.code_max_wrong_tries;
        let now = chrono::Utc::now();
        let txn = verimail_events::db::begin_write(&self.db).await?;
        let mut forms = self.code_keys.erased_addresses(email);
        forms.push(email.to_owned());
        let (sent, erased): (Vec<_>, Vec<_>) = codes::Entity::find()
            .filter(codes::Column::Email.is_in(forms))
            .all(&txn)
            .await?
            .into_iter()
            .partition(|row| row.email == email);
        let matches = |row: &codes::Model| self.code_keys.matches(&row.key_id, &row.user_id, code, &row.code_hash);
        // A code of a deleted account: say so, rather than "wrong code".
        if let Some(row) = erased.iter().find(|row| matches(row)) {
            let gone = verimail_events::erasure::buried(&txn, &[row.user_id.as_str()]).await?;
            return Err(AuthError::AccountGone(
                gone.get(&row.user_id).copied().unwrap_or(verimail_events::erasure::Reason::Requested),
            ));
        }
        match crate::code::decide(&sent, matches, now, max_tries) {
            Decision::AlreadyUsed(row) => Ok((pb::VerifyOutcome::AlreadyVerified, row.user_id.clone())),
            Decision::Refused(Refusal::Revoked) => Err(AuthError::CodeRevoked),
            Decision::Refused(Refusal::Locked) => Err(AuthError::CodeLocked),
            Decision::Refused(Refusal::Expired) => Err(AuthError::CodeExpired),
            Decision::Use(row) => {
                let issue = (row.user_id.clone(), row.registration_event_id.clone());
                let already_verified =
                    store::used_registrations(&txn, &[row.user_id.as_str()], &[]).await?.contains(&issue);
                // Used only if still live: a concurrent use or the last wrong try came first.
                let used = codes::Entity::update_many()
                    .col_expr(codes::Column::UsedAt, Expr::value(now))
                    .filter(codes::Column::Id.eq(row.id.as_str()))
                    .filter(codes::Column::UsedAt.is_null())
                    .filter(codes::Column::RevokedAt.is_null())
                    .filter(codes::Column::WrongTries.lt(max_tries))
                    .exec(&txn)
                    .await?;
                if used.rows_affected == 0 {
                    return Err(AuthError::CodeLocked);
                }
                if already_verified {
                    txn.commit().await?;
                    return Ok((pb::VerifyOutcome::AlreadyVerified, row.user_id.clone()));
                }
                self.announce_verified(txn, &row.user_id, email, row.registration_event_id.as_deref()).await?;
                Ok((pb::VerifyOutcome::Verified, row.user_id.clone()))
            }
            Decision::Wrong { live } => {
                codes::Entity::update_many()
                    .col_expr(codes::Column::WrongTries, Expr::col(codes::Column::WrongTries).add(1))
                    .filter(codes::Column::Id.is_in(live))
                    .filter(codes::Column::WrongTries.lt(max_tries))
                    .exec(&txn)
                    .await?;
                txn.commit().await?;
                Err(AuthError::invalid("code", "is not the code we sent to this address"))
            }
        }
    }

    /// Writes auth.email_verified into the outbox and commits the transaction that used the
    /// token or code.
    async fn announce_verified(
        &self,
        txn: DatabaseTransaction,
        user_id: &str,
        email: &str,
        registration: Option<&str>,
    ) -> Result<(), AuthError> {
        let event = crate::claim::email_verified(user_id, email, registration);
        let event_id = event.id.clone();
        outbox::enqueue(&txn, event).await?;
        txn.commit().await?;
        self.relay.wake();
        tracing::info!(%user_id, email = %verimail_server::telemetry::email(email), %event_id, "email verified");
        Ok(())
    }
}
