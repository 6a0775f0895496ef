//! The players' accounts and sessions: sign-up with a username and password
//! or as a guest, sign-in, refresh, logout, a guest taking credentials, and
//! the account as its owner sees it. See [`crate::accounts`] for the model.
//!
//! A wrong password and an unknown username get the same answer in about
//! the same time (the unknown one is checked against a decoy hash). Failed
//! sign-ins are limited per username and per client address; the limits
//! are looked at before an attempt and spent only by a failure.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::Extension;
use respawn_api::players::{AccountView, Credentials, GuestSignUp, Refresh, SetCredentials, SignIn, SignUp, SignedIn};
use respawn_store::ratelimit::{Decision, Quota};
use respawn_token::Claims;
use serde::Deserialize;

use super::unix_now_ms;
use super::{json, rate_limit, text, ClientIp, HttpContext, Refusal, SessionSigner};
use crate::accounts::{Account, AccountError, AccountStore, RefreshToken, RefreshUse, Unique, PASSWORD_LEN};

/// Player ids stay below 2^53, so a browser's numbers hold them exactly.
const ID_BITS: u32 = 53;
/// Tries at a random id or guest name before giving up (a clash is ~never).
const TRIES: usize = 4;

fn refusal(status: StatusCode, message: impl Into<String>) -> Refusal {
    Refusal(status, message.into())
}

pub(super) const SIGN_IN_DISABLED: &str = "sign-in disabled: start the platform server with --token-key";

/// The accounts, or why they cannot be reached now.
pub(super) fn store(ctx: &HttpContext) -> Result<Arc<dyn AccountStore>, Refusal> {
    ctx.accounts.get().cloned().ok_or_else(|| {
        refusal(StatusCode::SERVICE_UNAVAILABLE, "accounts unavailable: their database is not connected yet")
    })
}

/// The accounts and the signer, or why sign-in is not possible now.
pub(super) fn accounts(ctx: &HttpContext) -> Result<(Arc<dyn AccountStore>, &SessionSigner), Refusal> {
    let Some(signer) = &ctx.sessions else {
        return Err(refusal(StatusCode::NOT_FOUND, SIGN_IN_DISABLED));
    };
    Ok((store(ctx)?, signer))
}

pub(super) fn account_failure(e: AccountError) -> Response {
    match e {
        AccountError::Taken(what) => text(StatusCode::CONFLICT, format!("that {} is taken", what.as_str())),
        AccountError::Store(e) => {
            tracing::warn!(error = %e, "account store failed");
            text(StatusCode::SERVICE_UNAVAILABLE, "accounts unavailable: the database did not answer; retry shortly")
        }
    }
}

fn parse<T: for<'de> Deserialize<'de>>(body: &Bytes, what: &str) -> Result<T, Refusal> {
    serde_json::from_slice(body).map_err(|e| refusal(StatusCode::BAD_REQUEST, format!("{what} body: {e}")))
}

/// A new password's argon2id hash, once its length is checked.
pub(super) async fn hash_password(ctx: &HttpContext, password: String) -> Result<String, Response> {
    if !PASSWORD_LEN.contains(&password.len()) {
        let why = format!("password must be {}-{} bytes", PASSWORD_LEN.start(), PASSWORD_LEN.end());
        return Err(text(StatusCode::BAD_REQUEST, why));
    }
    ctx.passwords
        .hash(password)
        .await
        .map_err(|e| text(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot hash the password: {e}")))
}

fn username_key(username: &str) -> Result<String, Refusal> {
    match respawn_names::username_key(username) {
        // `/v1/accounts/guest` is a route of its own, and an operator names accounts by username.
        Some(key) if key == "guest" => Err(refusal(StatusCode::BAD_REQUEST, "the username \"guest\" is reserved")),
        Some(key) => Ok(key),
        None => Err(refusal(StatusCode::BAD_REQUEST, "username must be 3-32 of A-Z a-z 0-9 _ - .")),
    }
}

fn character_name(name: &str) -> Result<String, Refusal> {
    if respawn_names::valid_name(name) {
        Ok(name.to_owned())
    } else {
        Err(refusal(StatusCode::BAD_REQUEST, "character name must be 1-24 of A-Z a-z 0-9 _ -"))
    }
}

fn random_hex(bytes: usize) -> Result<String, Refusal> {
    respawn_token::random_hex(bytes)
        .map_err(|e| refusal(StatusCode::INTERNAL_SERVER_ERROR, format!("no random source: {e}")))
}

fn random_id() -> Result<u64, Refusal> {
    let id = u64::from_str_radix(&random_hex(8)?, 16).unwrap_or_default() >> (64 - ID_BITS);
    Ok(id.max(1))
}

/// Stores a new account, drawing its id (and, for a guest, its name) again on a clash.
async fn create(store: &dyn AccountStore, mut account: Account, guest_name: bool) -> Result<Account, Response> {
    for _ in 0..TRIES {
        account.id = random_id()?;
        if guest_name {
            account.character = format!("guest-{}", random_hex(3)?);
        }
        match store.create(&account).await {
            Ok(()) => return Ok(account),
            Err(AccountError::Taken(Unique::Id)) => continue,
            Err(AccountError::Taken(Unique::Character)) if guest_name => continue,
            Err(e) => return Err(account_failure(e)),
        }
    }
    Err(text(StatusCode::SERVICE_UNAVAILABLE, "could not draw a free account id; retry"))
}

/// A session token and the next refresh token of `family` (a new one without).
async fn issue(
    store: &dyn AccountStore,
    signer: &SessionSigner,
    account: &Account,
    family: Option<String>,
) -> Result<SignedIn, Response> {
    let now_ms = unix_now_ms();
    let expires_at = now_ms / 1_000 + signer.ttl.as_secs();
    let claims = Claims { player_id: account.id, name: account.character.clone(), expires_at };
    let session_token = signer
        .key
        .sign(&claims)
        .map_err(|e| text(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot sign a token: {e}")))?;
    let refresh_token = random_hex(32)?;
    let refresh = RefreshToken {
        hash: respawn_token::hash_secret(&refresh_token),
        account: account.id,
        family: match family {
            Some(f) => f,
            None => random_hex(16)?,
        },
        expires_ms: now_ms + signer.refresh_ttl.as_millis() as u64,
    };
    store.put_refresh(&refresh).await.map_err(account_failure)?;
    Ok(SignedIn {
        account_id: account.id,
        character: account.character.clone(),
        username: account.username.clone(),
        session_token,
        expires_at,
        refresh_token,
        refresh_expires_at: refresh.expires_ms / 1_000,
        device_secret: None,
    })
}

pub(super) fn account_view(account: &Account) -> AccountView {
    AccountView {
        id: account.id,
        username: account.username.clone(),
        character: account.character.clone(),
        guest: account.username.is_none(),
        disabled: account.disabled.clone(),
        created_ms: account.created_ms,
    }
}

fn disabled(account: &Account) -> Option<Response> {
    account.disabled.as_ref().map(|why| text(StatusCode::FORBIDDEN, format!("this account is disabled: {why}")))
}

/// `POST /v1/accounts`: a username, a password and a character.
pub(super) async fn sign_up(State(ctx): State<HttpContext>, ClientIp(client): ClientIp, body: Bytes) -> Response {
    let result = async {
        rate_limit(&ctx, &format!("signup:ip:{}", client), ctx.limits.login_per_ip, "sign-up").await?;
        let (store, signer) = accounts(&ctx)?;
        let request: SignUp = parse(&body, "sign-up")?;
        let username = username_key(&request.username)?;
        let character = character_name(request.character.as_deref().unwrap_or(&request.username))?;
        let password_hash = hash_password(&ctx, request.password).await?;
        let account = Account {
            id: 0,
            username: Some(username),
            password_hash: Some(password_hash),
            device_hash: None,
            character,
            disabled: None,
            created_ms: unix_now_ms(),
        };
        let account = create(store.as_ref(), account, false).await?;
        ctx.metrics.sign_ups.inc();
        let signed_in = issue(store.as_ref(), signer, &account, None).await?;
        Ok(json(StatusCode::CREATED, &signed_in))
    };
    result.await.unwrap_or_else(|refused| refused)
}

/// `POST /v1/accounts/guest`: an account signed in to with a device secret.
pub(super) async fn guest(State(ctx): State<HttpContext>, ClientIp(client): ClientIp, body: Bytes) -> Response {
    let result = async {
        rate_limit(&ctx, &format!("signup:ip:{}", client), ctx.limits.login_per_ip, "sign-up").await?;
        let (store, signer) = accounts(&ctx)?;
        let request: GuestSignUp = if body.is_empty() { GuestSignUp::default() } else { parse(&body, "guest")? };
        let named = request.character.as_deref().map(character_name).transpose()?;
        let device_secret = random_hex(32)?;
        let account = Account {
            id: 0,
            username: None,
            password_hash: None,
            device_hash: Some(respawn_token::hash_secret(&device_secret)),
            character: named.clone().unwrap_or_default(),
            disabled: None,
            created_ms: unix_now_ms(),
        };
        let account = create(store.as_ref(), account, named.is_none()).await?;
        ctx.metrics.sign_ups.inc();
        let mut signed_in = issue(store.as_ref(), signer, &account, None).await?;
        signed_in.device_secret = Some(device_secret);
        Ok(json(StatusCode::CREATED, &signed_in))
    };
    result.await.unwrap_or_else(|refused| refused)
}

/// Refused before an attempt if either failure limit is spent.
async fn failures_allow(ctx: &HttpContext, keys: &[(String, Quota)]) -> Result<(), Response> {
    for (key, quota) in keys {
        match ctx.limiter.peek(key, *quota).await {
            Ok(Decision::Allowed) => {}
            Ok(Decision::Limited { .. }) => {
                // The answer of the limit itself, with its Retry-After.
                return rate_limit(ctx, key, *quota, "failed sign-in").await;
            }
            Err(e) => return Err(super::store_failure("rate limiter", e)),
        }
    }
    Ok(())
}

/// A failed attempt spends one of each failure limit.
async fn spend_failure(ctx: &HttpContext, keys: &[(String, Quota)]) {
    for (key, quota) in keys {
        let _ = ctx.limiter.check(key, *quota).await;
    }
}

/// `POST /v1/sessions`: sign in with a username and password or a device secret.
pub(super) async fn sign_in(State(ctx): State<HttpContext>, ClientIp(client): ClientIp, body: Bytes) -> Response {
    let result = async {
        rate_limit(&ctx, &format!("login:ip:{}", client), ctx.limits.login_per_ip, "sign-in").await?;
        let (store, signer) = accounts(&ctx)?;
        let request: SignIn = serde_json::from_slice(&body).map_err(|e| {
            let hint = if e.to_string().contains("unknown field `name`") {
                "; a name alone no longer signs in: make an account (POST /v1/accounts, or /v1/accounts/guest) and sign in with it"
            } else {
                ""
            };
            text(StatusCode::BAD_REQUEST, format!("sign-in body: {e}{hint}"))
        })?;
        let credentials = request.credentials().map_err(|why| text(StatusCode::BAD_REQUEST, why))?;
        let ip_key = (format!("signin-failed:ip:{}", client), ctx.limits.failed_sign_ins_per_ip);
        let account = match credentials {
            Credentials::Password { username, password } => {
                // A username that cannot exist is checked like one that does not.
                let key = respawn_names::username_key(username);
                let account_key = (
                    format!("signin-failed:account:{}", key.as_deref().unwrap_or("-")),
                    ctx.limits.failed_sign_ins_per_account,
                );
                let limits = [ip_key, account_key];
                failures_allow(&ctx, &limits).await?;
                let found = match &key {
                    Some(key) => store.by_username(key).await.map_err(account_failure)?,
                    None => None,
                };
                let stored = found.as_ref().and_then(|a| a.password_hash.clone());
                if !ctx.passwords.verify(password.to_owned(), stored).await {
                    spend_failure(&ctx, &limits).await;
                    ctx.metrics.sign_in(false);
                    return Err(text(StatusCode::UNAUTHORIZED, "wrong username or password"));
                }
                found
            }
            Credentials::Device { secret } => {
                let limits = [ip_key];
                failures_allow(&ctx, &limits).await?;
                let found = store.by_device(&respawn_token::hash_secret(secret)).await.map_err(account_failure)?;
                if found.is_none() {
                    spend_failure(&ctx, &limits).await;
                    ctx.metrics.sign_in(false);
                    return Err(text(StatusCode::UNAUTHORIZED, "unknown device secret"));
                }
                found
            }
        };
        let Some(account) = account else {
            return Err(text(StatusCode::UNAUTHORIZED, "wrong username or password"));
        };
        if let Some(refused) = disabled(&account) {
            return Err(refused);
        }
        ctx.metrics.sign_in(true);
        Ok(json(StatusCode::OK, &issue(store.as_ref(), signer, &account, None).await?))
    };
    result.await.unwrap_or_else(|refused| refused)
}

/// `POST /v1/sessions/refresh`: the next session and refresh token.
pub(super) async fn refresh(State(ctx): State<HttpContext>, ClientIp(client): ClientIp, body: Bytes) -> Response {
    let result = async {
        rate_limit(&ctx, &format!("refresh:ip:{}", client), ctx.limits.login_per_ip, "refresh").await?;
        let (store, signer) = accounts(&ctx)?;
        let request: Refresh = parse(&body, "refresh")?;
        let used = store
            .use_refresh(&respawn_token::hash_secret(&request.refresh_token), unix_now_ms())
            .await
            .map_err(account_failure)?;
        let (account, family) = match used {
            RefreshUse::Spent { account, family } => (account, family),
            RefreshUse::Reused { account, family } => {
                let revoked = store.revoke_family(&family).await.map_err(account_failure)?;
                tracing::warn!(account, revoked, "a spent refresh token was used again; its sign-in is revoked");
                return Err(text(
                    StatusCode::UNAUTHORIZED,
                    "refresh token already used: this sign-in is revoked everywhere; sign in again",
                ));
            }
            RefreshUse::Invalid => {
                return Err(text(StatusCode::UNAUTHORIZED, "unknown, expired or revoked refresh token; sign in again"))
            }
        };
        let Some(account) = store.by_id(account).await.map_err(account_failure)? else {
            return Err(text(StatusCode::UNAUTHORIZED, "the account is gone; sign in again"));
        };
        if let Some(refused) = disabled(&account) {
            return Err(refused);
        }
        Ok(json(StatusCode::OK, &issue(store.as_ref(), signer, &account, Some(family)).await?))
    };
    result.await.unwrap_or_else(|refused| refused)
}

/// `POST /v1/sessions/logout`: the refresh token's sign-in ends (its session
/// token runs out by itself, within minutes).
pub(super) async fn logout(State(ctx): State<HttpContext>, body: Bytes) -> Response {
    let result = async {
        let store = store(&ctx)?;
        let request: Refresh = parse(&body, "logout")?;
        let used = store
            .use_refresh(&respawn_token::hash_secret(&request.refresh_token), unix_now_ms())
            .await
            .map_err(account_failure)?;
        if let RefreshUse::Spent { family, .. } | RefreshUse::Reused { family, .. } = used {
            store.revoke_family(&family).await.map_err(account_failure)?;
        }
        Ok(axum::response::IntoResponse::into_response(StatusCode::NO_CONTENT))
    };
    result.await.unwrap_or_else(|refused| refused)
}

/// `GET /v1/accounts/me`.
pub(super) async fn me(State(ctx): State<HttpContext>, Extension(claims): Extension<Claims>) -> Response {
    let result = async {
        let store = store(&ctx)?;
        match store.by_id(claims.player_id).await.map_err(account_failure)? {
            Some(account) => Ok(json(StatusCode::OK, &account_view(&account))),
            None => Err(text(StatusCode::NOT_FOUND, "no such account")),
        }
    };
    result.await.unwrap_or_else(|refused| refused)
}

/// `PUT /v1/accounts/me/credentials`: a guest takes a username and password.
pub(super) async fn set_credentials(
    State(ctx): State<HttpContext>,
    Extension(claims): Extension<Claims>,
    body: Bytes,
) -> Response {
    let result = async {
        let store = store(&ctx)?;
        let request: SetCredentials = parse(&body, "credentials")?;
        let username = username_key(&request.username)?;
        let Some(account) = store.by_id(claims.player_id).await.map_err(account_failure)? else {
            return Err(text(StatusCode::NOT_FOUND, "no such account"));
        };
        if let Some(refused) = disabled(&account) {
            return Err(refused);
        }
        if account.username.is_some() {
            return Err(text(StatusCode::CONFLICT, "this account already has a username and password"));
        }
        let hash = hash_password(&ctx, request.password).await?;
        if !store.set_credentials(account.id, &username, &hash).await.map_err(account_failure)? {
            return Err(text(StatusCode::CONFLICT, "this account already has a username and password"));
        }
        Ok(text(StatusCode::OK, format!("account {} can now sign in as {username}", account.id)))
    };
    result.await.unwrap_or_else(|refused| refused)
}
