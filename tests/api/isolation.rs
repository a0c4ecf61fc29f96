//! A user sees and touches only their own instances; another user's is a 404, as if it did not exist.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{ALICE, BOB, TestApp};

#[tokio::test]
async fn another_users_instance_is_invisible_in_list_and_detail_and_cannot_be_deleted() {
    let app = TestApp::spawn().await;
    let instance = app.create(ALICE, json!({"engine": "redis"})).await;
    let id = instance["id"].as_str().unwrap();

    let (bob_list, bob_instances) = app.get("/v1/instances", BOB).await;
    let (bob_detail, _) = app.get(&format!("/v1/instances/{id}"), BOB).await;
    let (bob_old_detail, bob_old_body) = app.get(&format!("/detail/{id}"), BOB).await;
    let (bob_old_list, bob_old_instances) = app.get("/list/2", BOB).await;
    let (bob_delete, _) = app.delete(&format!("/v1/instances/{id}"), BOB).await;

    assert_eq!(bob_list, StatusCode::OK);
    assert_eq!(bob_instances, json!({"instances": []}));
    assert_eq!(bob_detail, StatusCode::NOT_FOUND);
    assert_eq!(bob_old_detail, StatusCode::NOT_FOUND);
    assert_eq!(bob_old_body["code"], 404);
    assert_eq!(bob_old_list, StatusCode::OK);
    assert_eq!(bob_old_instances["data"], json!([]));
    assert_eq!(bob_delete, StatusCode::NOT_FOUND);
    let (alice_detail, still_there) = app.get(&format!("/v1/instances/{id}"), ALICE).await;
    assert_eq!(alice_detail, StatusCode::OK);
    assert_eq!(still_there["status"], "running");
    assert_eq!(app.containers().await.len(), 1, "Bob's delete removed nothing");
    let (_, alice_list) = app.get("/v1/instances?engine=redis", ALICE).await;
    assert_eq!(alice_list["instances"].as_array().unwrap().len(), 1);
    let (_, alice_mysql) = app.get("/v1/instances?engine=mysql", ALICE).await;
    assert_eq!(alice_mysql, json!({"instances": []}));
}

#[tokio::test]
async fn an_unknown_id_is_404_in_both_apis() {
    let app = TestApp::spawn().await;

    let (v1, body) = app.get("/v1/instances/000000000000", ALICE).await;
    let (malformed, _) = app.get("/v1/instances/..%2F..%2Fetc", ALICE).await;
    let (old, old_body) = app.get("/detail/6aecdcdf980b", ALICE).await;

    assert_eq!(v1, StatusCode::NOT_FOUND);
    assert_eq!(body["status"], 404);
    assert_eq!(malformed, StatusCode::NOT_FOUND);
    assert_eq!(old, StatusCode::NOT_FOUND);
    assert_eq!(old_body["code"], 404, "not the old tool's data: {{}} with 200");
}
