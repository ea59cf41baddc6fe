//! The classifier against Sisimai's corpus (`tests/data/sisimai`, 614 real messages from
//! sisimai/set-of-emails with Sisimai's verdicts in `expected.tsv`; BSD-2-Clause, see its
//! README): the confusion table, and how many of Sisimai's hard bounces would suppress (a hard
//! bounce or a complaint suppresses on first receipt) and how many of the rest would.
//!
//! The targets (issue 35): at least 90% of messages get Sisimai's class, at least 90% of those
//! Sisimai calls hard suppress, none it calls soft suppresses on first receipt, and nothing that
//! is not a bounce suppresses. The messages where we think Sisimai is wrong are listed in
//! [`ALLOWED`], each with why (at most 3% of the corpus), and left out of the targets; the
//! floors keep the classifier where it stands, so that it never slips back.

use std::collections::BTreeMap;
use verimail_mail::bounce::classify::{Class, classify};

/// Sisimai's class of a message, as `expected.tsv` names it, in our terms.
fn ours(expected: &str) -> &'static str {
    match expected {
        "hard" => "hard",
        "soft" => "soft",
        "complaint" => "complaint",
        "auto_reply" => "auto_reply",
        "not_bounce" => "not_bounce",
        other => panic!("a class expected.tsv does not use: {other}"),
    }
}

/// Whether our class is Sisimai's (a delivery report and an unrecognized message are both
/// "not a bounce" in expected.tsv).
fn agrees(expected: &str, class: Class) -> bool {
    match expected {
        "not_bounce" => matches!(class, Class::Delivered | Class::Unrecognized),
        _ => class.as_str() == expected,
    }
}

fn suppresses(class: Class) -> bool {
    matches!(class, Class::Hard | Class::Complaint)
}

#[test]
fn sisimais_corpus_is_classified_as_sisimai_does() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/sisimai");
    let table = std::fs::read_to_string(dir.join("expected.tsv")).expect("expected.tsv");
    let mut confusion: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    let (mut total, mut agreed) = (0, 0);
    let (mut hard, mut hard_suppressed, mut soft_suppressed, mut other_suppressed) = (0, 0, 0, 0);
    let mut reasons_agreed = 0;
    for line in table.lines().skip(1) {
        let fields: Vec<&str> = line.split('\t').collect();
        let (file, expected) = (fields[0], ours(fields[1]));
        if ALLOWED.iter().any(|(allowed, _)| *allowed == file) {
            let verdict = classify(&std::fs::read(dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}")));
            println!("allowed: {file}: Sisimai {expected}, ours {}", verdict.class.as_str());
            continue;
        }
        let raw = std::fs::read(dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        let verdict = classify(&raw);
        let class = verdict.class;
        if std::env::var_os("SISIMAI_SHOW").is_some() && expected != class.as_str() {
            let reason = verdict.reason.map_or("-", |r| r.as_str());
            println!(
                "MISS {file} [{} {}] {expected}->{} {reason} {:?} {:?}",
                fields[3],
                fields[2],
                class.as_str(),
                verdict.status,
                verdict.diagnostic
            );
        }
        reasons_agreed += usize::from(verdict.reason.is_some_and(|r| r.as_str() == fields[3]));
        *confusion.entry((expected, class.as_str())).or_default() += 1;
        total += 1;
        agreed += usize::from(agrees(expected, class));
        match expected {
            "hard" => {
                hard += 1;
                hard_suppressed += usize::from(suppresses(class));
            }
            "soft" => soft_suppressed += usize::from(suppresses(class)),
            "complaint" => {}
            _ => other_suppressed += usize::from(suppresses(class)),
        }
    }
    assert_eq!(total + ALLOWED.len(), 614, "the corpus's messages");
    assert!(ALLOWED.len() * 100 <= 614 * 3, "at most 3% of the corpus is allowed to differ");
    println!(
        "Sisimai's class (rows) against ours (columns), {total} messages ({} allowed to differ left out):",
        ALLOWED.len()
    );
    let columns = ["hard", "soft", "complaint", "auto_reply", "delivered", "unrecognized"];
    println!("| | {} |", columns.join(" | "));
    for row in ["hard", "soft", "complaint", "auto_reply", "not_bounce"] {
        let cells: Vec<String> =
            columns.iter().map(|column| confusion.get(&(row, *column)).copied().unwrap_or(0).to_string()).collect();
        println!("| {row} | {} |", cells.join(" | "));
    }
    let percent = |part: usize, whole: usize| 100.0 * part as f64 / whole as f64;
    println!(
        "class as Sisimai's: {agreed} of {total} ({:.1}%); Sisimai's hard that suppress: {hard_suppressed} of {hard} \
         ({:.1}%); soft that suppress on first receipt: {soft_suppressed}; not bounces that suppress: {other_suppressed}",
        percent(agreed, total),
        percent(hard_suppressed, hard)
    );
    println!("reason as Sisimai's: {reasons_agreed} of {total} ({:.1}%)", percent(reasons_agreed, total));
    // The targets.
    assert!(agreed * 10 >= total * 9, "{agreed} of {total} classes agree: under 90%");
    assert!(hard_suppressed * 10 >= hard * 9, "{hard_suppressed} of {hard} hard bounces suppress: under 90%");
    assert_eq!(soft_suppressed, 0, "a soft bounce would suppress on first receipt");
    assert_eq!(other_suppressed, 0, "something that is not a bounce would suppress");
    // Floors: where the classifier stands today (see the module's comment).
    assert!(agreed >= FLOOR_AGREED, "{agreed} classes agree, fewer than {FLOOR_AGREED}");
    assert!(hard_suppressed >= FLOOR_HARD_SUPPRESSED, "{hard_suppressed} hard bounces suppress");
}

const FLOOR_AGREED: usize = 597;
const FLOOR_HARD_SUPPRESSED: usize = 174;

/// Messages where we think Sisimai's verdict is wrong for us, and why.
const ALLOWED: &[(&str, &str)] = &[
    (
        "lhost-postfix-05.eml",
        "450 4.1.1 User unknown in virtual alias table: a 4xx reply is temporary by SMTP's definition \
         (RFC 5321 4.2.1), the server asks to be tried again, so it is soft; Sisimai calls every userunknown hard",
    ),
    (
        "lhost-opensmtpd-12.eml",
        "a delay notice (Action: delayed, \"only a temporary failure report\", kept in the queue 7 days) about \
         a domain with no MX: nothing has failed yet, so it is soft",
    ),
    (
        "rhost-aol-06.eml",
        "\"Name service error ... Malformed or unexpected name server reply\" is a resolver's failure, which may \
         pass; Sisimai calls the same words networkerror (soft) in lhost-postfix-17 and notaccept (hard) here",
    ),
    (
        "lhost-v5sendmail-05.eml",
        "several recipients: Sisimai's row is the first, refused at DATA (blocked); the same notice reports \
         mikeneko@example.co.jp refused at RCPT TO as User unknown, and a report counts as its hardest recipient",
    ),
    (
        "lhost-v5sendmail-07.eml",
        "several recipients: Sisimai's row is the first, refused at MAIL FROM (blocked); the same notice reports \
         hachiware@example.edu refused at RCPT TO as User unknown, and a report counts as its hardest recipient",
    ),
];
