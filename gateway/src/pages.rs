//! The pages a browser sees: one layout carrying the team's brand, each page in the reader's
//! language, from escaped templates a team may override (`GATEWAY_TEMPLATES_DIR`).

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use minijinja::{Value, context};
use serde::Serialize;
use std::path::Path;
use verimail_server::templates::{Layout, TemplateSet};

/// The layout every page extends, the same in every language.
pub const LAYOUT: &str = "layout.html";

/// The names a logo in the templates folder may have, with their media types.
pub const LOGOS: [(&str, &str); 3] =
    [("logo.svg", "image/svg+xml"), ("logo.png", "image/png"), ("logo.webp", "image/webp")];

/// A logo file larger than this is refused: it is sent with every page.
const MAX_LOGO_BYTES: u64 = 256 * 1024;

/// [`BUILT_IN_LOCALES`], [`PAGES`] and `BUILT_IN` (each page of each language, compiled in)
/// from one list of each.
macro_rules! built_in {
    (locales [$($locale:literal),*]; pages $pages:tt) => {
        /// The languages built in, each with every page.
        pub const BUILT_IN_LOCALES: [&str; [$($locale),*].len()] = [$($locale),*];
        /// The templates of a language folder: the pages and the form some of them include.
        pub const PAGES: [&str; built_in!(@count $pages)] = built_in!(@list $pages);
        static BUILT_IN: [[(&str, &str); PAGES.len()]; BUILT_IN_LOCALES.len()] = [$(built_in!(@ $locale; $pages)),*];
    };
    (@count [$($page:literal),*]) => { [$($page),*].len() };
    (@list [$($page:literal),*]) => { [$($page),*] };
    (@ $locale:literal; [$($page:literal),*]) => {
        [$((concat!($locale, "/", $page), include_str!(concat!("../templates/", $locale, "/", $page)))),*]
    };
}

built_in! {
    locales ["en", "de", "es"];
    pages [
        "confirm.html",
        "verified.html",
        "already_verified.html",
        "expired.html",
        "account_gone.html",
        "invalid.html",
        "code.html",
        "code_locked.html",
        "resend.html",
        "resend_form.html",
        "resent.html",
        "undo_confirm.html",
        "undone.html",
        "too_many.html",
        "unavailable.html",
        "not_found.html",
        "forgot_password.html",
        "forgot_password_form.html",
        "reset_sent.html",
        "reset_password.html",
        "password_reset.html",
        "reset_refused.html",
        "undo_taken.html"
    ]
}

/// A page and what it shows. Every page is also given `lang` (the language it is written in),
/// `brand` and `app`.
#[derive(Debug, Clone)]
pub enum Page<'a> {
    /// A verification link's page: a form that POSTs the token.
    Confirm {
        token: &'a str,
    },
    /// A change-of-address notice's link: a form that POSTs the token.
    UndoConfirm {
        token: &'a str,
    },
    Verified {
        email: &'a str,
    },
    AlreadyVerified,
    /// A link or code past its time (`revoked`: withdrawn); `change`: a change notice's link.
    Expired {
        email: &'a str,
        what: Proof,
        revoked: bool,
        change: bool,
    },
    /// The account of a link or code was deleted (`expired`: for not being verified in time).
    AccountGone {
        expired: bool,
        what: Proof,
    },
    /// A change notice's link could not give the account back: another account has `email`.
    UndoTaken {
        email: &'a str,
    },
    /// The account is back at `email`; `again`: the link was used before.
    Undone {
        email: &'a str,
        again: bool,
    },
    Invalid,
    /// The resend form; `error`: what was typed is not an address.
    Resend {
        email: &'a str,
        error: bool,
    },
    Resent {
        email: &'a str,
    },
    /// The code form; `error`: which field the service refused.
    Code {
        email: &'a str,
        error: Option<CodeError>,
    },
    CodeLocked {
        email: &'a str,
    },
    TooMany {
        seconds: u64,
    },
    Unavailable,
    NotFound,
    /// The form that asks for a reset email; `error`: what was typed is not an address.
    ForgotPassword {
        email: &'a str,
        error: bool,
    },
    ResetSent {
        email: &'a str,
    },
    /// The new-password form of a reset link (`token`), or with the code (no token).
    ResetPassword {
        token: &'a str,
        email: &'a str,
        error: Option<ResetError>,
    },
    /// The password was replaced.
    PasswordReset {
        email: &'a str,
    },
    /// A reset link or code that no longer works: `why` is expired, revoked, used, locked or
    /// invalid.
    ResetRefused {
        why: &'static str,
    },
}

/// The field of the new-password form the service refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetError {
    Email,
    Code,
    Password,
}

/// What the user came with: `what` is `"link"` or `"code"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proof {
    Link,
    Code,
}

/// The field of the code form the service refused: `error` is `"email"` or `"code"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeError {
    Email,
    Code,
}

impl Page<'_> {
    /// Its template and its own variables.
    fn parts(&self) -> (&'static str, Value) {
        let proof = |what: Proof| match what {
            Proof::Link => "link",
            Proof::Code => "code",
        };
        match *self {
            Page::Confirm { token } => ("confirm.html", context! { token }),
            Page::UndoConfirm { token } => ("undo_confirm.html", context! { token }),
            Page::Verified { email } => ("verified.html", context! { email }),
            Page::AlreadyVerified => ("already_verified.html", context! {}),
            Page::Expired { email, what, revoked, change } => {
                ("expired.html", context! { email, what => proof(what), revoked, change, error => false })
            }
            Page::AccountGone { expired, what } => ("account_gone.html", context! { expired, what => proof(what) }),
            Page::Undone { email, again } => ("undone.html", context! { email, again }),
            Page::UndoTaken { email } => ("undo_taken.html", context! { email }),
            Page::Invalid => ("invalid.html", context! { email => "", error => false }),
            Page::Resend { email, error } => ("resend.html", context! { email, error }),
            Page::Resent { email } => ("resent.html", context! { email }),
            Page::Code { email, error } => {
                let error = error.map(|field| match field {
                    CodeError::Email => "email",
                    CodeError::Code => "code",
                });
                ("code.html", context! { email, error })
            }
            Page::CodeLocked { email } => ("code_locked.html", context! { email, error => false }),
            Page::TooMany { seconds } => ("too_many.html", context! { seconds }),
            Page::Unavailable => ("unavailable.html", context! {}),
            Page::NotFound => ("not_found.html", context! {}),
            Page::ForgotPassword { email, error } => ("forgot_password.html", context! { email, error }),
            Page::ResetSent { email } => ("reset_sent.html", context! { email }),
            Page::ResetPassword { token, email, error } => {
                let error = error.map(|field| match field {
                    ResetError::Email => "email",
                    ResetError::Code => "code",
                    ResetError::Password => "password",
                });
                ("reset_password.html", context! { token, email, error })
            }
            Page::PasswordReset { email } => ("password_reset.html", context! { email }),
            Page::ResetRefused { why } => ("reset_refused.html", context! { why, email => "", error => false }),
        }
    }

    /// Every page in every variant, with sample values: what each template is rendered with
    /// before the gateway starts.
    pub fn samples() -> Vec<Page<'static>> {
        let email = "ada@example.com";
        let token = "SAMPLE-TOKEN-not-a-real-link";
        let mut pages = vec![
            Page::Confirm { token },
            Page::UndoConfirm { token },
            Page::Verified { email },
            Page::AlreadyVerified,
            Page::Invalid,
            Page::Resent { email },
            Page::CodeLocked { email },
            Page::TooMany { seconds: 1 },
            Page::TooMany { seconds: 30 },
            Page::Unavailable,
            Page::NotFound,
        ];
        for what in [Proof::Link, Proof::Code] {
            for revoked in [false, true] {
                pages.push(Page::Expired { email, what, revoked, change: false });
            }
            for expired in [false, true] {
                pages.push(Page::AccountGone { expired, what });
            }
        }
        pages.push(Page::Expired { email: "", what: Proof::Link, revoked: false, change: true });
        for again in [false, true] {
            pages.push(Page::Undone { email, again });
        }
        for error in [false, true] {
            pages.push(Page::Resend { email, error });
        }
        for error in [None, Some(CodeError::Email), Some(CodeError::Code)] {
            pages.push(Page::Code { email, error });
        }
        for error in [false, true] {
            pages.push(Page::ForgotPassword { email, error });
        }
        pages.push(Page::ResetSent { email });
        for error in [None, Some(ResetError::Password)] {
            pages.push(Page::ResetPassword { token, email: "", error });
        }
        for error in [None, Some(ResetError::Email), Some(ResetError::Code), Some(ResetError::Password)] {
            pages.push(Page::ResetPassword { token: "", email, error });
        }
        pages.push(Page::PasswordReset { email });
        pages.push(Page::UndoTaken { email });
        for why in ["expired", "revoked", "used", "locked", "invalid"] {
            pages.push(Page::ResetRefused { why });
        }
        pages
    }
}

/// The team's brand on every page: `BRAND_NAME`, `BRAND_COLOR` and the logo (`BRAND_LOGO_URL`,
/// or a logo file in the templates folder). The templates get `brand.name`, `brand.logo` (its
/// URL, or none), `brand.color`, and colours derived from it that keep text readable:
/// `brand.on_color` (text on the colour), `brand.link` (links on white) and `brand.focus`
/// (the focus ring on white).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Brand {
    pub name: String,
    pub logo: Option<String>,
    pub color: String,
    pub on_color: String,
    pub link: String,
    pub focus: String,
}

/// The pages' text colour, used where the brand colour is too light to read on white.
const TEXT: &str = "#1f2328";

impl Brand {
    /// The brand of `name`, in `color` (`#rgb` or `#rrggbb`), with the logo at `logo`.
    pub fn new(name: &str, color: &str, logo: Option<String>) -> Result<Brand, BrandError> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 60 || name.chars().any(char::is_control) {
            return Err(BrandError::Name("must be 1 to 60 characters, no control characters".into()));
        }
        let rgb = parse_color(color).map_err(BrandError::Color)?;
        let color = format!("#{:02x}{:02x}{:02x}", rgb[0], rgb[1], rgb[2]);
        let text = [0x1f, 0x23, 0x28];
        let white = [255, 255, 255];
        // WCAG 2.2: 4.5:1 for text (button labels, links), 3:1 for the focus ring.
        let on_color = if contrast(rgb, white) >= contrast(rgb, text) { "#ffffff" } else { TEXT };
        let readable = |ratio: f64| if contrast(rgb, white) >= ratio { color.clone() } else { TEXT.to_owned() };
        Ok(Brand {
            name: name.to_owned(),
            logo,
            on_color: on_color.to_owned(),
            link: readable(4.5),
            focus: readable(3.0),
            color,
        })
    }
}

/// Which brand setting is wrong, and why.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BrandError {
    #[error("{0}")]
    Name(String),
    #[error("{0}")]
    Color(String),
}

/// `#rgb` or `#rrggbb` as three bytes.
fn parse_color(raw: &str) -> Result<[u8; 3], String> {
    let hex = raw.trim().strip_prefix('#').unwrap_or_default();
    let digits: Vec<u8> = match hex.len() {
        3 => hex.chars().map(|c| c.to_digit(16).map(|d| d as u8 * 17)).collect::<Option<_>>(),
        6 => (0..3).map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()).collect::<Option<_>>(),
        _ => None,
    }
    .ok_or_else(|| format!("{raw:?} is not a colour written #rrggbb or #rgb"))?;
    Ok([digits[0], digits[1], digits[2]])
}

/// WCAG 2 contrast ratio of two colours, 1 to 21.
fn contrast(a: [u8; 3], b: [u8; 3]) -> f64 {
    let luminance = |rgb: [u8; 3]| {
        let channel = |c: u8| {
            let c = f64::from(c) / 255.0;
            if c <= 0.04045 { c / 12.92 } else { ((c + 0.055) / 1.055).powf(2.4) }
        };
        0.2126 * channel(rgb[0]) + 0.7152 * channel(rgb[1]) + 0.0722 * channel(rgb[2])
    };
    let (la, lb) = (luminance(a), luminance(b));
    (la.max(lb) + 0.05) / (la.min(lb) + 0.05)
}

/// A logo served by the gateway itself, from the templates folder.
#[derive(Debug, Clone)]
pub struct Logo {
    /// Where it is served: `/brand/logo.svg`.
    pub path: String,
    pub media_type: &'static str,
    pub bytes: axum::body::Bytes,
}

impl Logo {
    /// The logo file in `dir`, if there is one: at most one, at most 256 KiB.
    pub fn find(dir: &Path) -> Result<Option<Logo>, String> {
        let mut found = None;
        for (name, media_type) in LOGOS {
            let path = dir.join(name);
            if !path.is_file() {
                continue;
            }
            if found.is_some() {
                return Err(format!("{}: one logo file only ({})", dir.display(), LOGOS.map(|(n, _)| n).join(", ")));
            }
            let size = std::fs::metadata(&path).map_err(|e| format!("{}: {e}", path.display()))?.len();
            if size > MAX_LOGO_BYTES {
                return Err(format!("{}: {size} bytes; a logo may have {MAX_LOGO_BYTES} at most", path.display()));
            }
            let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            found = Some(Logo { path: format!("/brand/{name}"), media_type, bytes: bytes.into() });
        }
        Ok(found)
    }
}

/// Why the pages cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PagesError {
    /// A template does not parse, does not render with sample data, or is missing or unknown:
    /// the file (and line) and the problem.
    #[error("{0}")]
    Template(String),
    /// `DEFAULT_LOCALE` is not a language every page exists in.
    #[error("{0}")]
    DefaultLocale(String),
}

pub struct Pages {
    set: TemplateSet,
    /// The language of a browser that asks for none we have: `DEFAULT_LOCALE`.
    default_locale: String,
    brand: Value,
    /// `APP_URL`: where the verified page sends the user on (`app.url`, `app.host`).
    app: Value,
}

impl std::fmt::Debug for Pages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pages").field("default_locale", &self.default_locale).field("set", &self.set).finish()
    }
}

impl Pages {
    /// The built-in pages, each replaced by its file under `dir` (`GATEWAY_TEMPLATES_DIR`:
    /// `<dir>/layout.html`, `<dir>/<locale>/<page>.html`), which may also add languages: a
    /// language needs every page. Every page of every language is then rendered in every
    /// variant with sample data: a template that does not parse or names a variable its page
    /// does not give is refused with its file, line and problem.
    pub fn load(
        default_locale: &str,
        dir: Option<&Path>,
        brand: &Brand,
        app: Option<&crate::link::WebLink>,
    ) -> Result<Pages, PagesError> {
        let files: Vec<String> = PAGES.iter().map(|page| (*page).to_owned()).collect();
        let assets: Vec<&str> = LOGOS.iter().map(|(name, _)| *name).collect();
        let layout = Layout { per_locale: &files, shared: &[LAYOUT], assets: &assets };
        let built_in = BUILT_IN.iter().flatten().copied().chain([(LAYOUT, include_str!("../templates/layout.html"))]);
        let set = TemplateSet::load(built_in, dir, &layout).map_err(PagesError::Template)?;
        for locale in &set.locales {
            if let Some(missing) = PAGES.iter().find(|page| !set.has(&format!("{locale}/{page}"))) {
                let base = dir.map(|d| d.display().to_string()).unwrap_or_default();
                return Err(PagesError::Template(format!(
                    "{base}/{locale}/{missing} is missing: a language needs every page ({})",
                    PAGES.join(", ")
                )));
            }
        }
        if !set.locales.iter().any(|locale| locale == default_locale) {
            return Err(PagesError::DefaultLocale(format!(
                "the pages do not exist in {default_locale} (built in: {})",
                BUILT_IN_LOCALES.join(", ")
            )));
        }
        let app = app.map_or(Value::from(()), |app| context! { url => &app.url, host => &app.host });
        let pages = Pages {
            set,
            default_locale: default_locale.to_owned(),
            brand: Value::from(minijinja::value::Serde(brand)),
            app,
        };
        for locale in &pages.set.locales {
            for page in Page::samples() {
                pages.html(locale, &page).map_err(PagesError::Template)?;
            }
        }
        Ok(pages)
    }

    /// Every language the pages exist in.
    pub fn locales(&self) -> &[String] {
        &self.set.locales
    }

    /// The language for a request: the one its link asks for (`asked`, the `lang` of the links
    /// in emails: the user's language), else the browser's most wanted (`Accept-Language`, by
    /// quality), the first the pages exist in, each tried less its last subtag (`de-AT`, `de`);
    /// else `DEFAULT_LOCALE`. A malformed tag counts as none.
    pub fn negotiate(&self, asked: Option<&str>, headers: &HeaderMap) -> String {
        let wanted =
            headers.get_all(header::ACCEPT_LANGUAGE).iter().filter_map(|v| v.to_str().ok()).collect::<Vec<_>>();
        let preferences: Vec<String> = asked
            .map(str::to_owned)
            .into_iter()
            .chain(accept_language::parse(&wanted.join(",")))
            .filter_map(|tag| verimail_server::locale::parse(&tag).ok().flatten())
            .collect();
        verimail_server::locale::lookup(preferences.iter().map(String::as_str), &self.default_locale, |tag| {
            self.set.locales.iter().any(|locale| locale == tag)
        })
    }

    /// `page` in `lang` (a language the pages exist in).
    pub fn html(&self, lang: &str, page: &Page) -> Result<String, String> {
        let (template, own) = page.parts();
        let context = context! { lang, brand => &self.brand, app => &self.app, ..own };
        self.set.render(&format!("{lang}/{template}"), &context)
    }

    /// `page` in `lang` as an HTML response; a rendering failure is a 500 with a plain message.
    pub fn render(&self, status: StatusCode, lang: &str, page: &Page) -> Response {
        match self.html(lang, page) {
            Ok(html) => {
                let mut response =
                    (status, [(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"))], html)
                        .into_response();
                if let Ok(value) = HeaderValue::from_str(lang) {
                    response.headers_mut().insert(header::CONTENT_LANGUAGE, value);
                }
                response.headers_mut().insert(header::VARY, HeaderValue::from_static("accept-language"));
                response
            }
            Err(e) => {
                tracing::error!(page = page.parts().0, error = %e, "page rendering failed");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brand() -> Brand {
        Brand::new("Acme", "#1f6feb", None).unwrap()
    }

    #[test]
    fn every_page_renders_in_every_built_in_language_with_lang_set() {
        let pages = Pages::load("en", None, &brand(), None).unwrap();
        assert_eq!(pages.locales(), ["de", "en", "es"]);
        for locale in BUILT_IN_LOCALES {
            for page in Page::samples() {
                let html = pages.html(locale, &page).unwrap();
                assert!(html.starts_with("<!doctype html>\n<html lang=\""), "{html}");
                assert!(html.contains(&format!("<html lang=\"{locale}\">")), "{locale} {page:?}");
                assert!(html.contains("· Acme</title>"), "{html}");
            }
        }
        let german = pages.html("de", &Page::TooMany { seconds: 1 }).unwrap();
        assert!(german.contains("in 1 Sekunde noch"), "{german}");
        let spanish = pages.html("es", &Page::TooMany { seconds: 30 }).unwrap();
        assert!(spanish.contains("dentro de 30 segundos"), "{spanish}");
    }

    #[test]
    fn values_are_escaped() {
        let brand = Brand::new("<b>Acme</b>", "#000", None).unwrap();
        let pages = Pages::load("en", None, &brand, None).unwrap();
        let html = pages.html("en", &Page::Resent { email: "<script>x</script>@example.com" }).unwrap();
        assert!(!html.contains("<script>") && !html.contains("<b>"), "{html}");
        assert!(html.contains("&lt;script&gt;") && html.contains("&lt;b&gt;Acme"), "{html}");
        let html = pages.html("en", &Page::Confirm { token: "a\"><x" }).unwrap();
        assert!(html.contains("value=\"a&quot;&gt;&lt;x\""), "{html}");
    }

    #[test]
    fn the_language_follows_accept_language() {
        let pages = Pages::load("en", None, &brand(), None).unwrap();
        let lang = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::ACCEPT_LANGUAGE, HeaderValue::from_str(value).unwrap());
            pages.negotiate(None, &headers)
        };
        assert_eq!(lang("de"), "de");
        assert_eq!(lang("de-AT,de;q=0.9,en;q=0.8"), "de");
        assert_eq!(lang("fr-CA, fr;q=0.9, es;q=0.5"), "es");
        assert_eq!(lang("es;q=0.4, de;q=0.8"), "de");
        assert_eq!(lang("pt-BR"), "en");
        assert_eq!(lang("*"), "en");
        assert_eq!(lang("x-klingon, !!"), "en");
        assert_eq!(pages.negotiate(None, &HeaderMap::new()), "en");
        let german_default = Pages::load("de", None, &brand(), None).unwrap();
        assert_eq!(german_default.negotiate(None, &HeaderMap::new()), "de");
        assert!(matches!(Pages::load("fr", None, &brand(), None), Err(PagesError::DefaultLocale(_))));
    }

    #[test]
    fn the_language_a_link_asks_for_comes_before_the_browser_s() {
        let pages = Pages::load("en", None, &brand(), None).unwrap();
        let mut english = HeaderMap::new();
        english.insert(header::ACCEPT_LANGUAGE, HeaderValue::from_static("en-US,en;q=0.9,es;q=0.5"));
        assert_eq!(pages.negotiate(Some("de"), &english), "de");
        assert_eq!(pages.negotiate(Some("de-AT"), &english), "de", "less its last subtag");
        assert_eq!(pages.negotiate(Some("pt-BR"), &english), "en", "no such pages: the browser's choice");
        assert_eq!(pages.negotiate(Some("pt-BR"), &HeaderMap::new()), "en");
        for malformed in ["", "x-klingon", "de_DE", "<b>", "de\nX"] {
            assert_eq!(pages.negotiate(Some(malformed), &english), "en", "{malformed:?}");
        }
    }

    #[test]
    fn brand_colours_keep_text_readable() {
        let blue = brand();
        assert_eq!(
            (blue.color.as_str(), blue.on_color.as_str(), blue.link.as_str()),
            ("#1f6feb", "#ffffff", "#1f6feb")
        );
        // Too light for white text or for links on white: dark text instead.
        let yellow = Brand::new("Acme", "#FFD60A", None).unwrap();
        assert_eq!((yellow.color.as_str(), yellow.on_color.as_str(), yellow.link.as_str()), ("#ffd60a", TEXT, TEXT));
        assert_eq!(yellow.focus, TEXT);
        // Readable on white as a focus ring (3:1) but not as link text (4.5:1).
        let orange = Brand::new("Acme", "#e8710a", None).unwrap();
        assert_eq!((orange.link.as_str(), orange.focus.as_str()), (TEXT, "#e8710a"));
        assert_eq!(Brand::new("Acme", "#abc", None).unwrap().color, "#aabbcc");
        for bad in ["1f6feb", "#1f6fe", "#ggg", "blue", "", "#1f6feb00"] {
            assert!(Brand::new("Acme", bad, None).is_err(), "{bad}");
        }
        assert!(Brand::new(" ", "#000", None).is_err());
        assert!((contrast([255, 255, 255], [0, 0, 0]) - 21.0).abs() < 1e-9);
    }

    #[test]
    fn a_templates_folder_overrides_the_layout_and_pages_and_adds_languages() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("layout.html"), "<html lang=\"{{ lang }}\"><main data-page=\"{% block page %}{% endblock %}\">{% block content %}{% endblock %}</main>{% block title %}{% endblock %}</html>").unwrap();
        std::fs::create_dir(dir.path().join("en")).unwrap();
        std::fs::write(
            dir.path().join("en/verified.html"),
            "{% extends \"layout.html\" %}{% block content %}Welcome aboard, {{ email }}{% endblock %}",
        )
        .unwrap();
        // A new language: every page, here copied from English with one changed.
        std::fs::create_dir(dir.path().join("fr")).unwrap();
        for (name, source) in BUILT_IN[0] {
            std::fs::write(dir.path().join("fr").join(name.trim_start_matches("en/")), source).unwrap();
        }
        std::fs::write(dir.path().join("fr/resend_form.html"), "<form>Adresse e-mail</form>").unwrap();
        let pages = Pages::load("en", Some(dir.path()), &brand(), None).unwrap();
        assert_eq!(
            pages.html("en", &Page::Verified { email: "a@example.com" }).unwrap(),
            "<html lang=\"en\"><main data-page=\"\">Welcome aboard, a@example.com</main></html>"
        );
        // The French page includes the French form.
        assert!(pages.html("fr", &Page::Invalid).unwrap().contains("Adresse e-mail"));
        assert!(pages.html("de", &Page::Invalid).unwrap().contains("E-Mail-Adresse"));

        // A broken template is named with its line; an unknown variable too.
        std::fs::write(
            dir.path().join("en/verified.html"),
            "{% extends \"layout.html\" %}\n{% block content %}{{ email }\n{% endblock %}",
        )
        .unwrap();
        let said = Pages::load("en", Some(dir.path()), &brand(), None).unwrap_err().to_string();
        assert!(said.contains("en/verified.html:2: syntax error"), "{said}");
        std::fs::write(
            dir.path().join("en/verified.html"),
            "{% extends \"layout.html\" %}\n{% block content %}\n{{ user.name }}{% endblock %}",
        )
        .unwrap();
        let said = Pages::load("en", Some(dir.path()), &brand(), None).unwrap_err().to_string();
        assert!(said.contains("en/verified.html:3: undefined value"), "{said}");
        std::fs::remove_file(dir.path().join("en/verified.html")).unwrap();
        // A language without every page, a misspelt page, a stray file.
        std::fs::remove_file(dir.path().join("fr/not_found.html")).unwrap();
        let said = Pages::load("en", Some(dir.path()), &brand(), None).unwrap_err().to_string();
        assert!(said.contains("fr/not_found.html is missing"), "{said}");
        std::fs::write(dir.path().join("fr/not_found.html"), "x").unwrap();
        std::fs::write(dir.path().join("fr/verifed.html"), "x").unwrap();
        let said = Pages::load("en", Some(dir.path()), &brand(), None).unwrap_err().to_string();
        assert!(said.contains("fr/verifed.html: is not a template"), "{said}");
        std::fs::remove_file(dir.path().join("fr/verifed.html")).unwrap();
        std::fs::write(dir.path().join("style.css"), "x").unwrap();
        let said = Pages::load("en", Some(dir.path()), &brand(), None).unwrap_err().to_string();
        assert!(said.contains("style.css: is not a folder named by a language tag"), "{said}");
    }

    #[test]
    fn a_logo_file_is_found_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Logo::find(dir.path()).unwrap().is_none());
        std::fs::write(dir.path().join("logo.svg"), "<svg xmlns=\"http://www.w3.org/2000/svg\"/>").unwrap();
        let logo = Logo::find(dir.path()).unwrap().unwrap();
        assert_eq!((logo.path.as_str(), logo.media_type), ("/brand/logo.svg", "image/svg+xml"));
        std::fs::write(dir.path().join("logo.png"), "x").unwrap();
        assert!(Logo::find(dir.path()).unwrap_err().contains("one logo file only"));
        std::fs::remove_file(dir.path().join("logo.png")).unwrap();
        std::fs::write(dir.path().join("logo.svg"), vec![b' '; 300 * 1024]).unwrap();
        assert!(Logo::find(dir.path()).unwrap_err().contains("at most"));
    }
}
