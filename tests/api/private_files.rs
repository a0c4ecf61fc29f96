//! What dbroker keeps on disk is readable by its own user only: the data directory, the store
//! and its journal (user names, token hashes, encrypted passwords), and the master key.

use std::os::unix::fs::PermissionsExt;

use serde_json::json;

use crate::helpers::{ALICE, TestApp};

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).permissions().mode() & 0o777
}

#[tokio::test]
async fn the_data_directory_the_store_and_the_master_key_are_private_to_dbrokers_user() {
    let app = TestApp::spawn().await;
    app.create(ALICE, json!({"engine": "redis", "memory_mb": 16})).await;
    let dir = &app.config.data_dir;

    assert_eq!(mode(dir), 0o700, "the data directory");
    // The store is a file here only on SQLite.
    let store_files: &[&str] =
        if app.store.url.is_embedded() { &["dbroker.db", "dbroker.db-wal", "dbroker.db-shm"] } else { &[] };
    for file in store_files.iter().chain(&["master.key"]) {
        assert_eq!(mode(&dir.join(file)), 0o600, "{file}");
    }
}
