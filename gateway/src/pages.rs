//! The pages a browser sees, rendered from escaped templates.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use minijinja::{Environment, Value};

macro_rules! templates {
    ($($name:literal),* $(,)?) => {
        [$(($name, include_str!(concat!("../templates/", $name)))),*]
    };
}

pub struct Pages {
    env: Environment<'static>,
}

impl Pages {
    /// The built-in templates; an error names the one that does not parse.
    pub fn new() -> Result<Pages, minijinja::Error> {
        let mut env = Environment::new();
        for (name, source) in templates![
            "base.html",
            "confirm.html",
            "verified.html",
            "already_verified.html",
            "resend_form.html",
            "expired.html",
            "account_gone.html",
            "undo_confirm.html",
            "undone.html",
            "invalid.html",
            "resend.html",
            "resent.html",
            "unavailable.html",
            "code.html",
            "code_locked.html",
            "too_many.html",
        ] {
            env.add_template(name, source)?;
        }
        Ok(Pages { env })
    }

    /// An HTML page; rendering failures are a 500 with a plain message.
    pub fn render(&self, status: StatusCode, name: &str, context: Value) -> Response {
        match self.env.get_template(name).and_then(|t| t.render(context)) {
            Ok(html) => (status, [(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"))], html)
                .into_response(),
            Err(e) => {
                tracing::error!(template = name, error = %e, "page rendering failed");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
            }
        }
    }
}
