//! The web console: end to end in headless Chromium (Debian's `chromium`, driven through its
//! `chromium-driver` with fantoccini) against a real dbroker on the real engine, and its HTTP
//! concerns (cookie flags, CSRF, sign-out, `--no-console`, the old routes beside it) without a
//! browser. Every page the browser visits is checked for console errors in the browser's log.

use std::process::Stdio;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE};
use serde_json::{Value, json};

use crate::helpers::{ALICE, BOB, READY_TIMEOUT, TestApp, free_port, redis_connect, redis_loaded, wait_until};

/// Whether the page is no wider than the window (at a phone's width, nothing scrolls sideways).
const FITS_ITS_WIDTH: &str = "return document.documentElement.scrollWidth <= window.innerWidth;";

/// How long a page's element may take to appear or change (an operation's step, a status).
const PAGE_DEADLINE: Duration = Duration::from_secs(60);

/// A headless Chromium of the test's own: chromedriver on a free port, in a process group of its
/// own with the browser it starts, and a profile directory of its own. Dropping it kills the
/// group and removes the profile, also when the test panics.
struct Browser {
    client: Option<Client>,
    driver: std::process::Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn start() -> Browser {
        let profile = tempfile::tempdir().expect("a profile directory");
        let port = free_port();
        let driver = std::os::unix::process::CommandExt::process_group(
            std::process::Command::new("chromedriver").arg(format!("--port={port}")),
            0,
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver runs (scripts/test installs chromium and chromium-driver)");
        let mut browser = Browser { client: None, driver, _profile: profile };
        let status = format!("http://127.0.0.1:{port}/status");
        wait_until("chromedriver to answer", Duration::from_secs(30), || async {
            reqwest::get(&status).await.ok().filter(|r| r.status().is_success())
        })
        .await;
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                    "--no-first-run", "--window-size=1280,1000",
                    format!("--user-data-dir={}", browser._profile.path().display()),
                ],
            },
            // The browser's console, read after each page (see `assert_no_console_errors`).
            "goog:loggingPrefs": { "browser": "ALL" },
        });
        let capabilities = capabilities.as_object().cloned().expect("an object");
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a browser session");
        browser.client = Some(client);
        browser
    }

    fn client(&self) -> &Client {
        self.client.as_ref().expect("a session")
    }

    async fn goto(&self, url: &str) {
        self.client().goto(url).await.expect("the page loads");
    }

    /// `css`'s text, once it is on the page (a page that is being left may still be the one found
    /// first: an element of it that went stale is looked for again).
    async fn text(&self, css: &str) -> String {
        wait_until(&format!("{css} to be on the page"), PAGE_DEADLINE, || async {
            self.client().find(Locator::Css(css)).await.ok()?.text().await.ok()
        })
        .await
    }

    async fn click(&self, css: &str) {
        wait_until(&format!("{css} to be clicked"), PAGE_DEADLINE, || async {
            self.client().find(Locator::Css(css)).await.ok()?.click().await.ok()
        })
        .await
    }

    /// Waits until the browser is on a page whose path `expected` accepts (after a click that
    /// sends a form, say), and returns the path.
    async fn wait_for_path(&self, what: &str, expected: impl Fn(&str) -> bool) -> String {
        wait_until(what, PAGE_DEADLINE, || async {
            let path = self.path().await;
            expected(&path).then_some(path)
        })
        .await
    }

    async fn fill(&self, css: &str, text: &str) {
        let element = self.client().wait().at_most(PAGE_DEADLINE).for_element(Locator::Css(css)).await.expect(css);
        element.clear().await.expect(css);
        element.send_keys(text).await.expect(css);
    }

    async fn path(&self) -> String {
        self.client().current_url().await.expect("a URL").path().to_string()
    }

    /// Whether an element matches `css` now.
    async fn has(&self, css: &str) -> bool {
        self.client().find(Locator::Css(css)).await.is_ok()
    }

    /// Waits until `css`'s text is `expected` (a status htmx keeps current, say).
    async fn wait_for_text(&self, css: &str, expected: &str) {
        wait_until(&format!("{css} to read {expected:?}"), PAGE_DEADLINE, || async {
            let found = self.client().find(Locator::Css(css)).await.ok()?;
            (found.text().await.ok()?.trim() == expected).then_some(())
        })
        .await;
    }

    /// The browser log's entries since the last read (chromedriver hands each out once).
    async fn console(&self) -> Vec<Value> {
        let entries = self.client().issue_cmd(BrowserLog).await.expect("the browser's log");
        entries.as_array().cloned().unwrap_or_default()
    }

    /// Fails on any error in the browser's console since the last read: a script error, a
    /// refused policy, a file that did not load.
    async fn assert_no_console_errors(&self, page: &str) {
        let errors: Vec<Value> = self.console().await.into_iter().filter(|e| e["level"] == "SEVERE").collect();
        assert!(errors.is_empty(), "console errors on {page}: {errors:#?}");
    }

    /// Saves a PNG of the page as `name` into `DBROKER_CONSOLE_SCREENSHOTS`, if set (the
    /// repository's are in docs/console/).
    async fn screenshot(&self, name: &str) {
        let Some(dir) = std::env::var_os("DBROKER_CONSOLE_SCREENSHOTS") else { return };
        let png = self.client().screenshot().await.expect("a screenshot");
        std::fs::write(std::path::Path::new(&dir).join(name), png).expect("the screenshot is written");
    }

    /// Signs in with `token`; a known token's sign-in lands on the instance list.
    /// Sends the sign-in form with `token`, and returns once it is sent, whatever the answer.
    async fn sign_in(&self, app: &TestApp, token: &str) {
        self.goto(&app.url("/sign-in")).await;
        self.fill("#token", token).await;
        self.click("#sign-in").await;
    }

    /// Signs in with a good `token`, and returns on the instance list a session is sent to: a
    /// page asked for before the sign-in's answer came would be loaded without the session (a
    /// busy machine answered the sign-in after the next page's request went out).
    async fn signed_in(&self, app: &TestApp, token: &str) {
        self.sign_in(app, token).await;
        self.wait_for_path("the instance list after signing in", |path| path == "/").await;
    }

    async fn sign_out(&self) {
        self.click("#sign-out").await;
        self.wait_for_path("the sign-in page", |path| path == "/sign-in").await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // chromedriver and the browser it started are one process group, of this test's making.
        let group = self.driver.id() as libc::pid_t;
        unsafe { libc::kill(-group, libc::SIGKILL) };
        let _ = self.driver.wait();
        // The browser's processes end a moment after chromedriver's: until the last has, one may
        // still write into the profile, whose removal (the field's drop, next) would then leave it.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while unsafe { libc::kill(-group, 0) } == 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// chromedriver's read of the browser's console (`goog:loggingPrefs`), which WebDriver itself
/// does not describe.
#[derive(Debug)]
struct BrowserLog;

impl fantoccini::wd::WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(&self, base: &url::Url, session: Option<&str>) -> Result<url::Url, url::ParseError> {
        base.join(&format!("session/{}/se/log", session.unwrap_or_default()))
    }

    fn method_and_body(&self, _: &url::Url) -> (axum::http::Method, Option<String>) {
        (axum::http::Method::POST, Some(r#"{"type": "browser"}"#.into()))
    }
}

/// The port and password in a Redis URI as the console shows it (`redis://:PASSWORD@HOST:PORT/0`).
fn redis_uri_parts(uri: &str) -> (u16, String) {
    let rest = uri.strip_prefix("redis://:").unwrap_or_else(|| panic!("a Redis URI: {uri}"));
    let (password, address) = rest.rsplit_once('@').expect("a password");
    let port = address.split_once(':').and_then(|(_, p)| p.split('/').next()).and_then(|p| p.parse().ok());
    (port.unwrap_or_else(|| panic!("a port in {uri}")), password.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_signs_in_creates_a_redis_connects_with_its_uri_stops_starts_and_deletes_it_in_a_browser() {
    let app = TestApp::spawn().await;
    let browser = Browser::start().await;

    // A wrong token is refused, with the API's word for it.
    browser.goto(&app.url("/")).await;
    assert_eq!(browser.path().await, "/sign-in", "a visitor is sent to sign in");
    browser.assert_no_console_errors("the sign-in page").await;
    browser.screenshot("sign-in.png").await;
    browser.sign_in(&app, "not-anyones-token").await;
    assert_eq!(browser.text("#error").await, "unknown token");
    assert_eq!(browser.path().await, "/sign-in", "still signed out");
    // The 401 itself is the one error expected here, and shows that the browser's log is read.
    let refused = browser.console().await;
    assert!(refused.iter().any(|e| e["message"].as_str().is_some_and(|m| m.contains("401"))), "{refused:#?}");

    // Signed in, ALICE creates a Redis and watches its steps until it is ready.
    browser.signed_in(&app, ALICE).await;
    assert_eq!(browser.text("#signed-in-as").await, ALICE);
    browser.assert_no_console_errors("the empty instance list").await;
    browser.click("#new-instance").await;
    browser.wait_for_path("the create page", |path| path == "/new").await;
    let engines = browser.client().find(Locator::Css("#engine-choice")).await.expect("the engines");
    engines.select_by_value("redis").await.expect("redis is offered");
    browser.click("#choose-engine").await;
    browser.fill("#name", "shop").await;
    browser.assert_no_console_errors("the create page").await;
    browser.click("#create").await;
    browser.wait_for_path("the create's steps", |path| path.starts_with("/operations/")).await;
    browser.wait_for_text("#operation-state", "succeeded").await;
    assert!(browser.text("#steps").await.contains("ready"), "its steps, as they happened");
    browser.assert_no_console_errors("the operation page").await;
    browser.click("#open-instance").await;
    let path = browser.wait_for_path("the instance page", |path| path.starts_with("/instances/")).await;
    let id = path.trim_start_matches("/instances/").to_string();
    browser.wait_for_text("#status-word", "running").await;
    browser.assert_no_console_errors("the instance page").await;

    // The URI hides its password until asked, and then logs in.
    let masked = browser.text("#uri").await;
    assert!(masked.contains("••••••••"), "{masked}");
    browser.screenshot("instance.png").await;
    browser.click("#reveal").await;
    let uri = wait_until("the password to be shown", PAGE_DEADLINE, || async {
        Some(browser.text("#uri").await).filter(|uri| !uri.contains('•'))
    })
    .await;
    let (port, password) = redis_uri_parts(&uri);
    assert!(!masked.contains(&password));
    let mut redis = wait_until("Redis to answer PING", READY_TIMEOUT, || redis_loaded(port, &password)).await;
    let pong: String = redis::cmd("PING").query_async(&mut redis).await.expect("PING");
    assert_eq!(pong, "PONG");
    browser.assert_no_console_errors("the instance page with its password").await;

    // The list shows it running.
    browser.goto(&app.url("/")).await;
    assert_eq!(browser.text(&format!("tr[data-instance='{id}'] [data-status]")).await, "running");
    browser.assert_no_console_errors("the instance list").await;
    browser.screenshot("instances.png").await;
    // At a phone's width, the list and the instance fit: nothing to scroll sideways.
    browser.client().set_window_size(390, 844).await.expect("a phone's width");
    for path in ["/".to_string(), format!("/instances/{id}")] {
        browser.goto(&app.url(&path)).await;
        browser.text("h1").await;
        let fits = browser.client().execute(FITS_ITS_WIDTH, vec![]).await.expect("the page's width");
        assert_eq!(fits, json!(true), "{path} scrolls sideways at a phone's width");
    }
    browser.screenshot("instance-phone.png").await;
    browser.client().set_window_size(1280, 1000).await.expect("a desktop's width");

    // Stop and start it; its page follows without a reload.
    browser.goto(&app.url(&format!("/instances/{id}"))).await;
    browser.click("#action-stop").await;
    browser.wait_for_text("#status-word", "stopped").await;
    browser.wait_for_text("#operation-state", "succeeded").await;
    assert!(redis_connect(port, &password).await.is_err(), "a stopped Redis serves nobody");
    browser.click("#action-start").await;
    browser.wait_for_text("#status-word", "running").await;
    browser.wait_for_text("#operation-state", "succeeded").await;
    wait_until("Redis to answer again", READY_TIMEOUT, || redis_loaded(port, &password)).await;
    browser.assert_no_console_errors("the instance page after stop and start").await;

    // Its logs and events.
    browser.click("#history").await;
    browser.wait_for_path("the history page", |path| path.ends_with("/history")).await;
    assert!(browser.text("pre.logs").await.contains("Ready to accept connections"));
    assert!(browser.text("#events + .table-wrap").await.contains("stopped"));
    browser.assert_no_console_errors("the history page").await;

    // BOB sees none of it, and ALICE's page is not found for him.
    browser.sign_out().await;
    // BOB signs in with the keyboard alone: the token field has the focus, Enter sends the form.
    browser.goto(&app.url("/sign-in")).await;
    let focused = browser.client().active_element().await.expect("a focused element");
    assert_eq!(focused.attr("id").await.expect("its id").as_deref(), Some("token"));
    focused.send_keys(&format!("{BOB}\u{E007}")).await.expect("typed");
    assert_eq!(browser.text("#signed-in-as").await, BOB);
    assert!(!browser.has(&format!("tr[data-instance='{id}']")).await, "BOB sees ALICE's instance");
    browser.assert_no_console_errors("BOB's instance list").await;
    browser.goto(&app.url(&format!("/instances/{id}"))).await;
    assert_eq!(browser.text("#error").await, "no such instance");
    browser.console().await; // The 404 is expected.
    browser.sign_out().await;

    // ALICE deletes it, after a confirmation; the list drops it once it is gone.
    browser.signed_in(&app, ALICE).await;
    browser.goto(&app.url(&format!("/instances/{id}"))).await;
    browser.click("#delete").await;
    browser.wait_for_path("a delete to ask first", |path| path.ends_with("/delete")).await;
    assert_eq!(browser.text("h1").await, "Delete shop?");
    browser.assert_no_console_errors("the delete confirmation").await;
    assert_eq!(app.containers().await.len(), 1, "nothing is deleted before the confirmation");
    browser.click("#confirm-delete").await;
    browser.wait_for_path("the list", |path| path == "/").await;
    wait_until("the row to go", PAGE_DEADLINE, || async {
        (!browser.has(&format!("tr[data-instance='{id}']")).await).then_some(())
    })
    .await;
    wait_until("the container to go", PAGE_DEADLINE, || async { app.containers().await.is_empty().then_some(()) })
        .await;
    browser.assert_no_console_errors("the list after the delete").await;

    // An admin's page: users, quotas, the quarantine, the reconciler.
    let admin = app.add_admin("root").await;
    browser.sign_out().await;
    browser.signed_in(&app, &admin).await;
    browser.click("a[href='/admin']").await;
    browser.wait_for_path("the admin page", |path| path == "/admin").await;
    assert!(browser.has("tr[data-user='alice']").await && browser.has("tr[data-user='bob']").await);
    browser.assert_no_console_errors("the admin page").await;
}

// ---------------------------------------------------------------------------------------------
// Without a browser.

/// A form body, as a browser sends it (reqwest's own `form` is a feature the tests do without).
trait FormBody {
    fn form_body<V: AsRef<str>>(self, pairs: &[(&str, V)]) -> Self;
}

impl FormBody for reqwest::RequestBuilder {
    fn form_body<V: AsRef<str>>(self, pairs: &[(&str, V)]) -> Self {
        let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_ref())).collect();
        self.header("content-type", "application/x-www-form-urlencoded")
            .body(serde_urlencoded::to_string(pairs).expect("a form"))
    }
}

/// A client that shows redirects rather than following them.
fn client() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("a client")
}

/// A session: its cookie (`name=value`) and its CSRF token, read from a page.
struct Session {
    cookie: String,
    csrf: String,
}

fn cookie_of(headers: &HeaderMap) -> Option<String> {
    let set = headers.get(SET_COOKIE)?.to_str().ok()?;
    Some(set.split(';').next()?.to_string())
}

async fn sign_in(app: &TestApp, token: &str) -> Session {
    let response =
        client().post(app.url("/sign-in")).form_body(&[("token", token)]).send().await.expect("POST /sign-in");
    assert_eq!(response.status(), StatusCode::SEE_OTHER, "{token} signs in");
    let cookie = cookie_of(response.headers()).expect("a session cookie");
    let page = client().get(app.url("/")).header("cookie", &cookie).send().await.unwrap().text().await.unwrap();
    let csrf = page
        .split(r#"name="csrf" value=""#)
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a CSRF token in the page")
        .to_string();
    Session { cookie, csrf }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_cookie_is_http_only_and_same_site_strict_and_secure_behind_https() {
    let app = TestApp::spawn().await;

    let plain = client().post(app.url("/sign-in")).form_body(&[("token", ALICE)]).send().await.unwrap();
    let https = client()
        .post(app.url("/sign-in"))
        .header("x-forwarded-proto", "https")
        .form_body(&[("token", ALICE)])
        .send()
        .await
        .unwrap();
    let page = client().get(app.url("/sign-in")).send().await.unwrap();

    let flags = |response: &reqwest::Response| response.headers()[SET_COOKIE].to_str().unwrap().to_string();
    let plain = flags(&plain);
    assert!(plain.contains("HttpOnly") && plain.contains("SameSite=Strict"), "{plain}");
    assert!(!plain.contains("Secure"), "no Secure cookie over plain HTTP, where it would never come back: {plain}");
    assert!(flags(&https).contains("; Secure"), "{}", flags(&https));
    let headers = page.headers();
    assert_eq!(headers["x-frame-options"], "DENY");
    let policy = headers["content-security-policy"].to_str().unwrap();
    assert!(policy.contains("script-src 'self'") && !policy.contains("unsafe-inline"), "{policy}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_is_refused_and_starts_no_session() {
    let app = TestApp::spawn().await;

    let refused = client().post(app.url("/sign-in")).form_body(&[("token", "nobodys-token")]).send().await.unwrap();

    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert!(refused.headers().get(SET_COOKIE).is_none());
    assert!(refused.text().await.unwrap().contains("unknown token"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_without_the_sessions_csrf_token_or_from_another_site_is_refused() {
    let app = TestApp::spawn().await;
    let session = sign_in(&app, ALICE).await;
    let create = |csrf: Option<&str>, origin: Option<&str>| {
        let mut form = vec![("engine", "redis"), ("name", "forged")];
        form.extend(csrf.map(|csrf| ("csrf", csrf)));
        let mut request = client().post(app.url("/new")).header("cookie", &session.cookie).form_body(&form);
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        request.send()
    };

    let without = create(None, None).await.unwrap();
    let wrong = create(Some(&"0".repeat(64)), None).await.unwrap();
    let elsewhere = create(Some(&session.csrf), Some("http://evil.example")).await.unwrap();
    // The header htmx sends works as the field does (a sign-out, to touch no instance).
    let by_header = client()
        .post(app.url("/sign-out"))
        .header("cookie", &session.cookie)
        .header("x-csrf-token", &session.csrf)
        .send()
        .await
        .unwrap();

    assert_eq!(without.status(), StatusCode::FORBIDDEN);
    assert_eq!(wrong.status(), StatusCode::FORBIDDEN);
    assert_eq!(elsewhere.status(), StatusCode::FORBIDDEN);
    assert_eq!(by_header.status(), StatusCode::SEE_OTHER);
    let (_, listed) = app.get("/v1/instances", &format!("Bearer {ALICE}")).await;
    assert_eq!(listed["instances"], json!([]), "no refused form created anything");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_out_ends_the_session_for_every_copy_of_its_cookie() {
    let app = TestApp::spawn().await;
    let session = sign_in(&app, ALICE).await;
    let home = || client().get(app.url("/")).header("cookie", &session.cookie).send();
    assert_eq!(home().await.unwrap().status(), StatusCode::OK);

    let out = client()
        .post(app.url("/sign-out"))
        .header("cookie", &session.cookie)
        .form_body(&[("csrf", &session.csrf)])
        .send()
        .await
        .unwrap();

    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    assert!(out.headers()[SET_COOKIE].to_str().unwrap().contains("Max-Age=0"), "the cookie is cleared");
    let after = home().await.unwrap();
    assert_eq!(after.status(), StatusCode::SEE_OTHER, "the old cookie no longer signs in");
    assert_eq!(after.headers()[LOCATION], "/sign-in");
    // A page left open polls on: htmx is told to go to the sign-in page instead.
    let poll = client()
        .get(app.url("/partials/instances"))
        .header("cookie", &session.cookie)
        .header("hx-request", "true")
        .send()
        .await
        .unwrap();
    assert_eq!(poll.headers()["hx-redirect"], "/sign-in");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_console_slash_is_not_found_and_the_api_still_answers() {
    let app = TestApp::spawn_with(|config| config.console = false).await;

    let home = client().get(app.url("/")).send().await.unwrap();
    let sign_in = client().post(app.url("/sign-in")).form_body(&[("token", ALICE)]).send().await.unwrap();
    let (engines, _) = app.get("/v1/engines", &format!("Bearer {ALICE}")).await;

    assert_eq!(home.status(), StatusCode::NOT_FOUND);
    assert_eq!(sign_in.status(), StatusCode::NOT_FOUND);
    assert_eq!(engines, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_old_tools_routes_and_the_api_answer_beside_the_console() {
    let app = TestApp::spawn().await;

    let (list, listed) = app.get("/list/2", ALICE).await;
    let (detail, missing) = app.get("/detail/000000000000", ALICE).await;
    let (docs, _) = (client().get(app.url("/openapi.json")).send().await.unwrap().status(), ());

    assert_eq!(list, StatusCode::OK);
    assert_eq!(listed["code"], 200, "the old envelope: {listed}");
    assert_eq!(detail, StatusCode::NOT_FOUND);
    assert_eq!(missing["code"], 404, "the old envelope: {missing}");
    assert_eq!(docs, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consoles_files_are_served_from_the_binary_with_a_long_cache() {
    let app = TestApp::spawn().await;
    let page = client().get(app.url("/sign-in")).send().await.unwrap().text().await.unwrap();
    let htmx = page.split(r#"<script src=""#).nth(1).and_then(|s| s.split('"').next()).expect("htmx's path");

    let file = client().get(app.url(htmx)).send().await.unwrap();
    let unknown = client().get(app.url("/assets/htmx-0.0.0.min.js")).send().await.unwrap();

    assert_eq!(file.status(), StatusCode::OK);
    assert!(file.headers()["cache-control"].to_str().unwrap().contains("immutable"));
    assert!(file.text().await.unwrap().contains("htmx"));
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_sees_every_user_and_a_user_is_refused_the_admin_page() {
    let app = TestApp::spawn().await;
    let admin_token = app.add_admin("root").await;
    let admin = sign_in(&app, &admin_token).await;
    let alice = sign_in(&app, ALICE).await;

    let page = |session: &Session| client().get(app.url("/admin")).header("cookie", &session.cookie).send();
    let as_admin = page(&admin).await.unwrap();
    let as_alice = page(&alice).await.unwrap();

    assert_eq!(as_admin.status(), StatusCode::OK);
    let html = as_admin.text().await.unwrap();
    assert!(html.contains(r#"data-user="alice""#) && html.contains(r#"data-user="bob""#), "{html}");
    assert!(html.contains("Reconciler") && html.contains("Quarantine"));
    assert_eq!(as_alice.status(), StatusCode::FORBIDDEN);
}

/// `text` as the console's templates write it into a page (askama's HTML escaping).
fn escaped(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&#34;").replace('\'', "&#39;")
}

impl Session {
    /// POSTs `form` with the session's cookie and CSRF token: the status, where it sends the
    /// browser, and the page.
    async fn post(&self, app: &TestApp, path: &str, form: &[(&str, &str)]) -> (StatusCode, String, String) {
        let mut form = form.to_vec();
        form.push(("csrf", &self.csrf));
        let response =
            client().post(app.url(path)).header("cookie", &self.cookie).form_body(&form).send().await.expect("POST");
        let status = response.status();
        let location = response.headers().get(LOCATION).map(|l| l.to_str().unwrap().to_string()).unwrap_or_default();
        (status, location, response.text().await.unwrap())
    }

    async fn page(&self, app: &TestApp, path: &str) -> (StatusCode, String) {
        let response = client().get(app.url(path)).header("cookie", &self.cookie).send().await.expect("GET");
        (response.status(), response.text().await.unwrap())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_create_shows_the_apis_own_message() {
    let app = TestApp::spawn().await;
    let session = sign_in(&app, ALICE).await;
    let (api_status, problem) =
        app.post("/v1/instances", &format!("Bearer {ALICE}"), json!({"engine": "redis", "memory_mb": 1})).await;

    let (status, _, page) = session.post(&app, "/new", &[("engine", "redis"), ("memory_mb", "1")]).await;

    assert_eq!(status, api_status);
    let detail = problem["detail"].as_str().expect("a detail");
    assert!(page.contains(&escaped(detail)), "the page says {detail:?}: {page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_resize_stop_and_delete_from_the_console_change_the_instance_and_a_refused_one_says_why() {
    let app = TestApp::spawn().await;
    let instance = app.create(ALICE, json!({"engine": "redis"})).await;
    let id = instance["id"].as_str().unwrap().to_string();
    let (_, old_password) = crate::helpers::port_and_password(&instance);
    let session = sign_in(&app, ALICE).await;
    let action = |verb: &'static str| {
        let (session, app, path) = (&session, &app, format!("/instances/{id}/action"));
        async move { session.post(app, &path, &[("action", verb)]).await }
    };
    let settled = |what: &'static str, check: fn(&Value) -> bool| {
        let (app, instance) = (&app, &instance);
        async move {
            wait_until(what, READY_TIMEOUT, || async {
                let now = app.detail(ALICE, instance).await;
                (now["running_operation"].is_null() && check(&now)).then_some(now)
            })
            .await
        }
    };

    let (rotated, to, _) = action("rotate-password").await;
    assert_eq!((rotated, to.as_str()), (StatusCode::SEE_OTHER, format!("/instances/{id}").as_str()));
    let now = settled("the rotation", |_| true).await;
    assert_ne!(now["connection"]["password"].as_str(), Some(old_password.as_str()), "a new password");

    let (resized, _, _) = session.post(&app, &format!("/instances/{id}/resize"), &[("memory_mb", "64")]).await;
    assert_eq!(resized, StatusCode::SEE_OTHER);
    settled("the resize", |now| now["memory_mb"] == 64).await;

    action("stop").await;
    settled("the stop", |now| now["status"] == "stopped").await;
    // A change runs as an operation of its own, as the API's does: a refused one ends failed, and
    // the instance's panel says why, in the API's words.
    let (started, _, _) = action("rotate-password").await;
    assert_eq!(started, StatusCode::SEE_OTHER);
    let panel = wait_until("the refusal", READY_TIMEOUT, || async {
        let (_, panel) = session.page(&app, &format!("/partials/instances/{id}/status")).await;
        panel.contains("operation-error").then_some(panel)
    })
    .await;
    let (api_status, problem) = app.post(&format!("/v1/instances/{id}/rotate-password"), ALICE, json!({})).await;
    assert_eq!(api_status, StatusCode::CONFLICT);
    assert!(panel.contains(&escaped(problem["detail"].as_str().unwrap())), "{panel}");

    let (deleted, to, _) = session.post(&app, &format!("/instances/{id}/delete"), &[]).await;
    assert_eq!((deleted, to.as_str()), (StatusCode::SEE_OTHER, "/"));
    // The instance's page, still open somewhere, says it is gone and stops polling.
    let gone = wait_until("the instance to go", READY_TIMEOUT, || async {
        let (status, panel) = session.page(&app, &format!("/partials/instances/{id}/status")).await;
        (status == StatusCode::OK && panel.contains("no longer exists")).then_some(panel)
    })
    .await;
    assert!(!gone.contains("hx-trigger"), "{gone}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_are_taken_restored_and_scheduled_from_the_console() {
    let setup = crate::backup_setup::BackupSetup::new().await;
    let app = setup.spawn_app().await;
    let instance = app.create(ALICE, json!({"engine": "redis"})).await;
    let id = instance["id"].as_str().unwrap().to_string();
    let session = sign_in(&app, ALICE).await;
    let backups = || async {
        let (_, listed) = app.get(&format!("/v1/instances/{id}/backups"), &format!("Bearer {ALICE}")).await;
        listed["backups"].as_array().cloned().unwrap_or_default()
    };

    let (taken, _, _) = session.post(&app, &format!("/instances/{id}/backups"), &[]).await;
    assert_eq!(taken, StatusCode::SEE_OTHER);
    let backup = wait_until("the backup", READY_TIMEOUT, || async {
        backups().await.into_iter().find(|b| b["state"] == "succeeded")
    })
    .await;
    let backup_id = backup["id"].as_str().unwrap().to_string();
    let (_, page) = session.page(&app, &format!("/instances/{id}")).await;
    assert!(page.contains(&format!(r#"data-backup="{backup_id}""#)), "the page lists it: {page}");

    let (restored, _, _) = session.post(&app, &format!("/instances/{id}/restore"), &[("backup", &backup_id)]).await;
    assert_eq!(restored, StatusCode::SEE_OTHER);
    wait_until("the restore", READY_TIMEOUT, || async {
        let (_, page) = app.get(&format!("/v1/instances/{id}/operations"), &format!("Bearer {ALICE}")).await;
        let latest = page["operations"].get(0).cloned()?;
        (latest["kind"] == "restore" && latest["state"] == "succeeded").then_some(())
    })
    .await;

    let policy_path = format!("/instances/{id}/policy");
    let (set, _, _) = session.post(&app, &policy_path, &[("schedule", "0 3 * * *"), ("keep_last", "3")]).await;
    let (_, policy) = app.get(&format!("/v1/instances/{id}/backup-policy"), &format!("Bearer {ALICE}")).await;
    assert_eq!(set, StatusCode::SEE_OTHER);
    assert_eq!((policy["schedule"].as_str(), policy["keep_last"].as_u64()), (Some("0 3 * * *"), Some(3)), "{policy}");
    session.post(&app, &policy_path, &[("schedule", "")]).await;
    let (removed, _) = app.get(&format!("/v1/instances/{id}/backup-policy"), &format!("Bearer {ALICE}")).await;
    assert_eq!(removed, StatusCode::NOT_FOUND, "an empty schedule removes the policy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guessing_tokens_at_the_sign_in_form_is_slowed_by_the_apis_rate_limit() {
    let changes = dbroker::config::Rate::from_settings("", 1, 3).unwrap();
    let app = TestApp::spawn_with(|c| c.rate_limits = dbroker::config::RateLimits { reads: None, changes }).await;

    let mut statuses = Vec::new();
    for guess in 0..50 {
        let guess = format!("guess-{guess}");
        let answer = client().post(app.url("/sign-in")).form_body(&[("token", guess)]).send().await.unwrap();
        statuses.push(answer.status());
        if answer.status() == StatusCode::TOO_MANY_REQUESTS {
            break;
        }
    }

    assert_eq!(statuses.first(), Some(&StatusCode::UNAUTHORIZED));
    assert_eq!(statuses.last(), Some(&StatusCode::TOO_MANY_REQUESTS), "{statuses:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_user_or_a_rotated_token_no_longer_signs_a_session_in() {
    let app = TestApp::spawn().await;
    let alice = sign_in(&app, ALICE).await;
    let bob = sign_in(&app, BOB).await;
    let store = dbroker::store::Store::open(&app.config.database_url).await.expect("the store opens");

    store.disable_user(&ALICE.parse().unwrap()).await.expect("ALICE disabled");
    store.rotate_token(&BOB.parse().unwrap(), "bobs-new-token").await.expect("BOB's new token");

    for session in [&alice, &bob] {
        let (status, _) = session.page(&app, "/").await;
        assert_eq!(status, StatusCode::SEE_OTHER, "sent to sign in again");
    }
}
