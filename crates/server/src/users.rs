//! Users: who may log in, with what password, and their tags; and their
//! permissions in each virtual host ([`crate::permissions`]).
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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use base64::Engine;
use sha2::{Digest, Sha256};
use tracing::info;
use warren_store::{PermissionDef, Store, TopicPermissionDef, UserDef, DEFAULT_VHOST};

use crate::permissions::{Grant, Pattern};

/// Every pattern: the permissions the default user gets in `/`.
const EVERYTHING: &str = ".*";

#[derive(Default)]
struct Tables {
    users: HashMap<String, UserDef>,
    /// By user, then vhost.
    permissions: HashMap<(String, String), PermissionDef>,
    /// By user, vhost, then exchange.
    topic_permissions: HashMap<(String, String, String), TopicPermissionDef>,
}

/// The tables under the write lock. Dropped, it moves the epoch on before
/// the lock is released: a connection that sees the new epoch then waits
/// for the lock and reads the change, and one that read the old epoch reads
/// again at its next check. (Moved on before the change, a connection could
/// read the new epoch and the old tables, and keep a revoked permission.)
struct Changing<'a> {
    tables: RwLockWriteGuard<'a, Tables>,
    epoch: &'a AtomicU64,
}

impl std::ops::Deref for Changing<'_> {
    type Target = Tables;
    fn deref(&self) -> &Tables {
        &self.tables
    }
}

impl std::ops::DerefMut for Changing<'_> {
    fn deref_mut(&mut self) -> &mut Tables {
        &mut self.tables
    }
}

impl Drop for Changing<'_> {
    fn drop(&mut self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }
}

/// The users and their permissions, shared by every connection. Its
/// `Debug` shows counts only: never a password hash in a log.
pub struct Users {
    tables: RwLock<Tables>,
    /// Bumped by every change, so that connections know to read their
    /// permissions again ([`crate::access::Access`]).
    epoch: AtomicU64,
    store: Store,
}

impl std::fmt::Debug for Users {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tables = self.read();
        f.debug_struct("Users")
            .field("users", &tables.users.len())
            .field("permissions", &tables.permissions.len())
            .field("topic_permissions", &tables.topic_permissions.len())
            .finish_non_exhaustive()
    }
}

impl Users {
    /// The users and permissions the store recovered (a store from before
    /// permissions gives its users every permission in every vhost, see
    /// `warren_store`). On a first start, the default user, with every
    /// permission in `/`, as RabbitMQ makes `guest`.
    pub(crate) fn open(
        store: Store,
        recovered: &mut warren_store::Recovered,
        default_user: &str,
        default_pass: &str,
    ) -> Self {
        let tables = Tables {
            users: recovered.users.drain(..).map(|u| (u.name.clone(), u)).collect(),
            permissions: recovered
                .permissions
                .drain(..)
                .map(|p| ((p.user.clone(), p.vhost.clone()), p))
                .collect(),
            topic_permissions: recovered
                .topic_permissions
                .drain(..)
                .map(|t| ((t.user.clone(), t.vhost.clone(), t.exchange.clone()), t))
                .collect(),
        };
        let users = Self {
            tables: RwLock::new(tables),
            epoch: AtomicU64::new(0),
            store,
        };
        if users.read().users.is_empty() {
            info!(user = default_user, "creating the default user");
            users.put(UserDef {
                name: default_user.to_owned(),
                password_hash: hash_password(default_pass),
                tags: vec!["administrator".to_owned()],
            });
            users.grant_everything(default_user, DEFAULT_VHOST);
        }
        users
    }

    fn grant_everything(&self, user: &str, vhost: &str) {
        let def = PermissionDef {
            user: user.to_owned(),
            vhost: vhost.to_owned(),
            configure: EVERYTHING.to_owned(),
            write: EVERYTHING.to_owned(),
            read: EVERYTHING.to_owned(),
        };
        self.set_permissions(def).expect("'.*' is a valid expression");
    }

    fn read(&self) -> RwLockReadGuard<'_, Tables> {
        self.tables.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The tables, for a change: the epoch moves on when the change is
    /// done, still under the lock ([`Changing`]).
    fn write(&self) -> Changing<'_> {
        Changing {
            tables: self.tables.write().unwrap_or_else(|e| e.into_inner()),
            epoch: &self.epoch,
        }
    }

    /// Counts changes to users and permissions.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Whether `name` exists and `password` is its password.
    pub fn authenticate(&self, name: &str, password: &str) -> bool {
        self.read()
            .users
            .get(name)
            .is_some_and(|user| verify(&user.password_hash, password))
    }

    /// Whether the user exists.
    pub fn exists(&self, name: &str) -> bool {
        self.read().users.contains_key(name)
    }

    /// Whether the user has the tag.
    pub fn has_tag(&self, name: &str, tag: &str) -> bool {
        self.read()
            .users
            .get(name)
            .is_some_and(|u| u.tags.iter().any(|t| t == tag))
    }

    /// Every user, by name.
    pub fn list(&self) -> Vec<UserDef> {
        let mut users: Vec<UserDef> = self.read().users.values().cloned().collect();
        users.sort_by(|a, b| a.name.cmp(&b.name));
        users
    }

    /// Adds or replaces a user, in memory and in the store.
    pub fn put(&self, user: UserDef) {
        // Stored under the lock, so that the store's order of changes is
        // the tables'.
        let mut tables = self.write();
        self.store.put_user(user.clone());
        tables.users.insert(user.name.clone(), user);
    }

    /// Deletes a user and their permissions; false if there was none.
    pub fn delete(&self, name: &str) -> bool {
        let mut tables = self.write();
        if tables.users.remove(name).is_none() {
            return false;
        }
        tables.permissions.retain(|(user, _), _| user != name);
        tables.topic_permissions.retain(|(user, _, _), _| user != name);
        self.store.delete_user(name);
        true
    }

    /// The user's permissions in the vhost, compiled; `None` if they have
    /// none there (and so may not use it).
    pub(crate) fn grant(&self, user: &str, vhost: &str) -> Option<Arc<Grant>> {
        let tables = self.read();
        let p = tables.permissions.get(&(user.to_owned(), vhost.to_owned()))?;
        let topics = tables
            .topic_permissions
            .values()
            .filter(|t| t.user == user && t.vhost == vhost)
            .map(|t| (t.exchange.as_str(), t.write.as_str(), t.read.as_str()));
        Some(Arc::new(Grant::new(
            user,
            vhost,
            [&p.configure, &p.write, &p.read],
            topics,
        )))
    }

    /// Sets a user's permissions in a vhost. The caller has checked that
    /// both exist; an expression that does not compile is refused.
    pub fn set_permissions(&self, def: PermissionDef) -> Result<(), String> {
        for pattern in [&def.configure, &def.write, &def.read] {
            Pattern::new(pattern)?;
        }
        let mut tables = self.write();
        // Checked under the lock: a user deleted meanwhile leaves nothing.
        if !tables.users.contains_key(&def.user) {
            return Err(format!("no user '{}'", def.user));
        }
        self.store.put_permission(def.clone());
        tables
            .permissions
            .insert((def.user.clone(), def.vhost.clone()), def);
        Ok(())
    }

    /// Clears a user's permissions in a vhost; false if there were none.
    pub fn clear_permissions(&self, user: &str, vhost: &str) -> bool {
        let mut tables = self.write();
        let removed = tables
            .permissions
            .remove(&(user.to_owned(), vhost.to_owned()))
            .is_some();
        if removed {
            self.store.delete_permission(user, vhost);
        }
        removed
    }

    /// Every user's permissions, by user then vhost.
    pub fn permissions(&self) -> Vec<PermissionDef> {
        let mut all: Vec<PermissionDef> = self.read().permissions.values().cloned().collect();
        all.sort_by(|a, b| (&a.user, &a.vhost).cmp(&(&b.user, &b.vhost)));
        all
    }

    /// Sets a user's topic permissions on an exchange; an expression that
    /// does not compile is refused. Variables (`{username}`, `{vhost}`)
    /// are put in at each check; the expression is checked with them
    /// standing for plain words.
    pub fn set_topic_permissions(&self, def: TopicPermissionDef) -> Result<(), String> {
        for pattern in [&def.write, &def.read] {
            Pattern::new(&pattern.replace("{username}", "u").replace("{vhost}", "v"))?;
        }
        let key = (def.user.clone(), def.vhost.clone(), def.exchange.clone());
        let mut tables = self.write();
        if !tables.users.contains_key(&def.user) {
            return Err(format!("no user '{}'", def.user));
        }
        self.store.put_topic_permission(def.clone());
        tables.topic_permissions.insert(key, def);
        Ok(())
    }

    /// Clears a user's topic permissions in a vhost, on one exchange or on
    /// all; false if there were none.
    pub fn clear_topic_permissions(&self, user: &str, vhost: &str, exchange: Option<&str>) -> bool {
        let mut tables = self.write();
        let doomed: Vec<TopicPermissionDef> = tables
            .topic_permissions
            .values()
            .filter(|t| t.user == user && t.vhost == vhost && exchange.is_none_or(|x| x == t.exchange))
            .cloned()
            .collect();
        for def in &doomed {
            tables
                .topic_permissions
                .remove(&(def.user.clone(), def.vhost.clone(), def.exchange.clone()));
            self.store.delete_topic_permission(def.clone());
        }
        !doomed.is_empty()
    }

    /// Every topic permission, by user, vhost, then exchange.
    pub fn topic_permissions(&self) -> Vec<TopicPermissionDef> {
        let mut all: Vec<TopicPermissionDef> = self.read().topic_permissions.values().cloned().collect();
        all.sort_by(|a, b| (&a.user, &a.vhost, &a.exchange).cmp(&(&b.user, &b.vhost, &b.exchange)));
        all
    }

    /// Forgets every permission in a vhost being deleted (the store
    /// forgets them with the vhost).
    pub(crate) fn forget_vhost(&self, vhost: &str) {
        let mut tables = self.write();
        tables.permissions.retain(|(_, v), _| v != vhost);
        tables.topic_permissions.retain(|(_, v, _), _| v != vhost);
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
