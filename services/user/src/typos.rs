//! A likely typo of a major mail provider's domain (`gmial.com`, `hotmial.com`, `yaho.com`),
//! caught where the address is typed: answered as a suggestion, never refused, since the
//! address may be right.

/// Domains people mistype, the ones a suggestion points to.
const MAJOR: &[&str] = &[
    "gmail.com",
    "googlemail.com",
    "yahoo.com",
    "hotmail.com",
    "outlook.com",
    "live.com",
    "icloud.com",
    "aol.com",
    "protonmail.com",
    "proton.me",
    "gmx.de",
    "gmx.net",
    "web.de",
    "yandex.ru",
    "mail.ru",
    "comcast.net",
    "hotmail.co.uk",
    "yahoo.co.uk",
];

/// Real domains that sit one keystroke from a major one: never "corrected".
const ALSO_REAL: &[&str] = &[
    "mail.com",
    "email.com",
    "ymail.com",
    "gmx.com",
    "me.com",
    "msn.com",
    "mac.com",
    "hotmail.fr",
    "hotmail.de",
    "yahoo.fr",
    "yahoo.de",
    "live.de",
    "live.fr",
    "gmx.at",
    "gmx.ch",
    "aim.com",
    "att.net",
];

/// The address with the major provider's domain its domain is a likely typo of; `None` when
/// the domain is one of them, another real one, or not close to any.
pub fn did_you_mean(address: &str) -> Option<String> {
    let (local, domain) = address.rsplit_once('@')?;
    let domain = domain.to_ascii_lowercase();
    if MAJOR.contains(&domain.as_str()) || ALSO_REAL.contains(&domain.as_str()) {
        return None;
    }
    // Transpositions count as one edit; short domains allow one edit, longer ones two.
    let mut close =
        MAJOR.iter().map(|major| (strsim::osa_distance(&domain, major), *major)).filter(|(edits, major)| {
            let allowed = if major.len() >= 10 { 2 } else { 1 };
            *edits <= allowed
        });
    let (edits, best) = close.by_ref().min_by_key(|(edits, _)| *edits)?;
    // Two providers equally close: no guess.
    let tied = MAJOR.iter().filter(|major| **major != best && strsim::osa_distance(&domain, major) == edits).count();
    (tied == 0).then(|| format!("{local}@{best}"))
}

#[cfg(test)]
mod tests {
    use super::did_you_mean;

    #[test]
    fn common_typos_of_major_providers_get_a_suggestion() {
        for (typed, meant) in [
            ("ann@gmial.com", "ann@gmail.com"),
            ("ann@gmai.com", "ann@gmail.com"),
            ("ann@gmail.con", "ann@gmail.com"),
            ("ann@gmail.cmo", "ann@gmail.com"),
            ("ann@hotmial.com", "ann@hotmail.com"),
            ("ann@yaho.com", "ann@yahoo.com"),
            ("ann@outlok.com", "ann@outlook.com"),
            ("ann@iclod.com", "ann@icloud.com"),
            ("ann@protonmial.com", "ann@protonmail.com"),
            ("ann@googlemial.com", "ann@googlemail.com"),
        ] {
            assert_eq!(did_you_mean(typed).as_deref(), Some(meant), "{typed}");
        }
    }

    #[test]
    fn right_addresses_and_other_domains_get_none() {
        for typed in [
            "ann@gmail.com",
            "ann@example.com",
            "ann@mail.com",
            "ann@me.com",
            "ann@ymail.com",
            "ann@company.io",
            "ann@gmx.com",
            "ann@hotmail.fr",
            "no-at-sign",
        ] {
            assert_eq!(did_you_mean(typed), None, "{typed}");
        }
    }
}
