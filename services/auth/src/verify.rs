//! Verifying an address with the code of its email. (Links are used in batches by `claim`.)

use crate::authority::Authority;
use crate::code::Code;
use crate::error::AuthError;
use crate::store::{self, codes};
use verimail_proto::auth::v1::VerifyOutcome;

impl Authority {
    /// Checks `code` against every code sent to `email` (constant time each), in one write
    /// transaction. A match is used up (and verifies, unless the user already is); only a
    /// match may say that its code expired, was revoked or is locked. Every miss answers the
    /// same, whether or not the address has codes: the wrong-code error, after the same
    /// statements (the counting update runs even when it matches no row).
    ///
    /// A miss counts one wrong try against every live code of the address, in one statement
    /// whose condition is checked row by row as it updates, so concurrent misses never count
    /// past the cap (PostgreSQL re-checks `wrong_tries < cap` on the row it waited for).
    pub async fn use_code(&self, email: &str, code: &Code) -> Result<(VerifyOutcome, String), AuthError> {
        use crate::code::{Decision, Refusal};
        let max_tries = self.code_max_wrong_tries;
        let now = chrono::Utc::now();
        let mut write = self.relay.begin().await?;
        let mut forms = self.code_keys.erased_addresses(email);
        forms.push(email.to_owned());
        let (sent, erased): (Vec<_>, Vec<_>) =
            codes::sent_to(&*write, forms, None).await?.into_iter().partition(|row| row.email == email);
        let matches = |row: &codes::Model| self.code_keys.matches(&row.key_id, &row.user_id, code, &row.code_hash);
        // A code of a deleted account: say so, rather than "wrong code".
        if let Some(row) = erased.iter().find(|row| matches(row)) {
            let gone = verimail_events::erasure::buried(&*write, &[row.user_id.as_str()]).await?;
            return Err(AuthError::AccountGone(
                gone.get(&row.user_id).copied().unwrap_or(verimail_events::erasure::Reason::Requested),
            ));
        }
        match crate::code::decide(&sent, matches, now, max_tries) {
            Decision::AlreadyUsed(row) => Ok((VerifyOutcome::AlreadyVerified, row.user_id.clone())),
            Decision::Refused(Refusal::Revoked) => Err(AuthError::CodeRevoked),
            Decision::Refused(Refusal::Locked) => Err(AuthError::CodeLocked),
            Decision::Refused(Refusal::Expired) => Err(AuthError::CodeExpired),
            Decision::Use(row) => {
                let issue = (row.user_id.clone(), row.registration_event_id.clone());
                let already_verified =
                    store::used_registrations(&*write, &[row.user_id.as_str()], &[]).await?.contains(&issue);
                // Used only if still live: a concurrent use or the last wrong try came first.
                if !codes::use_live(&*write, &row.id, max_tries).await? {
                    return Err(AuthError::CodeLocked);
                }
                if already_verified {
                    write.commit().await?;
                    return Ok((VerifyOutcome::AlreadyVerified, row.user_id.clone()));
                }
                let event = crate::claim::email_verified(&row.user_id, email, row.registration_event_id.as_deref());
                let event_id = event.id.clone();
                write.announce_all([event]);
                write.commit().await?;
                tracing::info!(user_id = %row.user_id, email = %verimail_server::telemetry::email(email), %event_id, "email verified");
                Ok((VerifyOutcome::Verified, row.user_id.clone()))
            }
            Decision::Wrong { live } => {
                codes::count_wrong_try(&*write, live, max_tries).await?;
                write.commit().await?;
                Err(AuthError::invalid("code", "is not valid for this address"))
            }
        }
    }
}
