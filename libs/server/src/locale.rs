//! Language tags (BCP 47): what a request may name, in canonical form, and the language to
//! use for it (RFC 4647 lookup: `de-CH-1996`, `de-CH`, `de`, then a default).

use icu_locale_core::LanguageIdentifier;

/// Longest tag taken: RFC 5646 asks implementations to take 35 characters at least.
const MAX_LEN: usize = 35;

/// `raw` as a canonical language tag (`PT-br` → `pt-BR`); `None` for an empty one. Refused: a
/// malformed tag, extensions and private use (`de-u-co-phonebk`, `x-klingon`), a language
/// subtag of more than three letters (`english`), `und`, and anything over 35 characters.
pub fn parse(raw: &str) -> Result<Option<String>, &'static str> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(None);
    }
    const WHAT: &str = "must be a BCP 47 language tag such as de, es or pt-BR";
    if raw.len() > MAX_LEN {
        return Err(WHAT);
    }
    let tag = LanguageIdentifier::try_from_str(raw).map_err(|_| WHAT)?;
    let language = tag.language.as_str();
    if language == "und" || !(2..=3).contains(&language.len()) {
        return Err(WHAT);
    }
    Ok(Some(tag.to_string()))
}

/// The language to use for someone who reads `preferences` (canonical tags, most wanted
/// first): the first tag `has` takes, each preference tried with its last subtag dropped one at
/// a time (RFC 4647 lookup: `zh-Hant-TW`, `zh-Hant`, `zh`), before the next preference;
/// `default` when none is taken.
pub fn lookup<'a>(preferences: impl IntoIterator<Item = &'a str>, default: &str, has: impl Fn(&str) -> bool) -> String {
    for preference in preferences {
        let mut rest = preference.trim();
        while !rest.is_empty() {
            if has(rest) {
                return rest.to_owned();
            }
            rest = rest.rsplit_once('-').map_or("", |(head, _)| head);
        }
    }
    default.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_parsed_into_canonical_form() {
        assert_eq!(parse("de"), Ok(Some("de".into())));
        assert_eq!(parse(" PT-br "), Ok(Some("pt-BR".into())));
        assert_eq!(parse("zh-hant-tw"), Ok(Some("zh-Hant-TW".into())));
        assert_eq!(parse("es-419"), Ok(Some("es-419".into())));
        assert_eq!(parse(""), Ok(None));
        for bad in [
            "english",
            "x-klingon",
            "de_DE",
            "de-",
            "-de",
            "und",
            "1234",
            "de-u-co-phonebk",
            "d",
            "<b>",
            &"de-".repeat(20),
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn lookup_drops_one_subtag_at_a_time_then_tries_the_next_preference() {
        let have = |tags: &'static [&'static str]| move |tag: &str| tags.contains(&tag);
        assert_eq!(lookup(["pt-BR"], "en", have(&["en", "pt"])), "pt");
        assert_eq!(lookup(["zh-Hant-TW"], "en", have(&["en", "zh-Hant"])), "zh-Hant");
        assert_eq!(lookup(["fr-CA", "de-AT", "es"], "en", have(&["en", "de", "es"])), "de");
        assert_eq!(lookup(["pt-BR"], "en", have(&["en", "de"])), "en");
        assert_eq!(lookup([""], "de", have(&["de"])), "de");
        assert_eq!(lookup([], "de", have(&[])), "de");
    }
}
