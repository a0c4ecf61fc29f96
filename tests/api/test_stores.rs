//! The tests' own store harness: on PostgreSQL, each test store is a database of its own that
//! lives exactly as long as the test needs it, so tests never see each other's records and leave
//! no database behind; and the search for secrets stored in clear looks everywhere on each backend.

use std::sync::Arc;

use sqlx::Connection;

use crate::helpers::{Backend, TestDatabase, TestStore};

fn database_of(store: &TestStore) -> String {
    match &store.url {
        dbroker::store::DatabaseUrl::Postgres(url) => {
            reqwest::Url::parse(url).unwrap().path().trim_start_matches('/').to_string()
        }
        other => panic!("a PostgreSQL store, not {other}"),
    }
}

#[tokio::test]
async fn a_postgres_test_store_is_a_database_of_its_own_until_its_last_user_is_gone() {
    let store = Arc::new(TestStore::on(Backend::Postgres).await);
    let other = TestStore::on(Backend::Postgres).await;
    let name = database_of(&store);
    let sibling = store.clone();
    // A connection still open when the store goes, as a dbroker killed with SIGKILL may leave one.
    let mut connection = sqlx::PgConnection::connect(&store.url_for_env()).await.expect("its URL reaches it");
    let current: String =
        sqlx::query_scalar("SELECT current_database()::text").fetch_one(&mut connection).await.unwrap();

    assert_eq!(current, name, "the URL names the store's own database");
    assert_ne!(database_of(&other), name, "each store has a database of its own");
    drop(store);
    assert!(TestDatabase::exists(&name).await, "kept while a sibling still uses it");
    drop(sibling);
    assert!(!TestDatabase::exists(&name).await, "dropped with its last user, open connection and all");
    assert!(TestDatabase::exists(&database_of(&other)).await, "another store's database is left alone");
}

#[tokio::test]
async fn a_postgres_test_stores_database_is_dropped_when_its_test_panics() {
    let (name_tx, name_rx) = tokio::sync::oneshot::channel();

    let test = tokio::spawn(async move {
        let store = TestStore::on(Backend::Postgres).await;
        name_tx.send(database_of(&store)).unwrap();
        panic!("a failing test");
    });

    assert!(test.await.unwrap_err().is_panic());
    let name = name_rx.await.unwrap();
    assert!(!TestDatabase::exists(&name).await, "{name} is dropped although its test panicked");
}

#[tokio::test]
async fn holds_in_clear_finds_a_text_in_any_row_of_the_store_on_either_backend() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let store = TestStore::on(backend).await;
        let statements = ["CREATE TABLE kept (v TEXT)", "INSERT INTO kept VALUES ('a-secret-in-clear')"];
        let _kept_open = match &store.url {
            dbroker::store::DatabaseUrl::Sqlite(path) => {
                let url = format!("sqlite://{}?mode=rwc", path.display());
                let mut db = sqlx::SqliteConnection::connect(&url).await.unwrap();
                sqlx::query("PRAGMA journal_mode = WAL").execute(&mut db).await.unwrap();
                for statement in statements {
                    sqlx::query(statement).execute(&mut db).await.unwrap();
                }
                // Kept open: the row is then in the journal only, as a running dbroker leaves it.
                Some(db)
            }
            dbroker::store::DatabaseUrl::Postgres(url) => {
                let mut db = sqlx::PgConnection::connect(url).await.unwrap();
                for statement in statements {
                    sqlx::query(statement).execute(&mut db).await.unwrap();
                }
                db.close().await.ok();
                None
            }
        };

        assert!(store.holds_in_clear("a-secret-in-clear").await, "{backend:?}");
        assert!(!store.holds_in_clear("a-text-never-written").await, "{backend:?}");
    }
}
