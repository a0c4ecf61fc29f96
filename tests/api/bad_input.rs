//! Bad input gets a clear 4xx that says what to fix, and no container is created.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{ALICE, TestApp};

/// Sends `body` as it is (not necessarily JSON) and returns the status and the error message.
async fn send_raw(app: &TestApp, path: &str, body: String) -> (StatusCode, String) {
    let response = app
        .client
        .post(app.url(path))
        .header("Authorization", ALICE)
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body: serde_json::Value = response.json().await.unwrap();
    let message = body.get("detail").or_else(|| body.get("msg")).and_then(|m| m.as_str()).unwrap_or_default();
    (status, message.to_string())
}

#[tokio::test]
async fn every_class_of_bad_input_is_refused_with_a_message_and_creates_nothing() {
    // More cases than the changes' burst: the limit would answer the last ones 429 (the rate
    // limits have tests of their own).
    let app = TestApp::spawn_with(|config| config.rate_limits.changes = None).await;
    let cases: &[(&str, &str, StatusCode, &str)] = &[
        // path, body, status, a fragment the message must contain
        ("/v1/instances", r#"{"engine":"redis","#, StatusCode::BAD_REQUEST, "not valid JSON"),
        ("/v1/instances", r#"[1,2"#, StatusCode::BAD_REQUEST, "not valid JSON"),
        ("/v1/instances", r#"{"engine":"oracle"}"#, StatusCode::UNPROCESSABLE_ENTITY, "unknown variant `oracle`"),
        ("/v1/instances", r#"{}"#, StatusCode::UNPROCESSABLE_ENTITY, "missing field `engine`"),
        ("/v1/instances", r#"{"engine":"redis","memory_mb":"lots"}"#, StatusCode::UNPROCESSABLE_ENTITY, "invalid type"),
        ("/v1/instances", r#"{"engine":"redis","memory_mb":-1}"#, StatusCode::UNPROCESSABLE_ENTITY, "invalid value"),
        ("/v1/instances", r#"{"engine":"redis","memory_mb":8}"#, StatusCode::UNPROCESSABLE_ENTITY, "16 to 65536"),
        ("/v1/instances", r#"{"engine":"redis","memory_mb":70000}"#, StatusCode::UNPROCESSABLE_ENTITY, "out of range"),
        ("/v1/instances", r#"{"engine":"mysql","memory_mb":128}"#, StatusCode::UNPROCESSABLE_ENTITY, "256 to 65536"),
        // A whole number written as a float is that number (JSON Schema's integer); a fraction is not.
        (
            "/v1/instances",
            r#"{"engine":"redis","memory_mb":70000.0}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "out of range",
        ),
        ("/v1/instances", r#"{"engine":"redis","memory_mb":16.5}"#, StatusCode::UNPROCESSABLE_ENTITY, "a whole number"),
        ("/redis", r#"{"memory":1.0}"#, StatusCode::UNPROCESSABLE_ENTITY, "16 to 65536"),
        (
            "/v1/instances",
            r#"{"engine":"redis","image":"alpine"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown field `image`",
        ),
        ("/v1/instances", r#"{"engine":"redis","port":22}"#, StatusCode::UNPROCESSABLE_ENTITY, "unknown field `port`"),
        (
            "/v1/instances",
            r#"{"engine":"redis","privileged":true}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown field `privileged`",
        ),
        (
            "/v1/instances",
            r#"{"engine":"redis","binds":["/:/host"]}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown field `binds`",
        ),
        ("/v1/instances", r#"{"engine":"redis","name":"Shop"}"#, StatusCode::UNPROCESSABLE_ENTITY, "lowercase letters"),
        (
            "/v1/instances",
            r#"{"engine":"redis","name":"a;rm -rf /"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "lowercase letters",
        ),
        (
            "/v1/instances",
            r#"{"engine":"redis","name":"$(reboot)"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "lowercase letters",
        ),
        (
            "/v1/instances",
            r#"{"engine":"mysql","charset":"utf9"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown character set",
        ),
        (
            "/v1/instances",
            r#"{"engine":"mysql","charset":"utf8'; DROP TABLE x; --"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown character set",
        ),
        (
            "/v1/instances",
            r#"{"engine":"mysql","charset":"utf8","collation":"utf8_bogus_ci"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown collation",
        ),
        (
            "/v1/instances",
            r#"{"engine":"mysql","charset":"utf8","collation":"latin1_swedish_ci"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "not a collation of character set",
        ),
        (
            "/v1/instances",
            r#"{"engine":"mysql","collation":"utf8_bin"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "needs its charset",
        ),
        ("/v1/instances", r#"{"engine":"redis","charset":"utf8"}"#, StatusCode::UNPROCESSABLE_ENTITY, "only mysql"),
        (
            "/v1/instances",
            r#"{"engine":"postgres","database":"postgres"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "PostgreSQL's own",
        ),
        ("/postgres", r#"{"database":"template1"}"#, StatusCode::UNPROCESSABLE_ENTITY, "PostgreSQL's own"),
        (
            "/mysql",
            r#"{"charset":"utf8","collection":"latin1_bin"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "not a collation",
        ),
        ("/mysql", r#"{"charset":"$(id)"}"#, StatusCode::UNPROCESSABLE_ENTITY, "unknown character set"),
        ("/mysql", r#"{"image":"x"}"#, StatusCode::UNPROCESSABLE_ENTITY, "unknown field `image`"),
        ("/redis", r#"{"memory":"lots"}"#, StatusCode::UNPROCESSABLE_ENTITY, "whole number of MB"),
        ("/redis", r#"{"memory":1}"#, StatusCode::UNPROCESSABLE_ENTITY, "16 to 65536"),
        ("/redis", r#"{"memory":"#, StatusCode::BAD_REQUEST, "not valid JSON"),
    ];

    let mut failures = Vec::new();
    for (path, body, expected_status, fragment) in cases {
        let (status, message) = send_raw(&app, path, body.to_string()).await;
        if status != *expected_status || !message.contains(fragment) {
            failures
                .push(format!("{path} {body}: got {status} {message:?}, wanted {expected_status} with {fragment:?}"));
        }
    }

    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(app.containers().await.is_empty(), "a refused request created a container");
    assert!(app.volumes().await.is_empty(), "a refused request created a volume");
}

#[tokio::test]
async fn a_body_over_64_kib_is_413_in_both_apis() {
    let app = TestApp::spawn().await;
    let huge = format!(r#"{{"engine":"redis","name":"{}"}}"#, "a".repeat(70 * 1024));

    let (v1, message) = send_raw(&app, "/v1/instances", huge.clone()).await;
    let (old, old_message) = send_raw(&app, "/redis", huge).await;

    assert_eq!(v1, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(message.contains("64 KiB"), "{message}");
    assert_eq!(old, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(old_message.contains("64 KiB"), "{old_message}");
}

#[tokio::test]
async fn an_unknown_old_docker_type_is_404_naming_the_known_ones() {
    let app = TestApp::spawn().await;

    let (status, body) = app.get("/list/9", ALICE).await;

    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body["msg"].as_str().unwrap().contains("1 for MySQL, 2 for Redis or 3 for PostgreSQL"), "{body}");
}

#[tokio::test]
async fn a_json_array_in_place_of_an_object_is_422_in_a_body_and_within_one_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let admin = format!("Bearer {}", app.add_admin("root").await);
    let (added, carol) = app.post("/v1/admin/users", &admin, json!({"name": "carol", "quota": {"instances": 3}})).await;
    assert_eq!(added, StatusCode::CREATED, "{carol}");
    // serde's derived structs take an array of their fields in order: each of these was accepted.
    let cases = [
        (Method::PATCH, "/v1/admin/users/carol/quota", json!([null, null])),
        (Method::POST, "/v1/admin/users", json!({"name": "dave", "quota": [null, null]})),
        (Method::POST, "/v1/admin/users", json!(["erin", false])),
        (Method::POST, "/v1/instances", json!(["redis"])),
        (Method::POST, "/redis", json!([null])),
    ];

    let mut failures = Vec::new();
    for (method, path, body) in cases {
        let (status, _, answer) = app.send(method.clone(), path, &admin, &[], Some(body.clone())).await;
        let message = answer.get("detail").or_else(|| answer.get("msg")).and_then(|m| m.as_str()).unwrap_or_default();
        if status != StatusCode::UNPROCESSABLE_ENTITY || !message.contains("expected a JSON object") {
            failures.push(format!("{method} {path} {body}: got {status} {answer}"));
        }
    }
    let (_, users) = app.get("/v1/admin/users", &admin).await;

    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let names: Vec<&str> = users["users"].as_array().unwrap().iter().map(|u| u["name"].as_str().unwrap()).collect();
    assert!(!names.contains(&"dave") && !names.contains(&"erin"), "a refused add added a user: {names:?}");
    let carol = users["users"].as_array().unwrap().iter().find(|u| u["name"] == "carol").unwrap();
    assert_eq!(carol["quota"]["instances"], 3, "a refused quota change changed it: {carol}");
    assert!(app.containers().await.is_empty(), "a refused create created a container");
}

#[tokio::test]
async fn a_logs_tail_beyond_10000_lines_is_422_saying_the_most() {
    let app = TestApp::spawn().await;

    let (status, body) = app.get("/v1/instances/000000000000/logs?tail=10001", ALICE).await;

    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["detail"], "tail: at most 10000 lines");
}
