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

use std::collections::BTreeMap;

use reqwest::Method;
use respawn_token::TokenKey;
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
    /// What the zone server lets the character in with (sent in the join
    /// message): good for [`CHARACTER_TICKET_TTL_SECS`], for this zone.
    pub character_ticket: String,
}

/// What a character ticket is sealed for ([`respawn_token::TokenKey::seal`]).
pub const CHARACTER_TICKET_PURPOSE: &str = "character";
/// How long a character ticket is good for.
pub const CHARACTER_TICKET_TTL_SECS: u64 = 60;

/// The platform's word to a zone server that a character may enter it, in
/// the state the platform kept: signed with the session-token key, so the
/// player who carries it cannot change it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CharacterTicket {
    pub player_id: u64,
    pub name: String,
    pub zone: String,
    /// This stay's incarnation: higher than any before it.
    pub incarnation: u64,
    pub level: u32,
    pub xp: u64,
    pub gold: u64,
    /// Item code → count.
    pub inventory: BTreeMap<u32, u32>,
    /// Where it last stood.
    pub place: Option<Place>,
    /// Unix seconds.
    pub expires_at: u64,
}

/// A zone (by name) and a position in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Place {
    pub zone: String,
    pub x: i32,
    pub y: i32,
}

/// Why a character ticket is not good.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TicketError {
    #[error("no character ticket: join through the platform's POST /v1/play")]
    Missing,
    #[error("the character ticket is not valid ({0})")]
    Invalid(String),
    #[error("the character ticket expired; ask POST /v1/play again")]
    Expired,
    #[error("the character ticket is for {found}, not this player")]
    OtherPlayer { found: u64 },
    #[error("the character ticket is for zone {found:?}")]
    OtherZone { found: String },
}

impl CharacterTicket {
    pub fn seal(&self, key: &TokenKey) -> String {
        key.seal(CHARACTER_TICKET_PURPOSE, &serde_json::to_vec(self).unwrap_or_default())
    }

    /// The ticket `sealed` holds, if it is signed with `key`, unexpired at
    /// `now` (Unix seconds), and for `player` in `zone`.
    pub fn open(key: &TokenKey, sealed: &str, now: u64, player: u64, zone: &str) -> Result<Self, TicketError> {
        if sealed.is_empty() {
            return Err(TicketError::Missing);
        }
        let bytes = key.open(CHARACTER_TICKET_PURPOSE, sealed).map_err(|e| TicketError::Invalid(e.to_string()))?;
        let ticket: Self = serde_json::from_slice(&bytes).map_err(|e| TicketError::Invalid(e.to_string()))?;
        if now >= ticket.expires_at {
            return Err(TicketError::Expired);
        }
        if ticket.player_id != player {
            return Err(TicketError::OtherPlayer { found: ticket.player_id });
        }
        if ticket.zone != zone {
            return Err(TicketError::OtherZone { found: ticket.zone });
        }
        Ok(ticket)
    }
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

    fn ticket() -> CharacterTicket {
        CharacterTicket {
            player_id: 7,
            name: "ann".into(),
            zone: "meadow".into(),
            incarnation: 3,
            level: 2,
            xp: 120,
            gold: 9,
            inventory: BTreeMap::from([(3, 2)]),
            place: Some(Place { zone: "meadow".into(), x: 10, y: -4 }),
            expires_at: 1_000,
        }
    }

    #[test]
    fn a_character_ticket_opens_only_for_its_player_and_zone_before_it_expires() {
        let key = TokenKey::new(b"0123456789abcdef-test").expect("key");
        let sealed = ticket().seal(&key);
        assert_eq!(CharacterTicket::open(&key, &sealed, 999, 7, "meadow"), Ok(ticket()));
        assert_eq!(CharacterTicket::open(&key, &sealed, 1_000, 7, "meadow"), Err(TicketError::Expired));
        assert_eq!(CharacterTicket::open(&key, &sealed, 0, 8, "meadow"), Err(TicketError::OtherPlayer { found: 7 }));
        assert!(matches!(CharacterTicket::open(&key, &sealed, 0, 7, "forest"), Err(TicketError::OtherZone { .. })));
        assert_eq!(CharacterTicket::open(&key, "", 0, 7, "meadow"), Err(TicketError::Missing));
        let other = TokenKey::new(b"another-key-of-16+").expect("key");
        assert!(matches!(CharacterTicket::open(&other, &sealed, 0, 7, "meadow"), Err(TicketError::Invalid(_))));
        let not_json = key.seal(CHARACTER_TICKET_PURPOSE, b"{\"gold\": -1}");
        assert!(matches!(CharacterTicket::open(&key, &not_json, 0, 7, "meadow"), Err(TicketError::Invalid(_))));
    }

    #[test]
    fn the_old_name_login_is_refused_by_the_contract_with_the_field_named() {
        let err = serde_json::from_str::<SignIn>(r#"{"name":"ann","zone":"meadow"}"#).unwrap_err().to_string();
        assert!(err.contains("unknown field `name`"), "{err}");
    }
}
