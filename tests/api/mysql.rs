//! MySQL instances through v1 and the old routes, logged into with a real client; and what
//! dbroker reads from a MySQL image itself: which server it runs, and the collations it has.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::query_parameters::{EventsOptionsBuilder, InspectContainerOptions, RestartContainerOptions};
use dbroker::config::Catalogue;
use dbroker::model::Engine;
use futures_util::StreamExt;
use reqwest::StatusCode;
use serde_json::json;
use sqlx::{Connection, Row};

use crate::helpers::{ALICE, TestApp, docker, image, mysql_connect, port_and_password, wait_until};

async fn server_charset(conn: &mut sqlx::MySqlConnection) -> (String, String) {
    let row = sqlx::query("SELECT @@character_set_server, @@collation_server").fetch_one(conn).await.unwrap();
    (row.get(0), row.get(1))
}

#[tokio::test]
async fn a_mysql_instance_from_v1_has_the_charset_asked_for_and_refuses_a_wrong_password() {
    let app = TestApp::spawn().await;

    let instance = app.create(ALICE, json!({"engine": "mysql", "charset": "latin1", "memory_mb": 512})).await;

    let (port, password) = port_and_password(&instance);
    assert_eq!(instance["connection"]["user"], "root");
    assert_eq!(instance["memory_mb"], 512);
    assert_eq!(instance["connection"]["uri"], format!("mysql://root:{password}@127.0.0.1:{port}/"));
    let mut conn = mysql_connect(port, "root", &password).await.expect("the returned password works");
    let (charset, _) = server_charset(&mut conn).await;
    assert_eq!(charset, "latin1");
    assert!(mysql_connect(port, "root", "wrong-password").await.is_err(), "a wrong password is refused");
    conn.close().await.ok();
}

#[tokio::test]
async fn the_old_mysql_route_applies_the_old_defaults_and_answers_in_the_envelope() {
    let app = TestApp::spawn().await;

    let (status, body) = app.post("/mysql", ALICE, json!({})).await;

    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!((body["code"].clone(), body["msg"].clone()), (json!(200), json!("success")));
    let data = &body["data"];
    assert_eq!(data["user"], "root");
    let port = data["port"].as_u64().unwrap() as u16;
    let mut conn = mysql_connect(port, "root", data["pwd"].as_str().unwrap()).await.expect("login");
    let (charset, collation) = server_charset(&mut conn).await;
    // MariaDB and MySQL 8 report the old `utf8` by its new name, utf8mb3.
    assert!(charset == "utf8" || charset == "utf8mb3", "{charset}");
    assert!(collation == "utf8_general_ci" || collation == "utf8mb3_general_ci", "{collation}");
    conn.close().await.ok();

    let (status, detail) = app.get(&format!("/detail/{}", data["dockerId"].as_str().unwrap()), ALICE).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(detail["data"], *data, "detail is shaped like the create answer");
    let (_, list) = app.get("/list/1", ALICE).await;
    assert_eq!(list["data"], json!([data]));
    let (_, redis_list) = app.get("/list/2", ALICE).await;
    assert_eq!(redis_list["data"], json!([]));
}

#[tokio::test]
async fn the_old_mysql_route_takes_a_charset_and_its_collection() {
    let app = TestApp::spawn().await;

    let (status, body) = app.post("/mysql", ALICE, json!({"charset": "utf8mb4", "collection": "utf8mb4_bin"})).await;

    assert_eq!(status, StatusCode::OK, "{body}");
    let port = body["data"]["port"].as_u64().unwrap() as u16;
    let mut conn = mysql_connect(port, "root", body["data"]["pwd"].as_str().unwrap()).await.unwrap();
    assert_eq!(server_charset(&mut conn).await, ("utf8mb4".to_string(), "utf8mb4_bin".to_string()));
    conn.close().await.ok();
}

#[tokio::test]
async fn a_mysql_row_survives_a_container_restart_and_a_dbroker_restart() {
    let mut app = TestApp::spawn().await;
    let instance = app.create(ALICE, json!({"engine": "mysql"})).await;
    let (port, password) = port_and_password(&instance);
    let mut conn = mysql_connect(port, "root", &password).await.unwrap();
    for statement in [
        "CREATE DATABASE shop",
        "CREATE TABLE shop.orders (id INT PRIMARY KEY, item TEXT)",
        "INSERT INTO shop.orders VALUES (1, 'teapot')",
    ] {
        sqlx::query(statement).execute(&mut conn).await.unwrap();
    }
    conn.close().await.ok();
    let read_item = |mut conn: sqlx::MySqlConnection| async move {
        let row = sqlx::query("SELECT item FROM shop.orders WHERE id = 1").fetch_one(&mut conn).await.unwrap();
        row.get::<String, _>(0)
    };

    docker().await.restart_container(&app.container_of(&instance), None::<RestartContainerOptions>).await.unwrap();
    let conn = wait_until("MySQL back after a restart", Duration::from_secs(120), || async {
        mysql_connect(port, "root", &password).await.ok()
    })
    .await;
    let after_container_restart = read_item(conn).await;

    app.restart().await;
    let (status, detail) = app.get(&format!("/v1/instances/{}", instance["id"].as_str().unwrap()), ALICE).await;
    assert_eq!(status, StatusCode::OK);
    let (port_after, password_after) = port_and_password(&detail);
    let after_dbroker_restart = read_item(mysql_connect(port_after, "root", &password_after).await.unwrap()).await;

    assert_eq!(after_container_restart, "teapot");
    assert_eq!(after_dbroker_restart, "teapot");
}

#[tokio::test]
async fn a_charset_or_collation_the_servers_own_list_lacks_is_422_naming_it_and_leaves_nothing_behind() {
    let app = TestApp::spawn().await;

    // Both are well-formed, and latin2 is a character set MariaDB has: only its list says no.
    let (collation, collation_body) = app
        .post(
            "/v1/instances",
            ALICE,
            json!({"engine": "mysql", "charset": "latin2", "collation": "latin2_vietnamese_ci"}),
        )
        .await;
    // MySQL 8 has gb18030; MariaDB 10.11 does not.
    let (charset, charset_body) =
        app.post("/v1/instances", ALICE, json!({"engine": "mysql", "charset": "gb18030"})).await;

    assert_eq!(collation, StatusCode::UNPROCESSABLE_ENTITY, "{collation_body}");
    let detail = collation_body["detail"].as_str().unwrap();
    assert!(detail.starts_with("collation: unknown collation \"latin2_vietnamese_ci\""), "{detail}");
    assert!(detail.contains("latin2_bin"), "it names collations the server has: {detail}");
    assert_eq!(charset, StatusCode::UNPROCESSABLE_ENTITY, "{charset_body}");
    assert!(charset_body["detail"].as_str().unwrap().starts_with("charset: unknown character set"), "{charset_body}");
    assert!(app.containers().await.is_empty(), "no container is left");
    assert!(app.volumes().await.is_empty(), "no volume is left");
    let (_, list) = app.get("/v1/instances", ALICE).await;
    assert_eq!(list, json!({"instances": []}), "no record is left");
}

#[tokio::test]
async fn a_collation_the_servers_own_list_has_reaches_the_server() {
    let app = TestApp::spawn().await;

    let instance = app
        .create(ALICE, json!({"engine": "mysql", "charset": "utf8mb4", "collation": "utf8mb4_unicode_520_ci"}))
        .await;

    let (port, password) = port_and_password(&instance);
    let mut conn = mysql_connect(port, "root", &password).await.unwrap();
    assert_eq!(server_charset(&mut conn).await, ("utf8mb4".to_string(), "utf8mb4_unicode_520_ci".to_string()));
    conn.close().await.ok();
}

#[tokio::test]
async fn a_serve_given_only_the_mariadb_image_finds_it_runs_mariadb_and_makes_instances_from_a_template() {
    // What `serve --mysql-image IMAGE` runs: the built-in catalogue, its default version's image
    // replaced, and no word of which server the image runs.
    let app = TestApp::spawn_with(|c| {
        c.catalogue = Catalogue::builtin();
        c.catalogue.set_default_image(Engine::Mysql, image("mysql"));
    })
    .await;

    let instance = app.create(ALICE, json!({"engine": "mysql"})).await;

    let source_id = docker().await.inspect_image(&image("mysql")).await.unwrap().id.unwrap();
    let inspect =
        docker().await.inspect_container(&app.container_of(&instance), None::<InspectContainerOptions>).await.unwrap();
    let labels = inspect.config.unwrap().labels.unwrap_or_default();
    assert_eq!(labels.get("dbroker.template-of"), Some(&source_id), "the container runs a template of the image");
}

/// Now, in Unix nanoseconds: how Docker's events are timed.
fn now_nanos() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp_nanos() as i64
}

/// The containers of `prefix` that Docker creates from now on, with when (Unix nanoseconds), as
/// its event stream reports them. Followed live: the engine keeps only its latest events for a
/// later look back, which other tests' events push out.
fn watch_created_containers(prefix: &str) -> (Arc<Mutex<Vec<(i64, String)>>>, tokio::task::JoinHandle<()>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let filters = HashMap::from([
        ("type", vec!["container".to_string()]),
        ("event", vec!["create".to_string()]),
        ("label", vec![format!("dbroker.prefix={prefix}")]),
    ]);
    // From now: what happens before the stream is open is replayed, the rest follows live.
    let since = now_nanos();
    let since = format!("{}.{:09}", since / 1_000_000_000, since % 1_000_000_000);
    let options = EventsOptionsBuilder::default().since(&since).filters(&filters).build();
    let watcher = tokio::spawn({
        let seen = seen.clone();
        async move {
            let mut events = docker().await.events(Some(options));
            while let Some(Ok(event)) = events.next().await {
                let name = event.actor.and_then(|a| a.attributes).and_then(|mut a| a.remove("name"));
                if let (Some(at), Some(name)) = (event.time_nano, name) {
                    seen.lock().unwrap().push((at, name));
                }
            }
        }
    });
    (seen, watcher)
}

#[tokio::test]
async fn what_a_mysql_image_is_is_read_once_and_kept_across_a_restart() {
    let mut app = TestApp::spawn().await;
    let one_off = format!("{}-template-build-", app.config.instance_prefix);
    let (seen, watcher) = watch_created_containers(&app.config.instance_prefix);
    app.create(ALICE, json!({"engine": "mysql", "charset": "latin1"})).await;
    let restarted = now_nanos();
    app.restart().await;

    let instance = app.create(ALICE, json!({"engine": "mysql", "charset": "latin2", "collation": "latin2_bin"})).await;
    let (refused, _) = app
        .post("/v1/instances", ALICE, json!({"engine": "mysql", "charset": "latin2", "collation": "latin2_x_ci"}))
        .await;

    // Every event up to the last create's has arrived once that one has: the stream is in order.
    let own = app.container_of(&instance);
    wait_until("the last create's container in the events", Duration::from_secs(30), || async {
        seen.lock().unwrap().iter().any(|(_, name)| *name == own).then_some(())
    })
    .await;
    watcher.abort();
    let seen = seen.lock().unwrap().clone();
    let (before, after): (Vec<_>, Vec<_>) = seen.into_iter().partition(|(at, _)| *at < restarted);
    // A fresh store: the image is looked into (its server binary), and its server is asked for
    // its collations (a template's build, or a server started for it).
    assert!(before.iter().any(|(_, name)| name.starts_with(&one_off)), "the first create read the image: {before:?}");
    let after: Vec<String> = after.into_iter().map(|(_, name)| name).collect();
    assert_eq!(after, [own], "after the restart, only the instance's own container");
    assert_eq!(refused, StatusCode::UNPROCESSABLE_ENTITY, "the kept list still refuses");
}
