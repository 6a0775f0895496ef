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
    for flag in ["--config", "--claim", "--handoff-on-drain"] {
        assert!(zone.contains(flag), "respawn zone has no {flag}");
    }
    assert!(help(&["zone-stop"]).contains("--wait-secs"));
    let manifest = read("deploy/k8s/zone.yaml");
    assert!(
        manifest.contains(r#"args: ["zone", "--config", "/etc/respawn/zone.toml", "--claim", "--handoff-on-drain"]"#)
    );
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
