//! `respawn ctl`: operator commands. Everything but `restore` goes through
//! the platform server's operations API (the same one the dashboard uses),
//! with the endpoint and operator token from flags or the environment;
//! tables for people, `--json` for scripts.

mod api;
mod restore;

use anyhow::Result;
use clap::{Args, Subcommand};

pub use restore::RestoreArgs;

#[derive(Args, Debug)]
pub struct CtlArgs {
    #[command(flatten)]
    api: api::ApiArgs,
    #[command(subcommand)]
    command: CtlCmd,
}

#[derive(Subcommand, Debug)]
enum CtlCmd {
    /// Overview: servers, zones, players, MySQL, event consumption.
    Status,
    /// Every zone: CCU, tick p50/p99, status, server, version.
    Zones,
    /// Firing and pending alerts, then the newest transitions.
    Alerts,
    /// Live game servers.
    Servers,
    /// Drain a game server: no new players; it stops once empty.
    Drain {
        /// The server's id (see `servers`).
        server: String,
    },
    /// Rolling update to a new version, following its seven steps to the end.
    /// Start the new version first (`respawn zone --standby ...`).
    Rollout {
        /// The new server: its id, its WebSocket address, or its version.
        #[arg(long)]
        to: String,
        /// Move zones live with their players instead of waiting for them to leave.
        #[arg(long)]
        handoff: bool,
        /// Without --handoff: seconds to wait for the old version's players to
        /// go before moving the zones of those still there live.
        #[arg(long)]
        wait_secs: Option<u64>,
    },
    /// Return to the version the last rollout left, the same way.
    Rollback {
        #[arg(long)]
        wait_secs: Option<u64>,
    },
    /// The running or last rollout.
    RolloutStatus,
    /// Players.
    #[command(subcommand)]
    Player(PlayerCmd),
    /// Player accounts (changes need an admin token).
    #[command(subcommand)]
    Account(AccountCmd),
    /// Stored events, newest first.
    Events(api::EventsArgs),
    /// Disconnect a player.
    Kick {
        /// Player id or name.
        player: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Ban a player: refused at login and join, kicked if playing.
    Ban {
        /// Player id or name.
        player: String,
        #[arg(long)]
        reason: String,
    },
    /// Lift a ban.
    Unban {
        /// Player id or name.
        player: String,
    },
    /// The ban list.
    Bans,
    /// Show a notice to players in game.
    Announce {
        text: String,
        /// One zone; all zones when absent.
        #[arg(long)]
        zone: Option<String>,
    },
    /// The audit log, newest first.
    Audit {
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// The calls refused for their role instead (kept apart from the actions).
        #[arg(long)]
        refused: bool,
        /// From the ledger's append-only trail, which keeps every record.
        #[arg(long)]
        archived: bool,
    },
    /// Operator tokens (admin).
    #[command(subcommand)]
    Token(TokenCmd),
    /// Roll a zone back to its newest cold snapshot at or before a tick or a
    /// time. Stop the zone server first; it resumes from there when started.
    /// Works on the stores directly, not through the API.
    Restore(RestoreArgs),
    /// Incident bundles: a window of a zone's history in one file (`respawn replay --bundle`).
    #[command(subcommand)]
    Incident(respawn_drill::replay::IncidentCmd),
}

#[derive(Subcommand, Debug)]
enum PlayerCmd {
    /// Profile (from MySQL), ban and last login.
    Show {
        /// Player id or name.
        player: String,
    },
}

#[derive(Subcommand, Debug)]
enum AccountCmd {
    /// An account by id, username or character name.
    Show {
        account: String,
    },
    /// No sign-in, refresh or join; its sign-ins are revoked and its player kicked.
    Disable {
        account: String,
        #[arg(long)]
        reason: String,
    },
    Enable {
        account: String,
    },
    /// End every sign-in of the account.
    Revoke {
        account: String,
    },
    /// Set a new password, read from standard input (never an argument); its sign-ins are revoked.
    ResetPassword {
        account: String,
    },
}

#[derive(Subcommand, Debug)]
enum TokenCmd {
    List,
    /// Create a token; its secret is printed once.
    Create {
        name: String,
        /// viewer, operator or admin.
        #[arg(long)]
        role: String,
        #[arg(long)]
        expires_in_secs: Option<u64>,
    },
    Revoke {
        name: String,
    },
}

pub async fn run(args: CtlArgs) -> Result<()> {
    use api::Call;
    let c = api::Client::new(args.api)?;
    let path_of = |p: &str| api::encode(p);
    match args.command {
        CtlCmd::Restore(restore) => restore::run(restore).await,
        CtlCmd::Incident(cmd) => respawn_drill::replay::incident(cmd, crate::VERSION).await,
        CtlCmd::Status => c.show(Call::get("/v1/status"), api::print_status).await,
        CtlCmd::Zones => c.show(Call::get("/v1/zones"), api::print_zones).await,
        CtlCmd::Alerts => c.show(Call::get("/v1/alerts"), api::print_alerts).await,
        CtlCmd::Servers => c.show(Call::get("/v1/servers"), api::print_servers).await,
        CtlCmd::Drain { server } => {
            c.show(Call::post(&format!("/v1/servers/{}/drain", path_of(&server)), None), api::print_done).await
        }
        CtlCmd::Rollout { to, handoff, wait_secs } => {
            let mut body = serde_json::json!({ "to": to, "handoff": handoff });
            if let Some(secs) = wait_secs {
                body["wait_secs"] = secs.into();
            }
            c.follow_rollout(Call::post("/v1/rollouts", Some(body))).await
        }
        CtlCmd::Rollback { wait_secs } => {
            let body = wait_secs.map_or_else(|| serde_json::json!({}), |s| serde_json::json!({ "wait_secs": s }));
            c.follow_rollout(Call::post("/v1/rollouts/rollback", Some(body))).await
        }
        CtlCmd::RolloutStatus => {
            let none = "no rollout has run on this platform";
            c.show_found(Call::get("/v1/rollouts/current"), api::print_rollout, none).await
        }
        CtlCmd::Player(PlayerCmd::Show { player }) => {
            c.show(Call::get(&format!("/v1/players/{}", path_of(&player))), api::print_player).await
        }
        CtlCmd::Account(command) => {
            let (account, action) = match &command {
                AccountCmd::Show { account } => (account, None),
                AccountCmd::Disable { account, .. } => (account, Some("disable")),
                AccountCmd::Enable { account } => (account, Some("enable")),
                AccountCmd::Revoke { account } => (account, Some("revoke")),
                AccountCmd::ResetPassword { account } => (account, Some("password")),
            };
            let path = format!("/v1/accounts/{}", path_of(account));
            let call = match (command, action) {
                (AccountCmd::Disable { reason, .. }, Some(action)) => {
                    Call::post(&format!("{path}/{action}"), Some(serde_json::json!({ "reason": reason })))
                }
                (AccountCmd::ResetPassword { .. }, Some(action)) => {
                    let mut password = String::new();
                    std::io::stdin().read_line(&mut password)?;
                    let password = password.trim_end_matches(['\r', '\n']);
                    Call::put(&format!("{path}/{action}"), serde_json::json!({ "password": password }))
                }
                (_, Some(action)) => Call::post(&format!("{path}/{action}"), None),
                (_, None) => Call::get(&path),
            };
            c.show(call, api::print_done).await
        }
        CtlCmd::Events(events) => c.show(Call::get(&events.path()?), api::print_events).await,
        CtlCmd::Kick { player, reason } => {
            let body = reason.map(|r| serde_json::json!({ "reason": r })).unwrap_or_else(|| serde_json::json!({}));
            c.show(Call::post(&format!("/v1/players/{}/kick", path_of(&player)), Some(body)), api::print_done).await
        }
        CtlCmd::Ban { player, reason } => {
            let call =
                Call::put(&format!("/v1/players/{}/ban", path_of(&player)), serde_json::json!({ "reason": reason }));
            c.show(call, api::print_done).await
        }
        CtlCmd::Unban { player } => {
            c.show(Call::delete(&format!("/v1/players/{}/ban", path_of(&player))), api::print_done).await
        }
        CtlCmd::Bans => c.show(Call::get("/v1/bans"), api::print_bans).await,
        CtlCmd::Announce { text, zone } => {
            let mut body = serde_json::json!({ "text": text });
            if let Some(zone) = zone {
                body["zone"] = zone.into();
            }
            c.show(Call::post("/v1/announcements", Some(body)), api::print_done).await
        }
        CtlCmd::Audit { limit, refused, archived } => {
            let path = format!("/v1/audit?limit={limit}&refused={refused}&archived={archived}");
            c.show(Call::get(&path), api::print_audit).await
        }
        CtlCmd::Token(TokenCmd::List) => c.show(Call::get("/v1/tokens"), api::print_tokens).await,
        CtlCmd::Token(TokenCmd::Create { name, role, expires_in_secs }) => {
            let mut body = serde_json::json!({ "name": name, "role": role });
            if let Some(secs) = expires_in_secs {
                body["expires_in_secs"] = secs.into();
            }
            c.show(Call::post("/v1/tokens", Some(body)), api::print_done).await
        }
        CtlCmd::Token(TokenCmd::Revoke { name }) => {
            c.show(Call::delete(&format!("/v1/tokens/{}", path_of(&name))), api::print_done).await
        }
    }
}
