//! What game clients and the platform server say to each other: accounts,
//! sign-in, refresh, and joining a zone ([`PlayerApi`] is the client).
//!
//! An account is made with a username and password ([`SignUp`]) or as a
//! guest ([`GuestSignUp`]: the platform hands out a device secret the
//! client keeps). Signing in ([`SignIn`]) answers [`SignedIn`]: a
//! short-lived session token and a refresh token, each use of which
//! ([`Refresh`]) hands out the next. The session token, as a bearer token,
//! asks to play in a zone ([`Play`] → [`PlayGrant`]: the zone server's
//! address) and is what the zone server admits.

use reqwest::Method;
use serde::{Deserialize, Serialize};

use crate::http::{Call, CallError};

/// `POST /v1/accounts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignUp {
    /// 3-32 of A-Z a-z 0-9 _ - . (compared without case).
    pub username: String,
    /// 8-128 bytes.
    pub password: String,
    /// The character's name (1-24 of A-Z a-z 0-9 _ -); the username if not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub character: Option<String>,
}

/// `POST /v1/accounts/guest`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuestSignUp {
    /// The character's name; a generated `guest-…` one if not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub character: Option<String>,
}

/// `POST /v1/sessions`: a username and password, or a guest's device secret.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignIn {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_secret: Option<String>,
}

/// What a [`SignIn`] presents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credentials<'a> {
    Password { username: &'a str, password: &'a str },
    Device { secret: &'a str },
}

impl SignIn {
    pub fn password(username: &str, password: &str) -> Self {
        Self { username: Some(username.into()), password: Some(password.into()), device_secret: None }
    }

    pub fn device(secret: &str) -> Self {
        Self { device_secret: Some(secret.into()), ..Self::default() }
    }

    /// Exactly one way of signing in, or why not.
    pub fn credentials(&self) -> Result<Credentials<'_>, &'static str> {
        match (&self.username, &self.password, &self.device_secret) {
            (Some(username), Some(password), None) => Ok(Credentials::Password { username, password }),
            (None, None, Some(secret)) => Ok(Credentials::Device { secret }),
            _ => Err("sign in with either a username and password or a device secret"),
        }
    }
}

/// `POST /v1/sessions/refresh` and `POST /v1/sessions/logout`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Refresh {
    pub refresh_token: String,
}

/// A sign-in's answer (also of a sign-up and a refresh).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedIn {
    /// Also the character's player id.
    pub account_id: u64,
    pub character: String,
    /// `None` for a guest.
    pub username: Option<String>,
    /// The bearer token of `/v1/play` and what a zone server admits.
    pub session_token: String,
    /// Unix seconds.
    pub expires_at: u64,
    /// Used once, by `/v1/sessions/refresh`, for the next pair.
    pub refresh_token: String,
    /// Unix seconds.
    pub refresh_expires_at: u64,
    /// Only when a guest account was just made: the secret to sign in with
    /// again. It is not stored in clear and cannot be shown again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_secret: Option<String>,
}

/// `PUT /v1/accounts/me/credentials`: a guest takes a username and password.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetCredentials {
    pub username: String,
    pub password: String,
}

/// `POST /v1/play`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Play {
    pub zone: String,
}

/// Where to play: a ready zone server hosting the zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlayGrant {
    /// The session token the zone server admits.
    pub token: String,
    pub player_id: u64,
    pub name: String,
    pub zone: String,
    /// The registry id of the server chosen.
    pub server: String,
    /// Where to connect: the server's WebSocket address.
    pub address: String,
    /// Unix seconds.
    pub expires_at: u64,
}

/// An account as its owner and operators see it (never a secret or hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountView {
    pub id: u64,
    pub username: Option<String>,
    pub character: String,
    pub guest: bool,
    /// Why an operator disabled it.
    pub disabled: Option<String>,
    /// Unix milliseconds.
    pub created_ms: u64,
}

/// `POST /v1/ops/accounts/{id}/password`: an operator's reset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResetPassword {
    pub password: String,
}

/// The platform's player routes, for a client at `platform` (`host:port`).
#[derive(Debug, Clone)]
pub struct PlayerApi {
    pub platform: String,
}

impl PlayerApi {
    pub fn new(platform: impl Into<String>) -> Self {
        Self { platform: platform.into() }
    }

    fn call<'a>(&'a self, method: Method, path: &'a str) -> Call<'a> {
        Call::new(method, &self.platform, path)
    }

    pub async fn sign_up(&self, request: &SignUp) -> Result<SignedIn, CallError> {
        self.call(Method::POST, "/v1/accounts").json(request).read().await
    }

    pub async fn guest(&self, request: &GuestSignUp) -> Result<SignedIn, CallError> {
        self.call(Method::POST, "/v1/accounts/guest").json(request).read().await
    }

    pub async fn sign_in(&self, request: &SignIn) -> Result<SignedIn, CallError> {
        self.call(Method::POST, "/v1/sessions").json(request).read().await
    }

    pub async fn refresh(&self, refresh_token: &str) -> Result<SignedIn, CallError> {
        let body = Refresh { refresh_token: refresh_token.into() };
        self.call(Method::POST, "/v1/sessions/refresh").json(&body).read().await
    }

    pub async fn logout(&self, refresh_token: &str) -> Result<(), CallError> {
        let body = Refresh { refresh_token: refresh_token.into() };
        self.call(Method::POST, "/v1/sessions/logout").json(&body).text().await.map(drop)
    }

    pub async fn me(&self, session_token: &str) -> Result<AccountView, CallError> {
        self.call(Method::GET, "/v1/accounts/me").bearer(Some(session_token)).read().await
    }

    pub async fn set_credentials(&self, session_token: &str, request: &SetCredentials) -> Result<(), CallError> {
        let call = self.call(Method::PUT, "/v1/accounts/me/credentials").bearer(Some(session_token));
        call.json(request).text().await.map(drop)
    }

    pub async fn play(&self, session_token: &str, zone: &str) -> Result<PlayGrant, CallError> {
        let call = self.call(Method::POST, "/v1/play").bearer(Some(session_token));
        call.json(&Play { zone: zone.into() }).read().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sign_in_presents_exactly_one_kind_of_credentials() {
        let by_password = SignIn::password("ann", "secret-1");
        assert_eq!(by_password.credentials(), Ok(Credentials::Password { username: "ann", password: "secret-1" }));
        assert_eq!(SignIn::device("d").credentials(), Ok(Credentials::Device { secret: "d" }));
        assert!(SignIn::default().credentials().is_err());
        let both = SignIn { device_secret: Some("d".into()), ..by_password };
        assert!(both.credentials().is_err());
        assert!(SignIn { password: None, ..SignIn::password("ann", "x") }.credentials().is_err());
    }

    #[test]
    fn the_old_name_login_is_refused_by_the_contract_with_the_field_named() {
        let err = serde_json::from_str::<SignIn>(r#"{"name":"ann","zone":"meadow"}"#).unwrap_err().to_string();
        assert!(err.contains("unknown field `name`"), "{err}");
    }
}
