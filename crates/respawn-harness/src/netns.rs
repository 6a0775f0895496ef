//! Hosts of their own on this machine, for drills and tests that lose a whole
//! host or split the network: each [`Host`] is a network namespace with one
//! address on a private LAN, a bridge in a namespace of its own ([`Lan`]).
//! Nothing is added to this machine's own network: every address lives
//! inside namespaces made here, and dropping the [`Lan`] kills every process
//! left in them and deletes them all.
//!
//! Faults: [`Host::cut`] takes the host's link down (the host is gone from
//! the network, its processes live on); [`Host::kill_all`] kills every
//! process in it (with a cut: the host died); [`Host::block`] drops traffic
//! with another host in one direction or both (nftables in the host's
//! namespace: a partition, or an asymmetric one), [`Host::heal`] lifts it.
//!
//! [`Host::run`] runs async work (a drill's bots and probes) on a host's
//! network from this very process.
//!
//! Needs root, `ip` (iproute2) and `nft` (nftables); [`Lan::available`] says
//! which is missing.

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

/// The LAN's addresses: 10.213.0.0/24, hosts from .2 on. The same in every
/// [`Lan`]: each is a separate network, invisible to the others and to this machine.
const SUBNET: [u8; 3] = [10, 213, 0];

/// Runs `ip ARGS`, failing with its stderr.
fn ip(args: &[&str]) -> Result<()> {
    run(Command::new("ip").args(args), &format!("ip {}", args.join(" ")))
}

fn run(command: &mut Command, what: &str) -> Result<()> {
    let out = command.stdin(Stdio::null()).output().with_context(|| format!("cannot run {what}"))?;
    if !out.status.success() {
        bail!("{what} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// Which way traffic is dropped by [`Host::block`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// What the other host sends to this one.
    Incoming,
    /// What this host sends to the other one.
    Outgoing,
    Both,
}

/// A private network of hosts; removed, with every process in it, when dropped.
#[derive(Debug)]
pub struct Lan {
    /// Prefix of every namespace made: `rsp<pid>n<LAN of this process>-`.
    prefix: String,
    namespace: String,
    hosts: Vec<String>,
}

/// One host on a [`Lan`].
#[derive(Debug, Clone)]
pub struct Host {
    pub name: String,
    /// Its network namespace.
    pub namespace: String,
    pub addr: Ipv4Addr,
    lan_namespace: String,
    /// Its link's end on the bridge, in the LAN's namespace.
    port: String,
}

impl Lan {
    /// Why hosts cannot be made here, if they cannot: not root, or a tool missing.
    pub fn available() -> Result<(), String> {
        let uid = std::fs::read_to_string("/proc/self/status").ok().and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("Uid:").map(|v| v.split_whitespace().next() == Some("0")))
        });
        if uid != Some(true) {
            return Err("network namespaces need root".into());
        }
        for (tool, package) in [("ip", "iproute2"), ("nft", "nftables")] {
            let found = Command::new(tool).arg("-V").stdout(Stdio::null()).stderr(Stdio::null()).status();
            if !found.is_ok_and(|s| s.success()) {
                return Err(format!("`{tool}` is missing (Debian package {package})"));
            }
        }
        Ok(())
    }

    /// An empty LAN: its bridge, in a namespace of its own.
    pub fn new() -> Result<Self> {
        Self::available().map_err(anyhow::Error::msg)?;
        static MADE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let made = MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let prefix = format!("rsp{}n{made}-", std::process::id());
        let namespace = format!("{prefix}lan");
        ip(&["netns", "add", &namespace])?;
        let lan = Self { prefix, namespace, hosts: Vec::new() };
        ip(&["-n", &lan.namespace, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &lan.namespace, "link", "set", "br0", "up"])?;
        Ok(lan)
    }

    /// A new host, named `name` (a-z, 0-9; short), linked to the bridge.
    pub fn host(&mut self, name: &str) -> Result<Host> {
        if name.is_empty() || name.len() > 8 || !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()) {
            bail!("host name {name:?}: 1-8 of a-z 0-9");
        }
        let index = self.hosts.len();
        if index >= 200 {
            bail!("a LAN holds at most 200 hosts");
        }
        let namespace = format!("{}{name}", self.prefix);
        ip(&["netns", "add", &namespace])?;
        self.hosts.push(namespace.clone());
        let port = format!("port{index}");
        let addr = Ipv4Addr::new(SUBNET[0], SUBNET[1], SUBNET[2], index as u8 + 2);
        let cidr = format!("{addr}/24");
        let lan = self.namespace.as_str();
        ip(&["-n", &namespace, "link", "add", "eth0", "type", "veth", "peer", "name", &port, "netns", lan])?;
        ip(&["-n", &namespace, "addr", "add", &cidr, "dev", "eth0"])?;
        ip(&["-n", &namespace, "link", "set", "eth0", "up"])?;
        ip(&["-n", &namespace, "link", "set", "lo", "up"])?;
        ip(&["-n", lan, "link", "set", &port, "master", "br0"])?;
        ip(&["-n", lan, "link", "set", &port, "up"])?;
        Ok(Host { name: name.to_owned(), namespace, addr, lan_namespace: lan.to_owned(), port })
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for namespace in self.hosts.iter().chain([&self.namespace]) {
            kill_all_in(namespace);
            if let Err(e) = ip(&["netns", "del", namespace]) {
                eprintln!("netns: {e}");
            }
        }
    }
}

/// Kills every process in `namespace` at once.
fn kill_all_in(namespace: &str) {
    let pids = Command::new("ip").args(["netns", "pids", namespace]).output().map(|o| o.stdout).unwrap_or_default();
    for pid in String::from_utf8_lossy(&pids).split_whitespace() {
        let _ = Command::new("kill").args(["-KILL", pid]).status();
    }
}

impl Host {
    /// `command` to run on this host (its program and arguments, its
    /// environment), as `ip netns exec`.
    pub fn command(&self, command: &Command) -> Command {
        let mut inside = Command::new("ip");
        inside.args(["netns", "exec", &self.namespace]).arg(command.get_program()).args(command.get_args());
        for (key, value) in command.get_envs() {
            match value {
                Some(value) => inside.env(key, value),
                None => inside.env_remove(key),
            };
        }
        if let Some(dir) = command.get_current_dir() {
            inside.current_dir(dir);
        }
        inside
    }

    /// Runs `work` on threads of this host: every socket it opens is on the
    /// host's network (a runtime of its own, on a thread moved into the
    /// namespace; threads inherit it, and processes it starts do too).
    /// The future is made on that thread (`work()`), so it need not be `Send`.
    pub fn run<T, F>(&self, work: impl FnOnce() -> F + Send + 'static) -> Result<T>
    where
        F: std::future::Future<Output = T>,
        T: Send + 'static,
    {
        let namespace = std::fs::File::open(format!("/var/run/netns/{}", self.namespace))
            .with_context(|| format!("opening network namespace {}", self.namespace))?;
        let name = self.name.clone();
        std::thread::Builder::new()
            .name(format!("host-{name}"))
            .spawn(move || -> Result<T> {
                use std::os::fd::AsFd;
                rustix::thread::move_into_link_name_space(
                    namespace.as_fd(),
                    Some(rustix::thread::LinkNameSpaceType::Network),
                )
                .with_context(|| format!("entering host {name}'s network namespace"))?;
                let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
                Ok(runtime.block_on(work()))
            })?
            .join()
            .map_err(|_| anyhow::anyhow!("host {}'s thread panicked", self.name))?
    }

    /// Makes ready the host's death ([`crate::armed::Armed::fire`]): its link cut,
    /// then every process on it killed, so that nothing it held says goodbye
    /// (no close, no reset), as when a machine loses power.
    pub fn arm_death(&self) -> Result<crate::armed::Armed> {
        let script = format!(
            "ip -n {lan} link set {port} down && for pid in $(ip netns pids {ns}); do kill -KILL $pid; done",
            lan = self.lan_namespace,
            port = self.port,
            ns = self.namespace
        );
        crate::armed::Armed::shell(&script, format!("host {}'s death", self.name))
    }

    /// Takes the host's link down: nothing reaches it or leaves it.
    pub fn cut(&self) -> Result<()> {
        ip(&["-n", &self.lan_namespace, "link", "set", &self.port, "down"])
    }

    /// Brings the link back up.
    pub fn mend(&self) -> Result<()> {
        ip(&["-n", &self.lan_namespace, "link", "set", &self.port, "up"])
    }

    /// Kills every process on the host.
    pub fn kill_all(&self) {
        kill_all_in(&self.namespace);
    }

    /// Drops traffic between this host and `other` (`Incoming`: what
    /// `other` sends here), on top of any blocks already in place.
    pub fn block(&self, other: &Host, direction: Direction) -> Result<()> {
        let mut rules = String::from(
            "table inet respawn_faults {\n\
             chain input { type filter hook input priority 0; }\n\
             chain output { type filter hook output priority 0; }\n}\n",
        );
        if matches!(direction, Direction::Incoming | Direction::Both) {
            rules.push_str(&format!("add rule inet respawn_faults input ip saddr {} drop\n", other.addr));
        }
        if matches!(direction, Direction::Outgoing | Direction::Both) {
            rules.push_str(&format!("add rule inet respawn_faults output ip daddr {} drop\n", other.addr));
        }
        self.nft(&rules)
    }

    /// Lifts every block on this host.
    pub fn heal(&self) -> Result<()> {
        self.nft("table inet respawn_faults {}\ndelete table inet respawn_faults\n")
    }

    fn nft(&self, rules: &str) -> Result<()> {
        use std::io::Write;
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.namespace, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot run nft")?;
        child.stdin.take().context("nft's stdin")?.write_all(rules.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!("nft on {} failed: {}", self.name, String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(())
    }
}
