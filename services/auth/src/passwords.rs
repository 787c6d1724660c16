//! User passwords: argon2id (OWASP parameters: 19 MiB, 2 passes, 1 lane),
//! stored as PHC strings.
//!
//! An unknown username is verified against a dummy hash made at startup, so a
//! login for a user who does not exist costs the same as one for a user who
//! does: response time tells nothing about which usernames exist.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use aws_lc_rs::rand::SecureRandom;

/// Password hashing with fixed, explicit parameters.
pub struct Passwords {
    argon2: Argon2<'static>,
    dummy_hash: String,
}

/// Hashing failed (parameters or RNG).
#[derive(Debug, thiserror::Error)]
#[error("password hashing failed")]
pub struct HashError;

impl Passwords {
    /// argon2id, m = 19 MiB, t = 2, p = 1.
    pub fn new() -> Result<Self, HashError> {
        let params = Params::new(19 * 1024, 2, 1, None).map_err(|_| HashError)?;
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let dummy_hash = hash_with(&argon2, "dummy password for timing equalisation")?;
        Ok(Self { argon2, dummy_hash })
    }

    /// A PHC string for `password` with a fresh salt.
    pub fn hash(&self, password: &str) -> Result<String, HashError> {
        hash_with(&self.argon2, password)
    }

    /// Whether `password` matches `stored` (`None`: unknown user, always false,
    /// same cost).
    pub fn verify(&self, password: &str, stored: Option<&str>) -> bool {
        let phc = stored.unwrap_or(&self.dummy_hash);
        let matches = PasswordHash::new(phc)
            .map(|parsed| self.argon2.verify_password(password.as_bytes(), &parsed).is_ok())
            .unwrap_or(false);
        matches && stored.is_some()
    }
}

fn hash_with(argon2: &Argon2<'_>, password: &str) -> Result<String, HashError> {
    // 128-bit salt from the one crypto provider's CSPRNG.
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::SystemRandom::new().fill(&mut bytes).map_err(|_| HashError)?;
    let salt = SaltString::encode_b64(&bytes).map_err(|_| HashError)?;
    argon2.hash_password(password.as_bytes(), &salt).map(|h| h.to_string()).map_err(|_| HashError)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argon2id_round_trip_and_unknown_users_never_match() {
        let passwords = Passwords::new().unwrap();
        let stored = passwords.hash("correct horse").unwrap();
        assert!(stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{stored}");
        assert!(passwords.verify("correct horse", Some(&stored)));
        assert!(!passwords.verify("wrong horse", Some(&stored)));
        assert!(!passwords.verify("dummy password for timing equalisation", None));
        assert!(!passwords.verify("x", Some("not a phc string")));
    }
}
