//! Times as people read them in an email: "in 24 hours", "3 December, 15:24 UTC", in the
//! email's language. English, German and Spanish are built in (their plural rule, one for
//! exactly 1 and other for the rest, is CLDR's for whole numbers); any other language gets a
//! form every reader can parse ("2026-12-03 15:24 UTC", "24 h").

use chrono::{DateTime, Datelike, Timelike, Utc};

const EN_MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const DE_MONTHS: [&str; 12] = [
    "Januar",
    "Februar",
    "März",
    "April",
    "Mai",
    "Juni",
    "Juli",
    "August",
    "September",
    "Oktober",
    "November",
    "Dezember",
];
const ES_MONTHS: [&str; 12] = [
    "enero",
    "febrero",
    "marzo",
    "abril",
    "mayo",
    "junio",
    "julio",
    "agosto",
    "septiembre",
    "octubre",
    "noviembre",
    "diciembre",
];

/// The language subtag of a tag: `de` of `de-AT`.
fn language(locale: &str) -> &str {
    locale.split('-').next().unwrap_or_default()
}

/// A moment, in UTC: "3 December, 15:24 UTC" (en), "3. Dezember, 15:24 UTC" (de),
/// "3 de diciembre, 15:24 UTC" (es).
pub fn datetime(at: DateTime<Utc>, locale: &str) -> String {
    let (day, month, time) = (at.day(), at.month0() as usize, format!("{:02}:{:02} UTC", at.hour(), at.minute()));
    match language(locale) {
        "en" => format!("{day} {}, {time}", EN_MONTHS[month]),
        "de" => format!("{day}. {}, {time}", DE_MONTHS[month]),
        "es" => format!("{day} de {}, {time}", ES_MONTHS[month]),
        _ => format!("{}-{:02}-{day:02} {time}", at.year(), month + 1),
    }
}

/// How long `seconds` is, rounded to whole days (from two days up), hours (from one) or
/// minutes: "24 hours", "1 Stunde", "7 días".
pub fn span(seconds: i64, locale: &str) -> String {
    let rounded = |unit: i64| (seconds + unit / 2) / unit;
    let (count, unit) = match seconds {
        s if s >= 2 * 86_400 - 1_800 => (rounded(86_400), Unit::Day),
        s if s >= 3_600 - 30 => (rounded(3_600), Unit::Hour),
        _ => (rounded(60).max(1), Unit::Minute),
    };
    let one = count == 1;
    let word = match (language(locale), unit) {
        ("en", Unit::Day) => {
            if one {
                "day"
            } else {
                "days"
            }
        }
        ("en", Unit::Hour) => {
            if one {
                "hour"
            } else {
                "hours"
            }
        }
        ("en", Unit::Minute) => {
            if one {
                "minute"
            } else {
                "minutes"
            }
        }
        ("de", Unit::Day) => {
            if one {
                "Tag"
            } else {
                "Tage"
            }
        }
        ("de", Unit::Hour) => {
            if one {
                "Stunde"
            } else {
                "Stunden"
            }
        }
        ("de", Unit::Minute) => {
            if one {
                "Minute"
            } else {
                "Minuten"
            }
        }
        ("es", Unit::Day) => {
            if one {
                "día"
            } else {
                "días"
            }
        }
        ("es", Unit::Hour) => {
            if one {
                "hora"
            } else {
                "horas"
            }
        }
        ("es", Unit::Minute) => {
            if one {
                "minuto"
            } else {
                "minutos"
            }
        }
        (_, Unit::Day) => "d",
        (_, Unit::Hour) => "h",
        (_, Unit::Minute) => "min",
    };
    format!("{count} {word}")
}

#[derive(Clone, Copy)]
enum Unit {
    Day,
    Hour,
    Minute,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moments_read_as_each_language_writes_them() {
        let at = DateTime::parse_from_rfc3339("2026-12-02T22:19:41Z").unwrap().with_timezone(&Utc);
        assert_eq!(datetime(at, "en"), "2 December, 22:19 UTC");
        assert_eq!(datetime(at, "en-GB"), "2 December, 22:19 UTC");
        assert_eq!(datetime(at, "de"), "2. Dezember, 22:19 UTC");
        assert_eq!(datetime(at, "es"), "2 de diciembre, 22:19 UTC");
        assert_eq!(datetime(at, "pl"), "2026-12-02 22:19 UTC");
    }

    #[test]
    fn spans_round_to_their_unit_and_take_the_plural_form() {
        assert_eq!(span(86_400 - 3, "en"), "24 hours");
        assert_eq!(span(3_600, "en"), "1 hour");
        assert_eq!(span(3_599, "de"), "1 Stunde");
        assert_eq!(span(7 * 86_400, "de"), "7 Tage");
        assert_eq!(span(2 * 86_400, "es"), "2 días");
        assert_eq!(span(900, "es"), "15 minutos");
        assert_eq!(span(60, "es"), "1 minuto");
        assert_eq!(span(5, "en"), "1 minute");
        assert_eq!(span(86_400, "pl"), "24 h");
        assert_eq!(span(86_400, "de"), "24 Stunden");
    }
}
