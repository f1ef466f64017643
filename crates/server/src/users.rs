//! Users: who may log in, with what password, and their tags.
//!
//! Passwords are kept as RabbitMQ keeps them (`rabbit_password_hashing_sha256`):
//! base64 of a random 4-octet salt followed by SHA-256(salt ++ password), so
//! that users exported from RabbitMQ (`rabbitmqctl export_definitions`) log
//! in with their passwords here, and the other way round. Users live in the
//! store and survive restarts. On the first start (no user stored), the
//! default user is created, as RabbitMQ creates `guest`: `guest`/`guest`
//! unless `--default-user` and `--default-pass` say otherwise, with the
//! `administrator` tag.

use std::collections::HashMap;
use std::sync::RwLock;

use base64::Engine;
use sha2::{Digest, Sha256};
use tracing::info;
use warren_store::{Store, UserDef};

/// The users, shared by every connection.
#[derive(Debug)]
pub struct Users {
    users: RwLock<HashMap<String, UserDef>>,
    store: Store,
}

impl Users {
    /// The users the store recovered; on a first start, the default user.
    pub(crate) fn open(
        store: Store,
        recovered: Vec<UserDef>,
        default_user: &str,
        default_pass: &str,
    ) -> Self {
        let users = Self {
            users: RwLock::new(recovered.into_iter().map(|u| (u.name.clone(), u)).collect()),
            store,
        };
        if users.read().is_empty() {
            info!(user = default_user, "creating the default user");
            users.put(UserDef {
                name: default_user.to_owned(),
                password_hash: hash_password(default_pass),
                tags: vec!["administrator".to_owned()],
            });
        }
        users
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, UserDef>> {
        self.users.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `name` exists and `password` is its password.
    pub fn authenticate(&self, name: &str, password: &str) -> bool {
        self.read()
            .get(name)
            .is_some_and(|user| verify(&user.password_hash, password))
    }

    /// Adds or replaces a user, in memory and in the store.
    pub fn put(&self, user: UserDef) {
        self.store.put_user(user.clone());
        self.users
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(user.name.clone(), user);
    }
}

/// RabbitMQ's SHA-256 password hash of `password`, with a fresh salt.
pub fn hash_password(password: &str) -> String {
    let mut salt = [0u8; 4];
    // The salt only has to differ between users; should the system's
    // randomness fail, a fixed salt still hashes correctly.
    let _ = getrandom::fill(&mut salt);
    let mut hash = salt.to_vec();
    hash.extend_from_slice(&salted(&salt, password));
    base64::engine::general_purpose::STANDARD.encode(hash)
}

/// Whether `password` matches a hash in RabbitMQ's SHA-256 form.
pub fn verify(password_hash: &str, password: &str) -> bool {
    let Ok(hash) = base64::engine::general_purpose::STANDARD.decode(password_hash) else {
        return false;
    };
    let Some((salt, digest)) = hash.split_first_chunk::<4>() else {
        return false;
    };
    // Compared in full, whatever differs first: no timing hint.
    let expected = salted(salt, password);
    digest.len() == expected.len()
        && digest
            .iter()
            .zip(expected.iter())
            .fold(0u8, |d, (a, b)| d | (a ^ b))
            == 0
}

fn salted(salt: &[u8; 4], password: &str) -> [u8; 32] {
    let mut sha = Sha256::new();
    sha.update(salt);
    sha.update(password.as_bytes());
    sha.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_exported_from_rabbitmq_verify() {
        // From `rabbitmqctl export_definitions` on RabbitMQ 3.10.8, after
        // `rabbitmqctl add_user vector-user test12`, and its guest.
        assert!(verify(
            "hU9PSOqLNPTC4NpdG6xMd9nKwT5+Vi/bejI/ARXiAH0+bkZB",
            "test12"
        ));
        assert!(verify(
            "57F6Qm4bdOXKJCKQk1aQcTYNKLAl5UEgyTJ5s50mC40d4e/7",
            "guest"
        ));
        assert!(!verify(
            "hU9PSOqLNPTC4NpdG6xMd9nKwT5+Vi/bejI/ARXiAH0+bkZB",
            "test13"
        ));
        assert!(!verify("not base64!", "test12"));
        assert!(!verify("", ""));
    }

    #[test]
    fn a_fresh_hash_verifies_and_is_salted() {
        let (a, b) = (hash_password("s3cret"), hash_password("s3cret"));
        assert!(verify(&a, "s3cret") && verify(&b, "s3cret"));
        assert!(!verify(&a, "s3cre"));
        // 4 + 32 octets, as RabbitMQ's.
        assert_eq!(
            base64::engine::general_purpose::STANDARD
                .decode(&a)
                .unwrap()
                .len(),
            36
        );
    }
}
