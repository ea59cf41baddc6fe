//! Mail without a database or a broker: what an email says ([`templates`], in words people
//! read times in: [`human`]), who it is from ([`sender`]), its DKIM signature ([`dkim`]), the
//! bounce address it is sent from and what a message that came back means ([`bounce`]), and
//! handing it to SMTP ([`transport`]). email-service keeps the consumer, the store, the
//! listener's I/O and the RPCs.

pub mod bounce;
pub mod dkim;
pub mod human;
pub mod sender;
pub mod templates;
pub mod transport;

pub use templates::{Rendered, TemplateError, Templates, VerificationEmail, page_link};
pub use transport::{MailTarget, Mailer, SendError, SmtpSecurity, check_smtp_url};
