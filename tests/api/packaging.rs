//! What `packaging/` holds is valid: `systemd-analyze verify` accepts both systemd units, pointed
//! at the binary under test, the replicas' unit is the single one but for what makes it a replica,
//! and haproxy accepts its configuration.

use std::collections::BTreeSet;
use std::path::Path;

const PACKAGING: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/packaging");

fn read(file: &str) -> String {
    std::fs::read_to_string(Path::new(PACKAGING).join(file)).unwrap()
}

/// `systemd-analyze verify` of `unit` installed as `name`: what it complained of, empty when
/// nothing.
fn systemd_verify(unit: &str, name: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, unit.replace("/usr/local/bin/dbroker", env!("CARGO_BIN_EXE_dbroker"))).unwrap();

    let verify = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze (Debian's systemd package) is installed");

    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stderr));
    String::from_utf8_lossy(&verify.stderr).trim().to_string()
}

/// A unit's settings, without its comments and blank lines.
fn settings(unit: &str) -> BTreeSet<&str> {
    unit.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect()
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    let unit = read("dbroker.service");
    assert!(unit.contains("ExecStart=/usr/local/bin/dbroker serve"));
    assert!(unit.contains("Restart=always"), "systemd restarts dbroker");
    assert!(!unit.contains("Requires=postgresql") && !unit.contains("Wants=postgresql"), "SQLite hosts need none");

    let complaints = systemd_verify(&unit, "dbroker.service");

    assert!(complaints.is_empty(), "{complaints}");
}

#[test]
fn the_replicas_unit_passes_verify_and_differs_from_the_single_one_only_in_what_makes_it_a_replica() {
    let single = read("dbroker.service");
    let replicas = read("dbroker@.service");

    let complaints = systemd_verify(&replicas, "dbroker@1.service");

    assert!(complaints.is_empty(), "{complaints}");
    let (single, replicas) = (settings(&single), settings(&replicas));
    let only_single: Vec<_> = single.difference(&replicas).collect();
    let only_replicas: Vec<_> = replicas.difference(&single).collect();
    assert_eq!(
        only_single,
        [
            &"Description=dbroker: self-service MySQL, PostgreSQL and Redis instances on Docker",
            &"Environment=DBROKER_DATA_DIR=/var/lib/dbroker",
            &"EnvironmentFile=-/etc/dbroker/dbroker.env",
            &"ReadWritePaths=/var/lib/dbroker",
            &"StateDirectory=dbroker",
        ]
    );
    assert_eq!(
        only_replicas,
        [
            &"Description=dbroker replica %i: self-service MySQL, PostgreSQL and Redis instances on Docker",
            &"Environment=DBROKER_DATA_DIR=/var/lib/dbroker/%i",
            &"Environment=DBROKER_MASTER_KEY_FILE=%d/master.key",
            &"EnvironmentFile=/etc/dbroker/dbroker.env",
            &"EnvironmentFile=/etc/dbroker/replica-%i.env",
            &"LoadCredential=master.key:/etc/dbroker/master.key",
            &"ReadWritePaths=/var/lib/dbroker/%i",
            &"StateDirectory=dbroker/%i",
        ]
    );
}

#[test]
fn the_haproxy_configuration_is_valid_and_checks_each_replicas_healthz() {
    let path = Path::new(PACKAGING).join("haproxy.cfg");
    let config = std::fs::read_to_string(&path).unwrap();
    assert!(config.contains("http-check send meth GET uri /healthz"), "{config}");
    assert_eq!(config.lines().filter(|l| l.trim_start().starts_with("server ")).count(), 2, "two replicas");

    let check = std::process::Command::new("haproxy")
        .arg("-c")
        .arg("-f")
        .arg(&path)
        .output()
        .expect("haproxy (Debian's haproxy package) is installed");

    let said = format!("{}{}", String::from_utf8_lossy(&check.stdout), String::from_utf8_lossy(&check.stderr));
    assert!(check.status.success(), "{said}");
}
