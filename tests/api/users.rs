//! Managing users: demo users follow `--demo-users` from one start to the next, a real user's name
//! is never made a demo user's, and `dbroker user rotate-token|disable|enable` change who may call
//! without touching anyone's instances.

use dbroker::app::App;
use dbroker::store::Store;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{ALICE, BOB, TestApp, port_and_password, redis_connect, succeeded};

const DISABLED: &str = "the user of this token is disabled";

#[tokio::test]
async fn a_restart_without_a_demo_user_disables_it_and_a_restart_naming_it_again_enables_it() {
    let mut app = TestApp::spawn().await;
    let (before, _) = app.get("/list/1", ALICE).await;

    app.restart_with(|config| config.demo_users.clear()).await;
    let (alice_without, alice_body) = app.get("/v1/instances", ALICE).await;
    let (legacy_without, legacy_body) = app.get("/list/1", BOB).await;
    app.restart_with(|config| config.demo_users = vec![ALICE.parse().unwrap()]).await;
    let (alice_again, _) = app.get("/v1/instances", ALICE).await;
    let (bob_still, _) = app.get("/v1/instances", BOB).await;

    assert_eq!(before, StatusCode::OK, "a demo user's token is its name");
    assert_eq!(alice_without, StatusCode::UNAUTHORIZED, "the trial token stops working with the flag gone");
    assert_eq!(alice_body["detail"], DISABLED);
    assert_eq!(legacy_without, StatusCode::UNAUTHORIZED, "on the old routes too");
    assert_eq!(legacy_body["msg"], DISABLED);
    assert_eq!(alice_again, StatusCode::OK, "named again, enabled again");
    assert_eq!(bob_still, StatusCode::UNAUTHORIZED, "a demo user still not named stays disabled");
}

#[tokio::test]
async fn a_demo_user_named_like_a_real_user_stops_start_up_and_changes_no_user() {
    let mut app = TestApp::spawn().await;
    let carol = app.add_admin("carol").await;
    let mut config = app.config.clone();
    config.demo_users = vec!["dave".parse().unwrap(), "carol".parse().unwrap()];

    let Err(refused) = App::build(config).await else { panic!("a start-up naming a real user as a demo user") };
    app.restart().await;
    let (real_token, _) = app.get("/v1/admin/reconciler", &format!("Bearer {carol}")).await;
    let (name_as_token, name_body) = app.get("/v1/admin/reconciler", "carol").await;
    let (dave, dave_body) = app.get("/v1/instances", "dave").await;

    let message = format!("{refused:#}");
    assert!(message.contains("carol") && message.contains("take carol out of --demo-users"), "{message}");
    assert_eq!(real_token, StatusCode::OK, "carol's own token still works, and she is still an admin");
    assert_eq!(name_as_token, StatusCode::UNAUTHORIZED, "her name is no token");
    assert_eq!(name_body["detail"], "unknown token");
    assert_eq!(dave, StatusCode::UNAUTHORIZED);
    assert_eq!(dave_body["detail"], "unknown token", "the refused start-up added no demo user either");
}

#[tokio::test]
async fn users_whose_token_is_their_name_from_before_demo_users_were_marked_lose_it_at_the_next_start() {
    // What a store from before migration 0005 holds: demo users unmarked, and an admin whose real
    // token a start-up with her name in --demo-users replaced with her name.
    let mut app = TestApp::spawn().await;
    let store = Store::open(&app.config.database_url).await.unwrap();
    store.add_user(&"user1".parse().unwrap(), "user1", false).await.unwrap();
    store.add_user(&"root".parse().unwrap(), "root", true).await.unwrap();

    app.restart().await;
    let (user1, user1_body) = app.get("/v1/instances", "user1").await;
    let (root, root_body) = app.get("/v1/admin/reconciler", "root").await;
    let listed = succeeded(&app.dbroker_user(&["list"]));
    let token = succeeded(&app.dbroker_user(&["rotate-token", "root"]));
    succeeded(&app.dbroker_user(&["enable", "root"]));
    let recovered = app.wait_for_token(&token, StatusCode::OK).await;

    assert_eq!((user1, &user1_body["detail"]), (StatusCode::UNAUTHORIZED, &json!(DISABLED)));
    assert_eq!((root, &root_body["detail"]), (StatusCode::UNAUTHORIZED, &json!(DISABLED)));
    assert_eq!(listed_as(&listed, "user1"), ["user", "demo", "disabled"], "{listed}");
    assert_eq!(listed_as(&listed, "root"), ["admin", "real", "disabled"], "not made a demo user: {listed}");
    assert_eq!(recovered, json!({"instances": []}));
    let (admin, _) = app.get("/v1/admin/reconciler", &format!("Bearer {token}")).await;
    assert_eq!(admin, StatusCode::OK, "a new token of her own and enabled: an admin again");
}

#[tokio::test]
async fn rotating_disabling_and_enabling_a_token_on_the_command_line_leaves_the_users_instances_alone() {
    let app = TestApp::spawn().await;
    let old_token = succeeded(&app.dbroker_user(&["add", "carol"]));
    let instance = app.create(&old_token, json!({"engine": "redis", "name": "cache"})).await;

    // Rotate: the old token stops working, the new one works at once.
    let new_token = succeeded(&app.dbroker_user(&["rotate-token", "carol"]));
    let refused = app.wait_for_token(&old_token, StatusCode::UNAUTHORIZED).await;
    let (rotated, after_rotation) = app.get("/v1/instances", &format!("Bearer {new_token}")).await;

    assert!(new_token.len() >= 32 && new_token != old_token, "{new_token}");
    assert_eq!(refused["detail"], "unknown token");
    assert_eq!(rotated, StatusCode::OK);
    assert_running(&after_rotation, &instance);

    // Disable: the token is refused, saying why.
    succeeded(&app.dbroker_user(&["disable", "carol"]));
    let disabled = app.wait_for_token(&new_token, StatusCode::UNAUTHORIZED).await;
    let listed = succeeded(&app.dbroker_user(&["list"]));

    assert_eq!(disabled["detail"], DISABLED);
    assert_eq!(listed_as(&listed, "carol"), ["user", "real", "disabled"], "{listed}");
    assert_eq!(listed_as(&listed, ALICE), ["user", "demo", "enabled"], "{listed}");

    // Enable: the same token works again, and the instance ran all along.
    succeeded(&app.dbroker_user(&["enable", "carol"]));
    let enabled = app.wait_for_token(&new_token, StatusCode::OK).await;

    assert_running(&enabled, &instance);
    let (port, password) = port_and_password(&instance);
    let mut redis = redis_connect(port, &password).await.expect("the server takes the password it had");
    let pong: String = redis::cmd("PING").query_async(&mut redis).await.unwrap();
    assert_eq!(pong, "PONG");
    let events = app.event_kinds(&format!("Bearer {new_token}"), &instance).await;
    assert_eq!(events, ["created", "ready"], "nothing was done to the instance");
}

#[tokio::test]
async fn an_unknown_user_name_is_an_error_for_rotate_token_disable_and_enable() {
    let app = TestApp::spawn().await;

    let outputs = ["rotate-token", "disable", "enable"].map(|command| app.dbroker_user(&[command, "nobody"]));

    for output in outputs {
        assert!(!output.status.success(), "a non-zero exit");
        assert!(String::from_utf8_lossy(&output.stderr).contains("no user named nobody"), "{output:?}");
        assert!(output.stdout.is_empty(), "no token printed: {output:?}");
    }
}

/// The role, kind and state `dbroker user list` shows for `name`.
fn listed_as(listing: &str, name: &str) -> Vec<String> {
    let line = listing.lines().find(|line| line.split('\t').next() == Some(name));
    let fields: Vec<&str> = line.unwrap_or_else(|| panic!("{name} in {listing}")).split('\t').collect();
    fields[1..4].iter().map(|field| field.to_string()).collect()
}

/// Insists that a `GET /v1/instances` body lists `instance`, running.
fn assert_running(listing: &Value, instance: &Value) {
    let listed = listing["instances"].as_array().unwrap_or_else(|| panic!("a list: {listing}"));
    let found = listed.iter().find(|i| i["id"] == instance["id"]).unwrap_or_else(|| panic!("listed: {listing}"));
    assert_eq!(found["status"], "running", "{found}");
}
