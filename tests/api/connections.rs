//! Connections a client opens and then neglects cannot hold dbroker: a trickled request is cut
//! off, idle connections beyond what the process's open files allow leave it answering and the
//! Docker engine reachable, and a stalled client does not hold its shutdown.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{ALICE, PrefixGuard, TestApp, TestStore, free_port, unique_name, wait_for_api, wait_until};

/// Longer than any of dbroker's read timeouts, with a margin for a busy machine.
const CUT_OFF_DEADLINE: Duration = Duration::from_secs(45);

/// Whether the server has closed `stream` (an end of stream, or a reset), reading what it sent.
async fn closed_by_server(stream: &mut TcpStream) -> bool {
    let mut buffer = [0u8; 1024];
    loop {
        match tokio::time::timeout(Duration::from_millis(200), stream.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

#[tokio::test]
async fn a_client_that_trickles_its_headers_or_its_body_is_cut_off() {
    let app = TestApp::spawn().await;
    let host = app.address.trim_start_matches("http://").to_string();
    let mut headers = TcpStream::connect(&host).await.unwrap();
    headers.write_all(b"GET /healthz HTTP/1.1\r\nHost: dbroker\r\n").await.unwrap();
    let mut body = TcpStream::connect(&host).await.unwrap();
    body.write_all(
        b"POST /v1/instances HTTP/1.1\r\nHost: dbroker\r\nAuthorization: alice\r\nContent-Length: 1000\r\n\r\n{",
    )
    .await
    .unwrap();

    // One more header line a second, as a slow-loris client sends them, until dbroker hangs up.
    let deadline = Instant::now() + CUT_OFF_DEADLINE;
    for line in 1.. {
        let header = format!("X-Trickle-{line}: 1\r\n");
        if headers.write_all(header.as_bytes()).await.is_err() || closed_by_server(&mut headers).await {
            break;
        }
        assert!(Instant::now() < deadline, "dbroker never cut off the trickled headers");
        tokio::time::sleep(Duration::from_millis(800)).await;
    }
    while !closed_by_server(&mut body).await {
        assert!(Instant::now() < deadline, "dbroker never cut off the trickled body");
    }

    let (status, _) = app.get("/v1/instances", ALICE).await;
    assert_eq!(status, StatusCode::OK, "dbroker serves others meanwhile and after");
}

#[tokio::test]
async fn with_more_idle_connections_than_its_open_files_allow_dbroker_answers_and_reaches_docker() {
    const FILE_LIMIT: u64 = 1024;
    const IDLE_CONNECTIONS: usize = 1100;
    let prefix = unique_name("dbt-conns");
    let _cleanup = PrefixGuard(prefix.clone());
    let store = TestStore::new().await;
    let (mut command, base) = store.serve(&prefix, ALICE, free_port());
    command.env("DBROKER_REDIS_IMAGE", crate::helpers::image("redis"));
    // As under systemd's default: 1,024 open files at most, set in the child before it runs.
    // SAFETY: setrlimit is async-signal-safe, and the closure touches nothing else.
    unsafe {
        command.pre_exec(|| {
            let limit = libc::rlimit { rlim_cur: FILE_LIMIT, rlim_max: FILE_LIMIT };
            match libc::setrlimit(libc::RLIMIT_NOFILE, &limit) {
                0 => Ok(()),
                _ => Err(std::io::Error::last_os_error()),
            }
        });
    }
    let _server = command.spawn().unwrap();
    wait_for_api(&base).await;
    let host = base.trim_start_matches("http://").to_string();

    let mut idle = Vec::with_capacity(IDLE_CONNECTIONS);
    for _ in 0..IDLE_CONNECTIONS {
        idle.push(TcpStream::connect(&host).await.expect("the kernel accepts the connection"));
    }

    // A new client gets an answer (a 503 while every slot is taken), not a hang.
    let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    let answer = client.get(format!("{base}/healthz")).send().await.expect("an answer, not a time-out");
    assert!(matches!(answer.status(), StatusCode::OK | StatusCode::SERVICE_UNAVAILABLE), "{}", answer.status());
    // And once the idle ones are let go (dbroker closes them), everything works again, Docker too,
    // though all of the client's sockets stay open.
    let instance = wait_until("a create to succeed", Duration::from_secs(90), || async {
        let response = client
            .post(format!("{base}/v1/instances"))
            .header("Authorization", ALICE)
            .json(&json!({"engine": "redis", "memory_mb": 32}))
            .send()
            .await
            .ok()?;
        (response.status() == StatusCode::CREATED).then_some(response.json::<serde_json::Value>().await.ok()?)
    })
    .await;
    assert_eq!(instance["status"], "running");
    let health: serde_json::Value = client.get(format!("{base}/healthz")).send().await.unwrap().json().await.unwrap();
    assert_eq!(health["docker"], "ok", "the Docker engine is reachable: {health}");
    drop(idle);
}

#[tokio::test]
async fn a_stalled_client_does_not_hold_dbroker_after_sigterm() {
    let prefix = unique_name("dbt-stall");
    let _cleanup = PrefixGuard(prefix.clone());
    let store = TestStore::new().await;
    let (mut command, base) = store.serve(&prefix, ALICE, free_port());
    let mut server = command.spawn().unwrap();
    wait_for_api(&base).await;
    let mut stalled = TcpStream::connect(base.trim_start_matches("http://")).await.unwrap();
    stalled.write_all(b"GET /healthz HTTP/1.1\r\nHost: dbroker\r\n").await.unwrap();

    let terminated = std::process::Command::new("kill").args(["-TERM", &server.id().unwrap().to_string()]).status();
    assert!(terminated.unwrap().success());

    let exit = tokio::time::timeout(CUT_OFF_DEADLINE, server.wait()).await.expect("dbroker exits").unwrap();
    assert!(exit.success(), "a clean exit: {exit:?}");
    drop(stalled);
}
