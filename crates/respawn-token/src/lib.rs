//! Signed, expiring session tokens: what a zone server checks before letting
//! a player in. HMAC-SHA256 over a small text payload.
//!
//! Format: `v1.<player_id>.<expires_unix>.<name>.<signature hex>`, where the
//! signature covers everything before the last dot. Names are 1..=24 ASCII
//! letters, digits, `_` or `-` (the game's name rule), so the format never
//! needs escaping.

use hmac::{Hmac, Mac};
use respawn_names::valid_name;
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Longest token accepted; anything longer is refused before any parsing.
pub const MAX_TOKEN_LEN: usize = 256;
/// Longest sealed message ([`TokenKey::seal`]) accepted.
pub const MAX_SEALED_LEN: usize = 8_192;
/// Shortest signing key accepted.
pub const MIN_KEY_LEN: usize = 16;

/// What a token says about its bearer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    pub player_id: u64,
    pub name: String,
    /// Unix seconds after which the token is refused.
    pub expires_at: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token is missing")]
    Missing,
    #[error("token is malformed: {0}")]
    Malformed(&'static str),
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token expired at {expired_at} (now {now})")]
    Expired { expired_at: u64, now: u64 },
    #[error("signing key must be at least {MIN_KEY_LEN} bytes")]
    WeakKey,
}

impl TokenError {
    /// Short label for metrics and logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            TokenError::Missing => "missing",
            TokenError::Malformed(_) => "malformed",
            TokenError::BadSignature => "bad_signature",
            TokenError::Expired { .. } => "expired",
            TokenError::WeakKey => "weak_key",
        }
    }
}

/// A shared signing key.
#[derive(Clone)]
pub struct TokenKey(Vec<u8>);

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(<redacted>)")
    }
}

impl TokenKey {
    pub fn new(secret: &[u8]) -> Result<Self, TokenError> {
        if secret.len() < MIN_KEY_LEN {
            return Err(TokenError::WeakKey);
        }
        Ok(Self(secret.to_vec()))
    }

    fn mac(&self, payload: &str) -> HmacSha256 {
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&self.0).expect("HMAC accepts any key length");
        mac.update(payload.as_bytes());
        mac
    }

    /// Signs `payload` for one `purpose` (a word naming what it is): the
    /// result opens only with the same key and purpose, so nothing signed
    /// for one use passes for another. `<purpose>.<hex payload>.<signature hex>`.
    pub fn seal(&self, purpose: &str, payload: &[u8]) -> String {
        let body = format!("{purpose}.{}", hex(payload));
        let sig = self.mac(&body).finalize().into_bytes();
        format!("{body}.{}", hex(&sig))
    }

    /// The payload of a [`Self::seal`]ed message, if its signature holds.
    pub fn open(&self, purpose: &str, sealed: &str) -> Result<Vec<u8>, TokenError> {
        if sealed.is_empty() {
            return Err(TokenError::Missing);
        }
        if sealed.len() > MAX_SEALED_LEN {
            return Err(TokenError::Malformed("too long"));
        }
        let (body, sig_hex) = sealed.rsplit_once('.').ok_or(TokenError::Malformed("no signature"))?;
        let sig = unhex(sig_hex).ok_or(TokenError::Malformed("signature is not hex"))?;
        self.mac(body).verify_slice(&sig).map_err(|_| TokenError::BadSignature)?;
        match body.split_once('.') {
            Some((p, payload)) if p == purpose => unhex(payload).ok_or(TokenError::Malformed("payload is not hex")),
            _ => Err(TokenError::Malformed("sealed for another purpose")),
        }
    }

    /// Signs claims into a token string.
    pub fn sign(&self, claims: &Claims) -> Result<String, TokenError> {
        if !valid_name(&claims.name) {
            return Err(TokenError::Malformed("name must be 1..=24 of [A-Za-z0-9_-]"));
        }
        let payload = format!("v1.{}.{}.{}", claims.player_id, claims.expires_at, claims.name);
        let sig = self.mac(&payload).finalize().into_bytes();
        Ok(format!("{payload}.{}", hex(&sig)))
    }

    /// Checks a token's shape, signature and expiry at `now` (unix seconds).
    pub fn verify(&self, token: &str, now: u64) -> Result<Claims, TokenError> {
        if token.is_empty() {
            return Err(TokenError::Missing);
        }
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed("too long"));
        }
        let (payload, sig_hex) = token.rsplit_once('.').ok_or(TokenError::Malformed("no signature"))?;
        let sig = unhex(sig_hex).ok_or(TokenError::Malformed("signature is not hex"))?;
        // Signature first, so nothing about an unsigned payload is trusted.
        self.mac(payload).verify_slice(&sig).map_err(|_| TokenError::BadSignature)?;
        let mut parts = payload.split('.');
        if parts.next() != Some("v1") {
            return Err(TokenError::Malformed("unknown version"));
        }
        let player_id = parts.next().and_then(|p| p.parse::<u64>().ok()).ok_or(TokenError::Malformed("player id"))?;
        let expires_at = parts.next().and_then(|p| p.parse::<u64>().ok()).ok_or(TokenError::Malformed("expiry"))?;
        let name = parts.next().filter(|n| valid_name(n)).ok_or(TokenError::Malformed("name"))?;
        if parts.next().is_some() {
            return Err(TokenError::Malformed("trailing fields"));
        }
        if now >= expires_at {
            return Err(TokenError::Expired { expired_at: expires_at, now });
        }
        Ok(Claims { player_id, name: name.to_owned(), expires_at })
    }
}

/// What a game server's credential is sealed for.
const SERVER_CREDENTIAL: &str = "server";

/// The platform's key for game-server credentials. Each zone server gets a
/// credential of its own, bound to its id ([`Self::credential`]); only the
/// platform holds the key, so a server's credential cannot be turned into
/// another's, and no secret shared by the fleet lets one server act as another.
#[derive(Debug, Clone)]
pub struct ServerKey(TokenKey);

impl ServerKey {
    pub fn new(secret: &[u8]) -> Result<Self, TokenError> {
        TokenKey::new(secret).map(Self)
    }

    /// The credential of the server `id` (a [`valid_server_id`]):
    /// `server.<hex id>.<signature hex>`.
    pub fn credential(&self, id: &str) -> Result<String, TokenError> {
        if !respawn_names::valid_server_id(id) {
            return Err(TokenError::Malformed("server id must be 1..=64 of [a-z0-9._-]"));
        }
        Ok(self.0.seal(SERVER_CREDENTIAL, id.as_bytes()))
    }

    /// The id of the server a credential belongs to, if this key issued it.
    pub fn verify(&self, credential: &str) -> Result<String, TokenError> {
        let id = self.0.open(SERVER_CREDENTIAL, credential)?;
        String::from_utf8(id)
            .ok()
            .filter(|id| respawn_names::valid_server_id(id))
            .ok_or(TokenError::Malformed("server id"))
    }
}

/// The server id a credential names, read without the key (a zone server
/// learns its own id from its credential; only the platform can verify it).
pub fn credential_server_id(credential: &str) -> Result<String, TokenError> {
    let unchecked = credential
        .strip_prefix(SERVER_CREDENTIAL)
        .and_then(|rest| rest.strip_prefix('.'))
        .and_then(|rest| rest.split_once('.'))
        .and_then(|(id, _signature)| unhex(id))
        .and_then(|id| String::from_utf8(id).ok());
    unchecked.filter(|id| respawn_names::valid_server_id(id)).ok_or(TokenError::Malformed("not a server credential"))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok()).collect()
}

/// Pieces of the placeholder secrets example files have shipped (compose's
/// `dev-only-…`, the Kubernetes example's `replace-me-…`, the guides'
/// `…-change-me`): a server started with one is open to anyone who read them.
const PLACEHOLDERS: [&str; 4] = ["dev-only", "replace-me", "change-me", "changeme"];

/// Why a configured secret is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WeakSecret {
    #[error("is {len} bytes; at least {MIN_KEY_LEN} are needed (generate one: `openssl rand -hex 32`)")]
    TooShort { len: usize },
    #[error("contains {0:?}, a known placeholder; generate one: `openssl rand -hex 32`")]
    Placeholder(&'static str),
}

/// Whether `secret` may guard a server: long enough, and none of the
/// placeholders published in example files (compared without case).
pub fn check_secret(secret: &str) -> Result<(), WeakSecret> {
    if secret.len() < MIN_KEY_LEN {
        return Err(WeakSecret::TooShort { len: secret.len() });
    }
    let lower = secret.to_ascii_lowercase();
    match PLACEHOLDERS.into_iter().find(|p| lower.contains(p)) {
        Some(placeholder) => Err(WeakSecret::Placeholder(placeholder)),
        None => Ok(()),
    }
}

/// [`check_secret`] on each secret given, by the flag that names it in the
/// error (`--token-key is 5 bytes; ...`).
pub fn check_secrets<'a>(secrets: impl IntoIterator<Item = (&'static str, Option<&'a str>)>) -> Result<(), String> {
    for (flag, secret) in secrets {
        if let Some(secret) = secret {
            check_secret(secret).map_err(|e| format!("{flag} {e}"))?;
        }
    }
    Ok(())
}

/// `bytes` random bytes from the kernel, as hex: secrets, ids.
pub fn random_hex(bytes: usize) -> std::io::Result<String> {
    Ok(hex(&random_bytes(bytes)?))
}

/// `bytes` bytes from the kernel's random source.
pub fn random_bytes(bytes: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; bytes];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut buf)?;
    Ok(buf)
}

/// What is stored of a secret (operator tokens): hex SHA-256.
pub fn hash_secret(secret: &str) -> String {
    use sha2::Digest;
    hex(&Sha256::digest(secret.as_bytes()))
}

/// Compares two secrets in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {

    #[test]
    fn secrets_shorter_than_16_bytes_or_from_an_example_file_are_refused() {
        assert_eq!(check_secret("short"), Err(WeakSecret::TooShort { len: 5 }));
        assert_eq!(
            check_secret("dev-only-token-key-change-me"),
            Err(WeakSecret::Placeholder("dev-only")),
            "compose's old default"
        );
        assert_eq!(check_secret("replace-me-with-a-random-secret-0001"), Err(WeakSecret::Placeholder("replace-me")));
        assert_eq!(check_secret("Local-Dev-Key-CHANGE-ME"), Err(WeakSecret::Placeholder("change-me")));
        assert_eq!(check_secret(&random_hex(16).expect("random")), Ok(()));
        assert_eq!(check_secret("integration-test-token-key"), Ok(()));
    }

    use super::*;

    fn key() -> TokenKey {
        TokenKey::new(b"0123456789abcdef-test").expect("key")
    }

    fn claims() -> Claims {
        Claims { player_id: 42, name: "ann".into(), expires_at: 1_000 }
    }

    #[test]
    fn sign_then_verify() {
        let token = key().sign(&claims()).expect("sign");
        assert_eq!(key().verify(&token, 999), Ok(claims()));
    }

    #[test]
    fn sealed_messages_open_only_with_their_key_and_purpose() {
        let sealed = key().seal("ticket", b"{\"gold\":5}");
        assert_eq!(key().open("ticket", &sealed), Ok(b"{\"gold\":5}".to_vec()));
        assert!(matches!(key().open("resume", &sealed), Err(TokenError::Malformed(_))));
        let other = TokenKey::new(b"another-key-of-16+").expect("key");
        assert_eq!(other.open("ticket", &sealed), Err(TokenError::BadSignature));
        let forged = sealed.replacen("ticket.7b", "ticket.7c", 1);
        assert_eq!(key().open("ticket", &forged), Err(TokenError::BadSignature));
        let session = key().sign(&claims()).expect("sign");
        assert!(key().open("v1", &session).is_err(), "a session token is no sealed message");
        assert_eq!(key().open("ticket", ""), Err(TokenError::Missing));
        assert!(matches!(key().open("ticket", &"a".repeat(MAX_SEALED_LEN + 1)), Err(TokenError::Malformed(_))));
        assert!(matches!(key().open("ticket", "ticket.zz.00"), Err(TokenError::BadSignature)));
    }

    #[test]
    fn expired_forged_and_malformed_tokens_are_refused() {
        let token = key().sign(&claims()).expect("sign");
        assert!(matches!(key().verify(&token, 1_000), Err(TokenError::Expired { .. })));
        let other = TokenKey::new(b"another-key-of-16+").expect("key");
        assert_eq!(other.verify(&token, 0), Err(TokenError::BadSignature));
        let forged = token.replacen("v1.42.", "v1.43.", 1);
        assert_eq!(key().verify(&forged, 0), Err(TokenError::BadSignature));
        assert_eq!(key().verify("", 0), Err(TokenError::Missing));
        assert!(matches!(key().verify("abc", 0), Err(TokenError::Malformed(_))));
        assert!(matches!(key().verify("v1.1.2.x.zz", 0), Err(TokenError::Malformed(_))));
        assert!(matches!(key().verify(&"a".repeat(300), 0), Err(TokenError::Malformed(_))));
        assert!(matches!(key().verify("v1.1.2.x.é", 0), Err(TokenError::Malformed(_))));
    }

    #[test]
    fn a_server_credential_names_one_server_and_only_its_key_verifies_it() {
        let key = ServerKey::new(b"server-key-for-the-tests").expect("key");
        let credential = key.credential("zone-1").expect("credential");
        assert_eq!(key.verify(&credential), Ok("zone-1".into()));
        assert_eq!(credential_server_id(&credential), Ok("zone-1".into()));
        assert_ne!(credential, key.credential("zone-2").expect("credential"));
        let other = ServerKey::new(b"another-server-key-16").expect("key");
        assert_eq!(other.verify(&credential), Err(TokenError::BadSignature));
        // The id is readable, not changeable: zone-2's hex in zone-1's credential fails the signature.
        let forged = credential.replacen(&hex(b"zone-1"), &hex(b"zone-2"), 1);
        assert_eq!(credential_server_id(&forged), Ok("zone-2".into()));
        assert_eq!(key.verify(&forged), Err(TokenError::BadSignature));
        assert!(key.credential("Zone 1").is_err());
        // What the same key seals for another purpose is no credential.
        assert!(key.verify(&key.0.seal("ticket", b"zone-1")).is_err());
        assert!(credential_server_id("an-old-shared-server-token").is_err());
    }

    #[test]
    fn secrets_hash_to_64_hex_and_random_ones_differ() {
        let h = hash_secret("s3cret");
        assert_eq!(h.len(), 64);
        assert_eq!(h, hash_secret("s3cret"));
        assert_ne!(h, hash_secret("s3cret "));
        let (a, b) = (random_hex(16).expect("urandom"), random_hex(16).expect("urandom"));
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
    }

    #[test]
    fn weak_keys_and_bad_names_are_refused() {
        assert_eq!(TokenKey::new(b"short").unwrap_err(), TokenError::WeakKey);
        let bad = Claims { name: "a.b".into(), ..claims() };
        assert!(key().sign(&bad).is_err());
    }
}
