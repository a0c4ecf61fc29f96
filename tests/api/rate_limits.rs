//! Rate limits: a caller beyond its limit gets 429 with `Retry-After`, reads and changes counted
//! apart, users each in their own bucket, requests without a valid token by their address; the old
//! routes in their envelope; `/healthz` never.
//!
//! The limits are tiny (one a second, a burst of a few), so that a burst is used up by a handful
//! of quick requests. The changes sent are refused by the handler with 422 (an unknown engine)
//! once they pass the limit: they are counted like any change and touch nothing.

use std::future::Future;
use std::time::Duration;

use dbroker::config::{Rate, RateLimits};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{ALICE, BOB, TestApp, succeeded, wait_until};

/// How many requests a test sends at most to see a 429: with a refill of one a second, far more
/// than a burst of a few plus what refills while they are sent.
const MAX_TRIES: usize = 200;

fn rate(per_second: u32, burst: u32) -> Option<Rate> {
    Rate::from_settings("", per_second, burst).unwrap()
}

async fn spawn_limited(reads: Option<Rate>, changes: Option<Rate>) -> TestApp {
    TestApp::spawn_with(|c| c.rate_limits = RateLimits { reads, changes }).await
}

/// What an answer says that these tests look at.
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    retry_after: Option<u64>,
    content_type: String,
    body: Value,
}

/// `method path` with `Authorization: token` (none for `None`), and a body for changes: one that
/// the create and the old routes' create refuse with 422.
async fn send(app: &TestApp, method: Method, path: &str, token: Option<&str>) -> Answer {
    let mut request = app.client.request(method.clone(), app.url(path));
    if let Some(token) = token {
        request = request.header("Authorization", token);
    }
    if method != Method::GET {
        request = request.json(&json!({"engine": "no-such-engine", "memory": "lots"}));
    }
    let response = request.send().await.expect("an answer");
    let header = |name: &str| response.headers().get(name).map(|v| v.to_str().unwrap().to_string());
    let retry_after = header("retry-after").map(|v| v.parse().expect("Retry-After in whole seconds"));
    let content_type = header("content-type").unwrap_or_default();
    let status = response.status();
    let body = response.json().await.unwrap_or(Value::Null);
    Answer { status, retry_after, content_type, body }
}

/// Sends `request` until it is refused with 429, at most `MAX_TRIES` times: the statuses of the
/// answers before, and the refusal.
async fn until_refused<F, Fut>(mut request: F) -> (Vec<StatusCode>, Answer)
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = Answer>,
{
    let mut passed = Vec::new();
    for n in 0..MAX_TRIES {
        let answer = request(n).await;
        if answer.status == StatusCode::TOO_MANY_REQUESTS {
            return (passed, answer);
        }
        passed.push(answer.status);
    }
    panic!("{MAX_TRIES} requests and never a 429: {passed:?}");
}

fn create(app: &TestApp, token: &str) -> impl Future<Output = Answer> {
    send(app, Method::POST, "/v1/instances", Some(token))
}

#[tokio::test]
async fn a_user_over_the_change_limit_gets_429_with_retry_after_while_another_users_requests_all_pass() {
    let app = spawn_limited(None, rate(1, 3)).await;

    let (passed, refused) = until_refused(|_| create(&app, ALICE)).await;
    let (alice_still, bob) =
        tokio::join!(async { futures_util::future::join_all((0..10).map(|_| create(&app, ALICE))).await }, async {
            futures_util::future::join_all((0..3).map(|_| create(&app, BOB))).await
        },);

    assert!(passed.len() >= 3 && passed.iter().all(|s| *s == StatusCode::UNPROCESSABLE_ENTITY), "{passed:?}");
    assert_eq!(refused.content_type, "application/problem+json");
    let retry_after = refused.retry_after.expect("a Retry-After header");
    assert!(retry_after >= 1, "{refused:?}");
    let body = &refused.body;
    assert_eq!(body["status"], 429);
    assert_eq!(body["code"], "rate_limited");
    assert_eq!(
        (&body["limit"], &body["counted_by"], &body["per_second"], &body["burst"]),
        (&json!("changes"), &json!("user"), &json!(1), &json!(3))
    );
    assert_eq!(body["retry_after"], retry_after, "the body says what the header says");
    let detail = body["detail"].as_str().unwrap();
    assert!(detail.contains("changes") && detail.contains(&format!("try again in {retry_after} s")), "{detail}");
    assert!(alice_still.iter().any(|a| a.status == StatusCode::TOO_MANY_REQUESTS), "alice is still refused");
    for answer in &bob {
        assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY, "bob's changes pass alice's flood: {answer:?}");
    }
}

#[tokio::test]
async fn reads_and_changes_are_counted_apart() {
    let app = spawn_limited(rate(1, 3), rate(1, 3)).await;

    let (_, changes_refused) = until_refused(|_| create(&app, ALICE)).await;
    let reads_meanwhile = futures_util::future::join_all((0..3).map(|_| app.get("/v1/instances", ALICE))).await;
    let (_, reads_refused) = until_refused(|_| send(&app, Method::GET, "/v1/instances", Some(ALICE))).await;

    assert_eq!(changes_refused.body["limit"], "changes");
    for (status, body) in &reads_meanwhile {
        assert_eq!(*status, StatusCode::OK, "reads pass with the changes used up: {body}");
    }
    assert_eq!(reads_refused.body["limit"], "reads");
    assert_eq!(reads_refused.body["counted_by"], "user");
}

#[tokio::test]
async fn unknown_tokens_from_one_address_are_refused_beyond_its_limit_while_a_known_user_there_still_passes() {
    // Every request of a test comes from 127.0.0.1: alice's as well as the guesses.
    let app = spawn_limited(rate(1, 3), None).await;

    let app = &app;
    let (passed, refused) =
        until_refused(
            |n| async move { send(app, Method::GET, "/v1/instances", Some(&format!("Bearer guess-{n}"))).await },
        )
        .await;
    let no_token = send(app, Method::GET, "/v1/instances", None).await;
    let alice = futures_util::future::join_all((0..3).map(|_| app.get("/v1/instances", ALICE))).await;

    assert!(passed.len() >= 3 && passed.iter().all(|s| *s == StatusCode::UNAUTHORIZED), "{passed:?}");
    assert_eq!((&refused.body["limit"], &refused.body["counted_by"]), (&json!("reads"), &json!("address")));
    assert!(refused.body["detail"].as_str().unwrap().contains("counted by address"), "{:?}", refused.body);
    assert!(refused.retry_after.is_some());
    assert_eq!(no_token.status, StatusCode::TOO_MANY_REQUESTS, "no token at all counts by address too");
    for (status, body) in &alice {
        assert_eq!(*status, StatusCode::OK, "alice has a bucket of her own: {body}");
    }
}

#[tokio::test]
async fn a_refused_user_passes_again_once_retry_after_has_gone_by() {
    let app = spawn_limited(None, rate(1, 1)).await;

    let (_, refused) = until_refused(|_| create(&app, ALICE)).await;
    let retry_after = Duration::from_secs(refused.retry_after.expect("a Retry-After header"));
    // A refused request takes nothing from the bucket, so polling does not put the retry off.
    let passed = wait_until("alice's changes to pass again", retry_after + Duration::from_secs(30), || async {
        let answer = create(&app, ALICE).await;
        (answer.status != StatusCode::TOO_MANY_REQUESTS).then_some(answer)
    })
    .await;

    assert_eq!(passed.status, StatusCode::UNPROCESSABLE_ENTITY, "{passed:?}");
}

#[tokio::test]
async fn a_new_token_does_not_give_its_user_a_new_budget() {
    // A burst much larger than what refills while the token is rotated (a second or so).
    const BURST: u32 = 50;
    let app = spawn_limited(None, rate(1, BURST)).await;
    let (spent, _) = until_refused(|_| create(&app, ALICE)).await;

    let token = succeeded(&app.dbroker_user(&["rotate-token", ALICE]));
    app.wait_for_token(&token, StatusCode::OK).await;
    let new_token = format!("Bearer {token}");
    let (passed_with_the_new_token, refused) = until_refused(|_| create(&app, &new_token)).await;

    assert!(spent.len() >= BURST as usize, "{}", spent.len());
    assert!(
        passed_with_the_new_token.len() < BURST as usize,
        "{} changes passed with the new token: a budget of its own",
        passed_with_the_new_token.len()
    );
    assert_eq!(refused.body["counted_by"], "user");
}

#[tokio::test]
async fn the_old_routes_answer_429_in_their_envelope_with_retry_after() {
    let app = spawn_limited(rate(1, 2), rate(1, 2)).await;

    let (passed, refused) = until_refused(|_| send(&app, Method::POST, "/redis", Some(ALICE))).await;
    let (_, read_refused) = until_refused(|_| send(&app, Method::GET, "/list/2", Some(ALICE))).await;

    assert!(passed.iter().all(|s| *s == StatusCode::UNPROCESSABLE_ENTITY), "{passed:?}");
    for refused in [&refused, &read_refused] {
        assert_eq!(refused.content_type, "application/json");
        let retry_after = refused.retry_after.expect("a Retry-After header");
        assert_eq!(refused.body["code"], 429, "{refused:?}");
        assert!(refused.body["msg"].as_str().unwrap().contains(&format!("try again in {retry_after} s")));
        assert_eq!(refused.body["data"]["retry_after"], retry_after);
        assert!(refused.body.get("status").is_none(), "the envelope, not a problem: {refused:?}");
    }
    assert_eq!(refused.body["data"]["limit"], "changes");
    assert_eq!(read_refused.body["data"]["limit"], "reads");
}

#[tokio::test]
async fn healthz_is_never_limited() {
    let app = spawn_limited(rate(1, 1), rate(1, 1)).await;
    let (_, refused) = until_refused(|_| send(&app, Method::GET, "/v1/instances", None)).await;

    let health = futures_util::future::join_all((0..20).map(|_| send(&app, Method::GET, "/healthz", None))).await;

    assert_eq!(refused.body["counted_by"], "address", "this address is over its limit");
    for answer in &health {
        assert_ne!(answer.status, StatusCode::TOO_MANY_REQUESTS, "{answer:?}");
        assert!(answer.body.get("store").is_some(), "the health report: {answer:?}");
    }
}
