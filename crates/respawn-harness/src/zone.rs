//! The one `respawn zone` command line, and the flags it shares with other
//! commands. Secrets travel in the environment (`RESPAWN_TOKEN_KEY`,
//! `RESPAWN_ADMIN_TOKEN`, `RESPAWN_SERVER_TOKEN`), not in arguments other
//! processes can read.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::Args;

/// The embedded event ledger's file, in the data directory.
pub const EVENTS_DB: &str = "events.sqlite";

/// Two small zones (30 m square), each with an exit along one edge into
/// the other: what tests and drills that travel configure (a zone
/// configuration file's `[[zones]]`, to append to its other settings).
pub const SMALL_ZONES_WITH_EXITS: &str = r#"
[[zones]]
id = 1
name = "meadow"
seed = 1
width = 3000
height = 3000
npc_count = 5

[[zones.exits]]
x = 2800
y = 0
w = 200
h = 3000
to = "caverns"
arrival_x = 500
arrival_y = 1500

[[zones]]
id = 2
name = "caverns"
seed = 2
width = 3000
height = 3000
npc_count = 5

[[zones.exits]]
x = 0
y = 0
w = 200
h = 3000
to = "meadow"
arrival_x = 2500
arrival_y = 1500
"#;

/// A zone server's registry credential, given inline or as a file (a
/// Kubernetes Secret mounted with one file per pod).
#[derive(Args, Debug)]
pub struct ServerCredentialFlags {
    /// This server's registry credential, from `respawn server-credential
    /// ID`: it heartbeats as that id, and the platform's admin calls carry it.
    #[arg(long, env = "RESPAWN_SERVER_TOKEN", hide_env_values = true, conflicts_with = "server_token_file")]
    pub server_token: Option<String>,
    /// A file holding the credential (surrounding whitespace ignored).
    #[arg(long, env = "RESPAWN_SERVER_TOKEN_FILE")]
    pub server_token_file: Option<PathBuf>,
}

impl ServerCredentialFlags {
    /// The credential, read from its file when given so.
    pub fn read(&self) -> anyhow::Result<Option<String>> {
        match (&self.server_token, &self.server_token_file) {
            (Some(token), _) => Ok(Some(token.clone())),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| anyhow::anyhow!("--server-token-file {}: cannot read it: {e}", path.display()))?;
                Ok(Some(text.trim().to_owned()))
            }
            (None, None) => Ok(None),
        }
    }
}

/// A certificate to serve TLS with (the zone server: wss and https on every
/// listener; the platform server: https). Both or neither.
#[derive(Args, Debug, Clone, Default)]
pub struct TlsFlags {
    /// PEM certificate chain, the server's own first; serves TLS with --tls-key.
    #[arg(long, env = "RESPAWN_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "RESPAWN_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

impl TlsFlags {
    /// What to serve TLS with, read and checked now: a bad file stops the start.
    pub fn load(&self) -> anyhow::Result<Option<respawn_net::ServerTls>> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => respawn_net::ServerTls::from_pem_files(cert, key)
                .map(Some)
                .map_err(|e| anyhow::anyhow!("--tls-cert/--tls-key: {e}")),
            _ => Ok(None),
        }
    }
}

/// Where zone state lives: files by default; Redis and MongoDB when given.
/// The binary parses these flags; [`ZoneCommand::stores`] writes them.
#[derive(Args, Debug, Clone)]
pub struct StoreFlags {
    /// Directory of the embedded stores (files), for the roles not on Redis or MongoDB.
    #[arg(long, env = "RESPAWN_DATA_DIR", default_value = "respawn-data")]
    pub data_dir: PathBuf,
    /// Redis for hot snapshots, the command journal and resume tokens.
    #[arg(long, env = "RESPAWN_REDIS_URL")]
    pub redis_url: Option<String>,
    /// Key prefix in Redis (one per deployment).
    #[arg(long, env = "RESPAWN_REDIS_PREFIX", default_value = "respawn")]
    pub redis_prefix: String,
    /// MongoDB for cold snapshots, e.g. mongodb://127.0.0.1:27017/?directConnection=true
    #[arg(long, env = "RESPAWN_MONGO_URI")]
    pub mongo_uri: Option<String>,
    /// MongoDB database name.
    #[arg(long, env = "RESPAWN_MONGO_DB", default_value = "respawn")]
    pub mongo_db: String,
    /// Kafka brokers (host:port,...) to publish events to (topic game.events.player);
    /// without them events go to the embedded ledger, events.sqlite in the data directory.
    #[arg(long, env = "RESPAWN_KAFKA_BROKERS")]
    pub kafka_brokers: Option<String>,
}

impl StoreFlags {
    /// Files under `data_dir` only; `prefix` names the deployment in Redis and MongoDB once they are added.
    pub fn files(data_dir: &Path, prefix: &str) -> Self {
        Self {
            data_dir: data_dir.to_path_buf(),
            redis_url: None,
            redis_prefix: prefix.to_owned(),
            mongo_uri: None,
            mongo_db: format!("respawn_{prefix}"),
            kafka_brokers: None,
        }
    }

    /// Redis's URL and key prefix, when given.
    pub fn redis(&self) -> Option<(&str, &str)> {
        self.redis_url.as_deref().map(|url| (url, self.redis_prefix.as_str()))
    }

    /// MongoDB's URI and database, when given.
    pub fn mongo(&self) -> Option<(&str, &str)> {
        self.mongo_uri.as_deref().map(|uri| (uri, self.mongo_db.as_str()))
    }

    /// The embedded event ledger (used without Kafka).
    pub fn events_db(&self) -> PathBuf {
        self.data_dir.join(EVENTS_DB)
    }

    /// The same choice as command-line arguments of `respawn zone`.
    pub fn to_args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec!["--data-dir".into(), self.data_dir.clone().into()];
        if let Some(url) = &self.redis_url {
            args.extend(["--redis-url".into(), url.into(), "--redis-prefix".into(), (&self.redis_prefix).into()]);
        }
        if let Some(uri) = &self.mongo_uri {
            args.extend(["--mongo-uri".into(), uri.into(), "--mongo-db".into(), (&self.mongo_db).into()]);
        }
        if let Some(brokers) = &self.kafka_brokers {
            args.extend(["--kafka-brokers".into(), brokers.into()]);
        }
        args
    }
}

/// `respawn zone` as a process: the binary, its arguments, its secrets.
#[derive(Clone)]
pub struct ZoneCommand {
    program: PathBuf,
    args: Vec<OsString>,
    envs: Vec<(&'static str, String)>,
}

impl std::fmt::Debug for ZoneCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The arguments only: the environment holds the secrets.
        f.debug_struct("ZoneCommand").field("program", &self.program).field("args", &self.args).finish_non_exhaustive()
    }
}

impl ZoneCommand {
    /// `program zone --listen <listen>` (`127.0.0.1:0`: any free port, read from its first line).
    pub fn new(program: impl Into<PathBuf>, listen: &str) -> Self {
        Self { program: program.into(), args: vec!["zone".into(), "--listen".into(), listen.into()], envs: Vec::new() }
    }

    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    fn flag(self, name: &str, value: impl Into<OsString>) -> Self {
        self.arg(name).arg(value)
    }

    pub fn config(self, path: &Path) -> Self {
        self.flag("--config", path)
    }

    pub fn stores(mut self, stores: &StoreFlags) -> Self {
        self.args.extend(stores.to_args());
        self
    }

    pub fn outbox_dir(self, path: &Path) -> Self {
        self.flag("--outbox-dir", path)
    }

    /// The key session tokens are checked with.
    pub fn token_key(mut self, key: &str) -> Self {
        self.envs.push(("RESPAWN_TOKEN_KEY", key.to_owned()));
        self
    }

    /// Opens the admin API with this token.
    pub fn admin_token(mut self, token: &str) -> Self {
        self.envs.push(("RESPAWN_ADMIN_TOKEN", token.to_owned()));
        self
    }

    /// Heartbeats into the platform server at `addr` with this server's
    /// credential (its registry id is the one the credential names).
    pub fn platform(mut self, addr: &str, credential: &str) -> Self {
        self.envs.push(("RESPAWN_SERVER_TOKEN", credential.to_owned()));
        self.flag("--platform", addr)
    }

    /// Starts hosting no zone: a rollout or an evacuation moves zones to it.
    pub fn standby(self) -> Self {
        self.arg("--standby")
    }

    pub fn drain_deadline_secs(self, secs: u64) -> Self {
        self.flag("--drain-deadline-secs", secs.to_string())
    }

    pub fn program(&self) -> &Path {
        &self.program
    }

    pub fn args(&self) -> &[OsString] {
        &self.args
    }

    pub fn envs(&self) -> &[(&'static str, String)] {
        &self.envs
    }

    /// As a process to spawn (stdio left to the caller).
    pub fn std_command(&self) -> std::process::Command {
        let mut command = std::process::Command::new(&self.program);
        command.args(&self.args).envs(self.envs.iter().map(|(k, v)| (*k, v)));
        command
    }
}

/// The first line a spawned `respawn zone` prints (where it listens), read
/// from its piped stdout within `limit`. A server that never says, for
/// example one waiting on a zone's lock that a paused process holds, is
/// killed and reported instead of blocking the caller forever.
pub fn listening_line(child: &mut std::process::Child, limit: std::time::Duration) -> anyhow::Result<String> {
    use std::io::BufRead;
    let stdout = child.stdout.take().ok_or_else(|| anyhow::anyhow!("the zone server's stdout is not piped"))?;
    let (sent, line) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let read = std::io::BufReader::new(stdout).read_line(&mut line).map(|_| line);
        let _ = sent.send(read);
    });
    match line.recv_timeout(limit) {
        Ok(read) => Ok(read?),
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!("the zone server did not say where it listens within {limit:?}; killed")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_go_to_the_environment_and_stores_to_the_arguments() {
        let mut stores = StoreFlags::files(Path::new("/d"), "drill");
        stores.redis_url = Some("redis://r".into());
        let command = ZoneCommand::new("respawn", "127.0.0.1:0")
            .stores(&stores)
            .token_key("k")
            .admin_token("a")
            .platform("127.0.0.1:9", "s")
            .standby();
        let args: Vec<&str> = command.args().iter().filter_map(|a| a.to_str()).collect();
        assert_eq!(
            args,
            [
                "zone",
                "--listen",
                "127.0.0.1:0",
                "--data-dir",
                "/d",
                "--redis-url",
                "redis://r",
                "--redis-prefix",
                "drill",
                "--platform",
                "127.0.0.1:9",
                "--standby"
            ]
        );
        let envs: Vec<&str> = command.envs().iter().map(|(k, _)| *k).collect();
        assert_eq!(envs, ["RESPAWN_TOKEN_KEY", "RESPAWN_ADMIN_TOKEN", "RESPAWN_SERVER_TOKEN"]);
        assert!(!format!("{command:?}").contains("\"s\""), "secrets are not in Debug");
    }
}
