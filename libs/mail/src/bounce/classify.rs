//! What a message that came back to a bounce address says: a hard or soft bounce, a
//! complaint, an auto-reply, or something we do not recognise. MIME is mailparse's job; this
//! reads the reports (RFC 3464 delivery status, RFC 5965 feedback) and, for the plain-text
//! notices older MTAs still send, looks for an SMTP status it can trust. What it cannot
//! classify it says so about, with the text, and never guesses.

use mailparse::{MailHeaderMap, ParsedMail};

/// The class of an inbound message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Failed for good (5.x.x): the address cannot receive mail.
    Hard,
    /// Failed for now or delayed (4.x.x): counted; enough of them in a window suppress.
    Soft,
    /// The recipient marked the mail as spam (a feedback loop's report).
    Complaint,
    /// A vacation notice or other automatic answer: recorded, nothing more.
    AutoReply,
    /// A delivery status notice that says the mail arrived (delivered, relayed, expanded).
    Delivered,
    /// Not classifiable: recorded with its text for operators, never acted upon.
    Unrecognized,
}

impl Class {
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Hard => "hard",
            Class::Soft => "soft",
            Class::Complaint => "complaint",
            Class::AutoReply => "auto_reply",
            Class::Delivered => "delivered",
            Class::Unrecognized => "unrecognized",
        }
    }
}

/// What the message says, as far as it says it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub class: Class,
    /// The enhanced status code (`5.1.1`), where there is one.
    pub status: Option<String>,
    /// The remote server's words (Diagnostic-Code, or the line that gave the status), or the
    /// feedback type of a complaint.
    pub diagnostic: Option<String>,
    /// The recipient the report is about (Final-Recipient, Original-Rcpt-To), as it says.
    pub recipient: Option<String>,
    /// The readable text of a message we could not classify, for operators (bounded).
    pub text: Option<String>,
}

/// How much of an unrecognized message's text is kept.
const TEXT_KEPT: usize = 4096;

impl Verdict {
    fn new(class: Class) -> Verdict {
        Verdict { class, status: None, diagnostic: None, recipient: None, text: None }
    }
}

/// Classifies a raw inbound message. A message that is not even MIME is unrecognized.
pub fn classify(raw: &[u8]) -> Verdict {
    read(raw).bounded()
}

/// What a remote server's words are kept of: plenty for "550 5.1.1 <x>: user unknown" and its
/// usual explanation, and a bounce of 200 KiB stores no more than a short one.
const DIAGNOSTIC_KEPT: usize = 500;
/// An address is at most 254 characters (RFC 5321 with RFC 3696's erratum), plus its type.
const RECIPIENT_KEPT: usize = 320;
/// `5.1.1`, `4.7.650`: short.
const STATUS_KEPT: usize = 16;

/// `text`, cut to `max` characters (an ellipsis says so).
fn cut(text: String, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text,
    }
}

impl Verdict {
    /// Every field within its bound: what anyone may send is stored at a size we chose.
    fn bounded(self) -> Verdict {
        Verdict {
            status: self.status.map(|s| cut(s, STATUS_KEPT)),
            diagnostic: self.diagnostic.map(|s| cut(s, DIAGNOSTIC_KEPT)),
            recipient: self.recipient.map(|s| cut(s, RECIPIENT_KEPT)),
            text: self.text.map(|s| cut(s, TEXT_KEPT)),
            ..self
        }
    }
}

fn read(raw: &[u8]) -> Verdict {
    let Ok(mail) = mailparse::parse_mail(raw) else {
        return unrecognized(&String::from_utf8_lossy(raw));
    };
    let report_type = mail.ctype.params.get("report-type").map(|t| t.to_ascii_lowercase());
    if mail.ctype.mimetype == "multipart/report" {
        match report_type.as_deref() {
            Some("delivery-status") => {
                if let Some(verdict) = delivery_status(&mail) {
                    return verdict;
                }
            }
            Some("feedback-report") => return feedback_report(&mail),
            _ => {}
        }
    }
    if let Some(verdict) = microsoft_complaint(&mail) {
        return verdict;
    }
    if is_auto_reply(&mail) {
        return Verdict::new(Class::AutoReply);
    }
    let text = readable_text(&mail);
    plain_text_bounce(&mail, &text).unwrap_or_else(|| unrecognized(&text))
}

fn unrecognized(text: &str) -> Verdict {
    // One character past what is kept, so that `bounded` marks the cut; no more is copied.
    let text = text.chars().take(TEXT_KEPT + 1).collect();
    Verdict { text: Some(text), ..Verdict::new(Class::Unrecognized) }
}

/// The message/delivery-status part (RFC 3464; message/global-delivery-status, RFC 6533):
/// the per-recipient fields, worst first. `None` when there is no readable one (Gmail sends
/// an empty one at times), so the text is looked at instead.
fn delivery_status(mail: &ParsedMail<'_>) -> Option<Verdict> {
    let part = mail
        .parts()
        .find(|p| matches!(p.ctype.mimetype.as_str(), "message/delivery-status" | "message/global-delivery-status"))?;
    let body = part.get_body_raw().ok()?;
    let mut rest: &[u8] = &body;
    let mut worst: Option<Verdict> = None;
    // Groups of fields separated by blank lines: the per-message group, then one per recipient.
    while !rest.is_empty() {
        let trimmed = trim_leading_blank_lines(rest);
        if trimmed.is_empty() {
            break;
        }
        let (fields, used) = mailparse::parse_headers(trimmed).ok()?;
        if used == 0 {
            break;
        }
        rest = &trimmed[used..];
        let Some(action) = fields.get_first_value("Action") else { continue };
        let action = action.trim().to_ascii_lowercase();
        let status = fields.get_first_value("Status").and_then(|s| enhanced_status(&s));
        let diagnostic = fields.get_first_value("Diagnostic-Code").map(|d| strip_type(&d));
        // `failed (Bad destination mailbox address)`: a comment may follow the action.
        let action = action.split(['(', ' ', ';']).next().unwrap_or_default().to_owned();
        let class = match (action.as_str(), status.as_deref().and_then(|s| s.chars().next())) {
            ("failed", Some('4')) => Class::Soft,
            ("failed", _) => match diagnostic.as_deref().and_then(smtp_reply_class) {
                Some('4') => Class::Soft,
                _ => permanence(status.as_deref(), diagnostic.as_deref().unwrap_or_default()),
            },
            ("delayed", _) => Class::Soft,
            ("delivered" | "relayed" | "expanded", _) => Class::Delivered,
            _ => continue,
        };
        let recipient = fields
            .get_first_value("Final-Recipient")
            .or_else(|| fields.get_first_value("Original-Recipient"))
            .map(|r| strip_type(&r));
        let verdict = Verdict { class, status, diagnostic, recipient, text: None };
        if worst.as_ref().is_none_or(|w| severity(verdict.class) > severity(w.class)) {
            worst = Some(verdict);
        }
    }
    worst
}

fn severity(class: Class) -> u8 {
    match class {
        Class::Hard => 3,
        Class::Soft => 2,
        _ => 1,
    }
}

/// An ARF report (RFC 5965): a complaint, unless its feedback type says the mail was fine.
fn feedback_report(mail: &ParsedMail<'_>) -> Verdict {
    let fields = mail
        .parts()
        .find(|p| p.ctype.mimetype == "message/feedback-report")
        .and_then(|p| p.get_body_raw().ok())
        .map(|body| {
            let parsed = mailparse::parse_headers(trim_leading_blank_lines(&body)).map(|(fields, _)| {
                let get = |name: &str| fields.get_first_value(name).map(|v| v.trim().to_owned());
                (get("Feedback-Type"), get("Original-Rcpt-To").or_else(|| get("Removal-Recipient")))
            });
            parsed.unwrap_or((None, None))
        })
        .unwrap_or((None, None));
    let (feedback_type, recipient) = fields;
    let class = match feedback_type.as_deref().map(str::to_ascii_lowercase).as_deref() {
        Some("not-spam") => Class::Unrecognized,
        _ => Class::Complaint,
    };
    let mut verdict = Verdict { recipient, diagnostic: feedback_type, ..Verdict::new(class) };
    if class == Class::Unrecognized {
        verdict.text = unrecognized(&readable_text(mail)).text;
    }
    verdict
}

/// Outlook.com's feedback loop (JMRP) is not ARF: the complained-of message comes back
/// attached, its recipient in X-HmXmrOriginalRecipient.
fn microsoft_complaint(mail: &ParsedMail<'_>) -> Option<Verdict> {
    let attached = mail.parts().find(|p| p.ctype.mimetype == "message/rfc822")?;
    let body = attached.get_body_raw().ok()?;
    let (fields, _) = mailparse::parse_headers(&body).ok()?;
    let recipient = fields.get_first_value("X-HmXmrOriginalRecipient")?;
    Some(Verdict {
        recipient: Some(recipient.trim().to_owned()),
        diagnostic: Some("abuse".into()),
        ..Verdict::new(Class::Complaint)
    })
}

/// RFC 3834's Auto-Submitted (a DSN says auto-replied too, but was read before this), and the
/// headers vacation programs and Exchange set.
fn is_auto_reply(mail: &ParsedMail<'_>) -> bool {
    let header = |name: &str| mail.headers.get_first_value(name).map(|v| v.trim().to_ascii_lowercase());
    let auto_submitted = header("Auto-Submitted").is_some_and(|v| v != "no");
    let marked = ["X-Autoreply", "X-Autorespond", "X-Auto-Response-Suppress"]
        .iter()
        .any(|name| header(name).is_some_and(|v| !v.is_empty()))
        || header("Precedence").is_some_and(|v| v == "auto_reply");
    let subject = header("Subject").unwrap_or_default();
    let vacation_subject = ["automatic reply:", "auto:", "out of office", "autoreply", "auto-reply", "vacation"]
        .iter()
        .any(|prefix| subject.starts_with(prefix));
    // A notice from a mailer daemon is a bounce even where it says auto-generated.
    (auto_submitted || marked || vacation_subject) && !from_mailer_daemon(mail)
}

fn from_mailer_daemon(mail: &ParsedMail<'_>) -> bool {
    let from = mail.headers.get_first_value("From").unwrap_or_default().to_ascii_lowercase();
    ["mailer-daemon", "postmaster", "mail delivery"].iter().any(|daemon| from.contains(daemon))
}

/// The plain-text notices of older MTAs (qmail, Exim's default, Sendmail without DSN,
/// Exchange's NDRs in text): a bounce only where the text says both that delivery failed and
/// which SMTP status it failed with, or it says in so many words that the failure is
/// permanent or temporary.
fn plain_text_bounce(mail: &ParsedMail<'_>, text: &str) -> Option<Verdict> {
    let subject = mail.headers.get_first_value("Subject").unwrap_or_default().to_ascii_lowercase();
    let lower = text.to_ascii_lowercase();
    let says_failure = from_mailer_daemon(mail)
        || [
            "undeliverable",
            "undelivered mail",
            "delivery status notification",
            "mail delivery failed",
            "failure notice",
            "returned mail",
            "delivery failure",
            "could not be delivered",
            "delivery has failed",
        ]
        .iter()
        .any(|phrase| subject.contains(phrase));
    if !says_failure {
        return None;
    }
    // The first line with an enhanced status code, or an SMTP reply the server "said" (qmail,
    // Postfix) or that a transcript quotes (Sendmail's `<<< 550 …`).
    let status_line = text.lines().find_map(|line| {
        let status = enhanced_status(line).filter(|s| !s.starts_with('2'))?;
        Some((status, line.trim().to_owned()))
    });
    if let Some((status, line)) = status_line {
        let class = if status.starts_with('5') { permanence(Some(&status), &line) } else { Class::Soft };
        return Some(Verdict { status: Some(status), diagnostic: Some(line), ..Verdict::new(class) });
    }
    let reply_line = text.lines().find_map(|line| {
        let said = line.split_once("said:").map(|(_, said)| said).or_else(|| line.trim_start().strip_prefix("<<<"))?;
        let reply = smtp_reply_class(said)?;
        Some((reply, line.trim().to_owned()))
    });
    if let Some((reply, line)) = reply_line {
        let class = if reply == '5' { permanence(None, &line) } else { Class::Soft };
        return Some(Verdict { diagnostic: Some(line), ..Verdict::new(class) });
    }
    let permanent = ["this is a permanent error", "permanent failure", "fatal error"];
    let temporary = [
        "this is a temporary error",
        "will continue trying",
        "has not yet been delivered",
        "delivery has been delayed",
    ];
    let class = if let Some(at) = permanent.iter().find_map(|p| lower.find(p)) {
        // What follows the words: the addresses that failed and why (Exim's shape).
        let after: String = lower[at..].chars().take(600).collect();
        permanence(None, &after)
    } else if temporary.iter().any(|p| lower.contains(p)) {
        Class::Soft
    } else {
        return None;
    };
    let line = text.lines().find(|l| {
        let l = l.to_ascii_lowercase();
        permanent.iter().chain(&temporary).any(|p| l.contains(p))
    });
    Some(Verdict { diagnostic: line.map(|l| l.trim().to_owned()), ..Verdict::new(class) })
}

/// What a permanent failure (a 5.x.x status or 5xx reply) means for the address: Hard only
/// where it certainly cannot receive mail (no such user, no such domain, moved, accepts no
/// mail), from the status's subject and detail or the server's words; anything that may pass
/// another day (a full mailbox, a policy, spam or rate refusal, a disabled account, a
/// failure of the remote system) is Soft, which suppresses only past the soft limit.
fn permanence(status: Option<&str>, words: &str) -> Class {
    let words = words.to_ascii_lowercase();
    let may_pass = [
        "quota",
        "mailbox full",
        "mailbox is full",
        "storage",
        "spam",
        "policy",
        "blocked",
        "blacklist",
        "block list",
        "blocklist",
        "reputation",
        "rate limit",
        "too many",
        "temporar",
        "try again later",
        "disabled",
        "suspended",
        "virus",
        "too large",
        "too big",
        "exceeds",
        "sender",
        "authentication",
        "relay",
        "mailer error",
        "system error",
        "on hold",
    ];
    if may_pass.iter().any(|phrase| words.contains(phrase)) {
        return Class::Soft;
    }
    // X.1.1 bad mailbox, X.1.2 bad system, X.1.3 bad mailbox syntax, X.1.6 moved, X.1.10 null
    // MX, X.4.4 no route to the domain.
    let detail = status.and_then(|s| s.split_once('.')).map(|(_, detail)| detail);
    if matches!(detail, Some("1.1" | "1.2" | "1.3" | "1.6" | "1.10" | "4.4")) {
        return Class::Hard;
    }
    let no_such = [
        "user unknown",
        "unknown user",
        "no such user",
        "no such mailbox",
        "no such recipient",
        "unknown recipient",
        "recipient unknown",
        "unknown or illegal",
        "mailbox not found",
        "mailbox unavailable",
        "user not found",
        "does not exist",
        "doesn't exist",
        "not exist",
        "couldn't be found",
        "could not be found",
        "invalid recipient",
        "invalid mailbox",
        "invalid address",
        "not a valid mailbox",
        "no mailbox",
        "unrouteable address",
        "addressee unknown",
        "address rejected.",
        "inactive email address",
        "no such domain",
        "domain not found",
        "unknown domain",
        "invalid domain",
        "host not found",
        "host unknown",
        "name or service not known",
        "name service error",
        "couldn't find a mail exchanger",
        "domain is not reachable",
        "does not accept mail",
        "not accepting network messages",
        "no longer available",
        "has moved",
        "not listed",
        "not our customer",
        "doesn't have a",
        "does not have a",
    ];
    if no_such.iter().any(|phrase| words.contains(phrase)) { Class::Hard } else { Class::Soft }
}

/// The text a person would read: the text/plain parts outside attached messages, else the
/// whole body.
fn readable_text(mail: &ParsedMail<'_>) -> String {
    let mut text = String::new();
    collect_text(mail, &mut text);
    if text.trim().is_empty() {
        text = mail.get_body().unwrap_or_default();
    }
    text
}

fn collect_text(part: &ParsedMail<'_>, out: &mut String) {
    if part.ctype.mimetype == "text/plain" {
        out.push_str(&part.get_body().unwrap_or_default());
        out.push('\n');
    }
    for sub in &part.subparts {
        if !sub.ctype.mimetype.starts_with("message/") {
            collect_text(sub, out);
        }
    }
}

/// The first enhanced status code (`5.1.1`, RFC 3463) in `text`: a class of 2, 4 or 5, a
/// subject and a detail of one to three digits, standing alone.
pub fn enhanced_status(text: &str) -> Option<String> {
    text.split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .map(|token| token.trim_end_matches('.'))
        .find(|token| {
            let parts: Vec<&str> = token.split('.').collect();
            parts.len() == 3
                && matches!(parts[0], "2" | "4" | "5")
                && parts[1..].iter().all(|p| (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
        })
        .map(str::to_owned)
}

/// The class digit ('4', '5') of the SMTP reply code `text` starts with (`550 …`, `550-…`).
fn smtp_reply_class(text: &str) -> Option<char> {
    let text = text.trim_start();
    let code = text.get(..3)?;
    let next = text[3..].chars().next();
    let is_code = code.bytes().all(|b| b.is_ascii_digit()) && matches!(next, None | Some(' ' | '-'));
    let class = code.chars().next()?;
    (is_code && matches!(class, '4' | '5')).then_some(class)
}

/// `smtp; 550 …` → `550 …`; `rfc822; ann@example.org` → `ann@example.org`.
fn strip_type(value: &str) -> String {
    value.split_once(';').map_or(value, |(_, rest)| rest).trim().to_owned()
}

fn trim_leading_blank_lines(mut bytes: &[u8]) -> &[u8] {
    loop {
        if let Some(rest) = bytes.strip_prefix(b"\r\n") {
            bytes = rest;
        } else if let Some(rest) = bytes.strip_prefix(b"\n") {
            bytes = rest;
        } else {
            return bytes;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_recipient_dsn(action: &str, status: &str, diagnostic: &str) -> String {
        format!(
            "Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n--b\r\n\
             Content-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx\r\n\r\n\
             Final-Recipient: rfc822; ann@example.org\r\nAction: {action}\r\nStatus: {status}\r\n\
             Diagnostic-Code: smtp; {diagnostic}\r\n--b--\r\n"
        )
    }

    /// Suppress on what is certainly permanent; what may pass another day is soft.
    #[test]
    fn only_a_certainly_permanent_failure_is_hard() {
        let class = |action: &str, status: &str, diagnostic: &str| {
            classify(one_recipient_dsn(action, status, diagnostic).as_bytes()).class
        };
        assert_eq!(class("failed (Bad destination mailbox address)", "5.1.1", "550 5.1.1 no"), Class::Hard);
        assert_eq!(class("failed", "5.0.0", "550 <ann@example.org>: User unknown"), Class::Hard);
        assert_eq!(class("failed", "5.4.4", "550 5.4.4 Invalid domain"), Class::Hard);
        assert_eq!(class("failed", "5.2.2", "552 5.2.2 Mailbox full"), Class::Soft);
        assert_eq!(class("failed", "5.7.1", "550 5.7.1 Message rejected as spam"), Class::Soft);
        assert_eq!(class("failed", "5.1.1", "550 5.7.1 IP address blacklisted by recipient"), Class::Soft);
        assert_eq!(class("failed", "5.2.1", "550 5.2.1 Account disabled"), Class::Soft);
        assert_eq!(class("failed", "5.0.0", "554 Transaction failed"), Class::Soft, "no telling: soft");
        assert_eq!(class("delayed", "4.4.7", "timeout"), Class::Soft);
    }

    #[test]
    fn what_a_bounce_says_is_kept_within_bounds_however_long() {
        let words = "é".repeat(200_000);
        let dsn = format!(
            "Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n--b\r\n\
             Content-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx\r\n\r\n\
             Final-Recipient: rfc822; {}@example.org\r\nAction: failed\r\nStatus: 5.1.1\r\n\
             Diagnostic-Code: smtp; 550 {words}\r\n--b--\r\n",
            "x".repeat(100_000)
        );
        let verdict = classify(dsn.as_bytes());
        assert_eq!((verdict.class, verdict.status.as_deref()), (Class::Hard, Some("5.1.1")));
        let diagnostic = verdict.diagnostic.expect("the diagnostic");
        assert_eq!(diagnostic.chars().count(), DIAGNOSTIC_KEPT + 1, "cut, with an ellipsis");
        assert!(diagnostic.starts_with("550 éé") && diagnostic.ends_with('…'));
        assert!(verdict.recipient.expect("the recipient").chars().count() <= RECIPIENT_KEPT + 1);
        let unrecognized = classify(format!("Subject: hello\r\n\r\n{words}").as_bytes());
        assert_eq!(unrecognized.class, Class::Unrecognized);
        assert_eq!(unrecognized.text.expect("the text").chars().count(), TEXT_KEPT + 1);
    }

    #[test]
    fn enhanced_status_codes_are_found_standing_alone() {
        assert_eq!(enhanced_status("550 5.1.1 <a@b> User unknown").as_deref(), Some("5.1.1"));
        assert_eq!(enhanced_status("Status: 4.2.2").as_deref(), Some("4.2.2"));
        assert_eq!(enhanced_status("(#5.1.1)").as_deref(), Some("5.1.1"));
        assert_eq!(enhanced_status("5.7.1."), Some("5.7.1".into()));
        assert_eq!(enhanced_status("version 1.2.3 at 10.0.0.1"), None);
        assert_eq!(enhanced_status("5.1234.1"), None);
        assert_eq!(smtp_reply_class(" 550-Mailbox"), Some('5'));
        assert_eq!(smtp_reply_class("452 full"), Some('4'));
        assert_eq!(smtp_reply_class("5500 things"), None);
        assert_eq!(smtp_reply_class("250 ok"), None);
    }

    /// tests/data/bounces: messages in the formats real MTAs, providers and feedback loops
    /// send, each with the class, status and recipient expected.tsv gives it.
    #[test]
    fn the_corpus_is_classified_as_expected() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/bounces");
        let expected = std::fs::read_to_string(dir.join("expected.tsv")).unwrap();
        let mut counts = std::collections::BTreeMap::<&str, usize>::new();
        let mut wrong = Vec::new();
        for line in expected.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
            let [file, class, status, recipient]: [&str; 4] = line.split('\t').collect::<Vec<_>>().try_into().unwrap();
            let raw = std::fs::read(dir.join(file)).unwrap();
            let verdict = classify(&raw);
            let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
            let got = (verdict.class.as_str(), dash(&verdict.status), dash(&verdict.recipient));
            if got != (class, status.to_owned(), recipient.to_owned()) {
                wrong.push(format!("{file}: expected {class} {status} {recipient}, got {got:?} ({verdict:?})"));
            }
            if verdict.class == Class::Unrecognized {
                assert!(verdict.text.is_some(), "{file}: an unrecognized message keeps its text");
            }
            *counts.entry(class).or_default() += 1;
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
        let total: usize = counts.values().sum();
        assert!(total >= 30, "{total}");
        // The reading alone, without SMTP or the database: every message 100 times.
        let messages: Vec<Vec<u8>> = expected
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(|l| std::fs::read(dir.join(l.split('\t').next().unwrap())).unwrap())
            .collect();
        let started = std::time::Instant::now();
        for _ in 0..100 {
            for raw in &messages {
                std::hint::black_box(classify(raw));
            }
        }
        let rate = (100 * messages.len()) as f64 / started.elapsed().as_secs_f64();
        println!("bounce corpus: {total} messages, {counts:?}; classified at {rate:.0} messages/s");
    }
}
