//! The v1 read answers the store keeps (`store::answers`): each test reads first, so that the
//! answer is kept, then changes the instance through one path that writes its record, and reads
//! again: the change shows at once. A kept answer that a path's write did not reach would fail it.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{ALICE, BOB, TestApp, kill_server_process, wait_until};

const DEADLINE: Duration = Duration::from_secs(60);

/// The instance as `GET /v1/instances` and `GET /v1/instances/{id}` answer it, each read twice
/// (the second from what the store kept): both reads of both routes must agree. `None` if the
/// list does not hold it.
async fn read_both_ways(app: &TestApp, token: &str, id: &str) -> (Option<Value>, (StatusCode, Value)) {
    let mut answers = Vec::new();
    for _ in 0..2 {
        let (status, list) = app.get("/v1/instances", token).await;
        assert_eq!(status, StatusCode::OK, "{list}");
        let listed = list["instances"].as_array().unwrap().iter().find(|i| i["id"] == id).cloned();
        answers.push((listed, app.get(&format!("/v1/instances/{id}"), token).await));
    }
    let second = answers.pop().unwrap();
    assert_eq!(answers.pop().unwrap(), second, "a read asked again answers the same");
    second
}

async fn change(app: &TestApp, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
    let (status, _, answer) = app.send(method, path, ALICE, &[], body).await;
    assert!(status.is_success(), "{path}: {answer}");
    answer
}

#[tokio::test]
async fn every_change_of_the_owner_shows_in_the_very_next_list_and_detail() {
    let app = TestApp::spawn().await;
    let instance = app.create(ALICE, json!({"engine": "redis", "memory_mb": 64})).await;
    let id = instance["id"].as_str().unwrap();
    let path = format!("/v1/instances/{id}");
    let (listed, (_, detail)) = read_both_ways(&app, ALICE, id).await;
    assert_eq!(listed.unwrap()["status"], "running");
    assert_eq!(detail["status"], "running");

    change(&app, reqwest::Method::POST, &format!("{path}/stop"), None).await;
    let (listed, (_, detail)) = read_both_ways(&app, ALICE, id).await;
    assert_eq!((listed.unwrap()["status"].clone(), detail["status"].clone()), (json!("stopped"), json!("stopped")));

    change(&app, reqwest::Method::POST, &format!("{path}/start"), None).await;
    let (listed, (_, detail)) = read_both_ways(&app, ALICE, id).await;
    assert_eq!((listed.unwrap()["status"].clone(), detail["status"].clone()), (json!("running"), json!("running")));

    change(&app, reqwest::Method::PATCH, &path, Some(json!({"memory_mb": 96}))).await;
    let (listed, (_, detail)) = read_both_ways(&app, ALICE, id).await;
    assert_eq!((listed.unwrap()["memory_mb"].clone(), detail["memory_mb"].clone()), (json!(96), json!(96)));

    let rotated = change(&app, reqwest::Method::POST, &format!("{path}/rotate-password"), None).await;
    let new_password = &rotated["connection"]["password"];
    assert_ne!(new_password, &instance["connection"]["password"]);
    let (listed, (_, detail)) = read_both_ways(&app, ALICE, id).await;
    assert_eq!(&listed.unwrap()["connection"]["password"], new_password);
    assert_eq!(&detail["connection"]["password"], new_password);

    app.delete(&path, ALICE).await;
    let (listed, (status, _)) = read_both_ways(&app, ALICE, id).await;
    assert_eq!((listed, status), (None, StatusCode::NOT_FOUND));
}

#[tokio::test]
async fn two_users_never_see_each_others_kept_answers() {
    let app = TestApp::spawn().await;
    let instance = app.create(ALICE, json!({"engine": "redis", "memory_mb": 64})).await;
    let id = instance["id"].as_str().unwrap();
    let (listed, (status, _)) = read_both_ways(&app, ALICE, id).await;
    assert_eq!((listed.is_some(), status), (true, StatusCode::OK));

    let (listed, (status, _)) = read_both_ways(&app, BOB, id).await;
    let (_, bobs) = app.get("/v1/instances", BOB).await;

    assert_eq!((listed, status), (None, StatusCode::NOT_FOUND), "Bob sees none of Alice's");
    assert_eq!(bobs["instances"], json!([]));
    let (listed, (status, _)) = read_both_ways(&app, ALICE, id).await;
    assert_eq!((listed.is_some(), status), (true, StatusCode::OK), "and Alice still sees hers");
}

#[tokio::test]
async fn a_change_made_through_another_dbroker_on_the_store_shows_in_the_next_read() {
    let app = TestApp::spawn().await;
    let other = app.spawn_sibling().await;
    let instance = app.create(ALICE, json!({"engine": "redis", "memory_mb": 64})).await;
    let id = instance["id"].as_str().unwrap();
    read_both_ways(&app, ALICE, id).await;

    change(&other, reqwest::Method::POST, &format!("/v1/instances/{id}/stop"), None).await;

    let (listed, (_, detail)) = read_both_ways(&app, ALICE, id).await;
    assert_eq!((listed.unwrap()["status"].clone(), detail["status"].clone()), (json!("stopped"), json!("stopped")));
}

#[tokio::test]
async fn a_record_changed_outside_dbroker_shows_in_the_next_read() {
    // A store restored from an older backup, say: rows gone behind dbroker's back, written by a
    // connection of no dbroker.
    let app = TestApp::spawn().await;
    let instance = app.create(ALICE, json!({"engine": "redis", "memory_mb": 64})).await;
    let id = instance["id"].as_str().unwrap();
    read_both_ways(&app, ALICE, id).await;

    app.lose_records(&[&instance]).await;

    let (listed, (status, _)) = read_both_ways(&app, ALICE, id).await;
    assert_eq!((listed, status), (None, StatusCode::NOT_FOUND));
}

#[tokio::test]
async fn the_reconcilers_writes_show_in_the_next_read() {
    // This test reads as often as it can: no read limit in its way.
    let app = TestApp::spawn_with(|config| config.rate_limits.reads = None).await;
    let instance = app.create(ALICE, json!({"engine": "redis", "memory_mb": 64})).await;
    let id = instance["id"].as_str().unwrap();
    read_both_ways(&app, ALICE, id).await;

    kill_server_process(&app.container_of(&instance)).await;

    // The reconciler marks it exited when Docker reports the death, and running again once
    // Docker's restart policy has brought it back and it accepts logins: each a write that the
    // next read shows. The first lasts only until the second, so it is looked for often.
    let end = std::time::Instant::now() + DEADLINE;
    loop {
        let (_, detail) = app.get(&format!("/v1/instances/{id}"), ALICE).await;
        if detail["status"] == "exited" {
            assert_eq!(detail["exit_code"], 137, "SIGKILL's: {detail}");
            break;
        }
        assert!(std::time::Instant::now() < end, "the detail never showed the exit: {detail}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The history is no kept answer: once it holds the restart, the record says running.
    wait_until("the restart to be recorded", DEADLINE, || async {
        let kinds = app.event_kinds(ALICE, &instance).await;
        (kinds.last().map(String::as_str) == Some("started")).then_some(())
    })
    .await;
    let (listed, (_, detail)) = read_both_ways(&app, ALICE, id).await;
    assert_eq!((listed.unwrap()["status"].clone(), detail["status"].clone()), (json!("running"), json!("running")));
    assert!(detail.get("exit_code").is_none(), "{detail}");
}
