//! Instances made from a data-directory template (MariaDB, PostgreSQL): each has its own password
//! (the template's and another instance's are refused) and identity, the character set, database
//! and memory cap asked for, and keeps its data across a restart.

use std::collections::HashMap;
use std::time::Duration;

use bollard::models::{ContainerConfig, ContainerCreateBody};
use bollard::query_parameters::{
    CommitContainerOptionsBuilder, CreateContainerOptionsBuilder, InspectContainerOptions,
    ListContainersOptionsBuilder, RemoveImageOptionsBuilder, RestartContainerOptions,
};
use dbroker::model::Engine;
use serde_json::json;
use sqlx::Row;

use crate::helpers::{
    ALICE, BOB, ContainerGuard, TestApp, docker, image, memory_cap, mysql_connect, port_and_password, postgres_connect,
    postgres_databases, wait_until, write_mysql_row,
};

#[tokio::test]
async fn mariadb_instances_made_from_a_template_have_their_own_password_charset_memory_and_data() {
    let app = TestApp::spawn().await;

    let first = app.create(ALICE, json!({"engine": "mysql", "charset": "latin1", "memory_mb": 512})).await;
    let second = app.create(BOB, json!({"engine": "mysql"})).await;

    let container = app.container_of(&first);
    let template_password = crate::helpers::template_password(&container).await;
    let (port, password) = port_and_password(&first);
    let (other_port, other_password) = port_and_password(&second);
    assert_ne!(password, template_password);
    assert!(mysql_connect(port, "root", &template_password).await.is_err(), "the template's password is refused");
    assert!(mysql_connect(port, "root", &other_password).await.is_err(), "another instance's password is refused");
    assert!(mysql_connect(other_port, "root", &template_password).await.is_err());
    let mut conn = mysql_connect(port, "root", &password).await.expect("its own password works");
    let charset: String = sqlx::query("SELECT @@character_set_server").fetch_one(&mut conn).await.unwrap().get(0);
    assert_eq!(charset, "latin1");
    sqlx::Connection::close(conn).await.ok();
    assert_eq!(memory_cap(&container).await, Some(512 * 1024 * 1024));

    write_mysql_row(port, &password).await;
    docker().await.restart_container(&container, None::<RestartContainerOptions>).await.unwrap();
    let mut conn = wait_until("MariaDB back", Duration::from_secs(60), || async {
        mysql_connect(port, "root", &password).await.ok()
    })
    .await;
    let row: String = sqlx::query("SELECT v FROM keep.t").fetch_one(&mut conn).await.unwrap().get(0);
    assert_eq!(row, "row");
    assert!(mysql_connect(port, "root", &template_password).await.is_err(), "not after a restart either");
    sqlx::Connection::close(conn).await.ok();
}

/// An engine's offline image with one more label, so another id: a dbroker using it builds a
/// template of its own. The image and its template are removed when this is dropped.
pub struct ChangedImage {
    engine: Engine,
    pub reference: String,
    id: String,
}

impl ChangedImage {
    pub async fn of(engine: Engine) -> ChangedImage {
        let docker = docker().await;
        let name = crate::helpers::unique_name("dbt-changed-image");
        let _container = crate::helpers::ContainerGuard(name.clone());
        let body = ContainerCreateBody { image: Some(crate::helpers::image(engine.as_str())), ..Default::default() };
        let options = CreateContainerOptionsBuilder::default().name(&name).build();
        docker.create_container(Some(options), body).await.unwrap();
        let reference = format!("dbroker-test/changed-{engine}:{name}");
        let (repo, tag) = reference.split_once(':').unwrap();
        let options = CommitContainerOptionsBuilder::default().container(&name).repo(repo).tag(tag).build();
        let labels = HashMap::from([("dbroker.test".to_string(), name.clone())]);
        let config = ContainerConfig { labels: Some(labels), ..Default::default() };
        let id = docker.commit_container(options, config).await.unwrap().id;
        ChangedImage { engine, reference, id }
    }
}

impl Drop for ChangedImage {
    fn drop(&mut self) {
        let short_id = self.id.trim_start_matches("sha256:").chars().take(16).collect::<String>();
        let images = [format!("dbroker-template/{}:{short_id}", self.engine), self.reference.clone()];
        crate::helpers::block_on_fresh_runtime(async move {
            let remove = RemoveImageOptionsBuilder::default().force(true).build();
            for image in images {
                let _ = docker().await.remove_image(&image, Some(remove.clone()), None).await;
            }
        });
    }
}

#[tokio::test]
async fn a_changed_image_gets_a_template_of_its_own() {
    let changed = ChangedImage::of(Engine::Mysql).await;
    let app = TestApp::spawn_with(|c| c.catalogue.set_default_image(Engine::Mysql, changed.reference.clone())).await;

    let instance = app.create(ALICE, json!({"engine": "mysql"})).await;

    let inspect =
        docker().await.inspect_container(&app.container_of(&instance), None::<InspectContainerOptions>).await.unwrap();
    let template_of = inspect.config.unwrap().labels.unwrap_or_default().get("dbroker.template-of").cloned();
    assert_eq!(template_of.as_deref(), Some(changed.id.as_str()), "a template made from the changed image");
}

/// What a shell command prints inside a running container.
async fn output_of(container: &str, command: &str) -> String {
    use bollard::exec::{CreateExecOptions, StartExecResults};
    let docker = docker().await;
    let exec =
        CreateExecOptions { cmd: Some(vec!["sh", "-c", command]), attach_stdout: Some(true), ..Default::default() };
    let exec = docker.create_exec(container, exec).await.unwrap();
    let StartExecResults::Attached { mut output, .. } = docker.start_exec(&exec.id, None).await.unwrap() else {
        panic!("not attached");
    };
    let mut printed = String::new();
    while let Some(chunk) = futures_util::StreamExt::next(&mut output).await {
        printed.push_str(&chunk.unwrap().to_string());
    }
    printed
}

/// A line of `pg_controldata`'s report on the cluster at `$PGDATA` in a container, such as its
/// "Database system identifier" or its "Mock authentication nonce".
async fn control_data(container: &str, field: &str) -> String {
    let report = output_of(container, "/usr/lib/postgresql/*/bin/pg_controldata -D \"$PGDATA\"").await;
    let line = report.lines().find(|l| l.starts_with(field)).unwrap_or_else(|| panic!("no {field} in {report}"));
    line.split_once(':').unwrap().1.trim().to_string()
}

#[tokio::test]
async fn postgres_instances_made_from_a_template_have_their_own_identity_password_database_and_data() {
    // A template built by this test, not one an earlier run left.
    let changed = ChangedImage::of(Engine::Postgres).await;
    let app = TestApp::spawn_with(|c| c.catalogue.set_default_image(Engine::Postgres, changed.reference.clone())).await;

    let first = app.create(ALICE, json!({"engine": "postgres", "database": "shop", "memory_mb": 256})).await;
    let second = app.create(BOB, json!({"engine": "postgres"})).await;

    let (container, other_container) = (app.container_of(&first), app.container_of(&second));
    let template_password = crate::helpers::template_password(&container).await;
    let inspect = docker().await.inspect_container(&container, None::<InspectContainerOptions>).await.unwrap();
    let template_image = inspect.image.unwrap();
    let (port, password) = port_and_password(&first);
    let (other_port, other_password) = port_and_password(&second);
    assert!(postgres_connect(port, &template_password, "postgres").await.is_err(), "the template's password");
    assert!(postgres_connect(port, &other_password, "postgres").await.is_err(), "another instance's password");
    assert!(postgres_connect(other_port, &template_password, "app").await.is_err());
    let mut conn = postgres_connect(port, &password, "shop").await.expect("its own password, on its database");
    assert_eq!(postgres_databases(&mut conn).await, ["postgres", "shop"], "the one asked for, and no other");
    assert_eq!(memory_cap(&container).await, Some(256 * 1024 * 1024));

    // Its own identity: neither the template's nor another copy's. The template keeps its own
    // aside, outside its data directory, where its identity files are empty.
    let template = crate::helpers::unique_name("dbt-pg-template");
    let _guard = crate::helpers::ContainerGuard(template.clone());
    let set_aside =
        "mkdir /tmp/identity && tar -xf /var/lib/dbroker-template-identity.tar -C /tmp/identity && sleep 60";
    let body = bollard::models::ContainerCreateBody {
        image: Some(template_image),
        entrypoint: Some(vec!["sh".into(), "-c".into(), set_aside.into()]),
        env: Some(vec!["PGDATA=/tmp/identity".into()]),
        ..Default::default()
    };
    let options = bollard::query_parameters::CreateContainerOptionsBuilder::default().name(&template).build();
    docker().await.create_container(Some(options), body).await.unwrap();
    docker().await.start_container(&template, None).await.unwrap();
    let sizes =
        "stat -c %s /var/lib/dbroker-template/pgdata/global/pg_control /var/lib/dbroker-template/pgdata/pg_wal/0*";
    assert_eq!(output_of(&template, sizes).await, "0\n0\n", "the template's data directory keeps no identity");
    for field in ["Database system identifier", "Mock authentication nonce"] {
        let (mine, other, template) = (
            control_data(&container, field).await,
            control_data(&other_container, field).await,
            control_data(&template, field).await,
        );
        assert!(mine != other && mine != template && other != template, "{field}: {mine}, {other}, {template}");
    }
    let identifier: i64 =
        sqlx::query("SELECT system_identifier FROM pg_control_system()").fetch_one(&mut conn).await.unwrap().get(0);
    assert_eq!(identifier.to_string(), control_data(&container, "Database system identifier").await);

    // The data survives a crash of the server (recovery reads the WAL written since the copy).
    sqlx::raw_sql("CREATE TABLE keep (v TEXT); INSERT INTO keep VALUES ('row')").execute(&mut conn).await.unwrap();
    sqlx::Connection::close(conn).await.ok();
    crate::helpers::kill_server_process(&container).await;
    let mut conn = wait_until("PostgreSQL back", Duration::from_secs(60), || async {
        postgres_connect(port, &password, "shop").await.ok()
    })
    .await;
    let row: String = sqlx::query("SELECT v FROM keep").fetch_one(&mut conn).await.unwrap().get(0);
    assert_eq!(row, "row");
    sqlx::Connection::close(conn).await.ok();
    assert!(postgres_connect(port, &template_password, "shop").await.is_err(), "not after a restart either");
}

#[tokio::test]
async fn a_template_build_left_by_a_process_that_died_is_removed_and_another_deployments_is_left_be() {
    let app = TestApp::spawn().await;
    let deployment = dbroker::store::Store::open(&app.config.database_url).await.unwrap().deployment_id().to_string();
    let prefix = &app.config.instance_prefix;
    // Build containers as a dbroker that died mid-build leaves them: named for an operation that
    // is not in flight.
    let build = |name: String, deployment: String| async move {
        let labels = HashMap::from([
            ("dbroker.prefix".to_string(), prefix.clone()),
            ("dbroker.deployment".to_string(), deployment),
        ]);
        let body = ContainerCreateBody { image: Some(image("redis")), labels: Some(labels), ..Default::default() };
        let options = CreateContainerOptionsBuilder::default().name(&name).build();
        docker().await.create_container(Some(options), body).await.unwrap();
        ContainerGuard(name)
    };
    let ours = build(format!("{prefix}-template-build-0123456789abcdef-aaaaaa"), deployment).await;
    let theirs = build(format!("{prefix}-template-build-0123456789abcdef-bbbbbb"), "another".to_string()).await;

    wait_until("the abandoned build to be removed", Duration::from_secs(60), || async {
        (!app.containers().await.iter().any(|c| c.ends_with(&ours.0))).then_some(())
    })
    .await;

    assert!(
        app.containers().await.iter().any(|c| c.ends_with(&theirs.0)),
        "another deployment's build is never touched"
    );
}

#[tokio::test]
async fn a_template_build_container_and_the_template_show_no_password() {
    // A template built by this test, and its build container watched while it runs.
    let changed = ChangedImage::of(Engine::Postgres).await;
    let app = TestApp::spawn_with(|c| c.catalogue.set_default_image(Engine::Postgres, changed.reference.clone())).await;
    let build_prefix = format!("{}-template-build-", app.config.instance_prefix);
    let watching = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let watcher = tokio::spawn({
        let watching = watching.clone();
        async move {
            let mut seen = HashMap::new();
            while watching.load(std::sync::atomic::Ordering::SeqCst) {
                let options = ListContainersOptionsBuilder::default().all(true).build();
                for container in docker().await.list_containers(Some(options)).await.unwrap() {
                    let Some(name) = container.names.and_then(|n| n.first().cloned()) else { continue };
                    let name = name.trim_start_matches('/').to_string();
                    if name.starts_with(&build_prefix) && !seen.contains_key(&name) {
                        if let Ok(inspect) =
                            docker().await.inspect_container(&name, None::<InspectContainerOptions>).await
                        {
                            seen.insert(name, serde_json::to_string(&inspect).unwrap());
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            seen
        }
    });

    let instance = app.create(ALICE, json!({"engine": "postgres"})).await;

    watching.store(false, std::sync::atomic::Ordering::SeqCst);
    let build_containers = watcher.await.unwrap();
    assert!(!build_containers.is_empty(), "the build container was seen while it ran");
    let template_password = crate::helpers::template_password(&app.container_of(&instance)).await;
    for (name, shown) in &build_containers {
        assert!(!shown.contains(&template_password), "docker inspect of {name} shows the template's password");
        assert!(shown.contains("POSTGRES_PASSWORD_FILE=/etc/dbroker/password"), "{shown}");
    }
    let short_id = changed.id.trim_start_matches("sha256:").chars().take(16).collect::<String>();
    let template = docker().await.inspect_image(&format!("dbroker-template/postgres:{short_id}")).await.unwrap();
    let shown = serde_json::to_string(&template).unwrap();
    assert!(!shown.contains(&template_password), "the template image's labels and environment hold no password");
}
