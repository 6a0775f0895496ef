//! The account store in MySQL/MariaDB ([`MySqlAccounts`]) and in SQLite
//! ([`SqliteAccounts`]), each on its ledger's pool. The tables are the same
//! and so is every statement (signed 64-bit ids and times, `?`
//! placeholders), written once in [`account_store!`].

use futures_util::future::BoxFuture;
use futures_util::FutureExt as _;
use sqlx::Row;

use super::{Account, AccountError, AccountResult, AccountStore, RefreshToken, RefreshUse};

const COLUMNS: &str = "id, username, password_hash, device_hash, character_name, disabled, created_ms";

/// Ids and times are below 2^63 (account ids below 2^53): stored signed.
fn signed(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn unsigned(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn account<R: Row>(row: &R) -> Result<Account, sqlx::Error>
where
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database>,
    for<'n> &'n str: sqlx::ColumnIndex<R>,
{
    Ok(Account {
        id: unsigned(row.try_get("id")?),
        username: row.try_get("username")?,
        password_hash: row.try_get("password_hash")?,
        device_hash: row.try_get("device_hash")?,
        character: row.try_get("character_name")?,
        disabled: row.try_get("disabled")?,
        created_ms: unsigned(row.try_get("created_ms")?),
    })
}

/// The one implementation of [`AccountStore`], for a store type with a `pool` field.
macro_rules! account_store {
    ($store:ty) => {
        impl $store {
            async fn one(&self, column: &str, id: Option<u64>, text: Option<&str>) -> AccountResult<Option<Account>> {
                let sql = format!("SELECT {COLUMNS} FROM accounts WHERE {column} = ?");
                let query = sqlx::query(&sql);
                let query = match id {
                    Some(id) => query.bind(signed(id)),
                    None => query.bind(text.unwrap_or_default().to_owned()),
                };
                let row = query.fetch_optional(&self.pool).await?;
                Ok(row.map(|r| account(&r)).transpose()?)
            }

            async fn unspent(&self, column: &str, value: Result<u64, &str>) -> AccountResult<u64> {
                let count = format!("SELECT COUNT(*) FROM refresh_tokens WHERE {column} = ? AND NOT spent");
                let delete = format!("DELETE FROM refresh_tokens WHERE {column} = ?");
                let mut tx = self.pool.begin().await?;
                let unspent: i64 = match value {
                    Ok(id) => sqlx::query_scalar(&count).bind(signed(id)).fetch_one(&mut *tx).await?,
                    Err(text) => sqlx::query_scalar(&count).bind(text).fetch_one(&mut *tx).await?,
                };
                match value {
                    Ok(id) => sqlx::query(&delete).bind(signed(id)).execute(&mut *tx).await?,
                    Err(text) => sqlx::query(&delete).bind(text).execute(&mut *tx).await?,
                };
                tx.commit().await?;
                Ok(unsigned(unspent))
            }
        }

        impl AccountStore for $store {
            fn create<'a>(&'a self, a: &'a Account) -> BoxFuture<'a, AccountResult<()>> {
                async move {
                    let sql = format!("INSERT INTO accounts ({COLUMNS}, character_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?)");
                    sqlx::query(&sql)
                        .bind(signed(a.id))
                        .bind(&a.username)
                        .bind(&a.password_hash)
                        .bind(&a.device_hash)
                        .bind(&a.character)
                        .bind(&a.disabled)
                        .bind(signed(a.created_ms))
                        .bind(respawn_names::name_key(&a.character))
                        .execute(&self.pool)
                        .await
                        .map_err(AccountError::of)?;
                    Ok(())
                }
                .boxed()
            }

            fn by_id(&self, id: u64) -> BoxFuture<'_, AccountResult<Option<Account>>> {
                self.one("id", Some(id), None).boxed()
            }

            fn by_username<'a>(&'a self, username: &'a str) -> BoxFuture<'a, AccountResult<Option<Account>>> {
                self.one("username", None, Some(username)).boxed()
            }

            fn by_device<'a>(&'a self, device_hash: &'a str) -> BoxFuture<'a, AccountResult<Option<Account>>> {
                self.one("device_hash", None, Some(device_hash)).boxed()
            }

            fn by_character<'a>(&'a self, name: &'a str) -> BoxFuture<'a, AccountResult<Option<Account>>> {
                async move { self.one("character_key", None, Some(&respawn_names::name_key(name))).await }.boxed()
            }

            fn set_credentials<'a>(
                &'a self,
                id: u64,
                username: &'a str,
                password_hash: &'a str,
            ) -> BoxFuture<'a, AccountResult<bool>> {
                async move {
                    let done = sqlx::query(
                        "UPDATE accounts SET username = ?, password_hash = ? WHERE id = ? AND username IS NULL",
                    )
                    .bind(username)
                    .bind(password_hash)
                    .bind(signed(id))
                    .execute(&self.pool)
                    .await
                    .map_err(AccountError::of)?;
                    Ok(done.rows_affected() == 1)
                }
                .boxed()
            }

            fn set_password<'a>(&'a self, id: u64, password_hash: &'a str) -> BoxFuture<'a, AccountResult<bool>> {
                async move {
                    sqlx::query("UPDATE accounts SET password_hash = ? WHERE id = ? AND username IS NOT NULL")
                        .bind(password_hash)
                        .bind(signed(id))
                        .execute(&self.pool)
                        .await?;
                    // MySQL may count only changed rows: whether one matched is asked directly.
                    Ok(self.by_id(id).await?.is_some_and(|a| a.username.is_some()))
                }
                .boxed()
            }

            fn set_disabled<'a>(&'a self, id: u64, reason: Option<&'a str>) -> BoxFuture<'a, AccountResult<bool>> {
                async move {
                    sqlx::query("UPDATE accounts SET disabled = ? WHERE id = ?")
                        .bind(reason)
                        .bind(signed(id))
                        .execute(&self.pool)
                        .await?;
                    Ok(self.by_id(id).await?.is_some())
                }
                .boxed()
            }

            fn put_refresh<'a>(&'a self, t: &'a RefreshToken) -> BoxFuture<'a, AccountResult<()>> {
                async move {
                    sqlx::query(
                        "INSERT INTO refresh_tokens (hash, account, family, expires_ms, spent) VALUES (?, ?, ?, ?, FALSE)",
                    )
                    .bind(&t.hash)
                    .bind(signed(t.account))
                    .bind(&t.family)
                    .bind(signed(t.expires_ms))
                    .execute(&self.pool)
                    .await?;
                    Ok(())
                }
                .boxed()
            }

            fn use_refresh<'a>(&'a self, hash: &'a str, now_ms: u64) -> BoxFuture<'a, AccountResult<RefreshUse>> {
                async move {
                    // The update is the decision: of two uses at once, one changes the row.
                    let spent = sqlx::query(
                        "UPDATE refresh_tokens SET spent = TRUE WHERE hash = ? AND NOT spent AND expires_ms > ?",
                    )
                    .bind(hash)
                    .bind(signed(now_ms))
                    .execute(&self.pool)
                    .await?
                    .rows_affected()
                        == 1;
                    let row = sqlx::query("SELECT account, family, expires_ms FROM refresh_tokens WHERE hash = ?")
                        .bind(hash)
                        .fetch_optional(&self.pool)
                        .await?;
                    let Some(row) = row else { return Ok(RefreshUse::Invalid) };
                    let account = unsigned(row.try_get("account")?);
                    let family: String = row.try_get("family")?;
                    let live = unsigned(row.try_get("expires_ms")?) > now_ms;
                    Ok(match (spent, live) {
                        (true, _) => RefreshUse::Spent { account, family },
                        (false, true) => RefreshUse::Reused { account, family },
                        (false, false) => RefreshUse::Invalid,
                    })
                }
                .boxed()
            }

            fn revoke_family<'a>(&'a self, family: &'a str) -> BoxFuture<'a, AccountResult<u64>> {
                self.unspent("family", Err(family)).boxed()
            }

            fn revoke_account(&self, id: u64) -> BoxFuture<'_, AccountResult<u64>> {
                self.unspent("account", Ok(id)).boxed()
            }
        }
    };
}

/// Accounts in MySQL/MariaDB.
#[derive(Debug, Clone)]
pub struct MySqlAccounts {
    pool: sqlx::MySqlPool,
}

impl MySqlAccounts {
    /// On a pool whose database the platform's migrations made.
    pub fn new(pool: sqlx::MySqlPool) -> Self {
        Self { pool }
    }
}

/// Accounts in the embedded SQLite ledger.
#[derive(Debug, Clone)]
pub struct SqliteAccounts {
    pool: sqlx::SqlitePool,
}

impl SqliteAccounts {
    /// On a pool whose file the embedded ledger's migrations made.
    pub fn new(pool: sqlx::SqlitePool) -> Self {
        Self { pool }
    }
}

account_store!(MySqlAccounts);
account_store!(SqliteAccounts);
