//! Authorization is written once, in `api::OPERATIONS`: the router enforces
//! each entry's `auth` before the handler runs. This walks the whole table,
//! so a new route is checked the day it is added.

use anyhow::{ensure, Result};
use respawn_api::http;
use respawn_platform::http::api::{Auth, OPERATIONS};
use respawn_platform::http::{HttpContext, SessionSigner};
use respawn_platform::PlatformServer;
use respawn_store::ops::{OperatorToken, Role};
use respawn_token::{Claims, ServerKey, TokenKey};

const SERVER_KEY: &str = "server-key-for-the-registry";
const SESSION_KEY: &str = "session-token-key-of-this-test";

/// Who calls: no token, the game server the path names (`zone-1`), another
/// game server, a signed-in player, or an operator of a role.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Caller {
    Anonymous,
    GameServer,
    OtherGameServer,
    Player,
    Operator(Role),
}

impl Caller {
    fn token(self) -> Option<String> {
        match self {
            Caller::Anonymous => None,
            Caller::GameServer => ServerKey::new(SERVER_KEY.as_bytes()).ok()?.credential("zone-1").ok(),
            Caller::OtherGameServer => ServerKey::new(SERVER_KEY.as_bytes()).ok()?.credential("zone-2").ok(),
            Caller::Player => {
                let claims = Claims { player_id: 7, name: "ann".into(), expires_at: u64::MAX / 2 };
                TokenKey::new(SESSION_KEY.as_bytes()).ok()?.sign(&claims).ok()
            }
            Caller::Operator(role) => Some(format!("{}-secret-of-this-test", role.as_str())),
        }
    }

    /// Whether the table says this caller may use a route.
    fn admitted(self, auth: Auth) -> bool {
        match (auth, self) {
            (Auth::Public, _) => true,
            // Every server route is about one server (`{id}`): only that server may use it.
            (Auth::Server, caller) => caller == Caller::GameServer,
            (Auth::ServerOrViewer, caller) => {
                matches!(caller, Caller::GameServer | Caller::OtherGameServer | Caller::Operator(_))
            }
            (Auth::Operator(need), Caller::Operator(role)) => role >= need,
            (Auth::Operator(_), _) => false,
            (Auth::Player, caller) => caller == Caller::Player,
        }
    }
}

#[tokio::test]
async fn every_route_refuses_the_callers_below_the_one_it_documents() -> Result<()> {
    let mut context = HttpContext::with_stores(None, "authorization-test")?;
    context.server_key = Some(ServerKey::new(SERVER_KEY.as_bytes())?);
    context.sessions = Some(SessionSigner::new(TokenKey::new(SESSION_KEY.as_bytes())?));
    let roles = [Role::Viewer, Role::Operator, Role::Admin];
    for role in roles {
        let secret = Caller::Operator(role).token().unwrap_or_default();
        let token = OperatorToken {
            name: role.as_str().to_owned(),
            role,
            hash: respawn_token::hash_secret(&secret),
            created_ms: 0,
            expires_ms: None,
        };
        context.ops.put_operator(token).await?;
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let platform = PlatformServer::new(context).without_fleet_watcher().start(listener)?;
    let addr = platform.addr().to_string();

    let callers = [Caller::Anonymous, Caller::GameServer, Caller::OtherGameServer, Caller::Player]
        .into_iter()
        .chain(roles.map(Caller::Operator));
    let callers: Vec<Caller> = callers.collect();
    let mut checked = 0;
    for op in OPERATIONS {
        let path = op
            .path
            .replace("{id}", "zone-1")
            .replace("{player}", "ann")
            .replace("{name}", "nobody")
            .replace("{account}", "ann");
        let method = op.method.to_uppercase();
        for &caller in &callers {
            let token = caller.token();
            let (status, body) = http::request(&addr, &method, &path, token.as_deref()).await?;
            let refused = status == 401 || status == 403;
            ensure!(
                refused != caller.admitted(op.auth),
                "{method} {} documented as {:?}: {caller:?} got {status} {}",
                op.path,
                op.auth,
                body.trim()
            );
            // An operator below the route's role is known, so refused as forbidden.
            if let (Auth::Operator(_), Caller::Operator(_), true) = (op.auth, caller, refused) {
                ensure!(status == 403, "{method} {}: {caller:?} got {status}, not 403", op.path);
            }
            checked += 1;
        }
    }
    ensure!(checked == OPERATIONS.len() * callers.len());
    platform.shutdown().await.map_err(anyhow::Error::msg)
}
