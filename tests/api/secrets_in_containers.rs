//! No password in what `docker inspect` shows (environment, command, labels), for any kind of
//! instance: Redis's is in its configuration file, MySQL's and PostgreSQL's in a password file the
//! images read through `*_FILE`. The file follows every rotation, so an adopt finds the current
//! password. (Template build containers and pool members are in templates.rs and pool.rs.)

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{
    ALICE, TestApp, assert_inspect_holds_none_of, container_file, inspect_json, port_and_password, rotate,
    template_password, wait_until,
};

const DEADLINE: Duration = Duration::from_secs(60);

#[tokio::test]
async fn no_container_of_any_engine_shows_a_password_before_or_after_a_rotation() {
    let app = TestApp::spawn().await;
    let (redis, mysql, postgres) = tokio::join!(
        app.create(ALICE, json!({"engine": "redis"})),
        app.create(ALICE, json!({"engine": "mysql", "charset": "latin1"})),
        app.create(ALICE, json!({"engine": "postgres", "database": "shop"})),
    );

    for (instance, password_file) in
        [(&redis, "/etc/dbroker/redis.conf"), (&mysql, "/etc/dbroker/password"), (&postgres, "/etc/dbroker/password")]
    {
        let container = app.container_of(instance);
        let (_, password) = port_and_password(instance);
        let mut secrets = vec![password.clone()];
        if instance["engine"] != "redis" {
            // MariaDB and PostgreSQL copies of a template first answer to the template's password.
            secrets.push(template_password(&container).await);
            let env_var = if instance["engine"] == "mysql" { "MYSQL_ROOT_PASSWORD" } else { "POSTGRES_PASSWORD" };
            let shown = inspect_json(&container).await;
            assert!(shown.contains(&format!("{env_var}_FILE=/etc/dbroker/password")), "{shown}");
        }
        let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
        assert_inspect_holds_none_of(&container, &secrets).await;

        let rotated = rotate(&app, instance).await;
        let (_, new_password) = port_and_password(&rotated);
        assert_inspect_holds_none_of(&container, &[&new_password, &password]).await;
        // The file follows the rotation: it is where an adopt finds the password.
        let file = container_file(&container, password_file).await.expect("the password file");
        assert!(file.contains(&new_password), "{password_file} holds the new password");
        assert!(!file.contains(&password), "{password_file} no longer holds the old password");
    }
}

#[tokio::test]
async fn a_lost_mysql_or_postgres_record_is_adopted_with_the_password_it_was_rotated_to() {
    let app = TestApp::spawn().await;
    let admin = app.add_admin("root").await;
    let (mysql, postgres) =
        tokio::join!(app.create(ALICE, json!({"engine": "mysql"})), app.create(ALICE, json!({"engine": "postgres"})),);
    let (mysql, postgres) = tokio::join!(rotate(&app, &mysql), rotate(&app, &postgres));

    // As if the store were restored from a backup older than the rotations.
    app.lose_records(&[&mysql, &postgres]).await;

    for instance in [&mysql, &postgres] {
        let container = app.container_of(instance);
        wait_until("the container to be quarantined", DEADLINE, || async {
            let (_, body) = app.get("/v1/admin/quarantine", &admin).await;
            body["containers"].as_array()?.iter().any(|c| c["container"] == container.as_str()).then_some(())
        })
        .await;
        let (status, body) =
            app.post(&format!("/v1/admin/quarantine/{container}/adopt"), &admin, json!({"owner": ALICE})).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let adopted = app.detail(ALICE, instance).await;
        assert_eq!(port_and_password(&adopted), port_and_password(instance), "the rotated password, found in its file");
    }
}
