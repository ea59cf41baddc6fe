//! Composing an email: text + HTML (and a subject) from escaped templates, built in for each
//! language or overridden file by file, as one MIME message.

use lettre::Message;
use lettre::message::{Mailbox, MultiPart};
use serde::Serialize;
use std::path::Path;

/// What a verification email says.
#[derive(Debug, Serialize)]
pub struct VerificationEmail<'a> {
    pub email: &'a str,
    pub link: String,
    /// RFC 3339; templates show it with the `datetime` and `expires_in` filters.
    pub expires_at: &'a str,
    /// The 6-digit code and the gateway page where it is typed.
    pub code: &'a str,
    pub code_expires_at: &'a str,
    pub code_page: String,
    /// The event type that asked for it (users.registered, users.verification_requested,
    /// users.email_change_requested).
    pub kind: &'a str,
}

/// The parts of an email: each a template of its own.
pub const PARTS: [&str; 3] = ["subject", "txt", "html"];

/// [`BUILT_IN_LOCALES`], [`EMAILS`] and `BUILT_IN` (every part of each email of each language,
/// compiled in and named `<locale>/<email>.<subject|txt|html>`) from one list of each.
macro_rules! built_in {
    (locales [$($locale:literal),*]; emails $emails:tt) => {
        /// The languages built in, each with every template.
        pub const BUILT_IN_LOCALES: [&str; [$($locale),*].len()] = [$($locale),*];
        /// The emails: each a subject, a text and an HTML template.
        pub const EMAILS: [&str; built_in!(@count $emails)] = built_in!(@list $emails);
        static BUILT_IN: [[(&str, &str); PARTS.len() * EMAILS.len()]; BUILT_IN_LOCALES.len()] =
            [$(built_in!(@ $locale; $emails)),*];
    };
    (@count [$($email:literal),*]) => { [$($email),*].len() };
    (@list [$($email:literal),*]) => { [$($email),*] };
    (@ $locale:literal; [$($email:literal),*]) => {
        [$(
            (concat!($locale, "/", $email, ".subject"), include_str!(concat!("../templates/", $locale, "/", $email, ".subject"))),
            (concat!($locale, "/", $email, ".txt"), include_str!(concat!("../templates/", $locale, "/", $email, ".txt"))),
            (concat!($locale, "/", $email, ".html"), include_str!(concat!("../templates/", $locale, "/", $email, ".html"))),
        )*]
    };
}

built_in! {
    locales ["en", "de", "es"];
    emails ["verification", "signup_attempted", "change_attempted", "email_change_notice", "password_reset", "password_changed"]
}

/// Why the templates cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// A template does not parse, does not render with sample data, or is missing or unknown:
    /// the file (and line) and the problem.
    #[error("{0}")]
    Template(String),
    /// `DEFAULT_LOCALE` lacks an email.
    #[error("{0}")]
    DefaultLocale(String),
}

pub struct Templates {
    set: verimail_server::templates::TemplateSet,
    /// The language of an email whose user has none, or none we have: `DEFAULT_LOCALE`.
    default_locale: String,
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Templates").field("default_locale", &self.default_locale).field("set", &self.set).finish()
    }
}

impl Templates {
    /// The built-in templates, with `default_locale` for users without a language we have.
    pub fn new(default_locale: &str) -> Result<Templates, TemplateError> {
        Templates::load(default_locale, None)
    }

    /// The built-in templates, each replaced by the file of the same name under `dir`
    /// (`EMAIL_TEMPLATES_DIR`: `<dir>/<locale>/<email>.<subject|txt|html>`), which may also
    /// add languages. Every email of every language is then rendered with sample data: a
    /// template that does not parse, names a variable its email does not give, or is missing
    /// a part, is refused with its file, line and problem.
    pub fn load(default_locale: &str, dir: Option<&Path>) -> Result<Templates, TemplateError> {
        let files: Vec<String> =
            EMAILS.iter().flat_map(|email| PARTS.iter().map(move |part| format!("{email}.{part}"))).collect();
        let layout = verimail_server::templates::Layout { per_locale: &files, shared: &[], assets: &[] };
        let mut set = verimail_server::templates::TemplateSet::load(BUILT_IN.iter().flatten().copied(), dir, &layout)
            .map_err(TemplateError::Template)?;
        set.env.add_filter("datetime", |state: &minijinja::State, at: String| {
            Ok(crate::human::datetime(moment(&at)?, &locale_of(state)))
        });
        set.env.add_filter("expires_in", |state: &minijinja::State, at: String| {
            let seconds = (moment(&at)? - chrono::Utc::now()).num_seconds().max(0);
            Ok(crate::human::span(seconds, &locale_of(state)))
        });
        let templates = Templates { set, default_locale: default_locale.to_owned() };
        for locale in &templates.set.locales {
            for email in EMAILS {
                let present: Vec<&str> = PARTS.into_iter().filter(|part| templates.part(locale, email, part)).collect();
                if !present.is_empty() && present.len() < PARTS.len() {
                    let missing = PARTS.iter().find(|part| !present.contains(part)).unwrap_or(&"");
                    let base = dir.map(|d| d.display().to_string()).unwrap_or_default();
                    return Err(TemplateError::Template(format!(
                        "{base}/{locale}/{email}.{missing} is missing: an email needs its subject, txt and html"
                    )));
                }
            }
        }
        for email in EMAILS {
            if !templates.has(email, default_locale) {
                return Err(TemplateError::DefaultLocale(format!(
                    "there is no {email} email in {default_locale} (built in: {})",
                    BUILT_IN_LOCALES.join(", ")
                )));
            }
        }
        templates.rehearse()?;
        Ok(templates)
    }

    /// Renders every email in every language with sample data.
    fn rehearse(&self) -> Result<(), TemplateError> {
        for locale in &self.set.locales {
            for email in EMAILS.into_iter().filter(|email| self.has(email, locale)) {
                for sample in samples(email) {
                    // The email exists in `locale`, so that is the language render picks.
                    self.render(email, locale, &sample).map_err(TemplateError::Template)?;
                }
            }
        }
        Ok(())
    }

    /// The language `email` is written in for a user of `locale`: the first of its lookup
    /// chain (`pt-BR`, `pt`, the default) that has the email.
    pub fn locale_for(&self, email: &str, locale: &str) -> String {
        verimail_server::locale::lookup([locale], &self.default_locale, |tag| self.has(email, tag))
    }

    /// Whether `email` exists in the language `tag`: its three parts.
    fn has(&self, email: &str, tag: &str) -> bool {
        PARTS.iter().all(|part| self.part(tag, email, part))
    }

    fn part(&self, tag: &str, email: &str, part: &str) -> bool {
        self.set.has(&format!("{tag}/{email}.{part}"))
    }

    /// `email` (one of [`EMAILS`]) for a user of `locale`: subject, text and HTML from its
    /// templates in the nearest language we have, with `content` and `locale` (the language
    /// chosen) as their variables.
    pub fn render(&self, email: &str, locale: &str, content: &impl Serialize) -> Result<Rendered, String> {
        let locale = self.locale_for(email, locale);
        let context =
            minijinja::context! { locale => &locale, ..minijinja::Value::from(minijinja::value::Serde(content)) };
        let render = |part: &str| self.set.render(&format!("{locale}/{email}.{part}"), &context);
        // One line, whatever the template's line breaks.
        let subject = render("subject")?.split_whitespace().collect::<Vec<_>>().join(" ");
        Ok(Rendered { subject, text: render("txt")?, html: render("html")?, locale })
    }

    /// [`Templates::render`] as a message from `from` to `to`.
    #[allow(clippy::too_many_arguments, reason = "an email's header fields, its kind and its content")]
    pub fn render_email(
        &self,
        from: &Mailbox,
        to: &str,
        message_id: &str,
        email: &str,
        locale: &str,
        content: &impl Serialize,
    ) -> Result<Message, String> {
        self.render(email, locale, content)?.message(from, to, message_id)
    }
}

/// An email's parts, rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
    /// The language it is written in.
    pub locale: String,
}

impl Rendered {
    /// The message from `from` to `to`, text and HTML as alternatives, its Message-ID derived
    /// from `message_id`.
    pub fn message(self, from: &Mailbox, to: &str, message_id: &str) -> Result<Message, String> {
        // Address, not Mailbox: its parser also takes IP literal domains (user@[192.0.2.1]).
        let to: lettre::Address = to.parse().map_err(|e| format!("recipient {to:?}: {e}"))?;
        // An explicit envelope: lettre cannot derive one from a To header with an IP literal.
        let envelope = lettre::address::Envelope::new(Some(from.email.clone()), vec![to.clone()])
            .map_err(|e| format!("envelope: {e}"))?;
        Message::builder()
            .from(from.clone())
            .to(Mailbox::new(None, to))
            .envelope(envelope)
            .subject(self.subject)
            // Derived from the event, so a resend after a crash is recognisably the same mail.
            .message_id(Some(format!("<{message_id}@verimail>")))
            .multipart(MultiPart::alternative_plain_html(self.text, self.html))
            .map_err(|e| e.to_string())
    }
}

/// What each email's templates are given, with sample values: one context per variant (the
/// verification email has three, by `kind`).
pub fn samples(email: &str) -> Vec<minijinja::Value> {
    let now = chrono::Utc::now();
    let link_expires = verimail_server::rfc3339(now + chrono::Duration::hours(24));
    let base = "https://app.example.com";
    match email {
        "verification" => [
            verimail_proto::subjects::USERS_REGISTERED,
            verimail_proto::subjects::USERS_VERIFICATION_REQUESTED,
            verimail_proto::subjects::USERS_EMAIL_CHANGE_REQUESTED,
        ]
        .into_iter()
        .map(|kind| {
            minijinja::Value::from(minijinja::value::Serde(VerificationEmail {
                email: "ada@example.com",
                link: format!("{base}/verify-email?token=SAMPLE-TOKEN-not-a-real-link"),
                expires_at: &link_expires,
                code: "123456",
                code_expires_at: &verimail_server::rfc3339(now + chrono::Duration::hours(1)),
                code_page: format!("{base}/verify-code"),
                kind,
            }))
        })
        .collect(),
        "email_change_notice" => vec![minijinja::context! {
            email => "ada@example.com",
            new_email => "ada@example.org",
            link => format!("{base}/email-change/undo?token=SAMPLE-TOKEN-not-a-real-link"),
            expires_at => verimail_server::rfc3339(now + chrono::Duration::days(7)),
        }],
        "password_reset" => vec![minijinja::context! {
            email => "ada@example.com",
            link => format!("{base}/reset-password?token=SAMPLE-TOKEN-not-a-real-link"),
            expires_at => verimail_server::rfc3339(now + chrono::Duration::hours(1)),
            code => "123456",
            code_page => format!("{base}/reset-password"),
        }],
        "password_changed" => [true, false]
            .into_iter()
            .map(|reset| minijinja::context! { email => "ada@example.com", reset => reset })
            .collect(),
        _ => vec![minijinja::context! { email => "ada@example.com" }],
    }
}

/// An RFC 3339 time given to a template filter.
fn moment(at: &str) -> Result<chrono::DateTime<chrono::Utc>, minijinja::Error> {
    chrono::DateTime::parse_from_rfc3339(at).map(|at| at.with_timezone(&chrono::Utc)).map_err(|e| {
        minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, format!("{at:?} is not an RFC 3339 time: {e}"))
    })
}

/// The language the template is rendered in.
fn locale_of(state: &minijinja::State) -> String {
    state.lookup("locale").and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

/// Percent-encodes everything outside RFC 3986's unreserved set.
/// A link to the gateway's page `path` (`/verify-email`), with the link's token if any and,
/// for a user who has a language, that language (`lang=`): the page opens in the language of
/// the email, whatever the browser asks for.
pub fn page_link(public_base_url: &str, path: &str, token: Option<&str>, locale: &str) -> String {
    let params: Vec<String> = [("token", token.unwrap_or_default()), ("lang", locale)]
        .into_iter()
        .filter(|(_, value)| !value.is_empty())
        .map(|(name, value)| format!("{name}={}", url_escape(value)))
        .collect();
    let base = public_base_url.trim_end_matches('/');
    match params.is_empty() {
        true => format!("{base}{path}"),
        false => format!("{base}{path}?{}", params.join("&")),
    }
}

pub(crate) fn url_escape(raw: &str) -> String {
    raw.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The formatted message and its decoded text and HTML parts.
    fn render(email: &str) -> (String, String, String) {
        let templates = Templates::new("en").unwrap();
        let content = VerificationEmail {
            email,
            link: page_link("http://127.0.0.1:8080/", "/verify-email", Some("v4.local.abc+/="), ""),
            expires_at: "2099-11-25T00:00:00.000Z",
            code: "042917",
            code_expires_at: "2099-11-24T01:00:00.000Z",
            code_page: "http://127.0.0.1:8080/verify-code".into(),
            kind: verimail_proto::subjects::USERS_REGISTERED,
        };
        let from: Mailbox = "Verimail <no-reply@verimail.localhost>".parse().unwrap();
        let raw = templates
            .render_email(&from, "a@example.com", "evt-1", "verification", "en", &content)
            .unwrap()
            .formatted();
        let parsed = mailparse::parse_mail(&raw).unwrap();
        let part = |mime: &str| {
            let part = parsed.subparts.iter().find(|p| p.ctype.mimetype == mime).unwrap();
            part.get_body().unwrap()
        };
        (String::from_utf8(raw.clone()).unwrap(), part("text/plain"), part("text/html"))
    }

    #[test]
    fn the_link_points_at_the_gateway_with_an_escaped_token_and_the_user_s_language() {
        let base = "http://127.0.0.1:8080/";
        let link = |token, locale| page_link(base, "/verify-email", token, locale);
        assert_eq!(link(Some("v4.local.a+b/c="), ""), "http://127.0.0.1:8080/verify-email?token=v4.local.a%2Bb%2Fc%3D");
        assert_eq!(link(Some("v4.local.a"), "de-AT"), "http://127.0.0.1:8080/verify-email?token=v4.local.a&lang=de-AT");
        assert_eq!(page_link(base, "/verify-code", None, "es"), "http://127.0.0.1:8080/verify-code?lang=es");
        assert_eq!(page_link(base, "/verify-code", None, ""), "http://127.0.0.1:8080/verify-code");
    }

    #[test]
    fn the_email_has_text_and_html_with_the_link_and_a_stable_message_id() {
        let (raw, text, html) = render("a@example.com");
        assert!(raw.contains("multipart/alternative"));
        assert!(raw.contains("Message-ID: <evt-1@verimail>"));
        let link = "http://127.0.0.1:8080/verify-email?token=v4.local.abc%2B%2F%3D";
        assert!(text.contains(link), "{text}");
        assert!(text.contains("a@example.com"));
        // minijinja escapes '/' as an entity, which browsers and mail clients decode.
        assert!(html.replace("&#x2f;", "/").contains(&format!("href=\"{link}\"")), "{html}");
        // The code, and where to type it, in both parts.
        assert!(text.contains("042917") && html.contains("042917"), "{text}");
        assert!(text.contains("http://127.0.0.1:8080/verify-code"), "{text}");
    }

    #[test]
    fn html_is_escaped() {
        let templates = Templates::new("en").unwrap();
        let content = VerificationEmail {
            email: "<script>alert(1)</script>@example.com",
            link: "http://x/verify-email?token=a&b".into(),
            expires_at: "2099-01-01T00:00:00Z",
            code: "123456",
            code_expires_at: "2099-01-01T00:00:00Z",
            code_page: "http://x/verify-code".into(),
            kind: verimail_proto::subjects::USERS_REGISTERED,
        };
        let context =
            minijinja::context! { locale => "en", ..minijinja::Value::from(minijinja::value::Serde(&content)) };
        let html = templates.set.render("en/verification.html", &context).unwrap();
        assert!(!html.contains("<script>"));
        assert!(html.contains("&lt;script&gt;"));
        assert!(html.contains("token=a&amp;b"));
    }

    #[test]
    fn every_email_renders_in_every_built_in_language_and_the_nearest_is_chosen() {
        let templates = Templates::new("en").unwrap();
        let from: Mailbox = "Verimail <no-reply@verimail.localhost>".parse().unwrap();
        let sample = minijinja::context! {
            email => "a@example.com", new_email => "b@example.com", link => "http://x/l?token=t",
            expires_at => "2099-01-01T00:00:00Z", code => "123456", code_expires_at => "2099-01-01T00:00:00Z",
            code_page => "http://x/verify-code", kind => "users.registered", reset => false,
        };
        let mut subjects = std::collections::HashSet::new();
        for locale in BUILT_IN_LOCALES {
            for email in EMAILS {
                let message = templates.render_email(&from, "a@example.com", "e", email, locale, &sample).unwrap();
                let raw = message.formatted();
                let parsed = mailparse::parse_mail(&raw).unwrap();
                use mailparse::MailHeaderMap;
                subjects.insert(parsed.headers.get_first_value("Subject").unwrap());
                let html = parsed.subparts[1].get_body().unwrap();
                assert!(html.contains(&format!("<html lang=\"{locale}\">")), "{locale} {email}");
            }
        }
        assert_eq!(subjects.len(), 18, "each email has its own subject in each language: {subjects:?}");
        assert_eq!(templates.locale_for("verification", "de-AT"), "de");
        assert_eq!(templates.locale_for("verification", "pt-BR"), "en");
        assert_eq!(templates.locale_for("verification", ""), "en");
        assert_eq!(Templates::new("es").unwrap().locale_for("verification", "pt-BR"), "es");
        assert!(Templates::new("pt").is_err(), "a default without the emails");
    }

    /// A templates folder holding `files` (path under it, contents).
    fn folder(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (path, text) in files {
            let path = dir.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        dir
    }

    fn refusal(files: &[(&str, &str)]) -> String {
        let dir = folder(files);
        Templates::load("en", Some(dir.path())).expect_err("refused").to_string()
    }

    #[test]
    fn a_templates_folder_overrides_file_by_file_and_adds_languages() {
        let dir = folder(&[
            ("de/verification.subject", "Bitte bestätigen: {{ email }}"),
            ("fr/verification.subject", "Vérifiez votre adresse"),
            ("fr/verification.txt", "Bonjour, {{ link }} ({{ expires_at | expires_in }})"),
            ("fr/verification.html", "<p lang=\"{{ locale }}\"><a href=\"{{ link }}\">{{ email }}</a></p>"),
        ]);
        let templates = Templates::load("en", Some(dir.path())).unwrap();
        let from: Mailbox = "Verimail <no-reply@verimail.localhost>".parse().unwrap();
        let sample = samples("verification").remove(0);
        let subject = |email: &str, locale: &str| {
            let raw = templates.render_email(&from, "a@example.com", "e", email, locale, &sample).unwrap().formatted();
            use mailparse::MailHeaderMap;
            mailparse::parse_mail(&raw).unwrap().headers.get_first_value("Subject").unwrap()
        };
        assert_eq!(subject("verification", "de"), "Bitte bestätigen: ada@example.com", "the overridden subject");
        assert_eq!(subject("verification", "fr-CA"), "Vérifiez votre adresse", "a language added");
        let notice = minijinja::context! { email => "ada@example.com" };
        let raw = templates.render_email(&from, "a@example.com", "e", "signup_attempted", "fr", &notice).unwrap();
        assert!(String::from_utf8(raw.formatted()).unwrap().contains("Someone tried"), "French lacks it: English");
    }

    #[test]
    fn a_broken_template_is_refused_with_its_file_line_and_problem() {
        let said = refusal(&[("en/signup_attempted.html", "<p>\n<p>\n{% if %}\n")]);
        assert!(said.contains("en/signup_attempted.html:3: syntax error"), "{said}");
        let said = refusal(&[("es/change_attempted.txt", "Hola:\n{{ nickname }}\n")]);
        assert!(said.contains("es/change_attempted.txt:2: undefined value"), "{said}");
        let said = refusal(&[("de/verifcation.txt", "x")]);
        assert!(said.contains("de/verifcation.txt: is not a template"), "{said}");
        let said = refusal(&[("german/verification.txt", "x")]);
        assert!(said.contains("german: is not a folder named by a language tag"), "{said}");
        let said = refusal(&[("fr/verification.txt", "x")]);
        assert!(said.contains("fr/verification.subject is missing"), "{said}");
        let said = refusal(&[("en/verification.txt", "{{ expires_at | datetime(1) }}")]);
        assert!(said.contains("en/verification.txt:1:"), "{said}");
        let dir =
            folder(&[("fr/verification.txt", "x"), ("fr/verification.subject", "x"), ("fr/verification.html", "x")]);
        let said = Templates::load("fr", Some(dir.path())).expect_err("fr lacks emails");
        assert!(matches!(said, TemplateError::DefaultLocale(_)), "{said}");
    }
}
