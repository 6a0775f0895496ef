//! Password hashing: argon2id with OWASP's first recommended parameters
//! (19 MiB of memory, 2 passes, 1 lane), a random 16-byte salt per
//! password, stored as a PHC string, so a later change of parameters still
//! verifies the hashes made before it. Hashing takes tens of milliseconds
//! of one core on purpose: it runs on tokio's blocking pool, never on a
//! thread that serves requests.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

/// Shortest and longest password accepted, in bytes.
pub const PASSWORD_LEN: std::ops::RangeInclusive<usize> = 8..=128;

/// Memory (KiB), passes and lanes of every new hash.
const M_COST_KIB: u32 = 19 * 1024;
const T_COST: u32 = 2;
const P_COST: u32 = 1;

/// Hashes and checks passwords. Cloning is cheap.
#[derive(Clone)]
pub struct Passwords {
    argon: Argon2<'static>,
    /// A hash of a random password: an unknown username is checked against
    /// it, so it is answered in the time a wrong password takes.
    decoy: std::sync::Arc<str>,
}

impl std::fmt::Debug for Passwords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Passwords").field("params", self.argon.params()).finish_non_exhaustive()
    }
}

impl Passwords {
    pub fn new() -> Result<Self, String> {
        let params = Params::new(M_COST_KIB, T_COST, P_COST, None).map_err(|e| e.to_string())?;
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let decoy_secret = respawn_token::random_hex(16).map_err(|e| e.to_string())?;
        let decoy = hash_with(&argon, &decoy_secret)?.into();
        Ok(Self { argon, decoy })
    }

    /// The PHC string of `password` with a new salt.
    pub async fn hash(&self, password: String) -> Result<String, String> {
        let argon = self.argon.clone();
        tokio::task::spawn_blocking(move || hash_with(&argon, &password)).await.map_err(|e| e.to_string())?
    }

    /// Whether `password` matches `stored`; with `None` (no such account)
    /// the decoy is checked instead and the answer is `false`.
    pub async fn verify(&self, password: String, stored: Option<String>) -> bool {
        let argon = self.argon.clone();
        let (stored, real) = match stored {
            Some(s) => (s, true),
            None => (self.decoy.to_string(), false),
        };
        let matched = tokio::task::spawn_blocking(move || {
            PasswordHash::new(&stored).is_ok_and(|parsed| argon.verify_password(password.as_bytes(), &parsed).is_ok())
        })
        .await
        .unwrap_or(false);
        matched && real
    }
}

fn hash_with(argon: &Argon2<'_>, password: &str) -> Result<String, String> {
    let salt = respawn_token::random_bytes(16).map_err(|e| e.to_string())?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    argon.hash_password(password.as_bytes(), &salt).map(|h| h.to_string()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_password_verifies_against_its_own_hash_only() {
        let p = Passwords::new().expect("parameters are valid");
        let hash = p.hash("correct horse".into()).await.expect("hashed");
        assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{hash}");
        assert!(p.verify("correct horse".into(), Some(hash.clone())).await);
        assert!(!p.verify("correct horsf".into(), Some(hash.clone())).await);
        assert_ne!(p.hash("correct horse".into()).await.expect("hashed"), hash, "a new salt each time");
    }

    #[tokio::test]
    async fn an_unknown_account_never_verifies_and_a_malformed_hash_is_a_mismatch() {
        let p = Passwords::new().expect("parameters are valid");
        assert!(!p.verify("anything".into(), None).await);
        assert!(!p.verify("anything".into(), Some("not a phc string".into())).await);
    }
}
