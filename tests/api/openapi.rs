//! The API's description: the checked-in copy of the OpenAPI document is the code's, the served
//! document is that one (OpenAPI 3.1, no token needed), and the reference page at `/docs` comes
//! with every asset it needs from dbroker itself.

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::TestApp;

/// The checked-in copy, from the crate's root.
const CHECKED_IN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json");

/// The document as the copy holds it: pretty-printed, keys in a stable order, a final newline.
fn code_document() -> String {
    let document = serde_json::to_string_pretty(&dbroker::api::openapi_document()).expect("the document serializes");
    format!("{document}\n")
}

#[test]
fn the_checked_in_openapi_document_is_the_one_the_code_makes() {
    let made = code_document();
    if std::env::var_os("DBROKER_WRITE_OPENAPI").is_some() {
        std::fs::write(CHECKED_IN, &made).expect("docs/openapi.json is writable");
    }
    let checked_in = std::fs::read_to_string(CHECKED_IN).unwrap_or_default();

    assert!(
        checked_in == made,
        "docs/openapi.json differs from the API the code describes; review the change and refresh it \
         with `DBROKER_WRITE_OPENAPI=1 cargo test --test api -- openapi::the_checked_in`"
    );
}

#[tokio::test]
async fn the_openapi_document_is_served_without_a_token_as_openapi_3_1() {
    let app = TestApp::spawn().await;

    let answer = app.client.get(app.url("/openapi.json")).send().await.unwrap();
    let status = answer.status();
    let content_type = answer.headers()["content-type"].to_str().unwrap().to_string();
    let document: Value = answer.json().await.unwrap();

    assert_eq!(status, StatusCode::OK);
    assert_eq!(content_type, "application/json");
    assert_eq!(document["openapi"], "3.1.0");
    let expected: Value = serde_json::from_str(&code_document()).unwrap();
    assert_eq!(document, expected, "the served document is the code's");
    for path in ["/v1/instances", "/v1/admin/users", "/healthz", "/mysql", "/list/{docker_type}"] {
        assert!(document["paths"][path].is_object(), "{path} is not described");
    }
}

/// The `src` and `href` values of a page.
fn references(page: &str) -> Vec<String> {
    let mut found = Vec::new();
    for attribute in ["src=\"", "href=\""] {
        for (at, _) in page.match_indices(attribute) {
            let rest = &page[at + attribute.len()..];
            if let Some(end) = rest.find('"') {
                found.push(rest[..end].to_string());
            }
        }
    }
    found
}

#[tokio::test]
async fn the_reference_page_is_served_with_every_asset_from_dbroker_itself() {
    let app = TestApp::spawn().await;

    let page = app.client.get(app.url("/docs")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.url().path().ends_with("/docs/"), "/docs leads to the page: {}", page.url());
    let page = page.text().await.unwrap();
    let assets = references(&page);
    let initializer = app.client.get(app.url("/docs/swagger-initializer.js")).send().await.unwrap();
    assert_eq!(initializer.status(), StatusCode::OK);
    let initializer = initializer.text().await.unwrap();

    assert!(page.contains("swagger-ui"), "not Swagger UI: {page}");
    assert!(assets.len() >= 3, "too few assets: {assets:?}");
    for asset in &assets {
        assert!(!asset.contains("//"), "{asset} is not served by dbroker");
        let fetched =
            app.client.get(app.url(&format!("/docs/{}", asset.trim_start_matches("./")))).send().await.unwrap();
        assert_eq!(fetched.status(), StatusCode::OK, "{asset}");
    }
    assert!(initializer.contains("/openapi.json"), "the page does not render dbroker's document: {initializer}");
    assert!(!initializer.contains("https://"), "the page loads something from elsewhere: {initializer}");
    assert!(initializer.contains(r#""validatorUrl": "none""#), "the validator badge would call out: {initializer}");
}
