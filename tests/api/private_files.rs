//! What dbroker keeps on disk is readable by its own user only: the data directory, the store
//! and its journal (user names, token hashes, encrypted passwords), and the master key. Given the
//! key, the data directory holds nothing but the store, if it is SQLite there, and caches.

use std::os::unix::fs::PermissionsExt;

use serde_json::json;

use dbroker::secrets::KeySource;
use dbroker::store::DatabaseUrl;

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
    let key_file: &[&str] = if matches!(app.config.master_key, KeySource::DataDir) { &["master.key"] } else { &[] };
    for file in store_files.iter().chain(key_file) {
        assert_eq!(mode(&dir.join(file)), 0o600, "{file}");
    }
}

#[tokio::test]
async fn given_the_master_key_the_data_directory_holds_only_the_store_if_it_is_there_and_caches() {
    let keys = tempfile::tempdir().unwrap();
    let key = crate::master_key::key_file(keys.path(), "master.key", &"5a".repeat(32));
    let app = TestApp::spawn_with(|c| c.master_key = KeySource::File(key)).await;

    // A PostgreSQL instance: its template's identity files are kept, the one cache there is.
    app.create(ALICE, json!({"engine": "postgres"})).await;

    let dir = &app.config.data_dir;
    let mut allowed = vec!["template-files".to_string()];
    if let DatabaseUrl::Sqlite(store) = &app.config.database_url
        && store.parent() == Some(dir.as_path())
    {
        let name = store.file_name().unwrap().to_string_lossy();
        allowed.extend([name.to_string(), format!("{name}-wal"), format!("{name}-shm")]);
    }
    let held: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|entry| entry.unwrap().file_name().to_string_lossy().into()).collect();
    assert!(held.iter().all(|name| allowed.contains(name)), "{held:?}: anything else coordinates, or is undocumented");
    assert!(held.contains(&"template-files".to_string()), "the cache is where README says: {held:?}");
}
