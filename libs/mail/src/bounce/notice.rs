//! Notices written for people: the plain-text (or HTML-only) bounces of MTAs that send no
//! delivery-status report (qmail, Exim's default, Sendmail without DSN, Exchange's and
//! Domino's NDRs, mailing lists), and the JSON notifications of sending providers. What the
//! notice says is read up to where the returned original begins, so that the words of our own
//! message never count as the server's.

use super::classify::{Class, Verdict, class_of, delivery_status_fields, enhanced_status, smtp_reply};
use super::reason::{self, Command, Fact, Reason};
use mailparse::{MailHeaderMap, ParsedMail};

/// How much of a notice its words are looked for in: a notice says what happened near its
/// top; a long one is mostly the returned message or boilerplate.
const NOTICE_READ: usize = 6000;

/// The text a person would read: the text/plain parts outside attached messages, else those
/// parts' HTML rendered to text, else the whole body.
pub(super) fn readable_text(mail: &ParsedMail<'_>) -> String {
    let mut text = String::new();
    collect(mail, "text/plain", &mut text);
    if text.trim().is_empty() {
        let mut html = String::new();
        collect(mail, "text/html", &mut html);
        text = html_to_text(&html);
    }
    if text.trim().is_empty() {
        text = mail.get_body().unwrap_or_default();
    }
    text
}

fn collect(part: &ParsedMail<'_>, mimetype: &str, out: &mut String) {
    if part.ctype.mimetype == mimetype {
        out.push_str(&part.get_body().unwrap_or_default());
        out.push('\n');
    }
    for sub in &part.subparts {
        if !sub.ctype.mimetype.starts_with("message/") && sub.ctype.mimetype != "text/rfc822-headers" {
            collect(sub, mimetype, out);
        }
    }
}

/// HTML as the text a reader sees: tags dropped (a line break for those that break lines),
/// scripts and styles dropped whole, the common entities decoded.
fn html_to_text(html: &str) -> String {
    let mut out = String::with_capacity(html.len() / 2);
    let mut rest = html;
    while let Some(open) = rest.find('<') {
        out.push_str(&rest[..open]);
        let Some(close) = rest[open..].find('>') else {
            rest = "";
            break;
        };
        let tag = &rest[open + 1..open + close];
        let closing = tag.starts_with('/');
        let name: String = tag
            .trim_start_matches('/')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect::<String>()
            .to_ascii_lowercase();
        rest = &rest[open + close + 1..];
        // An opening script, style or head: everything up to its end is dropped. (Its closing
        // tag is then an ordinary one: seen as an opening, it dropped the rest of the page.)
        if !closing && matches!(name.as_str(), "script" | "style" | "head") && !rest.is_empty() {
            let end = format!("</{name}");
            let skip = rest.to_ascii_lowercase().find(&end).unwrap_or(rest.len());
            rest = &rest[skip..];
            continue;
        }
        if matches!(
            name.as_str(),
            "br" | "p" | "div" | "tr" | "li" | "h1" | "h2" | "h3" | "table" | "pre" | "blockquote"
        ) {
            out.push('\n');
        } else if matches!(name.as_str(), "td" | "th") {
            out.push(' ');
        }
    }
    out.push_str(rest);
    let decoded = out
        .replace("&nbsp;", " ")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&");
    decoded.lines().map(str::trim_end).collect::<Vec<_>>().join("\n")
}

/// The lines of `text`, each with its end of line, and the offset it starts at.
fn lines_at(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.split_inclusive('\n').scan(0, |offset, line| {
        let at = *offset;
        *offset += line.len();
        Some((at, line))
    })
}

/// The notice up to where the returned message begins (each MTA marks it its own way), at
/// most [`NOTICE_READ`] bytes.
pub(super) fn before_the_original(text: &str) -> &str {
    let mut end = text.len().min(NOTICE_READ);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    for (offset, line) in lines_at(&text[..end]) {
        let lower = line.trim().to_ascii_lowercase();
        let marks_original = ORIGINAL_MARKS.iter().any(|mark| lower.starts_with(mark))
            || ((lower.starts_with("---") || lower.starts_with("===") || lower.starts_with("___"))
                && ["original", "copy of", "returned message", "unsent message", "message header", "headers of"]
                    .iter()
                    .any(|word| lower.contains(word)));
        if marks_original && offset > 0 {
            return &text[..offset];
        }
    }
    &text[..end]
}

/// Lines that begin the returned original.
const ORIGINAL_MARKS: &[&str] = &[
    "original message headers",
    "original message follows",
    "------ this is a copy of the message",
    "--- below this line is a copy of the message",
    "content-type: message/rfc822",
    "return-path: <",
    "received: from ",
    "the original message was:",
    "the header of the original message",
    "original-message-id:",
    "----- original message -----",
    "-----original message-----",
];

/// What `notice` says of `recipient`: the line that names it and the indented lines that
/// continue it (Postfix folds the server's reply below the address).
pub(super) fn about<'a>(notice: &'a str, recipient: &str) -> Option<&'a str> {
    let recipient = recipient.trim().trim_matches(['<', '>']).to_lowercase();
    if recipient.is_empty() {
        return None;
    }
    let mut start = None;
    let mut end = 0;
    for (at, line) in lines_at(notice) {
        match start {
            None if line.to_lowercase().contains(&recipient) => {
                start = Some(at);
                end = at + line.len();
            }
            Some(_) if line.starts_with([' ', '\t']) && !line.trim().is_empty() => end = at + line.len(),
            Some(_) => break,
            None => {}
        }
    }
    let block = &notice[start?..end];
    // A line that is the address alone says nothing of it.
    (block.trim().len() > recipient.len() + 4).then_some(block)
}

/// A notice quoted in a forward (most lines begin with `>`), unquoted once.
fn unquoted(notice: &str) -> std::borrow::Cow<'_, str> {
    let lines = notice.lines().filter(|l| !l.trim().is_empty());
    let (quoted, all) = lines.fold((0, 0), |(q, a), l| (q + usize::from(l.starts_with('>')), a + 1));
    if all == 0 || quoted * 2 < all {
        return notice.into();
    }
    let lines: Vec<&str> =
        notice.lines().map(|l| l.strip_prefix('>').map_or(l, |rest| rest.strip_prefix(' ').unwrap_or(rest))).collect();
    lines.join("\n").into()
}

/// The lines about the first of several recipients a notice lists (each begins with the
/// address: `<ann@x>:`, `"ann@x":`, `ann@x: 550 …`, or the address alone), so that what it
/// says of another recipient does not count for the first; the whole notice where it lists
/// fewer than two.
fn first_recipient(notice: &str) -> &str {
    let starts_recipient = |line: &str| {
        let line = line.trim();
        let head = line.split_whitespace().next().unwrap_or_default();
        let address = head.trim_end_matches(':').trim_matches(['<', '>', '"']);
        let alone = line.split_whitespace().count() == 1 || head.ends_with(':');
        alone && address.contains('@') && !address.contains(['(', ')', ','])
    };
    let mut starts = lines_at(notice).filter(|(_, line)| starts_recipient(line)).map(|(at, _)| at);
    match (starts.next(), starts.next()) {
        (Some(first), Some(second)) => &notice[first..second],
        _ => notice,
    }
}

pub(super) fn from_mailer_daemon(mail: &ParsedMail<'_>) -> bool {
    let from = mail.headers.get_first_value("From").unwrap_or_default().to_ascii_lowercase();
    ["mailer-daemon", "postmaster", "post_master", "mail delivery", "mail administrator", "mail system"]
        .iter()
        .any(|daemon| from.contains(daemon))
}

/// Subjects of a notice of failure.
const FAILURE_SUBJECTS: &[&str] = &[
    "undeliverable",
    "undelivered",
    "undeliverd",
    "delivery status notification",
    "delivery notification",
    "mail delivery failed",
    "delivery failure",
    "delivery failed",
    "failure notice",
    "failed delivery",
    "returned mail",
    "return mail",
    "mail could not be delivered",
    "could not be delivered",
    "delivery has failed",
    "nondeliverable",
    "non-deliverable",
    "non delivery",
    "non-delivery",
    "permanent delivery failure",
    "warning: could not send",
    "delivery delayed",
    "delayed mail",
    "delivery report",
    "mail system error",
    "rejected",
    "bounce",
    "mail failed",
    "returning to sender",
    "メールエラー",
    "配信エラー",
    "不達",
];

/// Words that say delivery failed (a notice must say so, or give a status, to be a bounce).
const FAILURE_WORDS: &[&str] = &[
    "could not be delivered",
    "couldn't be delivered",
    "was not delivered",
    "message not delivered",
    "wasn't delivered",
    "not be delivered",
    "undeliverable",
    "delivery failed",
    "delivery to the following recipient",
    "delivery has failed",
    "failed permanently",
    "permanent error",
    "permanent failure",
    "fatal error",
    "did not reach",
    "unable to deliver",
    "could not deliver",
    "couldn't deliver",
    "failed to deliver",
    "delivery failure",
    "has not yet been delivered",
    "has been delayed",
    "temporary error",
    "will continue trying",
    "will retry",
    "delivery attempts",
    "rejected",
    "refused",
    "returned to sender",
    "bounced",
    "not deliverable",
    "following address",
    "following recipient",
];

/// Words that say delivery is only delayed (and will be tried again).
const DELAYED_WORDS: &[&str] = &[
    "has not yet been delivered",
    "has been delayed",
    "will continue trying",
    "will retry",
    "will be retried",
    "temporary error",
    "temporarily deferred",
    "delivery is delayed",
    "delivery has been delayed",
    "still trying",
    "warning: could not send",
];

const PERMANENT_WORDS: &[&str] =
    &["permanent error", "permanent failure", "failed permanently", "fatal error", "giving up", "gave up"];

/// Whether a message is a notice of failure by who sent it or what it is called.
fn is_notice(mail: &ParsedMail<'_>) -> bool {
    let subject = mail.headers.get_first_value("Subject").unwrap_or_default().to_lowercase();
    from_mailer_daemon(mail)
        || mail.headers.get_first_value("X-Failed-Recipients").is_some()
        || FAILURE_SUBJECTS.iter().any(|phrase| subject.contains(phrase))
}

/// A delivery status report's fields written into a notice's text rather than a part of
/// their own (a multipart whose boundary is broken, an MTA that inlines them).
pub(super) fn report_in_text(mail: &ParsedMail<'_>, text: &str) -> Option<Verdict> {
    if !is_notice(mail) {
        return None;
    }
    let start = lines_at(text).find_map(|(at, line)| {
        let lower = line.trim_start().to_ascii_lowercase();
        (lower.starts_with("reporting-mta:") || lower.starts_with("final-recipient:")).then_some(at)
    })?;
    delivery_status_fields(text[start..].trim_start().as_bytes(), &text[..start])
}

/// A notice written for people: a bounce where it comes from a mailer daemon or says it
/// failed, and gives a status, a reply or words of failure; its reason from its words.
pub(super) fn read(mail: &ParsedMail<'_>, text: &str) -> Option<Verdict> {
    if !is_notice(mail) {
        return None;
    }
    let subject = mail.headers.get_first_value("Subject").unwrap_or_default().to_lowercase();
    let failed_recipients = mail.headers.get_first_value("X-Failed-Recipients");
    let notice = unquoted(before_the_original(text));
    let notice = before_the_original(notice.as_ref());
    let lower = notice.to_lowercase();
    let first = first_recipient(notice);
    // The first status that is not a success, and the line it is on.
    let status_line = [first, notice].into_iter().find_map(|words| {
        words.lines().find_map(|line| {
            let status = enhanced_status(line).filter(|s| !s.starts_with('2'))?;
            Some((status, line.trim()))
        })
    });
    let status = status_line.as_ref().map(|(status, _)| status.clone());
    let reply = smtp_reply(first).or_else(|| smtp_reply(notice));
    let preset = google_groups(failed_recipients.as_deref(), &lower).then_some(Reason::Rejected);
    // The body must say it: a subject says "Undeliverable" of anything.
    let says_failed = FAILURE_WORDS.iter().any(|phrase| lower.contains(phrase));
    let permanent = PERMANENT_WORDS.iter().any(|phrase| lower.contains(phrase));
    let delayed = !permanent && DELAYED_WORDS.iter().any(|phrase| lower.contains(phrase) || subject.contains(phrase));
    let command = Command::named_in(first).or_else(|| Command::named_in(notice));
    let reason = preset.unwrap_or_else(|| {
        reason::find(&Fact { status: status.as_deref(), reply, command, diagnostic: first, mailer: false, delayed })
    });
    // A notice is a bounce where it gives a status or a reply, says delivery failed, or names
    // a reason in so many words; otherwise nothing is guessed.
    let names_a_reason = !matches!(reason, Reason::OnHold | Reason::Undefined);
    if status.is_none() && reply.is_none() && !says_failed && !names_a_reason {
        return None;
    }
    let temporary =
        delayed || status.as_deref().map_or(reply.is_some_and(|r| r.starts_with('4')), |s| s.starts_with('4'));
    let class = class_of(reason, temporary);
    let diagnostic = status_line.map(|(_, line)| line.to_owned()).or_else(|| {
        notice
            .lines()
            .map(str::trim)
            .find(|line| {
                let line = line.to_lowercase();
                reply.is_some_and(|r| line.contains(r)) || FAILURE_WORDS.iter().any(|p| line.contains(p))
            })
            .map(str::to_owned)
    });
    Some(Verdict { class, reason: Some(reason), status, diagnostic, recipient: None, text: None })
}

/// Google Groups' notice (in the poster's language): the group does not exist or takes no
/// posts from us, which its words alone would not say.
fn google_groups(failed: Option<&str>, notice: &str) -> bool {
    failed.is_some_and(|f| f.to_ascii_lowercase().contains("@googlegroups.com")) || notice.contains("google groups")
}

/// The JSON notifications sending providers mail (Amazon SES through SNS): their own
/// verdict, in their words.
pub(super) fn provider_notification(text: &str) -> Option<Verdict> {
    // The notification as SNS wraps it, its quotes escaped inside a JSON string, or bare.
    let text: std::borrow::Cow<'_, str> =
        if text.contains("\\\"notificationType\\\"") { text.replace("\\\"", "\"").into() } else { text.into() };
    let start = text.find("{\"notificationType\"")?;
    let json = &text[start..];
    let field = |name: &str| {
        let key = format!("\"{name}\":\"");
        let at = json.find(&key)? + key.len();
        json[at..].split('"').next().map(str::to_owned)
    };
    let kind = field("notificationType")?;
    let (class, reason) = match kind.as_str() {
        "Bounce" => match (field("bounceType").as_deref(), field("bounceSubType").as_deref()) {
            (Some("Permanent"), Some("General" | "NoEmail")) => (Class::Hard, Reason::UserUnknown),
            (Some("Permanent"), Some("Suppressed" | "OnAccountSuppressionList")) => (Class::Soft, Reason::Suppressed),
            (Some("Permanent"), _) => (Class::Soft, Reason::OnHold),
            (Some("Transient"), Some("MailboxFull")) => (Class::Soft, Reason::MailboxFull),
            (Some("Transient"), Some("MessageTooLarge")) => (Class::Soft, Reason::MesgTooBig),
            (Some("Transient"), Some("ContentRejected")) => (Class::Soft, Reason::SpamDetected),
            (Some("Transient"), _) => (Class::Soft, Reason::OnHold),
            _ => return None,
        },
        "Complaint" => (Class::Complaint, Reason::Feedback),
        "Delivery" => (Class::Delivered, Reason::Delivered),
        _ => return None,
    };
    let status = field("status");
    let diagnostic = field("diagnosticCode").or_else(|| field("complaintFeedbackType"));
    let recipient = field("emailAddress");
    Some(Verdict { class, reason: Some(reason), status, diagnostic, recipient, text: None })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Gmail's HTML-only notices open with a head and a style: what follows is the notice.
    #[test]
    fn html_keeps_what_follows_a_head_and_drops_scripts_and_styles() {
        let html = "<html><head><style>* { font: x }</style></head><body><h2>Address not found</h2>\
                    <p>Your message wasn&#39;t delivered to <b>ann@example.org</b></p>\
                    <script>var hidden = 1;</script><p>550 5.1.1 User unknown</p></body></html>";
        let text = html_to_text(html);
        assert!(text.contains("Address not found") && text.contains("550 5.1.1 User unknown"), "{text}");
        assert!(!text.contains("font") && !text.contains("hidden"), "{text}");
    }
}
