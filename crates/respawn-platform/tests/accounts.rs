//! One contract for every account store, run against real MariaDB (started
//! by `scripts/services`) and a real SQLite file: unique usernames,
//! character names and devices whatever their case, a guest taking
//! credentials once, and refresh tokens spent exactly once.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use respawn_platform::accounts::{Account, AccountError, AccountStore, RefreshToken, RefreshUse, Unique};
use respawn_platform::{connect, SqliteLedger};
use sqlx::Connection;

fn account(id: u64, username: Option<&str>, character: &str, device: Option<&str>) -> Account {
    Account {
        id,
        username: username.map(str::to_owned),
        password_hash: username.map(|_| "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".to_owned()),
        device_hash: device.map(respawn_token::hash_secret),
        character: character.to_owned(),
        disabled: None,
        created_ms: 1_795_000_000_000,
    }
}

fn refresh(secret: &str, account: u64, family: &str, expires_ms: u64) -> RefreshToken {
    RefreshToken { hash: respawn_token::hash_secret(secret), account, family: family.to_owned(), expires_ms }
}

fn taken(result: Result<(), AccountError>) -> Option<Unique> {
    match result {
        Err(AccountError::Taken(what)) => Some(what),
        _ => None,
    }
}

async fn contract(store: Arc<dyn AccountStore>) -> Result<()> {
    // The largest id a browser's number holds exactly.
    let ann = account((1 << 53) - 1, Some("ann"), "Ann", None);
    store.create(&ann).await?;
    assert_eq!(store.by_id(ann.id).await?, Some(ann.clone()));
    assert_eq!(store.by_username("ann").await?, Some(ann.clone()));
    assert_eq!(store.by_character("aNN").await?, Some(ann.clone()), "a character is found whatever the case");
    assert_eq!(store.by_id(7).await?, None);

    // Every unique field refuses a second owner, and says which.
    assert_eq!(taken(store.create(&account(ann.id, Some("other"), "Other", None)).await), Some(Unique::Id));
    assert_eq!(taken(store.create(&account(2, Some("ann"), "Bea", None)).await), Some(Unique::Username));
    assert_eq!(taken(store.create(&account(2, Some("bea"), "ANN", None)).await), Some(Unique::Character));
    let guest = account(3, None, "guest-1a2b3c", Some("device secret"));
    store.create(&guest).await?;
    assert_eq!(taken(store.create(&account(4, None, "guest-2", Some("device secret"))).await), Some(Unique::Device));
    assert_eq!(store.by_device(&respawn_token::hash_secret("device secret")).await?, Some(guest.clone()));
    assert_eq!(store.by_device(&respawn_token::hash_secret("other secret")).await?, None);
    // Two guests without usernames (NULLs) are no clash.
    store.create(&account(5, None, "guest-5", Some("another device"))).await?;

    // A guest takes a username and password once; a taken username is refused.
    assert!(matches!(store.set_credentials(guest.id, "ann", "h").await, Err(AccountError::Taken(Unique::Username))));
    assert!(store.set_credentials(guest.id, "gus", "hash-1").await?);
    assert!(!store.set_credentials(guest.id, "gus2", "hash-2").await?, "only once");
    let gus = store.by_username("gus").await?.expect("gus");
    assert_eq!((gus.id, gus.password_hash.as_deref()), (guest.id, Some("hash-1")));
    assert!(gus.device_hash.is_some(), "the device still signs in");
    assert!(store.set_password(gus.id, "hash-3").await?);
    assert!(!store.set_password(5, "hash").await?, "a guest has no password to reset");
    assert!(!store.set_password(99, "hash").await?, "nor an unknown account");
    assert!(store.set_disabled(ann.id, Some("cheating")).await?);
    assert_eq!(store.by_id(ann.id).await?.and_then(|a| a.disabled).as_deref(), Some("cheating"));
    assert!(store.set_disabled(ann.id, None).await?);
    assert_eq!(store.by_id(ann.id).await?.and_then(|a| a.disabled), None);
    assert!(!store.set_disabled(99, Some("x")).await?);

    // A refresh token is spent once; its reuse is recognised; expired is invalid.
    let now = 1_795_000_000_000;
    store.put_refresh(&refresh("r1", ann.id, "family-a", now + 60_000)).await?;
    store.put_refresh(&refresh("r2", ann.id, "family-a", now + 60_000)).await?;
    store.put_refresh(&refresh("old", ann.id, "family-b", now - 1)).await?;
    store.put_refresh(&refresh("g1", gus.id, "family-g", now + 60_000)).await?;
    let spent = RefreshUse::Spent { account: ann.id, family: "family-a".into() };
    assert_eq!(store.use_refresh(&respawn_token::hash_secret("r1"), now).await?, spent);
    let reused = RefreshUse::Reused { account: ann.id, family: "family-a".into() };
    assert_eq!(store.use_refresh(&respawn_token::hash_secret("r1"), now).await?, reused);
    assert_eq!(store.use_refresh(&respawn_token::hash_secret("old"), now).await?, RefreshUse::Invalid);
    assert_eq!(store.use_refresh(&respawn_token::hash_secret("unknown"), now).await?, RefreshUse::Invalid);
    // Of two uses at once, exactly one spends the token.
    store.put_refresh(&refresh("race", ann.id, "family-c", now + 60_000)).await?;
    let race = respawn_token::hash_secret("race");
    let (a, b) = tokio::join!(store.use_refresh(&race, now), store.use_refresh(&race, now));
    let spends = [a?, b?].iter().filter(|u| matches!(u, RefreshUse::Spent { .. })).count();
    assert_eq!(spends, 1, "one of two simultaneous uses spends the token");

    assert_eq!(store.revoke_family("family-a").await?, 1, "r2 was still unspent");
    assert_eq!(store.use_refresh(&respawn_token::hash_secret("r2"), now).await?, RefreshUse::Invalid);
    assert_eq!(store.revoke_account(gus.id).await?, 1);
    assert_eq!(store.use_refresh(&respawn_token::hash_secret("g1"), now).await?, RefreshUse::Invalid);
    assert_eq!(store.revoke_account(gus.id).await?, 0);
    Ok(())
}

#[tokio::test]
async fn the_mysql_accounts_keep_the_contract() -> Result<()> {
    let server = std::env::var("RESPAWN_TEST_MYSQL_URL").expect("run through scripts/test");
    let database = format!("respawn_accounts_{}", respawn_harness::unique_suffix());
    let mut admin = sqlx::MySqlConnection::connect(&server).await?;
    sqlx::query(&format!("CREATE DATABASE {database}")).execute(&mut admin).await?;
    let ledger = connect(&format!("{server}/{database}"), Duration::from_secs(10)).await?;
    contract(Arc::new(ledger.accounts())).await?;
    sqlx::query(&format!("DROP DATABASE {database}")).execute(&mut admin).await?;
    Ok(())
}

#[tokio::test]
async fn the_sqlite_accounts_keep_the_contract_and_their_data_across_reopening() -> Result<()> {
    let dir = respawn_harness::TempDir::new("accounts-test")?;
    let path = dir.path().join("events.sqlite");
    contract(Arc::new(SqliteLedger::open(&path).await?.accounts())).await?;
    let reopened = SqliteLedger::open(&path).await?.accounts();
    assert!(reopened.by_username("gus").await?.is_some(), "the accounts outlive the process");
    Ok(())
}
