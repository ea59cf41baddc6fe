//! Language tags (BCP 47): what a request may name, in canonical form, and the chain of
//! languages to try for it (RFC 4647 lookup: `de-CH-1996`, `de-CH`, `de`, then a default).

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

/// The tags to try for `tag`, most specific first, ending with `default`: each drops the last
/// subtag of the one before (`zh-Hant-TW`, `zh-Hant`, `zh`, `en`). An empty `tag` gives
/// `default` alone.
pub fn chain(tag: &str, default: &str) -> Vec<String> {
    let mut tags = Vec::new();
    let mut rest = tag.trim();
    while !rest.is_empty() {
        tags.push(rest.to_owned());
        rest = rest.rsplit_once('-').map_or("", |(head, _)| head);
    }
    if !tags.iter().any(|t| t == default) {
        tags.push(default.to_owned());
    }
    tags
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
    fn the_chain_drops_one_subtag_at_a_time_and_ends_with_the_default() {
        assert_eq!(chain("pt-BR", "en"), ["pt-BR", "pt", "en"]);
        assert_eq!(chain("zh-Hant-TW", "en"), ["zh-Hant-TW", "zh-Hant", "zh", "en"]);
        assert_eq!(chain("en-GB", "en"), ["en-GB", "en"]);
        assert_eq!(chain("", "de"), ["de"]);
    }
}
