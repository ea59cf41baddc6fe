//! DKIM signing (RFC 6376; Ed25519 by RFC 8463): every message email-service sends is signed
//! for `DKIM_DOMAIN` with the key in `DKIM_PRIVATE_KEY_FILE`, published under `DKIM_SELECTOR`.
//! lettre signs; this module reads and checks the key, and says what to publish in DNS.

use crate::sender::is_domain;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use lettre::Message;
use lettre::message::dkim::{
    DkimCanonicalization, DkimCanonicalizationType, DkimConfig, DkimSigningAlgorithm, DkimSigningKey,
};
use lettre::message::header::HeaderName;
use secrecy::{ExposeSecret, SecretBox};
use verimail_server::config::{ConfigError, Vars};
use zeroize::Zeroize;

/// The headers signed: those a reader sees or a client acts on, and MIME-Version and
/// Content-Type (what Gmail signs, too). Each is listed twice, once more than it can occur
/// (a lettre message holds each header once): RFC 6376 §5.4.2's over-signing, as OpenDKIM's
/// `OversignHeaders` does. A verifier hashes the lowest instances a name is listed for and
/// an empty string for each listing beyond those there, so a second `Subject:`, `From:` or a
/// `Reply-To:` put above ours, or any header of this list added where we sent none, breaks the
/// signature. Relays that pass mail on unchanged (every common MTA) leave these be; a mailing
/// list that rewrites the subject breaks the signature, as it should. (Our vendored lettre
/// finds a multipart message's Content-Type in its MIME part: see vendor/README.md.)
pub const SIGNED_HEADERS: [&str; 14] = [
    "From",
    "Reply-To",
    "Sender",
    "To",
    "Cc",
    "Subject",
    "Date",
    "Message-ID",
    "In-Reply-To",
    "References",
    "MIME-Version",
    "Content-Type",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
];

/// The shortest RSA key signed with: RFC 8301 makes receivers refuse under 1024 bits and asks
/// signers for 2048; longer than 4096 does not fit a DNS record comfortably.
const RSA_BITS: std::ops::RangeInclusive<usize> = 2048..=4096;

/// A key read from a PEM file, and the public half a DNS record carries.
enum Key {
    Ed25519(ed25519_dalek::SigningKey),
    Rsa(rsa::RsaPrivateKey),
}

/// What signs: lettre's configuration, and the record to publish for it. Its `Debug` shows
/// the record's name, never the key.
#[derive(Debug)]
pub struct Dkim {
    signer: SecretBox<Signer>,
    /// `<selector>._domainkey.<domain>`
    pub record_name: String,
    /// `v=DKIM1; k=…; p=…`
    pub record: String,
}

/// lettre's signing configuration, key and all: a secret, since lettre's own `Debug` prints
/// an RSA key's private exponent.
struct Signer(Option<DkimConfig>);

impl Zeroize for Signer {
    /// Drops the configuration: the RSA and Ed25519 keys in it zero themselves when dropped.
    fn zeroize(&mut self) {
        self.0 = None;
    }
}

impl Dkim {
    /// `DKIM_DOMAIN`, `DKIM_SELECTOR` and `DKIM_PRIVATE_KEY_FILE`: all three, or none (no
    /// signing). `from_domain` (MAIL_FROM's) must be `DKIM_DOMAIN` or below it, or receivers
    /// applying DMARC would not count the signature for the sender.
    pub fn from_vars(vars: &Vars, from_domain: &str) -> Result<Option<Dkim>, ConfigError> {
        let names = ["DKIM_DOMAIN", "DKIM_SELECTOR", "DKIM_PRIVATE_KEY_FILE"];
        let [domain, selector, file] = names.map(|name| vars.var(name));
        let (domain, selector, file) = match (domain, selector, file) {
            (None, None, None) => return Ok(None),
            (Some(domain), Some(selector), Some(file)) => (domain.to_ascii_lowercase(), selector, file),
            given => {
                let set = [given.0.is_some(), given.1.is_some(), given.2.is_some()];
                let missing = names.iter().zip(set).find(|(_, set)| !set).map_or("", |(name, _)| *name);
                return Err(ConfigError::new(missing, "is needed too: DKIM takes a domain, a selector and a key file"));
            }
        };
        if !is_domain(&domain) {
            return Err(ConfigError::new("DKIM_DOMAIN", format!("{domain:?} is not a domain name")));
        }
        if !is_domain(&selector) {
            return Err(ConfigError::new(
                "DKIM_SELECTOR",
                format!("{selector:?} is not a selector (letters, digits, -)"),
            ));
        }
        let from_domain = from_domain.to_ascii_lowercase();
        if from_domain != domain && !from_domain.ends_with(&format!(".{domain}")) {
            return Err(ConfigError::new(
                "DKIM_DOMAIN",
                format!(
                    "{domain} is not MAIL_FROM's domain ({from_domain}) nor a parent of it: receivers applying DMARC would not count the signature"
                ),
            ));
        }
        let key_error = |e: String| ConfigError::new("DKIM_PRIVATE_KEY_FILE", format!("{file}: {e}"));
        let pem = std::fs::read_to_string(&file).map_err(|e| key_error(e.to_string()))?;
        let key = Key::from_pem(&pem).map_err(key_error)?;
        Dkim::new(&domain, &selector, &key).map(Some).map_err(key_error)
    }

    fn new(domain: &str, selector: &str, key: &Key) -> Result<Dkim, String> {
        let (signing_key, record) = key.for_lettre()?;
        let headers =
            SIGNED_HEADERS.iter().chain(&SIGNED_HEADERS).map(|name| HeaderName::new_from_ascii_str(name)).collect();
        let relaxed =
            DkimCanonicalization { header: DkimCanonicalizationType::Relaxed, body: DkimCanonicalizationType::Relaxed };
        Ok(Dkim {
            signer: SecretBox::new(Box::new(Signer(Some(DkimConfig::new(
                selector.to_owned(),
                domain.to_owned(),
                signing_key,
                headers,
                relaxed,
            ))))),
            record_name: format!("{selector}._domainkey.{domain}"),
            record,
        })
    }

    /// Adds the DKIM-Signature header.
    pub fn sign(&self, message: &mut Message) {
        if let Some(config) = &self.signer.expose_secret().0 {
            message.sign(config);
        }
    }

    /// The record as a zone file line, its text split in strings of at most 255 characters
    /// (one TXT string's limit; an RSA key's record is longer).
    pub fn zone_line(&self) -> String {
        let strings: Vec<String> =
            self.record.as_bytes().chunks(255).map(|chunk| format!("\"{}\"", String::from_utf8_lossy(chunk))).collect();
        format!("{}. IN TXT {}", self.record_name, strings.join(" "))
    }
}

impl Key {
    /// A PKCS#8 (`BEGIN PRIVATE KEY`, what `openssl genpkey` writes) Ed25519 or RSA key, or a
    /// PKCS#1 (`BEGIN RSA PRIVATE KEY`) RSA key; anything else is named for what it is.
    fn from_pem(pem: &str) -> Result<Key, String> {
        use ed25519_dalek::pkcs8::DecodePrivateKey as _;
        use rsa::pkcs1::DecodeRsaPrivateKey as _;
        let label = pem.lines().map(str::trim).find(|line| line.starts_with("-----BEGIN ")).unwrap_or("");
        let key = match label {
            "-----BEGIN PRIVATE KEY-----" => match ed25519_dalek::SigningKey::from_pkcs8_pem(pem) {
                Ok(key) => Key::Ed25519(key),
                Err(_) => Key::Rsa(rsa::RsaPrivateKey::from_pkcs8_pem(pem).map_err(|_| {
                    "a PKCS#8 key that is neither Ed25519 nor RSA (DKIM signs with those two alone)".to_owned()
                })?),
            },
            "-----BEGIN RSA PRIVATE KEY-----" => {
                Key::Rsa(rsa::RsaPrivateKey::from_pkcs1_pem(pem).map_err(|e| format!("not a readable RSA key: {e}"))?)
            }
            "-----BEGIN ENCRYPTED PRIVATE KEY-----" => {
                return Err(
                    "the key is encrypted: give the file without a passphrase (readable by this service alone)".into(),
                );
            }
            "-----BEGIN PUBLIC KEY-----" | "-----BEGIN CERTIFICATE-----" | "-----BEGIN RSA PUBLIC KEY-----" => {
                return Err("is a public key or certificate: DKIM signs with the private key".into());
            }
            "" => return Err("is not a PEM file (no -----BEGIN line)".into()),
            other => return Err(format!("{other} is not a key DKIM signs with (Ed25519 or RSA)")),
        };
        if let Key::Rsa(rsa) = &key {
            use rsa::traits::PublicKeyParts as _;
            rsa.validate().map_err(|e| format!("the RSA key is not consistent: {e}"))?;
            let bits = rsa.size() * 8;
            if !RSA_BITS.contains(&bits) {
                return Err(format!(
                    "an RSA key of {bits} bits: DKIM keys are {} to {} bits (RFC 8301)",
                    RSA_BITS.start(),
                    RSA_BITS.end()
                ));
            }
        }
        Ok(key)
    }

    /// lettre's key (Ed25519 as its 32 bytes in base64, RSA as PKCS#1 PEM) and the record.
    fn for_lettre(&self) -> Result<(DkimSigningKey, String), String> {
        match self {
            Key::Ed25519(key) => {
                let signing = DkimSigningKey::new(&STANDARD.encode(key.to_bytes()), DkimSigningAlgorithm::Ed25519)
                    .map_err(|e| e.to_string())?;
                let public = STANDARD.encode(key.verifying_key().to_bytes());
                Ok((signing, format!("v=DKIM1; k=ed25519; p={public}")))
            }
            Key::Rsa(key) => {
                use rsa::pkcs1::EncodeRsaPrivateKey as _;
                use rsa::pkcs8::EncodePublicKey as _;
                let pem = key.to_pkcs1_pem(rsa::pkcs8::LineEnding::LF).map_err(|e| e.to_string())?;
                let signing = DkimSigningKey::new(&pem, DkimSigningAlgorithm::Rsa).map_err(|e| e.to_string())?;
                // The SubjectPublicKeyInfo, as RFC 6376 §3.6.1 asks.
                let public = key.to_public_key().to_public_key_der().map_err(|e| e.to_string())?;
                Ok((signing, format!("v=DKIM1; k=rsa; p={}", STANDARD.encode(public.as_bytes()))))
            }
        }
    }
}

/// `email-service --dkim-dns-record`: prints the TXT record for the configured key.
pub fn print_dns_record(vars: &Vars) -> anyhow::Result<()> {
    let from = crate::sender::mail_from(vars)?;
    let dkim = Dkim::from_vars(vars, from.email.domain())?.ok_or_else(|| {
        anyhow::anyhow!("DKIM is not configured: set DKIM_DOMAIN, DKIM_SELECTOR and DKIM_PRIVATE_KEY_FILE")
    })?;
    #[allow(clippy::print_stdout, reason = "the command's output")]
    {
        println!("{}", dkim.zone_line());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_file(name: &str) -> String {
        format!("{}/../../tests/data/dkim/{name}", env!("CARGO_MANIFEST_DIR"))
    }

    fn vars(file: &str) -> Vars {
        Vars::from_pairs([
            ("DKIM_DOMAIN", "example.com".to_owned()),
            ("DKIM_SELECTOR", "mail2026".to_owned()),
            ("DKIM_PRIVATE_KEY_FILE", key_file(file)),
        ])
    }

    #[test]
    fn ed25519_and_rsa_keys_in_either_pem_read_and_give_their_record() {
        for (file, algorithm) in
            [("ed25519.pem", "k=ed25519"), ("rsa2048.pem", "k=rsa"), ("rsa2048-pkcs1.pem", "k=rsa")]
        {
            let dkim = Dkim::from_vars(&vars(file), "mail.example.com").unwrap().expect("configured");
            assert_eq!(dkim.record_name, "mail2026._domainkey.example.com");
            assert!(dkim.record.starts_with(&format!("v=DKIM1; {algorithm}; p=")), "{file}: {}", dkim.record);
            let line = dkim.zone_line();
            assert!(line.starts_with("mail2026._domainkey.example.com. IN TXT \"v=DKIM1;"), "{line}");
            assert!(line.split('"').all(|s| s.len() <= 255), "{line}");
        }
        let pkcs8 = Dkim::from_vars(&vars("rsa2048.pem"), "example.com").unwrap().unwrap();
        let pkcs1 = Dkim::from_vars(&vars("rsa2048-pkcs1.pem"), "example.com").unwrap().unwrap();
        assert_eq!(pkcs8.record, pkcs1.record, "one key, one record");
    }

    #[test]
    fn unreadable_or_unfit_keys_and_partial_settings_are_refused_by_name() {
        let refused = |vars: Vars, from: &str| Dkim::from_vars(&vars, from).unwrap_err().to_string();
        for (file, why) in [
            ("rsa1024.pem", "1024 bits"),
            ("p256.pem", "neither Ed25519 nor RSA"),
            ("ed25519-public.pem", "public key"),
            ("README.md", "not a PEM file"),
            ("missing.pem", "No such file"),
        ] {
            let message = refused(vars(file), "example.com");
            assert!(message.contains("DKIM_PRIVATE_KEY_FILE") && message.contains(why), "{file}: {message}");
        }
        let message = refused(vars("ed25519.pem"), "elsewhere.org");
        assert!(message.contains("DKIM_DOMAIN") && message.contains("elsewhere.org"), "{message}");
        let message = refused(vars("ed25519.pem"), "notexample.com");
        assert!(message.contains("DKIM_DOMAIN"), "a suffix is not a parent: {message}");
        let partial = Vars::from_pairs([("DKIM_DOMAIN", "example.com"), ("DKIM_SELECTOR", "s1")]);
        assert!(refused(partial, "example.com").contains("DKIM_PRIVATE_KEY_FILE"));
        let bad = Vars::from_pairs([
            ("DKIM_DOMAIN", "example.com".to_owned()),
            ("DKIM_SELECTOR", "two words".to_owned()),
            ("DKIM_PRIVATE_KEY_FILE", key_file("ed25519.pem")),
        ]);
        assert!(refused(bad, "example.com").contains("DKIM_SELECTOR"));
        assert!(Dkim::from_vars(&Vars::from_pairs::<&str, &str>([]), "example.com").unwrap().is_none());
    }

    #[test]
    fn a_signed_message_carries_the_signature_over_the_headers_it_names() {
        let dkim = Dkim::from_vars(&vars("ed25519.pem"), "example.com").unwrap().unwrap();
        let mut message = Message::builder()
            .from("Verimail <no-reply@example.com>".parse().unwrap())
            .to("a@example.org".parse().unwrap())
            .subject("Verify your email address")
            .message_id(Some("<evt-1@verimail>".into()))
            .body("hello".to_owned())
            .unwrap();
        dkim.sign(&mut message);
        let raw = message.formatted();
        let parsed = mailparse::parse_mail(&raw).unwrap();
        let header = parsed.headers.iter().find(|h| h.get_key() == "DKIM-Signature").expect("signed").get_value();
        for expected in ["a=ed25519-sha256", "d=example.com", "s=mail2026", "c=relaxed/relaxed"] {
            assert!(header.contains(expected), "{expected} in {header}");
        }
        let listed = SIGNED_HEADERS.map(str::to_ascii_lowercase).join(":");
        assert!(header.replace(['\r', '\n', ' ', '\t'], "").contains(&format!("h={listed}:{listed};")), "{header}");
    }
}
