//! The keyed hash that names an email address without showing it: what outlives a deleted
//! user in their deliveries, and what the suppression list and the bounces know an address by.

use secrecy::{ExposeSecret, SecretBox};

/// How an address's keyed hash begins (what follows is its hex): in place of a deleted user's
/// address in their deliveries, and as the suppression list's and the bounces' key. The word
/// is from when only erasure hashed addresses; stored values keep it.
pub const HASHED: &str = "erased:";

/// The key of an address's hash (`DELIVERY_HASH_KEY`): operators can still tell whether mail
/// went to an address they are asked about (ListDeliveries filters by it), nobody can read the
/// address back.
#[derive(Clone, Debug)]
pub struct AddressKey(std::sync::Arc<SecretBox<[u8; 32]>>);

type AddressMac = blake2::Blake2bMac<blake2::digest::consts::U32>;

impl AddressKey {
    /// From a secret of any length (at least 32 characters, checked by the configuration).
    pub fn from_secret(secret: &str) -> AddressKey {
        use blake2::Digest;
        let mut digest = blake2::Blake2b::<blake2::digest::consts::U32>::new();
        digest.update(b"verimail/delivery-address-key/v1\0");
        digest.update(secret.as_bytes());
        AddressKey(std::sync::Arc::new(SecretBox::new(Box::new(digest.finalize().into()))))
    }

    /// The key, for the keys derived from it (the bounce address tags').
    pub fn secret(&self) -> &[u8; 32] {
        self.0.expose_secret()
    }

    /// A key of this process alone (development without `DELIVERY_HASH_KEY`).
    pub fn random() -> AddressKey {
        AddressKey(std::sync::Arc::new(SecretBox::new(Box::new(rand::random()))))
    }

    /// [`HASHED`] and the hex of the address's keyed BLAKE2b, as given (callers lower-case it
    /// where case must not matter).
    #[allow(clippy::expect_used, reason = "BLAKE2b takes keys of up to 64 bytes, and ours are 32")]
    pub fn hash(&self, address: &str) -> String {
        use blake2::digest::{KeyInit, Mac};
        let mut mac = AddressMac::new_from_slice(self.0.expose_secret()).expect("a 32-byte key fits BLAKE2b");
        mac.update(address.as_bytes());
        let hash = mac.finalize().into_bytes();
        format!("{HASHED}{}", verimail_server::hex(&hash))
    }
}

#[cfg(test)]
mod tests {
    use super::AddressKey;

    #[test]
    fn an_erased_address_is_a_keyed_hash_that_finds_it_again_and_never_shows_it() {
        let key = AddressKey::from_secret("a-secret-of-at-least-32-characters-0123");
        let erased = key.hash("ann@example.com");
        assert!(erased.starts_with("erased:") && erased.len() == "erased:".len() + 64, "{erased}");
        assert!(!erased.contains("ann") && !erased.contains("example"), "{erased}");
        assert_eq!(key.hash("ann@example.com"), erased, "the same address, the same hash: findable");
        assert_ne!(key.hash("bob@example.com"), erased);
        let other = AddressKey::from_secret("another-secret-of-at-least-32-characters");
        assert_ne!(other.hash("ann@example.com"), erased, "without the key, no lookup table helps");
    }
}
