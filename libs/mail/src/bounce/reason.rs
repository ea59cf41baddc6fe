//! Why a message came back: a reason beside the class, in the names Sisimai gives them (the
//! library mail operators read bounces with), so that an operator can compare. The class
//! follows from the reason: only a failure of the address itself (no such user, no such
//! domain, moved, a domain that takes no mail) is hard and suppresses at once; every other
//! reason may pass another day and counts as soft.
//!
//! A reason is decided from what a report says about one recipient (a [`Fact`]): its enhanced
//! status code, the SMTP reply, the command the server answered, and the server's words. The
//! words outrank the status where they say something may pass ("550 5.1.1 mailbox full" is a
//! full mailbox), and "user unknown" is a user unknown only where the server said so to the
//! recipient's address (at RCPT TO, or with a X.1.1 status): said after it read the message,
//! or where nobody can tell when, it is a filter's answer, as Sisimai reads it too.

/// The reasons kept (Sisimai's names and meanings; see docs/deliverability.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// No such mailbox at the domain.
    UserUnknown,
    /// No such domain, or no route to it.
    HostUnknown,
    /// The mailbox has moved and mail is not forwarded.
    HasMoved,
    /// The domain accepts no mail (a null MX, 521, 556).
    NotAccept,
    MailboxFull,
    /// The message is larger than the mailbox or system takes.
    MesgTooBig,
    /// A per-mailbox limit other than size (messages a day, recipients).
    ExceedLimit,
    /// The account is disabled or suspended (it may come back).
    Suspend,
    /// Refused by the recipient's own rules, or a user unknown said after the message was read.
    Filtered,
    /// Our envelope sender was refused.
    Rejected,
    /// Our sending host or IP address was refused.
    Blocked,
    SpamDetected,
    VirusDetected,
    PolicyViolation,
    /// SPF, DKIM or DMARC failed.
    AuthFailure,
    /// Our sending IP has no (matching) reverse DNS.
    RequirePtr,
    BadReputation,
    /// The server does not relay for the domain.
    NoRelaying,
    SecurityError,
    SystemError,
    SystemFull,
    NetworkError,
    /// Delivery was given up after retrying for days, or is delayed.
    Expired,
    TooManyConn,
    /// Rate-limited: sending too fast.
    Speeding,
    ContentError,
    SyntaxError,
    /// A local delivery program failed (procmail, a pipe).
    MailerError,
    /// The message does not follow the RFCs as the server requires.
    NotCompliantRfc,
    FailedStartTls,
    /// The sending provider holds the address on its own suppression list.
    Suppressed,
    /// A failure, but nothing in it says why.
    OnHold,
    /// Not even the server's words.
    Undefined,
    /// Not failures: a delivery report, a complaint, an automatic reply.
    Delivered,
    Feedback,
    Vacation,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::UserUnknown => "userunknown",
            Reason::HostUnknown => "hostunknown",
            Reason::HasMoved => "hasmoved",
            Reason::NotAccept => "notaccept",
            Reason::MailboxFull => "mailboxfull",
            Reason::MesgTooBig => "mesgtoobig",
            Reason::ExceedLimit => "exceedlimit",
            Reason::Suspend => "suspend",
            Reason::Filtered => "filtered",
            Reason::Rejected => "rejected",
            Reason::Blocked => "blocked",
            Reason::SpamDetected => "spamdetected",
            Reason::VirusDetected => "virusdetected",
            Reason::PolicyViolation => "policyviolation",
            Reason::AuthFailure => "authfailure",
            Reason::RequirePtr => "requireptr",
            Reason::BadReputation => "badreputation",
            Reason::NoRelaying => "norelaying",
            Reason::SecurityError => "securityerror",
            Reason::SystemError => "systemerror",
            Reason::SystemFull => "systemfull",
            Reason::NetworkError => "networkerror",
            Reason::Expired => "expired",
            Reason::TooManyConn => "toomanyconn",
            Reason::Speeding => "speeding",
            Reason::ContentError => "contenterror",
            Reason::SyntaxError => "syntaxerror",
            Reason::MailerError => "mailererror",
            Reason::NotCompliantRfc => "notcompliantrfc",
            Reason::FailedStartTls => "failedstarttls",
            Reason::Suppressed => "suppressed",
            Reason::OnHold => "onhold",
            Reason::Undefined => "undefined",
            Reason::Delivered => "delivered",
            Reason::Feedback => "feedback",
            Reason::Vacation => "vacation",
        }
    }

    /// The reason named `name` (as [`Reason::as_str`] writes it).
    pub fn parse(name: &str) -> Option<Reason> {
        ALL.iter().copied().find(|reason| reason.as_str() == name)
    }

    /// Whether the address itself cannot receive mail: the reasons that suppress at once.
    pub fn is_the_address(self) -> bool {
        matches!(self, Reason::UserUnknown | Reason::HostUnknown | Reason::HasMoved | Reason::NotAccept)
    }
}

/// Every reason, for [`Reason::parse`].
const ALL: [Reason; 36] = [
    Reason::UserUnknown,
    Reason::HostUnknown,
    Reason::HasMoved,
    Reason::NotAccept,
    Reason::MailboxFull,
    Reason::MesgTooBig,
    Reason::ExceedLimit,
    Reason::Suspend,
    Reason::Filtered,
    Reason::Rejected,
    Reason::Blocked,
    Reason::SpamDetected,
    Reason::VirusDetected,
    Reason::PolicyViolation,
    Reason::AuthFailure,
    Reason::RequirePtr,
    Reason::BadReputation,
    Reason::NoRelaying,
    Reason::SecurityError,
    Reason::SystemError,
    Reason::SystemFull,
    Reason::NetworkError,
    Reason::Expired,
    Reason::TooManyConn,
    Reason::Speeding,
    Reason::ContentError,
    Reason::SyntaxError,
    Reason::MailerError,
    Reason::NotCompliantRfc,
    Reason::FailedStartTls,
    Reason::Suppressed,
    Reason::OnHold,
    Reason::Undefined,
    Reason::Delivered,
    Reason::Feedback,
    Reason::Vacation,
];

/// The SMTP command a server refused at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Connect,
    Helo,
    StartTls,
    Auth,
    Mail,
    Rcpt,
    Data,
}

impl Command {
    /// The command a report names for the refusal, where it names one: Postfix's "(in reply to
    /// RCPT TO command)", Exim's "after RCPT TO:<…>", Sendmail's ">>> RCPT To:<…>" transcript,
    /// and the like. The last named wins (a transcript ends with the refused command).
    pub fn named_in(text: &str) -> Option<Command> {
        let text = text.to_ascii_lowercase();
        let mut found: Option<(usize, Command)> = None;
        for (phrase, command) in COMMAND_PHRASES {
            if let Some(at) = text.rfind(phrase)
                && found.is_none_or(|(seen, _)| at > seen)
            {
                found = Some((at, *command));
            }
        }
        found.map(|(_, command)| command)
    }
}

const COMMAND_PHRASES: &[(&str, Command)] = &[
    ("in reply to rcpt to command", Command::Rcpt),
    ("in reply to rcpt command", Command::Rcpt),
    ("after rcpt to", Command::Rcpt),
    ("after rcpt command", Command::Rcpt),
    ("rcpt to response", Command::Rcpt),
    ("did not like our rcpt to", Command::Rcpt),
    ("does not like recipient", Command::Rcpt),
    ("[rcpt_to]", Command::Rcpt),
    ("smtp:rcpt", Command::Rcpt),
    (">>> rcpt to", Command::Rcpt),
    ("rcpt to:<", Command::Rcpt),
    ("rcpt to: <", Command::Rcpt),
    ("rcpt to command", Command::Rcpt),
    ("during the rcpt", Command::Rcpt),
    ("in reply to mail from command", Command::Mail),
    ("after mail from", Command::Mail),
    (">>> mail from", Command::Mail),
    ("in reply to end of data command", Command::Data),
    ("in reply to data command", Command::Data),
    ("after end of data", Command::Data),
    ("after data", Command::Data),
    (">>> data", Command::Data),
    ("after end of data:", Command::Data),
    ("in reply to helo command", Command::Helo),
    ("in reply to ehlo command", Command::Helo),
    ("after ehlo", Command::Helo),
    ("after helo", Command::Helo),
    ("in reply to starttls command", Command::StartTls),
    ("in reply to auth command", Command::Auth),
    ("after initial connection", Command::Connect),
];

/// What one report says about one recipient.
#[derive(Debug, Clone, Copy, Default)]
pub struct Fact<'a> {
    /// The enhanced status code (`5.1.1`).
    pub status: Option<&'a str>,
    /// The SMTP reply code (`550`).
    pub reply: Option<&'a str>,
    /// The command the server answered with the failure.
    pub command: Option<Command>,
    /// The server's words (Diagnostic-Code, or the notice's text about the recipient).
    pub diagnostic: &'a str,
    /// The words came from a local delivery program (Diagnostic-Code: X-Unix).
    pub mailer: bool,
    /// The report says delivery is only delayed.
    pub delayed: bool,
}

/// The reason `fact` gives.
pub fn find(fact: &Fact<'_>) -> Reason {
    let words = fact.diagnostic.to_lowercase();
    let words = words.as_str();
    if fact.status.is_some_and(|s| s.starts_with("2.")) {
        return Reason::Delivered;
    }
    if fact.mailer {
        return Reason::MailerError;
    }
    let by_status = fact.status.and_then(by_status);
    // A status that says the mailbox is full, the message too large, the account disabled or
    // our sender refused: what the words add does not make it the address's failure.
    if let Some(
        reason @ (Reason::MailboxFull | Reason::MesgTooBig | Reason::ExceedLimit | Reason::Suspend | Reason::Rejected),
    ) = by_status
    {
        return reason;
    }
    // What may pass another day, said in so many words, outranks what the status says.
    if let Some(reason) = said(words, MAY_PASS_FIRST) {
        return reason;
    }
    if by_status == Some(Reason::HasMoved) || said_any(words, HAS_MOVED) {
        return Reason::HasMoved;
    }
    let no_such_domain = said_any(words, NO_SUCH_DOMAIN) || host_does_not_exist(words);
    if by_status == Some(Reason::HostUnknown) && !no_such_domain && said_any(words, NETWORK_ERROR) {
        return Reason::NetworkError;
    }
    // "550 : User unknown", naming no address: what au (KDDI) answers for what its users'
    // filters refuse.
    if said_any(words, FILTER_SAYS_UNKNOWN) {
        return Reason::Filtered;
    }
    let no_such_user = said_any(words, NO_SUCH_USER);
    let address_named = by_status == Some(Reason::UserUnknown)
        || said_any(words, CERTAINLY_NO_SUCH_USER)
        || (no_such_user && fact.command == Some(Command::Rcpt));
    if address_named && !(by_status == Some(Reason::UserUnknown) && said(words, MAY_PASS_AFTER).is_some()) {
        return Reason::UserUnknown;
    }
    if by_status == Some(Reason::HostUnknown) || no_such_domain {
        return Reason::HostUnknown;
    }
    if by_status == Some(Reason::NotAccept) || said_any(words, ACCEPTS_NO_MAIL) {
        return Reason::NotAccept;
    }
    // "User unknown" said once the message was read (at DATA), or where nobody can tell when
    // (NTT docomo's "550 Unknown user <address>" is its filter's answer): what a filter may
    // say, as Sisimai reads it too; never certain enough to suppress at once.
    if no_such_user {
        return Reason::Filtered;
    }
    if let Some(reason) = said(words, MAY_PASS_AFTER) {
        return reason;
    }
    // 521 and 556: the host accepts no mail at all (RFC 7504).
    if matches!(fact.reply, Some("521" | "556")) {
        return Reason::NotAccept;
    }
    if let Some(reason) = by_status {
        return reason;
    }
    if let Some(reason) = said(words, OTHER) {
        return reason;
    }
    match fact.status.and_then(|s| s.get(..3)) {
        Some("5.6" | "4.6") => return Reason::ContentError,
        Some("5.7" | "4.7") => return Reason::SecurityError,
        _ => {}
    }
    if fact.delayed {
        return Reason::Expired;
    }
    if matches!(fact.command, Some(Command::Helo | Command::Connect)) {
        return Reason::Blocked;
    }
    if words.trim().is_empty() { Reason::Undefined } else { Reason::OnHold }
}

/// The reason of a refusal our own SMTP client got (`reply`, the server's words): the answer
/// to our RCPT TO unless the words say otherwise, since a 5xx before the message is sent
/// answers the recipient, and one after it says so ("spam", "content").
pub fn of_refusal(reply: Option<&str>, words: &str) -> Reason {
    let status = super::classify::enhanced_status(words);
    // lettre writes "permanent error (550): …".
    let reply = reply.or_else(|| {
        words.split_whitespace().map(|word| word.trim_matches(|c: char| !c.is_ascii_digit())).find(|code| {
            code.len() == 3 && code.bytes().all(|b| b.is_ascii_digit()) && matches!(code.as_bytes()[0], b'4' | b'5')
        })
    });
    let fact =
        Fact { status: status.as_deref(), reply, command: Some(Command::Rcpt), diagnostic: words, ..Fact::default() };
    find(&fact)
}

/// What may pass that `words` say outright (a full mailbox, a disabled account, a message
/// too large…), whatever else is said with them.
pub fn said_to_pass(words: &str) -> Option<Reason> {
    said(&words.to_lowercase(), MAY_PASS_FIRST)
}

/// Exim's "553 <host> does not exist": the domain, named alone, has no mail host.
fn host_does_not_exist(words: &str) -> bool {
    words.match_indices("553 ").any(|(at, code)| {
        let rest = &words[at + code.len()..];
        let mut tokens = rest.split_whitespace();
        let host = tokens.next().unwrap_or_default();
        host.contains('.') && !host.contains('@') && rest[host.len()..].trim_start().starts_with("does not exist")
    })
}

/// The reason an enhanced status code stands for (RFC 3463 and IANA's registry), where it
/// names one; X.0.0 and the vague ones name none.
fn by_status(status: &str) -> Option<Reason> {
    let (class, rest) = status.split_once('.')?;
    let reason = match (class, rest) {
        ("5", "1.0" | "1.1" | "1.3") => Reason::UserUnknown,
        ("5", "1.2" | "4.4") => Reason::HostUnknown,
        (_, "1.6" | "7.17" | "7.18") => Reason::HasMoved,
        ("5", "1.10" | "7.27") | (_, "3.2") => Reason::NotAccept,
        (_, "1.7" | "1.8") => Reason::Rejected,
        (_, "2.0" | "2.1" | "2.4" | "1.4") if class == "5" => Reason::Filtered,
        ("4", "2.1") => Reason::Blocked,
        (_, "2.2") => Reason::MailboxFull,
        (_, "2.3") => Reason::ExceedLimit,
        (_, "3.1" | "4.5") => Reason::SystemFull,
        (_, "3.4" | "7.16") => Reason::MesgTooBig,
        ("5", "3.0") | (_, "1.9" | "3.3" | "3.5" | "4.3" | "5.4" | "5.5") => Reason::SystemError,
        ("4", "4.1" | "4.7") => Reason::Expired,
        ("5", "4.0") | (_, "4.2" | "4.6" | "4.8") | ("4", "4.4") => Reason::NetworkError,
        (_, "5.2" | "5.6") => Reason::SyntaxError,
        (_, "5.3") => Reason::TooManyConn,
        (_, "6.0" | "6.1" | "6.2" | "6.3" | "6.5" | "6.6" | "6.7" | "6.8" | "6.9") => Reason::ContentError,
        ("5", "7.13") => Reason::Suspend,
        (_, "7.20" | "7.21" | "7.22" | "7.23" | "7.24" | "7.26" | "7.29") => Reason::AuthFailure,
        (_, "7.25") => Reason::RequirePtr,
        (_, "7.28") => Reason::SpamDetected,
        (_, "7.30") => Reason::FailedStartTls,
        ("4", "7.1" | "7.2") => Reason::Blocked,
        ("5", "7.0" | "7.1" | "7.2" | "7.3" | "7.4" | "7.5" | "7.6" | "7.7" | "7.8" | "7.9" | "7.10" | "7.11")
        | (_, "7.5" | "7.6" | "7.7" | "7.12" | "7.14" | "7.15" | "7.19") => Reason::SecurityError,
        _ => return None,
    };
    Some(reason)
}

fn said_any(words: &str, phrases: &[&str]) -> bool {
    phrases.iter().any(|phrase| words.contains(phrase))
}

fn said(words: &str, table: &[(Reason, &[&str])]) -> Option<Reason> {
    table.iter().find(|(_, phrases)| said_any(words, phrases)).map(|(reason, _)| *reason)
}

/// Words for what may pass another day that outrank any status, in the order looked for.
const MAY_PASS_FIRST: &[(Reason, &[&str])] = &[
    (
        Reason::MailboxFull,
        &[
            "mailbox full",
            "mailbox is full",
            "mailbox size limit",
            "mailbox exceeds",
            "mailbox would exceed",
            "mailfolder is full",
            "full mailbox",
            "over quota",
            "overquota",
            "over the quota",
            "quota exceeded",
            "quota violation",
            "exceeded storage",
            "exceeded quota",
            "exceeds quota",
            "user has exceeded",
            "insufficient disk space",
            "not enough disk space",
            "not enough space",
            "no space left",
            "too much mail data",
            "too many messages on the server",
            "space has been used up",
            "boite du destinataire pleine",
            "mailbox has exceeded",
            "is over its quota",
            "disk quota",
            "maildir over quota",
            "mailbox over quota",
        ],
    ),
    (
        Reason::MesgTooBig,
        &[
            "message too large",
            "message is too large",
            "message too big",
            "message is too big",
            "message size exceeds",
            "message length exceeds",
            "exceeds size limit",
            "exceeds the maximum size",
            "size limit exceeded",
            "message file too big",
            "mail size limit",
            "larger than the current system limit",
            "message exceeded maximum size",
        ],
    ),
    (Reason::ExceedLimit, &["recipient limit", "too many recipients", "message rate limit for this mailbox"]),
    (
        Reason::Suspend,
        &[
            "currently suspended",
            "has been suspended",
            "account suspended",
            "user suspended",
            "is suspended",
            "account disabled",
            "account is disabled",
            "mailbox disabled",
            "mailbox is disabled",
            "has been disabled",
            "is disabled",
            "inactive account",
            "account is inactive",
            "account that you tried to reach is inactive",
            "account that you tried to reach is disabled",
            "deactivated mailbox",
            "mailbox is frozen",
            "temporarily inactive",
            "account is locked",
            "is unavailable: user is terminated",
            "archived recipient",
            "boite du destinataire archivee",
        ],
    ),
    (
        Reason::NoRelaying,
        &[
            "relay access denied",
            "relaying denied",
            "relay not permitted",
            "not permitted to relay",
            "relaying not allowed",
            "unable to relay",
            "relay denied",
            "we do not relay",
            "not allowed to relay",
            "no relaying",
            "relaying is prohibited",
            "domain isn't in my list of allowed rcpthosts",
            "is not a gateway",
        ],
    ),
    (
        Reason::AuthFailure,
        &[
            "spf check failed",
            "spf fail",
            "spf validation",
            "spf record",
            "sender policy framework",
            "dkim check failed",
            "dkim signature",
            "dmarc policy",
            "dmarc check",
            "failed dmarc",
            "dmarc failure",
            "unauthenticated email",
            "authentication failed",
            "sender is not authorized",
            "not authorized to send on behalf",
            "does not designate",
        ],
    ),
    (
        Reason::Filtered,
        &[
            "recipient preferences",
            "user reject",
            "user refuses to receive",
            "refuse to receive",
            "only accepting mail from specific",
            "blocked by the recipient",
            "has restricted",
            "is not accepting any mail",
            "not accepting mail from",
            "message rejected due to user rules",
            "account is protected",
            "bounced address",
        ],
    ),
];

/// Words for what may pass, looked for once the address is known not to be the matter.
const MAY_PASS_AFTER: &[(Reason, &[&str])] = &[
    (
        Reason::RequirePtr,
        &[
            "reverse dns",
            "reverse lookup",
            "no ptr record",
            "ptr record",
            "cannot find your hostname",
            "cannot resolve your address",
            "cannot find your reverse hostname",
            "client host rejected: cannot find your hostname",
            "please set up a valid ptr",
            "does not have a matching",
            "hostname does not match",
            "no reverse",
        ],
    ),
    (
        Reason::NotCompliantRfc,
        &[
            "not compliant with rfc",
            "rfc 5322",
            "rfc5322",
            "rfc 2822",
            "multiple addresses in from",
            "duplicate header",
            "message is not rfc",
            "headers are not rfc",
            "bare lf",
            "bare linefeed",
        ],
    ),
    (
        Reason::BadReputation,
        &[
            "poor reputation",
            "low reputation",
            "bad reputation",
            "sender reputation",
            "ip reputation",
            "domain reputation",
            "reputation of the sending",
        ],
    ),
    (
        Reason::VirusDetected,
        &[
            "virus detected",
            "virus found",
            "contains a virus",
            "infected with",
            "virus infected",
            "malware detected",
            "harmful attachment",
            "dangerous attachment",
        ],
    ),
    (Reason::Rejected, SENDER_REFUSED),
    (
        Reason::SpamDetected,
        &[
            "spam",
            "unsolicited",
            "bulk mail",
            "bulk email",
            "junk mail",
            "content filter",
            "message content rejected",
            "unacceptable content",
            "rejecting mail content",
            "banned content",
            "message filtered",
            "message looks like",
            "uribl",
            "surbl",
            "recurrent pattern detection",
        ],
    ),
    (
        Reason::Speeding,
        &[
            "rate limit",
            "ratelimit",
            "rate-limit",
            "sending too fast",
            "too many messages",
            "too many emails",
            "too many mails",
            "exceeded the rate",
            "throttled",
            "throttling",
            "try again later", // rates and greylisting alike: it will pass, later
            "greylist",
            "graylist",
            "please retry later",
            "temporarily deferred",
            "unusual rate",
        ],
    ),
    (
        Reason::TooManyConn,
        &[
            "too many connections",
            "too many concurrent",
            "too many simultaneous",
            "too many sessions",
            "connection limit",
            "too many smtp sessions",
        ],
    ),
    (
        Reason::Blocked,
        &[
            "blacklist",
            "black list",
            "blocklist",
            "block list",
            "blocked using",
            "blocked by",
            "was blocked",
            "ip blocked",
            "is listed in",
            "is listed at",
            "is listed on",
            "are listed in",
            " rbl",
            "dnsbl",
            "spamhaus",
            "spamcop",
            "barracuda",
            "client host rejected",
            "sender ip address rejected",
            "bad sender ip",
            "your ip",
            "dynamic ip",
            "not currently accepting mail from your",
            "helo command rejected",
            "access denied - invalid helo",
            "refused to talk to me",
            "connection refused",
            "connection dropped",
            "connection reset",
            "not allowed to connect",
            "go away",
            "has been temporarily rate limited",
            "network is on our block list",
            "poor reputation",
        ],
    ),
    (
        Reason::PolicyViolation,
        &[
            "policy",
            "not authorized to send",
            "prohibited by administrator",
            "administrative prohibition",
            "message contains a disallowed",
            "attachment type",
            "executable",
            "not allowed by",
            "rule imposed",
            "rejected by filter",
        ],
    ),
    (
        Reason::SystemFull,
        &[
            "system full",
            "mail system full",
            "disk full",
            "no space on device",
            "insufficient system storage",
            "out of storage",
        ],
    ),
    (Reason::FailedStartTls, &["starttls", "tls is required", "tls required", "must issue a starttls", "requires tls"]),
];

/// The words of a mailbox moved with no forwarding.
const HAS_MOVED: &[&str] =
    &[" has been replaced by ", "has moved", "mailbox has moved", "address has changed", "no longer at this address"];

/// The words of no such user.
const NO_SUCH_USER: &[&str] = &[
    "user unknown",
    "unknown user",
    "unknown recipient",
    "recipient unknown",
    "recipient not found",
    "recipient does not exist",
    "recipient address rejected: access denied",
    "recipient address rejected: invalid user",
    "recipient address rejected: user unknown",
    "recipient address rejected: unknown user",
    "recipient address rejected: undeliverable address",
    "no such user",
    "no such recipient",
    "no such mailbox",
    "no such address",
    "no such person",
    "no mailbox",
    "no mail box",
    "no account by that name",
    "mailbox not found",
    "mailbox does not exist",
    "mailbox unavailable",
    "mailbox is unavailable",
    "mailbox invalid",
    "mailbox not present",
    "mailbox is inactive",
    "unknown mailbox",
    "invalid mailbox",
    "invalid recipient",
    "invalid address",
    "address invalid",
    "address does not exist",
    "address unknown",
    "address not found",
    "addressee unknown",
    "not a valid mailbox",
    "not a valid recipient",
    "not a valid user",
    "not a known user",
    "is not a valid",
    "user not found",
    "user does not exist",
    "user doesn't exist",
    "user not exist",
    "user not known",
    "user not active",
    "user is unknown",
    "unknown e-mail address",
    "unknown email address",
    "unknown local part",
    "unknown local-part",
    "email address does not exist",
    "email address could not be found",
    "account that you tried to reach does not exist",
    "account does not exist",
    "doesn't have a",
    "does not have an account",
    "there is no one at this address",
    "no one by that name",
    "not listed in",
    "not our user",
    "is not an active address",
    "no longer valid",
    "no longer accepts mail",
    "invalid final delivery userid",
    "no valid recipients",
    "and other recipients in the same domain",
    "couldn't be found",
    "could not be found",
    "recipient address rejected.",
    "bad destination mailbox",
    "bad recipient",
    "badrcptto",
    "validrcptto",
    "can't accept user",
    "destination addresses were unknown",
    "recipient rejected",
    "mailbox unavaiable",
    "not found in the directory",
    "address not present in directory",
    "resolver.adr.recipientnotfound",
    "resolver.adr.recipient notfound",
    "does not exist here",
    "utilisateur inconnu",
    "nessun utente",
    "no existe",
    "existiert nicht",
    "unbekannt",
];

/// Words said of the address alone, whatever the command (a directory's answer, a
/// provider's wording for an address it has no account for).
const CERTAINLY_NO_SUCH_USER: &[&str] = &[
    ">: user unknown",
    ">: recipient address rejected.",
    "recipient address rejected: access denied",
    "requested action not taken: mailbox unavailable",
    "unknown user:",
    "because the address couldn't be found",
    "and other recipients in the same domain",
    "no valid recipients for this mm",
    "not listed in domino directory",
    "not listed in public name & address book",
    "the recipient name is not recognized",
    "remote server returned unknown recipient",
    "delivery error: dd this user doesn't have a",
    "adresse destinataire invalide",
    "no mailbox here by that name",
    "invalid final delivery userid",
];

/// The replies with which receivers refuse what their users' filters refuse.
const FILTER_SAYS_UNKNOWN: &[&str] = &["550 : user unknown", "550 <>: user unknown"];

/// The words of no such domain.
const NO_SUCH_DOMAIN: &[&str] = &[
    "the account or domain may not exist",
    "unrouteable address",
    "host unknown",
    "unknown host",
    "host not found",
    "dns lookup failure: host",
    "host or domain name not found",
    "domain not found",
    "domain does not exist",
    "domain is not reachable",
    "no such domain",
    "unknown domain",
    "recipient domain must exist",
    "domain must exist",
    "name or service not known",
    "unrouteable mail domain",
    "unroutable address",
    "mail domain mentioned in email address is unknown",
    "no mx or a record",
    "couldn't find any host named",
    "host name lookup failure",
    "all relevant mx records point to non-existent hosts",
];

/// A domain that takes no mail at all.
const ACCEPTS_NO_MAIL: &[&str] = &[
    "does not accept mail",
    "accepts no mail",
    "null mx",
    "nullmx",
    "mail receiving disabled",
    "no mx record found for domain",
    "indicated no smtp service",
    "no mx found for domain",
    "host/domain does not accept mail",
    "not accepting network messages",
];

/// Our envelope sender refused.
const SENDER_REFUSED: &[&str] = &[
    "sender rejected",
    "sender address rejected",
    "sender verify failed",
    "sender was rejected",
    "sender is not allowed",
    "invalid sender",
    "sender domain",
    "domain of sender address",
    "bogus mail from",
    "null sender",
    "empty envelope sender",
    "returned mail not accepted",
    "batv",
    "not allowed to post",
    "not a member",
    "no third-party dsns",
    "from: domain is invalid",
    "mail from not owned by user",
    "does not exist e2110",
    "sending this from a different address or alias",
    "unroutable sender",
    "envelope blocked",
];

/// A network's or DNS's failure, which a X.4.4 or X.1.2 status does not make a domain unknown.
const NETWORK_ERROR: &[&str] = &[
    "name service error",
    "dns lookup",
    "dns error",
    "dns failure",
    "network is unreachable",
    "no route to host",
    "mail loop",
    "loops back to myself",
    "routing loop",
    "too many hops",
    "hop count exceeded",
    "malformed or unexpected name server reply",
    "temporary lookup failure",
    "could not connect",
    "unable to connect",
    "connection refused",
    "lost connection",
    "connection closed",
];

/// The rest, looked for once the status said nothing more.
const OTHER: &[(Reason, &[&str])] = &[
    (
        Reason::Expired,
        &[
            "retry time",
            "retry timeout exceeded",
            "delivery time expired",
            "message expired",
            "has been delayed",
            "could not be delivered within",
            "not been delivered for",
            "giving up",
            "gave up",
            "queue too long",
            "too long in queue",
            "deferred for",
            "timeout",
            "timed out",
            "time out",
            "expired",
            "will continue trying",
            "will be retried",
            "retry until",
            "still trying",
        ],
    ),
    (Reason::NetworkError, NETWORK_ERROR),
    (
        Reason::SystemError,
        &[
            "system error",
            "internal error",
            "server error",
            "local error",
            "system not",
            "temporary failure",
            "temporarily unavailable",
            "service unavailable",
            "service not available",
            "resources",
            "out of memory",
            "i/o error",
            "mail system problem",
            "problem with the recipient's mail server",
            "unable to deliver",
        ],
    ),
    (
        Reason::MailerError,
        &["procmail", "mailer error", "x-unix", "pipe to", "command died", "exited with", "local delivery failed"],
    ),
    (
        Reason::SyntaxError,
        &[
            "syntax error",
            "command unrecognized",
            "bad command",
            "unrecognized command",
            "malformed address",
            "malformed recipient",
            "incorrectly constructed",
        ],
    ),
    (
        Reason::ContentError,
        &["header error", "illegal header", "invalid header", "message content", "8-bit", "encoding"],
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(status: Option<&str>, command: Option<Command>, diagnostic: &str) -> Reason {
        find(&Fact { status, command, diagnostic, ..Fact::default() })
    }

    #[test]
    fn user_unknown_is_the_address_only_where_said_to_the_address() {
        let words = "550 User unknown";
        assert_eq!(reason(Some("5.1.1"), None, words), Reason::UserUnknown);
        assert_eq!(reason(Some("5.0.0"), Some(Command::Rcpt), words), Reason::UserUnknown);
        assert_eq!(reason(Some("5.0.0"), Some(Command::Data), words), Reason::Filtered);
        assert_eq!(reason(Some("5.0.0"), None, words), Reason::Filtered, "nobody can tell when");
        assert_eq!(reason(Some("5.1.1"), None, "552 5.1.1 mailbox full"), Reason::MailboxFull);
        assert_eq!(reason(Some("5.2.2"), Some(Command::Rcpt), "user unknown"), Reason::MailboxFull);
        assert_eq!(reason(Some("5.7.1"), None, "550 5.7.1 IP address blacklisted"), Reason::Blocked);
        assert_eq!(reason(Some("5.4.4"), None, "no such domain"), Reason::HostUnknown);
        assert_eq!(reason(Some("5.1.10"), None, ""), Reason::NotAccept);
        assert_eq!(reason(None, None, ""), Reason::Undefined);
        assert_eq!(reason(Some("5.0.0"), None, "554 transaction failed"), Reason::OnHold);
        assert!(Reason::UserUnknown.is_the_address() && !Reason::Filtered.is_the_address());
    }

    #[test]
    fn the_command_is_the_last_a_report_names() {
        assert_eq!(Command::named_in("said: 550 no (in reply to RCPT TO command)"), Some(Command::Rcpt));
        assert_eq!(
            Command::named_in(">>> RCPT To:<a@b>\n<<< 250 ok\n>>> DATA\n<<< 550 User unknown"),
            Some(Command::Data)
        );
        assert_eq!(Command::named_in("550 user unknown"), None);
    }
}
