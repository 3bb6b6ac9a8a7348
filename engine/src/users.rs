//! Users: who may receive mail here and log in, with argon2id password hashes.

use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use rkyv::rancor;
use sled::Tree;

use crate::address::user_key;
use crate::store::record::{ArchivedUserRecord, UserRecord};
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("{0:?} is not a valid address (want local@domain, no spaces)")]
    BadAddress(String),
    #[error("user {0} already exists")]
    Exists(String),
    #[error("no user {0}")]
    NoSuchUser(String),
    #[error("empty password")]
    EmptyPassword,
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("password hashing failed: {0}")]
    Hash(String),
}

/// The `users` tree.
#[derive(Clone)]
pub struct Users {
    tree: Tree,
}

fn sled_error(e: sled::Error) -> UserError {
    UserError::Store(StoreError::from_sled(e))
}

fn hash(password: &str) -> Result<String, UserError> {
    if password.is_empty() {
        return Err(UserError::EmptyPassword);
    }
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| UserError::Hash(e.to_string()))
}

impl Users {
    pub fn new(tree: Tree) -> Users {
        Users { tree }
    }

    fn key(address: &str) -> Result<String, UserError> {
        user_key(address).map_err(|_| UserError::BadAddress(address.to_string()))
    }

    fn write(&self, key: &str, address: &str, password: &str) -> Result<(), UserError> {
        let record = UserRecord { address: address.trim().to_string(), password_hash: hash(password)? };
        let bytes = rkyv::to_bytes::<rancor::Error>(&record).map_err(|e| UserError::Hash(e.to_string()))?;
        self.tree.insert(key, bytes.as_slice()).map_err(sled_error)?;
        self.tree.flush().map_err(sled_error)?;
        Ok(())
    }

    pub fn add(&self, address: &str, password: &str) -> Result<(), UserError> {
        let key = Self::key(address)?;
        if self.tree.contains_key(&key).map_err(sled_error)? {
            return Err(UserError::Exists(key));
        }
        self.write(&key, address, password)
    }

    pub fn set_password(&self, address: &str, password: &str) -> Result<(), UserError> {
        let key = Self::key(address)?;
        let Some(existing) = self.get(&key)? else { return Err(UserError::NoSuchUser(key)) };
        self.write(&key, &existing.address, password)
    }

    pub fn delete(&self, address: &str) -> Result<(), UserError> {
        let key = Self::key(address)?;
        if self.tree.remove(&key).map_err(sled_error)?.is_none() {
            return Err(UserError::NoSuchUser(key));
        }
        self.tree.flush().map_err(sled_error)?;
        Ok(())
    }

    /// `key` is the normalised address ([`crate::address::Address::key`]).
    pub fn exists(&self, key: &str) -> Result<bool, UserError> {
        self.tree.contains_key(key).map_err(sled_error)
    }

    fn get(&self, key: &str) -> Result<Option<UserRecord>, UserError> {
        let Some(bytes) = self.tree.get(key).map_err(sled_error)? else { return Ok(None) };
        let record = rkyv::from_bytes::<UserRecord, rancor::Error>(&bytes)
            .map_err(|e| UserError::Store(StoreError::Corrupt(format!("user {key}: {e}"))))?;
        Ok(Some(record))
    }

    /// All users, by normalised address.
    pub fn list(&self) -> Result<Vec<UserRecord>, UserError> {
        let mut users = Vec::new();
        for item in self.tree.iter() {
            let (key, bytes) = item.map_err(sled_error)?;
            let record = rkyv::from_bytes::<UserRecord, rancor::Error>(&bytes).map_err(|e| {
                UserError::Store(StoreError::Corrupt(format!("user {}: {e}", String::from_utf8_lossy(&key))))
            })?;
            users.push(record);
        }
        Ok(users)
    }

    /// Checks a login. Returns the user's key if the password is right. An unknown user
    /// costs a hash all the same, so timing does not tell users apart.
    pub fn authenticate(&self, address: &str, password: &str) -> Option<String> {
        let key = Self::key(address).ok();
        let record = key.as_deref().and_then(|k| self.get(k).ok().flatten());
        match record {
            Some(record) => {
                let parsed = PasswordHash::new(&record.password_hash).ok()?;
                Argon2::default().verify_password(password.as_bytes(), &parsed).ok()?;
                key
            }
            None => {
                let _ = hash("not-a-user-password");
                None
            }
        }
    }
}

/// Reads a stored user record in place; used by `verify`.
pub fn check_user_record(bytes: &[u8]) -> Result<(), String> {
    rkyv::access::<ArchivedUserRecord, rancor::Error>(bytes).map(|_| ()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_authenticate_passwd_delete() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let users = Users::new(db.open_tree("users").unwrap());
        users.add("TA@CS4410", "secret").unwrap();
        assert!(matches!(users.add("ta@cs4410", "x"), Err(UserError::Exists(_))));
        assert_eq!(users.authenticate("ta@CS4410", "secret").as_deref(), Some("ta@cs4410"));
        assert_eq!(users.authenticate("ta@CS4410", "wrong"), None);
        assert_eq!(users.authenticate("nobody@CS4410", "secret"), None);
        users.set_password("TA@CS4410", "new").unwrap();
        assert_eq!(users.authenticate("TA@CS4410", "secret"), None);
        assert!(users.authenticate("TA@CS4410", "new").is_some());
        let stored = users.list().unwrap();
        assert_eq!(stored[0].address, "TA@CS4410");
        assert!(stored[0].password_hash.starts_with("$argon2id$"));
        users.delete("ta@cs4410").unwrap();
        assert!(users.list().unwrap().is_empty());
        assert!(matches!(users.add("bad address@x", "p"), Err(UserError::BadAddress(_))));
    }
}
