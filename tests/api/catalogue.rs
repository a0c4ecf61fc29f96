//! Engine versions and the configuration file: a version chosen by name reaches the container,
//! unknown ones are refused with the known ones listed, `GET /v1/engines` shows the catalogue, and
//! a broken configuration file stops start-up with its line number.

use std::path::Path;

use bollard::query_parameters::InspectContainerOptions;
use dbroker::config::{FileConfig, VersionSpec};
use reqwest::StatusCode;
use serde_json::json;
use sqlx::{ConnectOptions, Connection, Row};

use crate::helpers::{ALICE, TestApp, docker, image, port_and_password};

#[tokio::test]
async fn a_version_chosen_by_name_reaches_the_container_as_its_image_and_the_servers_version() {
    // The default version is one this host cannot run; "15" is the offline image.
    let catalogue =
        with_postgres_versions(&[("16", "dbroker-local/no-such-image:16"), ("15", &image("postgres"))], "16");
    let app = TestApp::spawn_with(|c| c.catalogue = catalogue).await;

    let instance = app.create(ALICE, json!({"engine": "postgres", "version": "15"})).await;

    assert_eq!(instance["version"], "15");
    assert_eq!(instance["image"], image("postgres"));
    // The container runs that image, or the data-directory template made from it.
    let source_id = docker().await.inspect_image(&image("postgres")).await.unwrap().id.unwrap();
    let inspect =
        docker().await.inspect_container(&app.container_of(&instance), None::<InspectContainerOptions>).await.unwrap();
    let config = inspect.config.unwrap();
    let runs_it = config.image.as_deref() == Some(image("postgres").as_str())
        || config.labels.unwrap_or_default().get("dbroker.template-of") == Some(&source_id);
    assert!(runs_it, "the container runs {:?}", config.image);
    let (port, password) = port_and_password(&instance);
    let mut conn = sqlx::postgres::PgConnectOptions::new()
        .host("127.0.0.1")
        .port(port)
        .username("postgres")
        .password(&password)
        .database("app")
        .connect()
        .await
        .unwrap();
    let version: String = sqlx::query("SHOW server_version").fetch_one(&mut conn).await.unwrap().get(0);
    assert!(version.starts_with("15."), "the server reports {version}");
    conn.close().await.ok();
}

/// The built-in catalogue with PostgreSQL's versions replaced, through a configuration file.
fn with_postgres_versions(versions: &[(&str, &str)], default: &str) -> dbroker::config::Catalogue {
    let toml = format!(
        "[engines.postgres]\ndefault_version = \"{default}\"\n[engines.postgres.versions]\n{}",
        versions.iter().map(|(v, i)| format!("\"{v}\" = {{ image = \"{i}\" }}\n")).collect::<String>()
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("catalogue.toml");
    std::fs::write(&path, toml).unwrap();
    FileConfig::load(&path).unwrap().1
}

#[tokio::test]
async fn an_unknown_version_or_engine_is_422_and_names_the_known_ones() {
    let app = TestApp::spawn().await;

    let (version, body) = app.post("/v1/instances", ALICE, json!({"engine": "redis", "version": "9.9"})).await;
    let (engine, engine_body) = app.post("/v1/instances", ALICE, json!({"engine": "oracle"})).await;
    let (database, database_body) = app.post("/v1/instances", ALICE, json!({"engine": "redis", "database": "x"})).await;

    assert_eq!(version, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body["detail"].as_str().unwrap().contains("known versions are 7.0"), "{body}");
    assert_eq!(engine, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(engine_body["detail"].as_str().unwrap().contains("postgres"), "{engine_body}");
    assert_eq!(database, StatusCode::UNPROCESSABLE_ENTITY, "{database_body}");
    assert!(app.containers().await.is_empty());
}

#[tokio::test]
async fn a_collation_mariadb_lacks_is_refused_before_anything_starts_and_one_it_has_works() {
    let app = TestApp::spawn().await;

    let (refused, body) = app
        .post(
            "/v1/instances",
            ALICE,
            json!({"engine": "mysql", "charset": "utf8mb4", "collation": "utf8mb4_0900_ai_ci"}),
        )
        .await;
    let instance =
        app.create(ALICE, json!({"engine": "mysql", "charset": "utf8mb4", "collation": "utf8mb4_uca1400_ai_ci"})).await;

    // MySQL 8's collation, which MariaDB 10.11's own list lacks; MariaDB's UCA 14 one, which it has.
    assert_eq!(refused, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body["detail"].as_str().unwrap().starts_with("collation: unknown collation"), "{body}");
    let (port, password) = port_and_password(&instance);
    let mut conn = crate::helpers::mysql_connect(port, "root", &password).await.unwrap();
    let collation: String = sqlx::query("SELECT @@collation_server").fetch_one(&mut conn).await.unwrap().get(0);
    assert_eq!(collation, "utf8mb4_uca1400_ai_ci");
    conn.close().await.ok();
}

#[tokio::test]
async fn get_engines_shows_the_catalogue_of_the_example_configuration_file() {
    let example = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/dbroker.example.toml"));
    let (file, catalogue) = FileConfig::load(example).expect("the README's example file loads");
    let app = TestApp::spawn_with(|c| c.catalogue = catalogue.clone()).await;

    let (status, body) = app.get("/v1/engines", ALICE).await;

    assert_eq!(status, StatusCode::OK);
    assert_eq!(file.port_range.unwrap().to_string(), "20000-29999");
    assert_eq!(
        (file.quotas.instances, file.quotas.memory_mb, file.quotas.host_memory_percent),
        (Some(10), Some(8192), Some(90))
    );
    assert_eq!(catalogue.engine(dbroker::model::Engine::Mysql).cpu_shares, 1024);
    let mysql = body["engines"].as_array().unwrap().iter().find(|e| e["engine"] == "mysql").unwrap();
    assert_eq!(mysql["default_version"], "8.0");
    assert_eq!(mysql["memory_mb"], json!({"min": 256, "max": 65536, "default": 1024}));
    assert_eq!(mysql["options"], json!(["charset", "collation"]));
    let versions: Vec<&str> =
        mysql["versions"].as_array().unwrap().iter().map(|v| v["version"].as_str().unwrap()).collect();
    assert_eq!(versions, ["8.0", "8.4", "mariadb-10.11"]);
    let postgres = body["engines"].as_array().unwrap().iter().find(|e| e["engine"] == "postgres").unwrap();
    assert_eq!(postgres["versions"][0], json!({"version": "15", "image": "postgres:15"}));
    assert_eq!(postgres["options"], json!(["database"]));
    for (engine, entry) in catalogue.engines() {
        let shown = body["engines"].as_array().unwrap().iter().find(|e| e["engine"] == engine.as_str()).unwrap();
        assert_eq!(shown["default_version"], entry.default_version.as_str());
        assert_eq!(shown["versions"].as_array().unwrap().len(), entry.versions.len());
        for (name, VersionSpec { image, .. }) in &entry.versions {
            assert!(shown["versions"].as_array().unwrap().contains(&json!({"version": name, "image": image})));
        }
    }
    let (unauthenticated, _) = app.get("/v1/engines", "nobody").await;
    assert_eq!(unauthenticated, StatusCode::UNAUTHORIZED);
}

#[test]
fn a_configuration_file_with_an_error_is_refused_with_its_line_number() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("listen = \"127.0.0.1:5000\"\nport_range = 20000\n", "line 2"),
        ("listen = \"127.0.0.1:5000\"\n\nlisten_adress = \"x\"\n", "line 3"),
        ("[engines.redis]\nversions = { \"7\" = { image = \"redis:7\" } }\ndefault_version = \"6\"\n", "line 3"),
        ("[engines.postgres]\nmemory = { min = 512, max = 256, default = 300 }\n", "line 2"),
        ("[engines.redis]\n\ncpu_shares = 1\n", "line 3"),
        ("[engines.mysql]\ncpus = 0\n", "line 2"),
        ("[quotas]\ninstances = 1\nmemory = 5\n", "line 3"),
    ];
    for (text, line) in cases {
        let path = dir.path().join("broken.toml");
        std::fs::write(&path, text).unwrap();

        let error = FileConfig::load(&path).expect_err(text);

        assert!(error.contains(line), "{text:?} gave {error:?}");
    }
}

#[test]
fn dbroker_serve_with_a_broken_configuration_file_stops_naming_the_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.toml");
    std::fs::write(&path, "# a comment\nready_timeout = \"soon\"\n").unwrap();

    let output = std::process::Command::new(env!("CARGO_BIN_EXE_dbroker"))
        .args(["serve", "--config"])
        .arg(&path)
        .env("DBROKER_DATA_DIR", dir.path().join("data"))
        .output()
        .unwrap();

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("line 2") && stderr.contains("ready_timeout"), "{stderr}");
}

#[test]
fn a_flavor_in_an_older_configuration_file_is_accepted_ignored_and_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("older.toml");
    let older = "[engines.mysql]\ndefault_version = \"10.11\"\n\
                 versions = { \"10.11\" = { image = \"dbroker-local/mysql:10.11\", flavor = \"mysql\" } }\n";
    std::fs::write(&path, older).unwrap();
    // A port taken already, so that this dbroker stops once it has loaded its configuration.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();

    let (_, catalogue) = FileConfig::load(&path).expect("an older file still loads");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_dbroker"))
        .args(["serve", "--config"])
        .arg(&path)
        .env("DBROKER_LISTEN", taken.local_addr().unwrap().to_string())
        .env("DBROKER_DATA_DIR", dir.path().join("data"))
        .output()
        .unwrap();

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(catalogue.engine(dbroker::model::Engine::Mysql).versions["10.11"].image, "dbroker-local/mysql:10.11");
    assert!(stderr.contains("engines.mysql.versions.\"10.11\".flavor is deprecated and ignored"), "{stderr}");
    assert!(stderr.contains("cannot listen"), "it stopped where expected: {stderr}");
}
