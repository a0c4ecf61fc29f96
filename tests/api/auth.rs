//! Who may call: tokens from `dbroker user add`, the old bare-token header, 401s; and `/healthz`.

use reqwest::StatusCode;
use serde_json::json;

use std::time::Duration;

use crate::helpers::{ALICE, TestApp, wait_until};

#[tokio::test]
async fn a_request_without_a_token_or_with_an_unknown_one_is_401() {
    let app = TestApp::spawn().await;

    let missing = app.client.get(app.url("/v1/instances")).send().await.unwrap();
    let (unknown, body) = app.get("/v1/instances", "Bearer not-a-token").await;
    let (legacy, legacy_body) = app.get("/list/1", "nobody").await;

    assert_eq!(missing.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(missing.headers()["content-type"], "application/problem+json");
    assert_eq!(unknown, StatusCode::UNAUTHORIZED);
    assert_eq!(body["status"], 401);
    assert_eq!(body["detail"], "unknown token");
    assert_eq!(legacy, StatusCode::UNAUTHORIZED, "the old routes carry the HTTP status too");
    assert_eq!(legacy_body["code"], 401);
    assert_eq!(legacy_body["msg"], "unknown token");
}

#[tokio::test]
async fn a_token_works_as_a_bearer_token_and_bare_as_old_clients_send_it() {
    let app = TestApp::spawn().await;

    let (bearer, _) = app.get("/v1/instances", &format!("Bearer {ALICE}")).await;
    let (bare, body) = app.get("/v1/instances", ALICE).await;

    assert_eq!(bearer, StatusCode::OK);
    assert_eq!(bare, StatusCode::OK);
    assert_eq!(body, json!({"instances": []}));
}

#[tokio::test]
async fn a_user_added_on_the_command_line_gets_a_token_that_works_and_is_stored_only_as_a_hash() {
    let app = TestApp::spawn().await;

    let added = app.dbroker_user(&["add", "carol"]);
    let token = String::from_utf8(added.stdout).unwrap().trim().to_string();
    let twice = app.dbroker_user(&["add", "carol"]);
    let listed = app.dbroker_user(&["list"]);

    assert!(added.status.success(), "{}", String::from_utf8_lossy(&added.stderr));
    assert!(token.len() >= 32, "{token}");
    assert!(!twice.status.success(), "a second user of the same name is refused");
    assert!(String::from_utf8_lossy(&listed.stdout).contains("carol"));
    let (status, _) = app.get("/v1/instances", &format!("Bearer {token}")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!app.store.holds_in_clear(&token).await, "the token itself is not in the store");

    let removed = app.dbroker_user(&["remove", "carol"]);
    assert!(removed.status.success());
    // Known tokens are trusted for AUTH_CACHE_TTL (one second) before the store is asked again.
    wait_until("a removed user's token to stop working", Duration::from_secs(10), || async {
        let (status, _) = app.get("/v1/instances", &format!("Bearer {token}")).await;
        (status == StatusCode::UNAUTHORIZED).then_some(())
    })
    .await;
}

#[tokio::test]
async fn healthz_answers_without_a_token_when_the_store_and_docker_answer() {
    let app = TestApp::spawn().await;

    let response = app.client.get(app.url("/healthz")).send().await.unwrap();

    assert_eq!(response.status(), StatusCode::OK);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body, json!({"store": "ok", "docker": "ok"}));
}
