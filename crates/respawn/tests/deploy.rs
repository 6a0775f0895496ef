//! The deployment files say what the binary understands: every `RESPAWN_*`
//! variable they set is one `respawn zone`, `respawn platform` or `respawn
//! zone-stop` reads, every flag they pass exists, and the zone configuration
//! they carry loads. (Their schemas are checked by `scripts/check-deploy`.)

use std::path::{Path, PathBuf};
use std::process::Command;

use respawn_zone::ServerConfig;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn help(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_respawn")).args(args).arg("--help").output().expect("respawn runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Variables a file sets for the processes: Kubernetes `- name: RESPAWN_X`
/// entries and compose `RESPAWN_X:` keys (not `${...}` interpolations).
fn variables_set(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.trim().trim_start_matches("- name: ").trim())
        .filter(|l| l.starts_with("RESPAWN_"))
        .map(|l| l.split([':', ' ']).next().unwrap_or_default().to_owned())
        .collect()
}

const FILES: [&str; 4] =
    ["deploy/k8s/config.yaml", "deploy/k8s/zone.yaml", "deploy/k8s/platform.yaml", "deploy/compose.yaml"];

#[test]
fn every_variable_the_deployment_files_set_is_read_by_the_binary() {
    let known = format!("{}{}{}", help(&["zone"]), help(&["platform"]), help(&["zone-stop"]));
    let mut checked = 0;
    for file in FILES {
        for var in variables_set(&read(file)) {
            assert!(known.contains(&format!("env: {var}")), "{file} sets {var}, which no respawn command reads");
            checked += 1;
        }
    }
    assert!(checked > 20, "the files were read ({checked} variables)");
}

#[test]
fn the_flags_in_the_manifests_exist() {
    let zone = help(&["zone"]);
    for flag in ["--config", "--claim", "--handoff-on-drain", "--take-over"] {
        assert!(zone.contains(flag), "respawn zone has no {flag}");
    }
    assert!(help(&["zone-stop"]).contains("--wait-secs"));
    let manifest = read("deploy/k8s/zone.yaml");
    assert!(manifest.contains(
        r#"args: ["zone", "--config", "/etc/respawn/zone.toml", "--claim", "--handoff-on-drain", "--take-over"]"#
    ));
    assert!(manifest.contains(r#"command: ["respawn", "zone-stop", "--wait-secs", "100"]"#));
}

/// The indented block after `zone.toml: |` in the ConfigMap.
fn configmap_zone_toml(text: &str) -> String {
    let start = text.find("zone.toml: |").expect("the ConfigMap carries zone.toml");
    text[start..]
        .lines()
        .skip(1)
        .take_while(|l| l.starts_with("    ") || l.is_empty())
        .map(|l| l.trim_start_matches("    "))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_zone_configurations_they_carry_load() {
    let temp = respawn_harness::TempDir::new("deploy-test").expect("temp dir");
    let dir = temp.path();
    let from_k8s = dir.join("zone.toml");
    std::fs::write(&from_k8s, configmap_zone_toml(&read("deploy/k8s/config.yaml"))).expect("write");
    for path in [from_k8s, repo().join("deploy/compose/zone.toml")] {
        let config = ServerConfig::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(config.listen.to_string(), "0.0.0.0:7350", "{}", path.display());
        let names: Vec<&str> = config.zones.iter().map(|z| z.name.as_str()).collect();
        assert_eq!(names, ["meadow", "caverns"], "{}", path.display());
        // The pods' grace period covers the drain deadline with room for the flushes.
        assert!(config.drain_deadline.as_secs() + 20 <= 120, "{}", path.display());
    }
}

/// No secret ships with a value someone could read here: compose demands
/// each one (`${VAR:?…}`), publishes its ports on loopback unless told
/// otherwise, and the directory `kubectl apply` takes holds no Secret.
#[test]
fn the_deployment_files_ship_no_secret_and_publish_on_loopback() {
    let compose = read("deploy/compose.yaml");
    let secrets = [
        "RESPAWN_TOKEN_KEY",
        "RESPAWN_SERVER_KEY",
        "RESPAWN_ZONE_1_SERVER_TOKEN",
        "RESPAWN_ZONE_2_SERVER_TOKEN",
        "RESPAWN_OPERATOR_TOKEN",
        "RESPAWN_MYSQL_PASSWORD",
        "GRAFANA_ADMIN_PASSWORD",
    ];
    for var in secrets {
        let uses: Vec<&str> = compose.match_indices(&format!("${{{var}")).map(|(at, _)| &compose[at..]).collect();
        assert!(!uses.is_empty(), "compose uses {var}");
        for used in uses {
            assert!(
                used[var.len() + 2..].starts_with(":?"),
                "{var} has to be set: {}",
                used.lines().next().unwrap_or("")
            );
        }
    }
    // The only default left is where ports are published.
    for (at, _) in compose.match_indices(":-") {
        let var = compose[..at].rsplit("${").next().unwrap_or_default();
        assert_eq!(var, "RESPAWN_PUBLISH_ADDRESS", "a default in compose.yaml");
    }
    let published: Vec<&str> = compose
        .lines()
        .map(str::trim)
        .filter_map(|l| l.strip_prefix("- \"")?.strip_suffix('"'))
        .filter(|mapping| mapping.rsplit(':').take(2).all(|port| port.parse::<u16>().is_ok()))
        .collect();
    assert_eq!(published.len(), 5, "the platform, two zone servers, Prometheus, Grafana: {published:?}");
    for mapping in published {
        assert!(
            mapping.starts_with("${RESPAWN_PUBLISH_ADDRESS:-127.0.0.1}:"),
            "{mapping} is published on every interface"
        );
    }
    for entry in std::fs::read_dir(repo().join("deploy/k8s")).expect("deploy/k8s") {
        let path = entry.expect("entry").path();
        let text = std::fs::read_to_string(&path).expect("manifest");
        assert!(!text.contains("kind: Secret"), "{} ships a Secret", path.display());
    }
}

/// Each zone pod holds only its own registry credential: the Secret of all
/// of them is mounted in the init container that copies the pod's one out,
/// not in the zone server's container.
#[test]
fn each_zone_pod_holds_only_its_own_credential() {
    let manifest = read("deploy/k8s/zone.yaml");
    assert!(manifest.contains("kind: StatefulSet"), "stable pod names, one credential each");
    let init = manifest.split("      initContainers:").nth(1).expect("an init container");
    let (init, rest) = init.split_once("      containers:").expect("containers after it");
    let zone_container = rest.split("      volumes:").next().unwrap_or_default();
    assert!(init.contains("name: all-credentials"), "the init container reads the Secret");
    assert!(!zone_container.contains("all-credentials"), "the zone server's container mounts every credential");
    assert!(zone_container.contains("RESPAWN_SERVER_TOKEN_FILE"));
    assert!(!zone_container.contains("key: server-key"), "a zone pod has the platform's key");
    assert!(manifest.contains("secretName: respawn-zone-credentials"));
    assert!(manifest.contains("automountServiceAccountToken: false"));
    // The admin API on a port of its own, which only the platform may reach.
    assert!(zone_container.contains("name: RESPAWN_ADMIN_LISTEN") && zone_container.contains("containerPort: 7352"));
    let policy = manifest.split("kind: NetworkPolicy").nth(1).expect("a NetworkPolicy for the zone pods");
    let admin_rule = policy.split("- from:").nth(1).expect("a rule with a source");
    assert!(admin_rule.contains("app.kubernetes.io/name: respawn-platform") && admin_rule.contains("port: 7352"));
    assert!(read("deploy/k8s/platform.yaml").contains("key: server-key"));
}

/// Both servers refuse, naming the flag, a secret that is short or one of
/// the placeholders example files have published.
#[test]
fn the_servers_refuse_short_and_placeholder_secrets() {
    // A server that accepted the secret would serve until killed: give it 20 s.
    let refused = |args: &[&str]| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_respawn"))
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("respawn runs");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while child.try_wait().expect("wait").is_none() {
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!("{args:?} started serving");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let out = child.wait_with_output().expect("output");
        assert!(!out.status.success(), "{args:?} exited 0");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let data = respawn_harness::TempDir::new("secrets").expect("temp dir");
    let data = data.path().to_str().expect("utf-8 path");
    let zone = ["zone", "--listen", "127.0.0.1:0", "--data-dir", data];
    let key = ["--token-key", "dev-only-token-key-change-me"];
    let text = refused(&[&zone[..], &key].concat());
    assert!(text.contains("--token-key contains \"dev-only\", a known placeholder"), "{text}");
    let ok_key = ["--token-key", "a-key-nobody-published-0123"];
    let text = refused(&[&zone[..], &ok_key, &["--admin-token", "too-short"]].concat());
    assert!(text.contains("--admin-token is 9 bytes; at least 16"), "{text}");

    let platform = [
        "platform",
        "--listen",
        "127.0.0.1:0",
        "--kafka-brokers",
        "127.0.0.1:1",
        "--mysql-url",
        "mysql://x@127.0.0.1:1/x",
    ];
    let text = refused(&[&platform[..], &["--server-key", "replace-me-with-a-random-secret-0002"]].concat());
    assert!(text.contains("--server-key contains \"replace-me\""), "{text}");
    let text = refused(&[&platform[..], &["--admin-token", "short"]].concat());
    assert!(text.contains("--admin-token is 5 bytes"), "{text}");
}

/// A zone server's registry credential is its own: a shared secret of the
/// old kind is refused, and so is a `--server-id` other than the one the
/// credential names. `respawn server-credential` makes them from the key.
#[test]
fn a_zone_server_heartbeats_only_with_a_credential_of_its_own() {
    let run = |args: &[&str]| Command::new(env!("CARGO_BIN_EXE_respawn")).args(args).output().expect("respawn runs");
    let key = "a-server-key-nobody-published";
    let made = run(&["server-credential", "--key", key, "zone-1", "zone-2"]);
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let printed = String::from_utf8_lossy(&made.stdout).into_owned();
    let credentials: Vec<&str> = printed.lines().collect();
    let server_key = respawn_token::ServerKey::new(key.as_bytes()).expect("key");
    assert_eq!(credentials.len(), 2, "{printed}");
    assert_eq!(server_key.verify(credentials[0]).as_deref(), Ok("zone-1"));
    assert_eq!(server_key.verify(credentials[1]).as_deref(), Ok("zone-2"));
    let bad_id = run(&["server-credential", "--key", key, "Zone 1"]);
    assert!(String::from_utf8_lossy(&bad_id.stderr).contains("\"Zone 1\": token is malformed: server id"));
    let weak_key = run(&["server-credential", "--key", "dev-only-server-key", "zone-1"]);
    assert!(String::from_utf8_lossy(&weak_key.stderr).contains("--key contains \"dev-only\""));

    let data = respawn_harness::TempDir::new("credentials").expect("temp dir");
    let data = data.path().to_str().expect("utf-8 path");
    let zone = |extra: &[&str]| {
        let args =
            [&["zone", "--listen", "127.0.0.1:0", "--data-dir", data, "--platform", "127.0.0.1:1"], extra].concat();
        let out = Command::new(env!("CARGO_BIN_EXE_respawn"))
            .args(&args)
            .env("RESPAWN_TOKEN_KEY", "a-key-nobody-published-0123")
            .output()
            .expect("respawn runs");
        assert!(!out.status.success(), "{args:?} started");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let text = zone(&[]);
    assert!(text.contains("--platform needs this server's --server-token"), "{text}");
    let text = zone(&["--server-token", "a-fleet-wide-server-token-0123"]);
    assert!(text.contains("--server-token is not a server credential"), "{text}");
    let text = zone(&["--server-token", credentials[0], "--server-id", "zone-2"]);
    assert!(text.contains("--server-id \"zone-2\" but the --server-token is server \"zone-1\"'s"), "{text}");
}

/// SECURITY.md proves each boundary with a test it names as
/// `` `crates/<crate>/tests/<file>.rs::<test>` ``: each of those is there.
#[test]
fn security_md_names_tests_that_exist() {
    let doc = read("SECURITY.md");
    let mut named = 0;
    for span in doc.split('`').skip(1).step_by(2) {
        let Some((file, test)) = span.split_once("::") else { continue };
        if !file.starts_with("crates/") || !file.ends_with(".rs") {
            continue;
        }
        let source = read(file);
        assert!(source.contains(&format!("fn {test}(")), "SECURITY.md names {span}, which does not exist");
        named += 1;
    }
    assert!(named >= 12, "SECURITY.md names its tests ({named} found)");
}
