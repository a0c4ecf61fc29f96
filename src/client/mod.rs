//! The command-line client (`dbroker login|create|list|show|…|connect`): a typed HTTP client over
//! the v1 API that reuses the API's own request and answer types (`api::types`), so the client and
//! the server cannot disagree on a field. Every failure is one `ClientError`, which `exit_code`
//! turns into the process's exit code, in this one place.
//!
//! - `config`: where the server and the token come from (the environment, else the login file).
//! - `commands`: each subcommand, on this module's `Client`.
//! - `output`: tables for people, `--json` for scripts.
//! - `progress`: following an operation, with a progress line only on a terminal.
//! - `connect`: the engine's own client, handed the terminal.

mod commands;
mod config;
mod connect;
mod output;
mod progress;

use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use commands::run;
pub use config::{Login, config_dir};

use crate::api::types::{InstanceView, Instances, OperationView, Problem};
use crate::model::OperationId;
use crate::secrets::Secret;

/// How long a connection to dbroker may take to open: beyond it, the server is unreachable. No
/// timeout on a whole request: a create without `--wait` aside, a change answers when it has
/// ended, and an export streams for as long as the dump takes.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Why a client command did not do what was asked. Each kind is one exit code (`exit_code`).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered and refused (or an operation it ran failed): its problem's detail.
    #[error("{detail}")]
    Refused { status: u16, detail: String },
    /// The server answered something this client cannot read (not dbroker, or another version).
    #[error("{0}")]
    Unexpected(String),
    /// No answer: nothing listens there, or the connection broke.
    #[error("cannot reach dbroker at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    /// The command cannot run as given (clap refuses what it can see itself, with the same code).
    #[error("{0}")]
    Usage(String),
    /// Something on this machine: the login file, standard input or output, a missing client.
    #[error("{0}")]
    Local(String),
}

impl ClientError {
    /// 1 for a refused request (or anything else that failed), 2 for bad usage (as clap's own), 3
    /// for a server that cannot be reached: a script can tell "try again later" from "wrong".
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::Refused { .. } | ClientError::Unexpected(_) | ClientError::Local(_) => 1,
            ClientError::Usage(_) => 2,
            ClientError::Unreachable { .. } => 3,
        }
    }

    fn local(what: &str, error: impl std::fmt::Display) -> Self {
        ClientError::Local(format!("{what}: {error}"))
    }
}

/// A problem the server answered, as the refusal it is.
impl From<Problem> for ClientError {
    fn from(problem: Problem) -> Self {
        ClientError::Refused { status: problem.status, detail: problem.detail }
    }
}

/// dbroker's v1 API at one URL, as one user (the token goes in the `Authorization` header only).
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Secret,
}

/// What a change started with `Prefer: respond-async` answered: the operation that carries it on.
pub struct Started(pub OperationView);

impl Client {
    /// A client of the server at `base` (`http://` or `https://`, no path needed).
    pub fn new(base: &str, token: Secret) -> Result<Client, ClientError> {
        let base = base.trim_end_matches('/').to_string();
        match reqwest::Url::parse(&base) {
            Ok(url) if matches!(url.scheme(), "http" | "https") => {}
            _ => return Err(ClientError::Usage(format!("{base:?} is no http:// or https:// URL of a dbroker"))),
        }
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("dbroker-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientError::local("cannot make an HTTP client", e))?;
        Ok(Client { http, base, token })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http.request(method, format!("{}{path}", self.base)).bearer_auth(self.token.expose())
    }

    /// Sends a request; a refusal becomes `Refused` with the problem's detail, a failure to
    /// connect `Unreachable`.
    async fn send(&self, request: RequestBuilder) -> Result<Response, ClientError> {
        let response = request.send().await.map_err(|e| self.unreachable(e))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let body = response.bytes().await.map_err(|e| self.unreachable(e))?;
        Err(match serde_json::from_slice::<Problem>(&body) {
            Ok(problem) => problem.into(),
            Err(_) => ClientError::Refused {
                status: status.as_u16(),
                detail: format!("{} answered {status} (is it a dbroker?)", self.base),
            },
        })
    }

    fn unreachable(&self, error: reqwest::Error) -> ClientError {
        // reqwest's own message is "error sending request for url (…)"; the innermost cause says
        // what happened ("Connection refused", "failed to lookup address").
        let mut reason = error.to_string();
        let mut source = std::error::Error::source(&error);
        while let Some(cause) = source {
            reason = cause.to_string();
            source = cause.source();
        }
        ClientError::Unreachable { url: self.base.clone(), reason }
    }

    async fn read<T: DeserializeOwned>(&self, response: Response) -> Result<T, ClientError> {
        let body = response.bytes().await.map_err(|e| self.unreachable(e))?;
        serde_json::from_slice(&body)
            .map_err(|e| ClientError::Unexpected(format!("{} answered what this client cannot read: {e}", self.base)))
    }

    /// `GET path`, read as `T`.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let response = self.send(self.request(Method::GET, path)).await?;
        self.read(response).await
    }

    /// A change (`method path` with a JSON body, or none), answered when it has ended, read as `T`.
    pub async fn change<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, ClientError> {
        let mut request = self.request(method, path);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = self.send(request).await?;
        self.read(response).await
    }

    /// A change without an answer's body (a delete: 204).
    pub async fn change_without_answer(&self, method: Method, path: &str) -> Result<(), ClientError> {
        self.send(self.request(method, path)).await.map(drop)
    }

    /// A change started with `Prefer: respond-async`: the server answers 202 and the operation at
    /// once, which `progress::follow` then follows.
    pub async fn start(&self, method: Method, path: &str, body: &impl Serialize) -> Result<Started, ClientError> {
        let response = self.send(self.request(method, path).header("Prefer", "respond-async").json(body)).await?;
        if response.status() != StatusCode::ACCEPTED {
            return Err(ClientError::Unexpected(format!(
                "{} answered {} to a change asked to respond at once",
                self.base,
                response.status()
            )));
        }
        self.read(response).await.map(Started)
    }

    pub async fn operation(&self, id: &OperationId) -> Result<OperationView, ClientError> {
        self.get(&format!("/v1/operations/{id}")).await
    }

    pub async fn instances(&self) -> Result<Vec<InstanceView>, ClientError> {
        Ok(self.get::<Instances>("/v1/instances").await?.instances)
    }

    /// The caller's instance with this id or, failing that, this name: both through the list, as
    /// a name may look like an id.
    pub async fn resolve(&self, id_or_name: &str) -> Result<InstanceView, ClientError> {
        let mut instances = self.instances().await?;
        let found = instances
            .iter()
            .position(|i| i.id.as_str() == id_or_name)
            .or_else(|| instances.iter().position(|i| i.name.as_str() == id_or_name));
        match found {
            Some(index) => Ok(instances.swap_remove(index)),
            None => Err(ClientError::Refused {
                status: 404,
                detail: format!("you have no instance with the id or name {id_or_name:?} (`dbroker list` shows yours)"),
            }),
        }
    }

    /// A streamed download (`GET path`), for an export.
    pub async fn download(&self, path: &str) -> Result<Response, ClientError> {
        self.send(self.request(Method::GET, path)).await
    }

    /// A streamed upload (`POST path` with `body` as `application/octet-stream`), for an import.
    pub async fn upload<T: DeserializeOwned>(&self, path: &str, body: reqwest::Body) -> Result<T, ClientError> {
        let request = self.request(Method::POST, path).header("Content-Type", "application/octet-stream").body(body);
        let response = self.send(request).await?;
        self.read(response).await
    }

    /// Streams a response's body into `out`; a transfer that breaks half way is an error, so a
    /// truncated export is never taken for a whole one.
    pub async fn stream_into(
        &self,
        response: Response,
        out: &mut (impl tokio::io::AsyncWrite + Unpin),
    ) -> Result<u64, ClientError> {
        use futures_util::StreamExt;
        use tokio::io::AsyncWriteExt;
        let mut written = 0u64;
        let mut chunks = response.bytes_stream();
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(|e| self.unreachable(e))?;
            out.write_all(&chunk).await.map_err(|e| ClientError::local("cannot write the dump", e))?;
            written += chunk.len() as u64;
        }
        out.flush().await.map_err(|e| ClientError::local("cannot write the dump", e))?;
        Ok(written)
    }
}
