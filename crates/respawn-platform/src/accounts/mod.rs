//! Players' accounts: who may sign in, and as which character. An account
//! is signed in to with a username and password (argon2id, [`Passwords`])
//! or, for a guest, with a device secret the client keeps (random, so a
//! SHA-256 of it is enough); a guest can later be given a username and
//! password. Signing in yields a short-lived session token (the zone
//! servers' `respawn_token` format) and a refresh token that is used once:
//! each use hands out the next of its family, and a reused one revokes the
//! whole family (someone else holds a copy). Stored in MySQL beside the
//! ledger ([`MySqlAccounts`]), and in the embedded SQLite ledger for
//! `respawn up` ([`SqliteAccounts`]); both keep one contract
//! (`tests/accounts.rs`).

use std::fmt::Debug;
use std::sync::{Arc, OnceLock};

use futures_util::future::BoxFuture;

mod passwords;
mod sql;

pub use passwords::{Passwords, PASSWORD_LEN};
pub use sql::{MySqlAccounts, SqliteAccounts};

/// One account, as stored. Its id is also its character's player id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub id: u64,
    /// Lowercase ([`respawn_names::username_key`]); `None` for a guest.
    pub username: Option<String>,
    /// The argon2id PHC string; `None` for a guest.
    pub password_hash: Option<String>,
    /// Hex SHA-256 of a guest's device secret.
    pub device_hash: Option<String>,
    /// The account's one character's name, unique whatever its case.
    pub character: String,
    /// Why an operator disabled it; `None` while it may sign in.
    pub disabled: Option<String>,
    pub created_ms: u64,
}

/// A refresh token as stored: never the secret, only its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshToken {
    /// Hex SHA-256 of the secret.
    pub hash: String,
    pub account: u64,
    /// The sign-in it descends from: a reuse revokes every token of it.
    pub family: String,
    pub expires_ms: u64,
}

/// What using a refresh token found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshUse {
    /// It was valid and is now spent: hand out the next of its family.
    Spent { account: u64, family: String },
    /// Already spent: a copy is in someone else's hands.
    Reused { account: u64, family: String },
    /// Unknown, revoked or expired.
    Invalid,
}

/// A unique field a new or changed account collided on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unique {
    Id,
    Username,
    Character,
    Device,
}

impl Unique {
    pub fn as_str(self) -> &'static str {
        match self {
            Unique::Id => "id",
            Unique::Username => "username",
            Unique::Character => "character name",
            Unique::Device => "device",
        }
    }

    /// Which unique column a database's duplicate-key message names.
    fn of_message(message: &str) -> Self {
        if message.contains("username") {
            Unique::Username
        } else if message.contains("character_key") {
            Unique::Character
        } else if message.contains("device_hash") {
            Unique::Device
        } else {
            Unique::Id
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("that {} is taken", .0.as_str())]
    Taken(Unique),
    #[error("accounts unavailable: {0}")]
    Store(#[from] sqlx::Error),
}

impl AccountError {
    /// A duplicate key becomes [`AccountError::Taken`]; anything else stays a store error.
    fn of(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                AccountError::Taken(Unique::of_message(db.message()))
            }
            _ => AccountError::Store(e),
        }
    }
}

pub type AccountResult<T> = Result<T, AccountError>;

/// Where accounts and refresh tokens live. Every change is one statement or
/// one transaction, so two platform instances never half-apply one.
pub trait AccountStore: Send + Sync + Debug {
    /// Adds an account; [`AccountError::Taken`] if its id, username,
    /// character name or device is already another's.
    fn create<'a>(&'a self, account: &'a Account) -> BoxFuture<'a, AccountResult<()>>;
    fn by_id(&self, id: u64) -> BoxFuture<'_, AccountResult<Option<Account>>>;
    /// By lowercase username.
    fn by_username<'a>(&'a self, username: &'a str) -> BoxFuture<'a, AccountResult<Option<Account>>>;
    fn by_device<'a>(&'a self, device_hash: &'a str) -> BoxFuture<'a, AccountResult<Option<Account>>>;
    /// By character name, whatever its case.
    fn by_character<'a>(&'a self, name: &'a str) -> BoxFuture<'a, AccountResult<Option<Account>>>;
    /// Gives a guest a username and password; `false` if the account
    /// already has a username (or does not exist).
    fn set_credentials<'a>(
        &'a self,
        id: u64,
        username: &'a str,
        password_hash: &'a str,
    ) -> BoxFuture<'a, AccountResult<bool>>;
    /// An operator's password reset; `false` if no such account has a username.
    fn set_password<'a>(&'a self, id: u64, password_hash: &'a str) -> BoxFuture<'a, AccountResult<bool>>;
    /// Disables (with a reason) or enables (`None`); `false` if no such account.
    fn set_disabled<'a>(&'a self, id: u64, reason: Option<&'a str>) -> BoxFuture<'a, AccountResult<bool>>;

    fn put_refresh<'a>(&'a self, token: &'a RefreshToken) -> BoxFuture<'a, AccountResult<()>>;
    /// Spends the token with this hash, atomically: of two uses at once one
    /// gets [`RefreshUse::Spent`], the other [`RefreshUse::Reused`].
    fn use_refresh<'a>(&'a self, hash: &'a str, now_ms: u64) -> BoxFuture<'a, AccountResult<RefreshUse>>;
    /// Revokes every token of a family; how many were still unspent.
    fn revoke_family<'a>(&'a self, family: &'a str) -> BoxFuture<'a, AccountResult<u64>>;
    /// Revokes every refresh token of an account; how many were still unspent.
    fn revoke_account(&self, id: u64) -> BoxFuture<'_, AccountResult<u64>>;
}

/// The accounts once the database is connected; empty while the platform
/// server waits for MySQL (sign-in then answers 503).
pub type AccountsSlot = Arc<OnceLock<Arc<dyn AccountStore>>>;
