//! The warm pool: members wait unseen by users; a create claims one and makes it its own (a fresh
//! password, the requested memory cap and database); no member goes to two creates; the pool
//! refills.

use std::collections::HashSet;
use std::time::Duration;

use bollard::query_parameters::RestartContainerOptions;
use dbroker::config::{Catalogue, FileConfig};
use dbroker::model::Engine;
use dbroker::secrets::MasterKey;
use dbroker::store::Store;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{
    ALICE, BOB, TestApp, docker, image, memory_cap, port_and_password, postgres_connect, postgres_databases,
    redis_connect, redis_loaded, wait_until,
};

const DEADLINE: Duration = Duration::from_secs(120);

/// The offline catalogue with a warm pool of `size` for each of `engines`' default version.
pub fn catalogue_with_pool(engines: &[Engine], size: u32) -> Catalogue {
    let versions = [(Engine::Mysql, "10.11"), (Engine::Redis, "7.0"), (Engine::Postgres, "15")];
    let mut toml = String::new();
    for (engine, version) in versions {
        let pool = if engines.contains(&engine) { size } else { 0 };
        toml.push_str(&format!(
            "[engines.{engine}]\ndefault_version = \"{version}\"\nversions = {{ \"{version}\" = {{ image = \"{}\", pool = {pool} }} }}\n",
            image(engine.as_str())
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pool.toml");
    std::fs::write(&path, toml).unwrap();
    FileConfig::load(&path).unwrap().1
}

/// Waits until the pool has `count` running members of `engine`, and returns them as admins see them.
pub async fn wait_for_pool(app: &TestApp, admin: &str, engine: &str, count: usize) -> Vec<Value> {
    wait_until(&format!("{count} running {engine} pool members"), DEADLINE, || async {
        let (_, body) = app.get("/v1/admin/pool", admin).await;
        let members: Vec<Value> = body["members"]
            .as_array()?
            .iter()
            .filter(|m| m["engine"] == engine && m["status"] == "running")
            .cloned()
            .collect();
        (members.len() >= count).then_some(members)
    })
    .await
}

/// The password a pool member was started with, read from the store as dbroker would.
async fn pool_password(app: &TestApp, id: &str) -> String {
    let store = Store::open(&app.config.database_url).await.unwrap();
    let key = MasterKey::load(&app.config.master_key, &app.config.data_dir, false).unwrap();
    let record = store.instance(&id.parse().unwrap()).await.unwrap().unwrap();
    key.decrypt(&record.password_enc).unwrap().expose().to_string()
}

#[tokio::test]
async fn a_redis_instance_from_the_pool_has_its_own_password_and_memory_cap_and_keeps_data_across_a_restart() {
    let app = TestApp::spawn_with(|c| c.catalogue = catalogue_with_pool(&[Engine::Redis], 2)).await;
    let admin = app.add_admin("root").await;
    let members = wait_for_pool(&app, &admin, "redis", 2).await;
    let mut pool_passwords = Vec::new();
    for member in &members {
        pool_passwords.push(pool_password(&app, member["id"].as_str().unwrap()).await);
    }
    let (_, listed) = app.get("/v1/instances", ALICE).await;
    assert_eq!(listed, json!({"instances": []}), "pool members are not listed to users");

    let first = app.create(ALICE, json!({"engine": "redis", "memory_mb": 64})).await;
    let second = app.create(BOB, json!({"engine": "redis"})).await;

    let claimed: HashSet<&str> = members.iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert!(claimed.contains(first["id"].as_str().unwrap()), "the create was served from the pool");
    assert!(claimed.contains(second["id"].as_str().unwrap()));
    let (port, password) = port_and_password(&first);
    let (other_port, other_password) = port_and_password(&second);
    assert!(redis_connect(port, &password).await.is_ok());
    for refused in pool_passwords.iter().chain([&other_password]) {
        assert!(redis_connect(port, refused).await.is_err(), "the pool's and another instance's passwords are refused");
    }
    assert!(redis_connect(other_port, &password).await.is_err());
    let (_, events) = app.get(&format!("/v1/instances/{}/events", first["id"].as_str().unwrap()), ALICE).await;
    assert_eq!(
        events["events"][events["events"].as_array().unwrap().len() - 2]["detail"],
        "claimed from the warm pool"
    );
    let container = app.container_of(&first);
    assert_eq!(memory_cap(&container).await, Some(64 * 1024 * 1024), "the requested cap, not the pool's");

    let mut conn = redis_connect(port, &password).await.unwrap();
    let _: () = redis::cmd("SET").arg("k").arg("mine").query_async(&mut conn).await.unwrap();
    docker().await.restart_container(&container, None::<RestartContainerOptions>).await.unwrap();
    let mut conn = wait_until("Redis back", DEADLINE, || redis_loaded(port, &password)).await;
    let value: String = redis::cmd("GET").arg("k").query_async(&mut conn).await.unwrap();
    assert_eq!(value, "mine");
    assert!(
        redis_connect(port, &pool_passwords[0]).await.is_err()
            && redis_connect(port, &pool_passwords[1]).await.is_err(),
        "a restart does not bring the pool's password back"
    );
    wait_for_pool(&app, &admin, "redis", 2).await;
}

#[tokio::test]
async fn concurrent_creates_never_get_the_same_pool_member() {
    let app = TestApp::spawn_with(|c| c.catalogue = catalogue_with_pool(&[Engine::Redis], 3)).await;
    let admin = app.add_admin("root").await;
    wait_for_pool(&app, &admin, "redis", 3).await;

    let creates = (0..6).map(|_| app.post("/v1/instances", ALICE, json!({"engine": "redis"})));
    let answers = futures_util::future::join_all(creates).await;

    let mut ids = HashSet::new();
    let mut ports = HashSet::new();
    for (status, instance) in &answers {
        assert_eq!(*status, StatusCode::CREATED, "{instance}");
        let (port, password) = port_and_password(instance);
        assert!(redis_connect(port, &password).await.is_ok(), "each works with its own password");
        ids.insert(instance["id"].as_str().unwrap().to_string());
        ports.insert(port);
    }
    assert_eq!((ids.len(), ports.len()), (6, 6), "six creates, six instances");
}

#[tokio::test]
async fn a_postgres_instance_from_the_pool_gets_the_database_asked_for_and_its_own_password_shown_nowhere() {
    let app = TestApp::spawn_with(|c| c.catalogue = catalogue_with_pool(&[Engine::Postgres], 1)).await;
    let admin = app.add_admin("root").await;
    let members = wait_for_pool(&app, &admin, "postgres", 1).await;
    let pool_password = pool_password(&app, members[0]["id"].as_str().unwrap()).await;
    let container = format!("{}-{}", app.config.instance_prefix, members[0]["id"].as_str().unwrap());
    let template_password = crate::helpers::template_password(&container).await;
    crate::helpers::assert_inspect_holds_none_of(&container, &[&pool_password, &template_password]).await;

    let instance = app.create(ALICE, json!({"engine": "postgres", "database": "shop"})).await;

    assert_eq!(instance["id"], members[0]["id"], "served from the pool");
    assert_eq!(instance["database"], "shop");
    let (port, password) = port_and_password(&instance);
    let mut conn = postgres_connect(port, &password, "shop").await.expect("its own password, on its own database");
    assert_eq!(postgres_databases(&mut conn).await, ["postgres", "shop"], "the one asked for, and no other");
    sqlx::Connection::close(conn).await.ok();
    assert!(postgres_connect(port, &pool_password, "shop").await.is_err(), "the pool's password is refused");
    crate::helpers::assert_inspect_holds_none_of(&container, &[&password]).await;
    // The password file follows the claim's rotation, just after it: where an adopt finds it.
    wait_until("the password file to hold the new password", DEADLINE, || async {
        let file = crate::helpers::container_file(&container, "/etc/dbroker/password").await?;
        (file == password).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_mysql_charset_never_claims_from_the_pool_and_one_the_server_lacks_leaves_the_pool_as_it_was() {
    let app = TestApp::spawn_with(|c| c.catalogue = catalogue_with_pool(&[Engine::Mysql], 1)).await;
    let admin = app.add_admin("root").await;
    let members = wait_for_pool(&app, &admin, "mysql", 1).await;

    let (refused, body) = app
        .post(
            "/v1/instances",
            ALICE,
            json!({"engine": "mysql", "charset": "latin2", "collation": "latin2_vietnamese_ci"}),
        )
        .await;
    let own = app.create(ALICE, json!({"engine": "mysql", "charset": "latin2", "collation": "latin2_bin"})).await;

    assert_eq!(refused, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body["detail"].as_str().unwrap().starts_with("collation:"), "{body}");
    assert_ne!(own["id"], members[0]["id"], "a charset of its own starts a fresh server");
    let after = wait_for_pool(&app, &admin, "mysql", 1).await;
    assert_eq!(after.len(), 1);
    assert_eq!(after[0]["id"], members[0]["id"], "the member waits as it was");
    let (_, list) = app.get("/v1/instances", ALICE).await;
    assert_eq!(list["instances"].as_array().unwrap().len(), 1, "only the instance that was created");
}
