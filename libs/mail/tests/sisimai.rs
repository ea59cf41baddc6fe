//! The classifier against Sisimai's corpus (`tests/data/sisimai`, 614 real messages from
//! sisimai/set-of-emails with Sisimai's verdicts in `expected.tsv`; BSD-2-Clause, see its
//! README): the confusion table, and how many of Sisimai's hard bounces would suppress (a hard
//! bounce or a complaint suppresses on first receipt) and how many of the rest would.
//!
//! The floors below are where the classifier stands, so that it never slips back; issue 35
//! raises them to its targets (90% of classes, 90% of hard bounces suppress, no soft one and
//! nothing that is not a bounce suppresses).

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

/// What we call a message, in expected.tsv's terms (a delivery report and an unrecognized
/// message are both "not a bounce" there).
fn called(class: Class) -> &'static str {
    match class {
        Class::Hard => "hard",
        Class::Soft => "soft",
        Class::Complaint => "complaint",
        Class::AutoReply => "auto_reply",
        Class::Delivered => "delivered",
        Class::Unrecognized => "unrecognized",
    }
}

fn agrees(expected: &str, class: Class) -> bool {
    match expected {
        "not_bounce" => matches!(class, Class::Delivered | Class::Unrecognized),
        _ => called(class) == expected,
    }
}

fn suppresses(class: Class) -> bool {
    matches!(class, Class::Hard | Class::Complaint)
}

#[test]
fn sisimais_corpus_is_classified_at_least_as_well_as_before() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/sisimai");
    let table = std::fs::read_to_string(dir.join("expected.tsv")).expect("expected.tsv");
    let mut confusion: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    let (mut total, mut agreed) = (0, 0);
    let (mut hard, mut hard_suppressed, mut soft_suppressed, mut other_suppressed) = (0, 0, 0, 0);
    for line in table.lines().skip(1) {
        let fields: Vec<&str> = line.split('\t').collect();
        let (file, expected) = (fields[0], ours(fields[1]));
        let raw = std::fs::read(dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        let verdict = classify(&raw);
        let class = verdict.class;
        if std::env::var_os("SISIMAI_SHOW").is_some() && expected != called(class) {
            println!("MISS {file} {expected}->{} {:?} {:?}", called(class), verdict.status, verdict.diagnostic);
        }
        *confusion.entry((expected, called(class))).or_default() += 1;
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
    assert_eq!(total, 614, "the corpus's messages");
    println!("Sisimai's class (rows) against ours (columns), {total} messages:");
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
    // Floors: where the classifier stands today (see the module's comment).
    assert!(agreed >= FLOOR_AGREED, "{agreed} classes agree, fewer than {FLOOR_AGREED}");
    assert!(hard_suppressed >= FLOOR_HARD_SUPPRESSED, "{hard_suppressed} hard bounces suppress");
    assert!(soft_suppressed <= CEILING_SOFT_SUPPRESSED, "{soft_suppressed} soft bounces suppress");
    assert_eq!(other_suppressed, 0, "something that is not a bounce would suppress");
}

const FLOOR_AGREED: usize = 467;
const FLOOR_HARD_SUPPRESSED: usize = 143;
const CEILING_SOFT_SUPPRESSED: usize = 35;
