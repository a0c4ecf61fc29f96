//! The systemd unit in `packaging/` is valid: `systemd-analyze verify` accepts it, pointed at the
//! binary under test.

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    let unit = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/dbroker.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/local/bin/dbroker serve"));
    assert!(unit.contains("Restart=always"), "systemd restarts dbroker");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dbroker.service");
    let local = unit.replace("/usr/local/bin/dbroker", env!("CARGO_BIN_EXE_dbroker"));
    std::fs::write(&path, local).unwrap();

    let verify = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze (Debian's systemd package) is installed");

    let complaints = String::from_utf8_lossy(&verify.stderr);
    assert!(verify.status.success() && complaints.trim().is_empty(), "{complaints}");
}
