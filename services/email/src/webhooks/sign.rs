//! The Standard Webhooks signature (standardwebhooks.com): `webhook-signature: v1,<base64 of
//! HMAC-SHA256(key, "<webhook-id>.<webhook-timestamp>.<body>")>`, the key being the bytes the
//! endpoint's secret (`whsec_<base64>`) encodes.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// The prefix of a secret.
const PREFIX: &str = "whsec_";

/// A new secret: `whsec_` and 32 random bytes in base64.
pub fn new_secret() -> String {
    let key: [u8; 32] = rand::random();
    format!("{PREFIX}{}", STANDARD.encode(key))
}

/// The `webhook-signature` header's value for `body`, sent as `id` at `timestamp`, signed with
/// each of `secrets` (two while one is rotated out), separated by spaces as the specification
/// allows: a receiver holding either verifies.
pub fn signatures(secrets: &[&str], id: &str, timestamp: i64, body: &str) -> Result<String, String> {
    let signed: Result<Vec<String>, String> =
        secrets.iter().map(|secret| signature(secret, id, timestamp, body)).collect();
    Ok(signed?.join(" "))
}

/// The `webhook-signature` header's value for `body`, sent as `id` at `timestamp` (Unix
/// seconds), signed with `secret`.
pub fn signature(secret: &str, id: &str, timestamp: i64, body: &str) -> Result<String, String> {
    let key = STANDARD
        .decode(secret.strip_prefix(PREFIX).unwrap_or(secret))
        .map_err(|e| format!("the endpoint's secret is not base64: {e}"))?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).map_err(|e| e.to_string())?;
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    Ok(format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the specification's reference libraries.
    #[test]
    fn signs_as_the_specification_s_example() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let id = "msg_p5jXN8AQM9LWM0D4loKWxJek";
        let body = r#"{"test": 2432232314}"#;
        let signed = signature(secret, id, 1614265330, body).unwrap();
        assert_eq!(signed, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert!(new_secret().starts_with("whsec_") && new_secret() != new_secret());
    }
}
