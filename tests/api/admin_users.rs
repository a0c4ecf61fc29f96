//! Admin over HTTP: `/v1/admin/users` adds (the token shown once), lists, disables, enables,
//! rotates, sets quotas and removes, each change seen by the very next request; and
//! `/v1/admin/instances` lists every user's instances, filtered and paged.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{ALICE, BOB, TestApp};

const DISABLED: &str = "the user of this token is disabled";

/// A test app with an admin; returns the admin's `Authorization` value.
async fn app_with_admin() -> (TestApp, String) {
    let app = TestApp::spawn().await;
    let root = app.add_admin("root").await;
    (app, format!("Bearer {root}"))
}

/// Adds `name` over HTTP as `admin`, insisting on 201; returns the body (with the token).
async fn add_user(app: &TestApp, admin: &str, body: Value) -> Value {
    let (status, added) = app.post("/v1/admin/users", admin, body).await;
    assert_eq!(status, StatusCode::CREATED, "{added}");
    added
}

fn bearer(user: &Value) -> String {
    format!("Bearer {}", user["token"].as_str().unwrap_or_else(|| panic!("a token in {user}")))
}

/// `GET /v1/admin/users` as `admin`: the listed user `name`.
async fn listed_user(app: &TestApp, admin: &str, name: &str) -> Option<Value> {
    let (status, body) = app.get("/v1/admin/users", admin).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["users"].as_array().unwrap().iter().find(|u| u["name"] == name).cloned()
}

#[tokio::test]
async fn every_admin_user_and_instance_route_is_403_for_a_user_who_is_not_an_admin() {
    let (app, admin) = app_with_admin().await;
    let carol = add_user(&app, &admin, json!({"name": "carol"})).await;
    let routes = [
        (Method::GET, "/v1/admin/users", None),
        (Method::POST, "/v1/admin/users", Some(json!({"name": "mallory", "admin": true}))),
        (Method::POST, "/v1/admin/users/carol/disable", None),
        (Method::POST, "/v1/admin/users/carol/enable", None),
        (Method::POST, "/v1/admin/users/carol/rotate-token", None),
        (Method::PATCH, "/v1/admin/users/carol/quota", Some(json!({"instances": 100}))),
        (Method::DELETE, "/v1/admin/users/carol", None),
        (Method::GET, "/v1/admin/instances", None),
    ];

    for (method, path, body) in routes {
        let (status, _, problem) = app.send(method.clone(), path, ALICE, &[], body).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}: {problem}");
        assert_eq!(problem["detail"], "only admins may do this", "{problem}");
    }
    let (no_token, _, _) = app.send(Method::GET, "/v1/admin/users", "", &[], None).await;
    assert_eq!(no_token, StatusCode::UNAUTHORIZED);
    let listed = listed_user(&app, &admin, "carol").await.expect("carol is still there");
    assert_eq!(
        (&listed["disabled"], &listed["quota"]),
        (&json!(false), &json!({"instances": null, "memory_mb": null}))
    );
    assert!(listed_user(&app, &admin, "mallory").await.is_none(), "no user was added");
    let (works, _) = app.get("/v1/instances", &bearer(&carol)).await;
    assert_eq!(works, StatusCode::OK, "her token was not rotated");
}

#[tokio::test]
async fn an_added_users_token_is_shown_once_works_at_once_and_is_never_listed() {
    let (app, admin) = app_with_admin().await;

    let (status, _, carol) =
        app.send(Method::POST, "/v1/admin/users", &admin, &[], Some(json!({"name": "carol", "admin": true}))).await;
    let response = app.client.post(app.url("/v1/admin/users")).header("Authorization", &admin);
    let no_store = response.json(&json!({"name": "dave"})).send().await.unwrap();
    let (works, _) = app.get("/v1/admin/reconciler", &bearer(&carol)).await;
    let (list_status, list) = app.get("/v1/admin/users", &admin).await;

    assert_eq!(status, StatusCode::CREATED, "{carol}");
    let token = carol["token"].as_str().unwrap();
    assert!(token.len() >= 32, "{carol}");
    assert_eq!((&carol["name"], &carol["admin"], &carol["demo"]), (&json!("carol"), &json!(true), &json!(false)));
    assert_eq!(no_store.headers()["cache-control"], "no-store", "no cache between may keep a token");
    assert_eq!(works, StatusCode::OK, "the new token works, as an admin's");
    assert_eq!(list_status, StatusCode::OK);
    assert!(!list.to_string().contains(token), "a token is never shown again: {list}");
    let names: Vec<&str> = list["users"].as_array().unwrap().iter().map(|u| u["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["alice", "bob", "carol", "dave", "root"], "every user, by name");
    let alice = &list["users"][0];
    assert_eq!(
        (&alice["demo"], &alice["admin"], &alice["usage"]),
        (&json!(true), &json!(false), &json!({"instances": 0, "memory_mb": 0}))
    );
    assert_eq!(list["default_quota"], json!({"instances": 10, "memory_mb": 8192}));
}

#[tokio::test]
async fn a_name_taken_an_invalid_name_or_an_unknown_field_adds_nobody() {
    let (app, admin) = app_with_admin().await;

    let (taken, taken_body) = app.post("/v1/admin/users", &admin, json!({"name": ALICE})).await;
    let (invalid, invalid_body) = app.post("/v1/admin/users", &admin, json!({"name": "Carol Smith"})).await;
    let (unknown, unknown_body) = app.post("/v1/admin/users", &admin, json!({"name": "carol", "token": "mine"})).await;
    let (negative, _) = app.post("/v1/admin/users", &admin, json!({"name": "carol", "quota": {"instances": -1}})).await;

    assert_eq!(taken, StatusCode::CONFLICT, "{taken_body}");
    assert_eq!(taken_body["detail"], "a user named alice exists already; choose another name");
    assert_eq!(invalid, StatusCode::UNPROCESSABLE_ENTITY, "{invalid_body}");
    assert!(invalid_body["detail"].as_str().unwrap().contains("lowercase letters"), "{invalid_body}");
    assert_eq!(unknown, StatusCode::UNPROCESSABLE_ENTITY, "a token cannot be chosen: {unknown_body}");
    assert_eq!(negative, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(listed_user(&app, &admin, "carol").await.is_none());
    let (alice_still, _) = app.get("/v1/instances", ALICE).await;
    assert_eq!(alice_still, StatusCode::OK, "alice's token is her own still");
}

#[tokio::test]
async fn a_disabled_users_token_is_refused_on_the_next_request_and_works_again_once_enabled() {
    let (app, admin) = app_with_admin().await;
    let carol = bearer(&add_user(&app, &admin, json!({"name": "carol"})).await);
    let (before, _) = app.get("/v1/instances", &carol).await; // now in the authentication cache

    let (disabled, disabled_body) = app.post("/v1/admin/users/carol/disable", &admin, json!({})).await;
    let (refused, refused_body) = app.get("/v1/instances", &carol).await;
    let listed = listed_user(&app, &admin, "carol").await.unwrap();
    let (enabled, enabled_body) = app.post("/v1/admin/users/carol/enable", &admin, json!({})).await;
    let (again, _) = app.get("/v1/instances", &carol).await;

    assert_eq!(before, StatusCode::OK);
    assert_eq!(disabled, StatusCode::OK, "{disabled_body}");
    assert_eq!(disabled_body["disabled"], true);
    assert!(disabled_body.get("token").is_none(), "{disabled_body}");
    assert_eq!((refused, &refused_body["detail"]), (StatusCode::UNAUTHORIZED, &json!(DISABLED)), "at once");
    assert_eq!(listed["disabled"], true);
    assert!(listed["disabled_at"].is_string(), "{listed}");
    assert_eq!((enabled, &enabled_body["disabled"]), (StatusCode::OK, &json!(false)));
    assert_eq!(again, StatusCode::OK, "the same token works again, at once");
}

#[tokio::test]
async fn an_unknown_user_is_404_and_an_admin_cannot_disable_or_remove_themself() {
    let (app, admin) = app_with_admin().await;

    let (unknown, unknown_body) = app.post("/v1/admin/users/nobody/disable", &admin, json!({})).await;
    let (impossible, _) = app.post("/v1/admin/users/No%20Body/rotate-token", &admin, json!({})).await;
    let (own_disable, own_body) = app.post("/v1/admin/users/root/disable", &admin, json!({})).await;
    let (own_remove, _) = app.delete("/v1/admin/users/root", &admin).await;
    let (still_admin, _) = app.get("/v1/admin/users", &admin).await;

    assert_eq!((unknown, &unknown_body["detail"]), (StatusCode::NOT_FOUND, &json!("no user named nobody")));
    assert_eq!(impossible, StatusCode::NOT_FOUND, "a name no user can have is not found either");
    assert_eq!(own_disable, StatusCode::CONFLICT, "{own_body}");
    assert!(own_body["detail"].as_str().unwrap().contains("dbroker user disable root"), "{own_body}");
    assert_eq!(own_remove, StatusCode::CONFLICT);
    assert_eq!(still_admin, StatusCode::OK);
}

#[tokio::test]
async fn a_rotated_away_token_is_refused_on_the_next_request_and_the_new_one_works() {
    let (app, admin) = app_with_admin().await;
    let old = bearer(&add_user(&app, &admin, json!({"name": "carol"})).await);
    let (before, _) = app.get("/v1/instances", &old).await; // now in the authentication cache

    let (rotated, rotated_body) = app.post("/v1/admin/users/carol/rotate-token", &admin, json!({})).await;
    let (refused, refused_body) = app.get("/v1/instances", &old).await;
    let (works, _) = app.get("/v1/instances", &bearer(&rotated_body)).await;
    let (demo, demo_body) = app.post(&format!("/v1/admin/users/{BOB}/rotate-token"), &admin, json!({})).await;
    let (name_as_token, _) = app.get("/v1/instances", BOB).await;

    assert_eq!(before, StatusCode::OK);
    assert_eq!(rotated, StatusCode::OK, "{rotated_body}");
    assert_ne!(bearer(&rotated_body), old);
    assert_eq!((refused, &refused_body["detail"]), (StatusCode::UNAUTHORIZED, &json!("unknown token")), "at once");
    assert_eq!(works, StatusCode::OK);
    assert_eq!(demo, StatusCode::OK, "{demo_body}");
    assert_eq!(demo_body["demo"], false, "a token of its own makes a demo user a real one");
    assert!(demo_body["warning"].as_str().unwrap().contains("--demo-users"), "{demo_body}");
    assert_eq!(name_as_token, StatusCode::UNAUTHORIZED, "bob's name is no longer his token");
}

#[tokio::test]
async fn a_quota_set_over_http_is_enforced_on_the_next_create_and_null_puts_the_default_back() {
    let (app, admin) = app_with_admin().await;
    let carol = bearer(&add_user(&app, &admin, json!({"name": "carol", "quota": {"instances": 0}})).await);
    let redis = json!({"engine": "redis", "memory_mb": 32});

    let (no_instances, no_instances_body) = app.post("/v1/instances", &carol, redis.clone()).await;
    let (patched, patched_body) =
        app.patch("/v1/admin/users/carol/quota", &admin, json!({"instances": 5, "memory_mb": 16})).await;
    let (no_memory, no_memory_body) = app.post("/v1/instances", &carol, redis.clone()).await;
    let (reset, reset_body) = app.patch("/v1/admin/users/carol/quota", &admin, json!({"memory_mb": null})).await;
    let (created, created_body) = app.post("/v1/instances", &carol, redis.clone()).await;
    let listed = listed_user(&app, &admin, "carol").await.unwrap();
    let (empty, empty_body) = app.patch("/v1/admin/users/carol/quota", &admin, json!({})).await;
    let (negative, _) = app.patch("/v1/admin/users/carol/quota", &admin, json!({"instances": -1})).await;

    assert_eq!(no_instances, StatusCode::FORBIDDEN, "{no_instances_body}");
    assert_eq!(
        (&no_instances_body["code"], &no_instances_body["quota"]),
        (&json!("quota_exceeded"), &json!("instances"))
    );
    assert_eq!(no_instances_body["limit"], 0, "the quota she was added with");
    assert_eq!(patched, StatusCode::OK, "{patched_body}");
    assert_eq!(patched_body["quota"], json!({"instances": 5, "memory_mb": 16}));
    assert_eq!(no_memory, StatusCode::FORBIDDEN, "{no_memory_body}");
    assert_eq!((&no_memory_body["quota"], &no_memory_body["limit"]), (&json!("memory"), &json!(16)));
    assert_eq!(reset, StatusCode::OK, "{reset_body}");
    assert_eq!(reset_body["quota"], json!({"instances": 5, "memory_mb": null}), "null: the default; left out: kept");
    assert_eq!(created, StatusCode::CREATED, "within the default memory quota again: {created_body}");
    assert_eq!(listed["usage"], json!({"instances": 1, "memory_mb": 32}), "{listed}");
    assert_eq!(empty, StatusCode::UNPROCESSABLE_ENTITY, "{empty_body}");
    assert_eq!(negative, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(app.containers().await.len(), 1, "the refused creates made nothing");
}

#[tokio::test]
async fn removing_a_user_is_refused_while_they_own_an_instance_and_done_once_it_is_deleted() {
    let (app, admin) = app_with_admin().await;
    let carol = add_user(&app, &admin, json!({"name": "carol"})).await;
    let instance = app.create(carol["token"].as_str().unwrap(), json!({"engine": "redis", "memory_mb": 32})).await;
    let path = format!("/v1/instances/{}", instance["id"].as_str().unwrap());

    let (refused, refused_body) = app.delete("/v1/admin/users/carol", &admin).await;
    let still_there = app.detail(&bearer(&carol), &instance).await;
    let (deleted, _) = app.delete(&path, &bearer(&carol)).await;
    let (removed, removed_body) = app.delete("/v1/admin/users/carol", &admin).await;
    let (token_after, _) = app.get("/v1/instances", &bearer(&carol)).await;
    let (again, _) = app.delete("/v1/admin/users/carol", &admin).await;

    assert_eq!(refused, StatusCode::CONFLICT, "{refused_body}");
    assert!(refused_body["detail"].as_str().unwrap().starts_with("carol still owns 1 instance(s)"), "{refused_body}");
    assert_eq!(still_there["status"], "running", "the refusal touched nothing");
    assert_eq!(deleted, StatusCode::NO_CONTENT);
    assert_eq!(removed, StatusCode::NO_CONTENT, "{removed_body}");
    assert_eq!(token_after, StatusCode::UNAUTHORIZED, "her token is refused at once");
    assert_eq!(again, StatusCode::NOT_FOUND);
    assert!(listed_user(&app, &admin, "carol").await.is_none());
}

#[tokio::test]
async fn a_user_added_after_a_removal_never_reads_the_removed_users_operations() {
    let (app, admin) = app_with_admin().await;
    let carol = add_user(&app, &admin, json!({"name": "carol"})).await;
    let instance = app.create(carol["token"].as_str().unwrap(), json!({"engine": "redis", "memory_mb": 32})).await;
    let instance_id = instance["id"].as_str().unwrap();
    let operations = app.operations(&bearer(&carol), instance_id).await;
    let (deleted, _) = app.delete(&format!("/v1/instances/{instance_id}"), &bearer(&carol)).await;
    assert_eq!(deleted, StatusCode::NO_CONTENT);
    let (removed, body) = app.delete("/v1/admin/users/carol", &admin).await;
    assert_eq!(removed, StatusCode::NO_CONTENT, "{body}");

    // The newest user was removed: SQLite gives the next one the same id.
    let dave = add_user(&app, &admin, json!({"name": "dave"})).await;

    assert!(!operations.is_empty());
    for operation in &operations {
        let (status, body) =
            app.get(&format!("/v1/operations/{}", operation["id"].as_str().unwrap()), &bearer(&dave)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "another user's operation: {body}");
    }
}

/// The ids a page of `GET /v1/admin/instances?QUERY` lists, and its `next`.
async fn admin_listing(app: &TestApp, admin: &str, query: &str) -> (Vec<String>, Value) {
    let (status, body) = app.get(&format!("/v1/admin/instances?{query}"), admin).await;
    assert_eq!(status, StatusCode::OK, "{query}: {body}");
    let ids = body["instances"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap().to_string()).collect();
    (ids, body["next"].clone())
}

#[tokio::test]
async fn the_admin_listing_shows_every_users_instances_filtered_by_owner_engine_and_status_and_paged() {
    let (app, admin) = app_with_admin().await;
    let alices = app.create(ALICE, json!({"engine": "redis", "memory_mb": 32})).await;
    let bobs = app.create(BOB, json!({"engine": "postgres", "memory_mb": 128})).await;
    let (alice_id, bob_id) = (alices["id"].as_str().unwrap().to_string(), bobs["id"].as_str().unwrap().to_string());
    let (stopped, _) = app.post(&format!("/v1/instances/{alice_id}/stop"), ALICE, json!({})).await;
    assert_eq!(stopped, StatusCode::OK);

    let (status, all) = app.get("/v1/admin/instances", &admin).await;
    let by_owner = admin_listing(&app, &admin, "owner=alice").await;
    let by_engine = admin_listing(&app, &admin, "engine=postgres").await;
    let by_status = admin_listing(&app, &admin, "status=stopped").await;
    let none = admin_listing(&app, &admin, "owner=bob&engine=redis").await;
    let first_page = admin_listing(&app, &admin, "limit=1").await;
    let before = first_page.1.as_str().unwrap_or_default().to_string();
    let second_page = admin_listing(&app, &admin, &format!("limit=1&before={before}")).await;

    assert_eq!(status, StatusCode::OK, "{all}");
    assert_eq!(all["next"], Value::Null, "{all}");
    let listed = all["instances"].as_array().unwrap();
    assert_eq!(listed.len(), 2, "{all}");
    let bob = listed.iter().find(|i| i["id"] == bob_id.as_str()).unwrap();
    assert_eq!((&bob["owner"], &bob["engine"], &bob["status"]), (&json!("bob"), &json!("postgres"), &json!("running")));
    assert_eq!(bob["port"], bobs["connection"]["port"]);
    assert!(!all.to_string().contains(bobs["connection"]["password"].as_str().unwrap()), "no credentials: {all}");
    assert!(bob.get("connection").is_none(), "{bob}");
    assert_eq!(by_owner.0, [alice_id.clone()]);
    assert_eq!(by_engine.0, [bob_id.clone()]);
    assert_eq!(by_status.0, [alice_id.clone()]);
    assert!(none.0.is_empty());
    assert_eq!(first_page.0, [bob_id.clone()], "newest first");
    assert_eq!(first_page.1, json!(bob_id), "next: the before of the next page");
    assert_eq!(second_page, (vec![alice_id], Value::Null), "the last page");
}

#[tokio::test]
async fn a_bad_filter_of_the_admin_listing_is_422_saying_what_is_wrong() {
    let (app, admin) = app_with_admin().await;

    let cases = [
        ("engine=oracle", "oracle"),
        ("status=sleeping", "sleeping"),
        ("owner=Not%20A%20Name", "lowercase letters"),
        ("owner=nobody", "owner: no user named nobody"),
        ("limit=0", "limit"),
        ("before=xyz", "before"),
        ("before=0123456789ab", "list again from the first page"),
        ("sort=name", "sort"),
    ];

    for (query, said) in cases {
        let (status, problem) = app.get(&format!("/v1/admin/instances?{query}"), &admin).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{query}: {problem}");
        assert!(problem["detail"].as_str().unwrap().contains(said), "{query}: {problem}");
    }
}

#[tokio::test]
async fn an_admin_cannot_rotate_their_own_token_over_http_and_it_keeps_working() {
    let (app, admin) = app_with_admin().await;

    let (own_rotate, own_body) = app.post("/v1/admin/users/root/rotate-token", &admin, json!({})).await;
    let (still_works, _) = app.get("/v1/admin/users", &admin).await;

    assert_eq!(own_rotate, StatusCode::CONFLICT, "{own_body}");
    assert!(own_body["detail"].as_str().unwrap().contains("dbroker user rotate-token root"), "{own_body}");
    assert!(own_body.get("token").is_none(), "{own_body}");
    assert_eq!(still_works, StatusCode::OK, "the admin's token was not rotated");
}

#[tokio::test]
async fn a_quota_limit_written_as_a_float_with_no_fraction_is_that_number_and_a_fraction_is_422() {
    let (app, admin) = app_with_admin().await;
    add_user(&app, &admin, json!({"name": "carol", "quota": {"instances": 2.0}})).await;

    let (whole, whole_body) = app.patch("/v1/admin/users/carol/quota", &admin, json!({"memory_mb": 2048.0})).await;
    let (fraction, fraction_body) = app.patch("/v1/admin/users/carol/quota", &admin, json!({"instances": 2.5})).await;
    let carol = listed_user(&app, &admin, "carol").await.expect("carol");

    assert_eq!(whole, StatusCode::OK, "{whole_body}");
    assert_eq!(fraction, StatusCode::UNPROCESSABLE_ENTITY, "{fraction_body}");
    assert!(fraction_body["detail"].as_str().unwrap().contains("a whole number"), "{fraction_body}");
    assert_eq!(carol["quota"], json!({"instances": 2, "memory_mb": 2048}), "{carol}");
}
