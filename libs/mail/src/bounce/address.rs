//! Per-delivery bounce addresses (VERP): each message's envelope sender names its delivery
//! and carries a keyed MAC of it, so a bounce that comes back says which delivery failed, and
//! only bounces to addresses we issued count: a forged one cannot suppress someone's address.

use blake2::digest::{KeyInit, Mac};
use secrecy::{ExposeSecret, SecretBox};
use verimail_server::config::{ConfigError, Vars};

/// `BOUNCE_ADDRESS_FORMAT` when it is not set.
pub const DEFAULT_FORMAT: &str = "bounce+{id}.{tag}";
/// A delivery id in an address: its UUID's 32 hex digits, without hyphens.
const ID_LEN: usize = 32;
/// The tag: 64 bits of BLAKE2b MAC, in hex.
const TAG_LEN: usize = 16;

type TagMac = blake2::Blake2bMac<blake2::digest::consts::U8>;

/// One piece of a format: text, or where the id or the tag goes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Id,
    Tag,
}

/// How bounce addresses are made and read: `BOUNCE_ADDRESS_FORMAT`'s local part at
/// `BOUNCE_DOMAIN`, tagged with a key derived from `DELIVERY_HASH_KEY`.
#[derive(Clone, Debug)]
pub struct BounceAddresses {
    pieces: Vec<Piece>,
    pub domain: String,
    key: std::sync::Arc<SecretBox<[u8; 32]>>,
}

/// Why a recipient is not one of our bounce addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotOurs {
    /// Another domain, or not an address.
    Domain,
    /// Our domain, but not the format's shape.
    Shape,
    /// The shape, but the tag is not the MAC of the id: forged, or from another key.
    Tag,
}

impl BounceAddresses {
    /// `BOUNCE_DOMAIN` (none: no bounce addresses; the envelope sender is MAIL_FROM's) and
    /// `BOUNCE_ADDRESS_FORMAT`. `secret` keys the tag (the service's `DELIVERY_HASH_KEY`).
    pub fn from_vars(vars: &Vars, secret: &[u8; 32]) -> Result<Option<BounceAddresses>, ConfigError> {
        let format = vars.string("BOUNCE_ADDRESS_FORMAT", DEFAULT_FORMAT);
        let Some(domain) = vars.var("BOUNCE_DOMAIN") else {
            if vars.var("BOUNCE_ADDRESS_FORMAT").is_some() {
                return Err(ConfigError::new("BOUNCE_DOMAIN", "is needed with BOUNCE_ADDRESS_FORMAT"));
            }
            return Ok(None);
        };
        let domain = domain.to_ascii_lowercase();
        if !crate::sender::is_domain(&domain) || !domain.contains('.') {
            return Err(ConfigError::new("BOUNCE_DOMAIN", format!("{domain:?} is not a domain name")));
        }
        let pieces = parse_format(&format).map_err(|e| ConfigError::new("BOUNCE_ADDRESS_FORMAT", e))?;
        Ok(Some(BounceAddresses {
            pieces,
            domain,
            key: std::sync::Arc::new(SecretBox::new(Box::new(derive_key(secret)))),
        }))
    }

    /// The bounce address of the delivery `id` (a UUID), or `None` for an id that is not one.
    pub fn for_delivery(&self, id: &str) -> Option<lettre::Address> {
        let id = uuid::Uuid::parse_str(id).ok()?.simple().to_string();
        let tag = self.tag(&id);
        let local: String = self
            .pieces
            .iter()
            .map(|piece| match piece {
                Piece::Text(text) => text.as_str(),
                Piece::Id => id.as_str(),
                Piece::Tag => tag.as_str(),
            })
            .collect();
        lettre::Address::new(local, &self.domain).ok()
    }

    /// The delivery id (hyphenated UUID) a recipient names, if it is a bounce address we
    /// issued. Case does not matter: some relays change it.
    pub fn delivery_of(&self, recipient: &str) -> Result<String, NotOurs> {
        let recipient = recipient.trim().trim_start_matches('<').trim_end_matches('>').to_ascii_lowercase();
        let (local, domain) = recipient.rsplit_once('@').ok_or(NotOurs::Domain)?;
        if domain != self.domain {
            return Err(NotOurs::Domain);
        }
        let (mut rest, mut id, mut tag) = (local, None, None);
        for piece in &self.pieces {
            match piece {
                Piece::Text(text) => {
                    rest = rest.strip_prefix(text.to_ascii_lowercase().as_str()).ok_or(NotOurs::Shape)?
                }
                Piece::Id | Piece::Tag => {
                    let len = if *piece == Piece::Id { ID_LEN } else { TAG_LEN };
                    let value =
                        rest.get(..len).filter(|v| v.bytes().all(|b| b.is_ascii_hexdigit())).ok_or(NotOurs::Shape)?;
                    rest = &rest[len..];
                    *(if *piece == Piece::Id { &mut id } else { &mut tag }) = Some(value);
                }
            }
        }
        let (Some(id), Some(tag), "") = (id, tag, rest) else { return Err(NotOurs::Shape) };
        use subtle::ConstantTimeEq as _;
        if !bool::from(self.tag(id).as_bytes().ct_eq(tag.as_bytes())) {
            return Err(NotOurs::Tag);
        }
        uuid::Uuid::parse_str(id).map(|u| u.hyphenated().to_string()).map_err(|_| NotOurs::Shape)
    }

    #[allow(clippy::expect_used, reason = "BLAKE2b takes keys of up to 64 bytes, and ours are 32")]
    fn tag(&self, id: &str) -> String {
        let mut mac = TagMac::new_from_slice(self.key.expose_secret()).expect("a 32-byte key fits BLAKE2b");
        mac.update(id.as_bytes());
        verimail_server::hex(&mac.finalize().into_bytes())
    }
}

/// The tag's own key, so that it and the address hash never share one.
fn derive_key(secret: &[u8; 32]) -> [u8; 32] {
    use blake2::Digest;
    let mut digest = blake2::Blake2b::<blake2::digest::consts::U32>::new();
    digest.update(b"verimail/bounce-tag-key/v1\0");
    digest.update(secret);
    digest.finalize().into()
}

/// `{id}` and `{tag}` once each, between text a local part may hold; the longest address it
/// makes fits the 64 characters of a local part.
fn parse_format(format: &str) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut rest = format;
    while !rest.is_empty() {
        let next = rest.find('{').unwrap_or(rest.len());
        if next > 0 {
            let text = &rest[..next];
            let allowed = |c: char| c.is_ascii_alphanumeric() || "+-_.=".contains(c);
            if !text.chars().all(allowed) {
                return Err(format!("{text:?}: a bounce address holds letters, digits and + - _ . = alone"));
            }
            pieces.push(Piece::Text(text.to_owned()));
            rest = &rest[next..];
            continue;
        }
        let (piece, after) = if let Some(after) = rest.strip_prefix("{id}") {
            (Piece::Id, after)
        } else if let Some(after) = rest.strip_prefix("{tag}") {
            (Piece::Tag, after)
        } else {
            return Err(format!("{format:?}: only {{id}} and {{tag}} may stand in braces"));
        };
        if matches!(pieces.last(), Some(Piece::Id | Piece::Tag)) {
            return Err(format!("{format:?}: {{id}} and {{tag}} need text between them"));
        }
        pieces.push(piece);
        rest = after;
    }
    for placeholder in [Piece::Id, Piece::Tag] {
        if pieces.iter().filter(|p| **p == placeholder).count() != 1 {
            return Err(format!("{format:?} must hold {{id}} and {{tag}} once each"));
        }
    }
    let len: usize = pieces
        .iter()
        .map(|p| match p {
            Piece::Text(text) => text.len(),
            Piece::Id => ID_LEN,
            Piece::Tag => TAG_LEN,
        })
        .sum();
    if len > 64 {
        return Err(format!("{format:?} makes local parts of {len} characters; at most 64 fit"));
    }
    if matches!(pieces.first(), Some(Piece::Text(t)) if t.starts_with('.'))
        || matches!(pieces.last(), Some(Piece::Text(t)) if t.ends_with('.'))
    {
        return Err(format!("{format:?}: a local part neither starts nor ends with a dot"));
    }
    Ok(pieces)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addresses(format: Option<&str>) -> BounceAddresses {
        let mut pairs = vec![("BOUNCE_DOMAIN", "Bounces.Example.com")];
        pairs.extend(format.map(|f| ("BOUNCE_ADDRESS_FORMAT", f)));
        BounceAddresses::from_vars(&Vars::from_pairs(pairs), &[7; 32]).unwrap().unwrap()
    }

    const ID: &str = "01a23add-1fad-7700-92f5-91c2b3a22e3b";

    #[test]
    fn a_delivery_s_address_names_it_and_reads_back_in_any_case() {
        for format in [None, Some("{tag}-{id}"), Some("vrm={id}={tag}=b")] {
            let bounces = addresses(format);
            let address = bounces.for_delivery(ID).unwrap().to_string();
            assert!(address.ends_with("@bounces.example.com") && address.len() <= 64 + 21, "{address}");
            assert_eq!(bounces.delivery_of(&address), Ok(ID.to_owned()), "{address}");
            assert_eq!(bounces.delivery_of(&address.to_ascii_uppercase()), Ok(ID.to_owned()));
            assert_eq!(bounces.delivery_of(&format!("<{address}>")), Ok(ID.to_owned()));
        }
        assert_eq!(addresses(None).for_delivery(ID).unwrap().user().len(), "bounce+".len() + 32 + 1 + 16);
    }

    #[test]
    fn forged_or_foreign_addresses_are_not_ours() {
        let bounces = addresses(None);
        let good = bounces.for_delivery(ID).unwrap().to_string();
        let (local, _) = good.split_once('@').unwrap();
        let other_id = uuid::Uuid::now_v7().simple().to_string();
        let tag = &local[local.len() - 16..];
        // Another delivery's id under this one's tag: the tag does not fit.
        assert_eq!(bounces.delivery_of(&format!("bounce+{other_id}.{tag}@bounces.example.com")), Err(NotOurs::Tag));
        let flipped = format!(
            "{}{}@bounces.example.com",
            &local[..local.len() - 1],
            if local.ends_with('0') { '1' } else { '0' }
        );
        assert_eq!(bounces.delivery_of(&flipped), Err(NotOurs::Tag));
        assert_eq!(bounces.delivery_of(&format!("{local}@example.com")), Err(NotOurs::Domain));
        assert_eq!(bounces.delivery_of("postmaster@bounces.example.com"), Err(NotOurs::Shape));
        assert_eq!(bounces.delivery_of(&format!("{local}x@bounces.example.com")), Err(NotOurs::Shape));
        assert_eq!(bounces.delivery_of("no-at-sign"), Err(NotOurs::Domain));
        // Another key (another deployment, or a guess) makes other tags.
        let other = BounceAddresses::from_vars(&Vars::from_pairs([("BOUNCE_DOMAIN", "bounces.example.com")]), &[8; 32])
            .unwrap()
            .unwrap();
        assert_eq!(other.delivery_of(&good), Err(NotOurs::Tag));
        assert!(bounces.for_delivery("not-a-uuid").is_none());
    }

    #[test]
    fn formats_and_domains_that_cannot_work_are_refused() {
        for format in
            ["bounce+{id}", "{id}{tag}", "b {id}.{tag}", "{id}.{tag}.{id}", "{id}.{tag}.{what}", ".{id}.{tag}"]
        {
            let vars = Vars::from_pairs([("BOUNCE_DOMAIN", "bounces.example.com"), ("BOUNCE_ADDRESS_FORMAT", format)]);
            let refused = BounceAddresses::from_vars(&vars, &[7; 32]).unwrap_err().to_string();
            assert!(refused.contains("BOUNCE_ADDRESS_FORMAT"), "{format}: {refused}");
        }
        let long = format!("{}{{id}}.{{tag}}", "x".repeat(20));
        let vars =
            Vars::from_pairs([("BOUNCE_DOMAIN", "bounces.example.com"), ("BOUNCE_ADDRESS_FORMAT", long.as_str())]);
        assert!(BounceAddresses::from_vars(&vars, &[7; 32]).unwrap_err().to_string().contains("64"));
        let vars = Vars::from_pairs([("BOUNCE_DOMAIN", "not a domain")]);
        assert!(BounceAddresses::from_vars(&vars, &[7; 32]).unwrap_err().to_string().contains("BOUNCE_DOMAIN"));
        let vars = Vars::from_pairs([("BOUNCE_ADDRESS_FORMAT", DEFAULT_FORMAT)]);
        assert!(BounceAddresses::from_vars(&vars, &[7; 32]).unwrap_err().to_string().contains("BOUNCE_DOMAIN"));
        assert!(BounceAddresses::from_vars(&Vars::from_pairs::<&str, &str>([]), &[7; 32]).unwrap().is_none());
    }
}
