//! The offline images themselves: each starts with a password, accepts a real client through a
//! published port, and answers a query, as the official image of its engine would.

use std::collections::HashMap;
use std::time::Duration;

use bollard::models::{ContainerCreateBody, HostConfig, PortBinding};
use bollard::query_parameters::{CreateContainerOptionsBuilder, InspectContainerOptions};
use sqlx::{ConnectOptions, Connection, Row};

use crate::helpers::{ContainerGuard, docker, image, unique_name, wait_until};

const STARTUP_DEADLINE: Duration = Duration::from_secs(120);

/// Starts `image` with `env` and `args`, its `port` published on a free loopback port; returns the
/// guard that removes it and the host port.
async fn start(image: &str, env: &[&str], args: &[&str], port: u16) -> (ContainerGuard, u16) {
    let docker = docker().await;
    let name = unique_name("dbroker-test-image");
    let guard = ContainerGuard(name.clone());
    let container_port = format!("{port}/tcp");
    let body = ContainerCreateBody {
        image: Some(image.to_string()),
        env: Some(env.iter().map(|s| s.to_string()).collect()),
        cmd: (!args.is_empty()).then(|| args.iter().map(|s| s.to_string()).collect()),
        host_config: Some(HostConfig {
            port_bindings: Some(HashMap::from([(
                container_port.clone(),
                Some(vec![PortBinding {
                    host_ip: Some("127.0.0.1".into()),
                    host_port: Some(String::new()), // Docker picks a free one
                }]),
            )])),
            ..Default::default()
        }),
        ..Default::default()
    };
    let options = CreateContainerOptionsBuilder::default().name(&name).build();
    docker.create_container(Some(options), body).await.expect("create container");
    docker.start_container(&name, None).await.expect("start container");
    let inspect = docker.inspect_container(&name, None::<InspectContainerOptions>).await.expect("inspect container");
    let host_port = inspect
        .network_settings
        .and_then(|n| n.ports)
        .and_then(|ports| ports.get(&container_port).cloned().flatten())
        .and_then(|bindings| bindings.first().and_then(|b| b.host_port.clone()))
        .and_then(|p| p.parse().ok())
        .expect("a published host port");
    (guard, host_port)
}

#[tokio::test]
async fn the_mysql_image_initialises_and_accepts_its_root_password() {
    let (_container, port) = start(
        &image("mysql"),
        &["MYSQL_ROOT_PASSWORD=s3cret'pw", "MYSQL_DATABASE=app"],
        &["--character-set-server=latin1"],
        3306,
    )
    .await;
    let options = sqlx::mysql::MySqlConnectOptions::new()
        .host("127.0.0.1")
        .port(port)
        .username("root")
        .password("s3cret'pw")
        .database("app");

    let mut conn =
        wait_until("MariaDB to accept root", STARTUP_DEADLINE, || async { options.connect().await.ok() }).await;
    let charset: String =
        sqlx::query("SELECT @@character_set_server").fetch_one(&mut conn).await.expect("query").get(0);

    assert_eq!(charset, "latin1", "server arguments reach the server");
    let wrong = options.clone().password("wrong").connect().await;
    assert!(wrong.is_err(), "a wrong password is refused");
    conn.close().await.ok();
}

#[tokio::test]
async fn the_postgres_image_initialises_and_accepts_its_password() {
    let (_container, port) =
        start(&image("postgres"), &["POSTGRES_PASSWORD=s3cret", "POSTGRES_DB=app"], &[], 5432).await;
    let options = sqlx::postgres::PgConnectOptions::new()
        .host("127.0.0.1")
        .port(port)
        .username("postgres")
        .password("s3cret")
        .database("app");

    let mut conn =
        wait_until("PostgreSQL to accept its user", STARTUP_DEADLINE, || async { options.connect().await.ok() }).await;
    let answer: i32 = sqlx::query("SELECT 40 + 2").fetch_one(&mut conn).await.expect("query").get(0);

    assert_eq!(answer, 42);
    let wrong = options.clone().password("wrong").connect().await;
    assert!(wrong.is_err(), "a wrong password is refused");
    conn.close().await.ok();
}

#[tokio::test]
async fn the_redis_image_takes_server_arguments_and_requires_its_password() {
    let (_container, port) = start(&image("redis"), &[], &["--requirepass", "s3cret"], 6379).await;
    let addr = redis::ConnectionAddr::Tcp("127.0.0.1".into(), port);
    let with_password = |password: &str| {
        let info = redis::IntoConnectionInfo::into_connection_info(addr.clone())
            .expect("connection info")
            .set_redis_settings(redis::RedisConnectionInfo::default().set_password(password));
        redis::Client::open(info).expect("client")
    };

    let mut conn = wait_until("Redis to accept AUTH", STARTUP_DEADLINE, || async {
        with_password("s3cret").get_multiplexed_async_connection().await.ok()
    })
    .await;
    let pong: String = redis::cmd("PING").query_async(&mut conn).await.expect("PING");

    assert_eq!(pong, "PONG");
    let wrong = with_password("wrong").get_multiplexed_async_connection().await;
    assert!(wrong.is_err(), "a wrong password is refused");
}
