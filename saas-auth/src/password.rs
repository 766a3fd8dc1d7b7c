//! Passwords: argon2id hashing with OWASP parameters, rehash on login when the
//! parameters change, and the length and common-password policy of OWASP ASVS
//! 5.0 V6.2 (at least 8 characters, 15 recommended; at least 64 accepted and
//! never truncated; no password from the shipped list of common passwords).

use std::collections::HashSet;
use std::sync::LazyLock;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

use crate::error::AuthError;

/// The 10,000 most common passwords, one per line, most common first.
/// Source: the list Django ships (compiled by Royce Williams from breach data).
static COMMON: LazyLock<HashSet<&'static str>> = LazyLock::new(|| {
    include_str!("../data/common-passwords.txt")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect()
});

/// How many entries the shipped common-password list holds.
#[must_use]
pub fn common_password_count() -> usize {
    COMMON.len()
}

/// Length limits and argon2id cost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordPolicy {
    /// Shortest accepted password, in characters (default 8; 15 is recommended).
    pub min_length: usize,
    /// Longest accepted password, in characters (default 1024: far above the
    /// 64 ASVS asks for, low enough that hashing cannot be abused).
    pub max_length: usize,
    /// argon2id memory cost in KiB (OWASP: 19456).
    pub memory_kib: u32,
    /// argon2id iterations (OWASP: 2).
    pub iterations: u32,
    /// argon2id parallelism (OWASP: 1).
    pub parallelism: u32,
}

impl Default for PasswordPolicy {
    fn default() -> Self {
        Self {
            min_length: 8,
            max_length: 1024,
            memory_kib: 19_456,
            iterations: 2,
            parallelism: 1,
        }
    }
}

impl PasswordPolicy {
    /// Cheap parameters for tests only: never use in production.
    #[must_use]
    pub fn insecure_for_tests() -> Self {
        Self {
            memory_kib: 256,
            iterations: 1,
            ..Self::default()
        }
    }

    /// Refuses a password that is too short, too long or common. The password
    /// is checked whole: nothing is truncated.
    pub fn check(&self, password: &str) -> Result<(), AuthError> {
        let chars = password.chars().count();
        if chars < self.min_length {
            return Err(AuthError::WeakPassword(format!(
                "use at least {} characters",
                self.min_length
            )));
        }
        if chars > self.max_length {
            return Err(AuthError::WeakPassword(format!(
                "use at most {} characters",
                self.max_length
            )));
        }
        if COMMON.contains(password.to_lowercase().as_str()) {
            return Err(AuthError::WeakPassword(
                "this password is too common; choose another".into(),
            ));
        }
        Ok(())
    }

    fn argon(&self) -> Result<Argon2<'static>, AuthError> {
        let params = Params::new(self.memory_kib, self.iterations, self.parallelism, None)
            .map_err(|e| AuthError::Crypto(format!("argon2 parameters: {e}")))?;
        Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
    }

    /// The PHC string of `password` under this policy's parameters. CPU-heavy:
    /// call from a blocking thread.
    pub fn hash(&self, password: &str) -> Result<String, AuthError> {
        let mut salt = [0u8; 16];
        rand::fill(&mut salt);
        let salt =
            SaltString::encode_b64(&salt).map_err(|e| AuthError::Crypto(format!("salt: {e}")))?;
        self.argon()?
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| AuthError::Crypto(format!("argon2: {e}")))
    }

    /// Whether `password` matches `stored`, and whether `stored` should be
    /// rehashed because its parameters differ from this policy's.
    pub fn verify(&self, password: &str, stored: &str) -> Verified {
        let Ok(parsed) = PasswordHash::new(stored) else {
            return Verified::NoMatch;
        };
        let Ok(argon) = self.argon() else {
            return Verified::NoMatch;
        };
        if argon.verify_password(password.as_bytes(), &parsed).is_err() {
            return Verified::NoMatch;
        }
        let current = parsed.algorithm.as_str() == "argon2id"
            && Params::try_from(&parsed).is_ok_and(|p| {
                p.m_cost() == self.memory_kib
                    && p.t_cost() == self.iterations
                    && p.p_cost() == self.parallelism
            });
        if current {
            Verified::Match
        } else {
            Verified::MatchNeedsRehash
        }
    }
}

/// The result of [`PasswordPolicy::verify`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verified {
    /// Wrong password (or an unreadable hash).
    NoMatch,
    /// Right password, hash up to date.
    Match,
    /// Right password, hashed under other parameters: store a new hash.
    MatchNeedsRehash,
}

impl Verified {
    /// Whether the password matched.
    #[must_use]
    pub fn matched(self) -> bool {
        !matches!(self, Self::NoMatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_list_holds_at_least_3000_common_passwords() {
        assert!(
            common_password_count() >= 3000,
            "{}",
            common_password_count()
        );
        let p = PasswordPolicy::insecure_for_tests();
        assert!(matches!(
            p.check("password123"),
            Err(AuthError::WeakPassword(_))
        ));
        assert!(matches!(
            p.check("PASSWORD1"),
            Err(AuthError::WeakPassword(_))
        ));
    }

    #[test]
    fn length_limits_follow_asvs() {
        let p = PasswordPolicy::insecure_for_tests();
        assert!(p.check("Zq8#kLw").is_err());
        assert!(p.check("Zq8#kLw2").is_ok());
        let long: String = "correct horse battery staple ".repeat(4);
        assert!(long.chars().count() >= 64);
        assert!(p.check(&long).is_ok());
        let fifteen = PasswordPolicy {
            min_length: 15,
            ..p.clone()
        };
        assert!(fifteen.check("Zq8#kLw2Zq8#kL").is_err());
    }

    #[test]
    fn long_passwords_are_never_truncated() {
        let p = PasswordPolicy::insecure_for_tests();
        let a = "x".repeat(100) + "a";
        let b = "x".repeat(100) + "b";
        let h = p.hash(&a).unwrap();
        assert_eq!(p.verify(&a, &h), Verified::Match);
        assert_eq!(p.verify(&b, &h), Verified::NoMatch);
    }

    #[test]
    fn a_hash_under_old_parameters_asks_for_a_rehash() {
        let old = PasswordPolicy::insecure_for_tests();
        let h = old.hash("Zq8#kLw2-long").unwrap();
        assert!(h.starts_with("$argon2id$"));
        let new = PasswordPolicy {
            iterations: 2,
            ..old
        };
        assert_eq!(new.verify("Zq8#kLw2-long", &h), Verified::MatchNeedsRehash);
        assert_eq!(new.verify("wrong", &h), Verified::NoMatch);
    }
}
