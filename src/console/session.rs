//! Signing in to the console, and who a request is from. A token typed into the sign-in form
//! starts a session in the store (so every replica honours it, and sign-out ends it everywhere);
//! the browser holds only the session's random id, in a cookie scripts cannot read
//! (`HttpOnly`), that no other site's request carries (`SameSite=Strict`) and, behind HTTPS, that
//! is never sent in the clear (`Secure`). Every POST must also carry the session's CSRF token (a
//! form field, or htmx's header) and, when the browser says where it comes from, come from here.

use std::time::Duration;

use askama::Template;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::pages::{Layout, render};
use crate::api::{ApiError, AppState};
use crate::provision::Caller;
use crate::secrets::{hash_token, token_digest};
use crate::store::User;

/// The cookie that names a browser's session.
const COOKIE: &str = "dbroker_session";

/// How long a sign-in lasts: a working day, after which the token is asked for again.
pub(super) const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

/// The header htmx sends the CSRF token in (see `base.html`'s `hx-headers`).
const CSRF_HEADER: &str = "x-csrf-token";

/// A request from a signed-in user, whose user is enabled.
pub(super) struct Signed {
    pub user: User,
    /// The token the session's forms carry.
    pub csrf: String,
    /// The cookie's session id, to end it.
    session_id: String,
}

impl Signed {
    pub fn caller(&self) -> Caller {
        Caller { user_id: self.user.id, name: self.user.name.clone(), is_admin: self.user.is_admin }
    }

    pub fn layout(&self, title: impl Into<String>) -> Layout {
        Layout::signed_in(title.into(), &self.user, &self.csrf)
    }
}

/// Why a request is not [`Signed`]: sent to the sign-in page (htmx, which would put that page
/// inside the one it polls for, is told to go there instead).
pub(super) enum NotSignedIn {
    SignIn { htmx: bool },
    Failed(ApiError),
}

impl IntoResponse for NotSignedIn {
    fn into_response(self) -> Response {
        match self {
            // 200, not 401: htmx follows the header either way, and the browser would log a 401
            // as an error on a page that is merely signed out (its session expired, say).
            NotSignedIn::SignIn { htmx: true } => {
                (StatusCode::OK, [("hx-redirect", HeaderValue::from_static("/sign-in"))]).into_response()
            }
            NotSignedIn::SignIn { htmx: false } => Redirect::to("/sign-in").into_response(),
            NotSignedIn::Failed(error) => super::pages::error_page(None, error),
        }
    }
}

impl FromRequestParts<AppState> for Signed {
    type Rejection = NotSignedIn;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, NotSignedIn> {
        let sign_in = NotSignedIn::SignIn { htmx: parts.headers.contains_key("hx-request") };
        let Some(session_id) = session_cookie(&parts.headers) else { return Err(sign_in) };
        let session = state.store.session(&session_id).await.map_err(|e| NotSignedIn::Failed(internal(e)))?;
        match session {
            Some(session) if !session.user.is_disabled() => {
                Ok(Signed { user: session.user, csrf: session.csrf_token, session_id })
            }
            _ => Err(sign_in),
        }
    }
}

fn internal(error: crate::store::StoreError) -> ApiError {
    ApiError::Internal(error.into())
}

/// The session id the request's cookie holds, if any.
fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_string())
        .filter(|value| !value.is_empty())
}

/// A signed-in user's POST with its form `T`, once its CSRF token and origin were checked.
pub(super) struct Posted<T> {
    pub signed: Signed,
    pub form: T,
}

/// The CSRF token's field, whatever else the form holds.
#[derive(Deserialize)]
struct CsrfField {
    csrf: Option<String>,
}

impl<T: DeserializeOwned> FromRequest<AppState> for Posted<T> {
    type Rejection = Response;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Response> {
        let (mut parts, body) = request.into_parts();
        let signed = Signed::from_request_parts(&mut parts, state).await.map_err(IntoResponse::into_response)?;
        let refused = |reason: &'static str| super::pages::error_page(Some(&signed), ApiError::Forbidden(reason));
        check_origin(&parts.headers).map_err(&refused)?;
        let bytes = Bytes::from_request(Request::from_parts(parts.clone(), body), state)
            .await
            .map_err(IntoResponse::into_response)?;
        let sent = match parts.headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()) {
            Some(header) => Some(header.to_string()),
            None => serde_urlencoded::from_bytes::<CsrfField>(&bytes).ok().and_then(|field| field.csrf),
        };
        if !sent.is_some_and(|sent| same(&sent, &signed.csrf)) {
            return Err(refused("this form has expired or came from another site: reload the page and try again"));
        }
        let form = serde_urlencoded::from_bytes::<T>(&bytes)
            .map_err(|e| super::pages::error_page(Some(&signed), ApiError::Unprocessable(e.to_string())))?;
        Ok(Posted { signed, form })
    }
}

/// Refuses a POST whose browser says it comes from another site (`Origin`, which browsers send
/// with every POST): a forged sign-in would otherwise sign a victim in as the forger.
fn check_origin(headers: &HeaderMap) -> Result<(), &'static str> {
    let (Some(origin), Some(host)) = (headers.get(header::ORIGIN), headers.get(header::HOST)) else { return Ok(()) };
    let origin = origin.to_str().unwrap_or_default();
    let origin_host = origin.split_once("://").map_or("", |(_, rest)| rest);
    if origin_host.as_bytes() == host.as_bytes() { Ok(()) } else { Err("this form was sent from another site") }
}

/// Whether two tokens are the same, compared by their digests (`secrets::token_digest`, as the
/// store looks tokens up): where the digests first differ says nothing of where the tokens do.
fn same(a: &str, b: &str) -> bool {
    token_digest(a) == token_digest(b)
}

/// A new random token for a session id or a CSRF token: 256 bits, hex.
fn random_token() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

#[derive(Template)]
#[template(path = "console/sign_in.html")]
struct SignInPage {
    page: Layout,
    error: Option<String>,
}

/// `GET /sign-in`: the form, or the instances for whoever is signed in already.
pub(super) async fn sign_in_page(signed: Result<Signed, NotSignedIn>) -> Response {
    if signed.is_ok() {
        return Redirect::to("/").into_response();
    }
    render(StatusCode::OK, &SignInPage { page: Layout::signed_out("Sign in"), error: None })
}

#[derive(Deserialize)]
pub(super) struct SignIn {
    token: String,
}

/// `POST /sign-in`: a known, enabled user's token starts a session; anything else is the form
/// again, with the API's reason.
pub(super) async fn sign_in(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let refuse = |error: ApiError| {
        let (status, detail) = error.status_and_detail();
        render(status, &SignInPage { page: Layout::signed_out("Sign in"), error: Some(detail) })
    };
    if let Err(reason) = check_origin(&headers) {
        return refuse(ApiError::Forbidden(reason));
    }
    let Ok(SignIn { token }) = serde_urlencoded::from_bytes::<SignIn>(&body) else {
        return refuse(ApiError::Unauthorized("type your token"));
    };
    let token = token.trim();
    if token.is_empty() {
        return refuse(ApiError::Unauthorized("type your token"));
    }
    let user = match state.store.user_by_token_hash(&hash_token(token)).await {
        Ok(Some(user)) if user.is_disabled() => {
            return refuse(ApiError::Unauthorized("the user of this token is disabled"));
        }
        Ok(Some(user)) => user,
        Ok(None) => return refuse(ApiError::Unauthorized("unknown token")),
        Err(error) => return refuse(internal(error)),
    };
    let (session_id, csrf) = (random_token(), random_token());
    if let Err(error) = state.store.start_session(&session_id, user.id, &csrf, SESSION_TTL).await {
        return refuse(internal(error));
    }
    let cookie = format!(
        "{COOKIE}={session_id}; Path=/; Max-Age={}; HttpOnly; SameSite=Strict{}",
        SESSION_TTL.as_secs(),
        if behind_https(&headers) { "; Secure" } else { "" }
    );
    let mut response = Redirect::to("/").into_response();
    if let Ok(cookie) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

/// Whether the browser reached dbroker over HTTPS: through a proxy that says so. dbroker itself
/// speaks plain HTTP, where a `Secure` cookie would never be sent back.
fn behind_https(headers: &HeaderMap) -> bool {
    headers.get("x-forwarded-proto").is_some_and(|proto| proto.as_bytes().eq_ignore_ascii_case(b"https"))
}

/// `POST /sign-out`: ends the session in the store (a copy of the cookie no longer works
/// anywhere) and clears the cookie.
pub(super) async fn sign_out(State(state): State<AppState>, posted: Posted<CsrfOnly>) -> Response {
    if let Err(error) = state.store.end_session(&posted.signed.session_id).await {
        return super::pages::error_page(Some(&posted.signed), internal(error));
    }
    let mut response = Redirect::to("/sign-in").into_response();
    let cleared = format!("{COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict");
    if let Ok(cleared) = HeaderValue::from_str(&cleared) {
        response.headers_mut().insert(header::SET_COOKIE, cleared);
    }
    response
}

/// A form with nothing but its CSRF token.
#[derive(Deserialize)]
pub(super) struct CsrfOnly {}
