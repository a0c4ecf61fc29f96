//! The console's pages: each handler reads or changes through the provisioning service, as the
//! v1 handlers do, and renders an askama template (`templates/console/`). A change starts its
//! operation and sends the browser to the instance's page, whose status panel follows the
//! operation's steps (htmx polls it); a refused change shows the API's message for it.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::assets::{HTMX, SCRIPT, STYLE};
use super::session::{CsrfOnly, Posted, Signed};
use crate::api::types::OperationView;
use crate::api::{ApiError, AppState};
use crate::model::{
    BackupId, Charset, Collation, DatabaseName, Engine, InstanceId, InstanceName, KeepDays, KeepLast, MemoryMb,
    Schedule, Status, VersionName,
};
use crate::provision::{Instance, NewInstance, ProvisionError};
use crate::secrets::Secret;
use crate::store::User;

/// What every page's frame needs: its title, who is signed in, the CSRF token its forms carry,
/// and where the console's files are.
pub(super) struct Layout {
    pub title: String,
    pub user: Option<String>,
    pub is_admin: bool,
    pub csrf: String,
    pub htmx: &'static str,
    pub style: &'static str,
    pub script: &'static str,
}

impl Layout {
    pub fn signed_in(title: String, user: &User, csrf: &str) -> Layout {
        Layout {
            user: Some(user.name.clone()),
            is_admin: user.is_admin,
            csrf: csrf.to_string(),
            ..Self::signed_out(&title)
        }
    }

    pub fn signed_out(title: &str) -> Layout {
        Layout {
            title: title.to_string(),
            user: None,
            is_admin: false,
            csrf: String::new(),
            htmx: &HTMX.path,
            style: &STYLE.path,
            script: &SCRIPT.path,
        }
    }

    /// The `hx-headers` attribute's JSON: htmx's requests carry the CSRF token in a header. The
    /// token is hex, so it needs no escaping in JSON.
    pub fn htmx_headers(&self) -> String {
        format!(r#"{{"x-csrf-token": "{}"}}"#, self.csrf)
    }
}

/// A rendered page with `status`; a template that fails to render is an internal error.
pub(super) fn render(status: StatusCode, page: &impl Template) -> Response {
    match page.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(error) => {
            tracing::error!(%error, "a console page did not render");
            (StatusCode::INTERNAL_SERVER_ERROR, crate::provision::INTERNAL_DETAIL).into_response()
        }
    }
}

#[derive(Template)]
#[template(path = "console/error.html")]
struct ErrorPage {
    page: Layout,
    status: u16,
    detail: String,
}

/// The API's message for `error`, on a page of its own, with the API's status.
pub(super) fn error_page(signed: Option<&Signed>, error: impl Into<ApiError>) -> Response {
    let (status, detail) = error.into().status_and_detail();
    let title = status.canonical_reason().unwrap_or("Error");
    let page = match signed {
        Some(signed) => signed.layout(title),
        None => Layout::signed_out(title),
    };
    render(status, &ErrorPage { page, status: status.as_u16(), detail })
}

/// An id that cannot exist is simply not found, as the API says it.
fn parse_id(id: &str) -> Result<InstanceId, ApiError> {
    id.parse().map_err(|_| ApiError::NotFound(format!("no instance with id {id:?}")))
}

/// One row of the instances table.
struct Row {
    id: String,
    name: String,
    engine: &'static str,
    version: String,
    status: &'static str,
    memory_mb: u32,
    busy: bool,
}

impl From<&Instance> for Row {
    fn from(instance: &Instance) -> Row {
        let r = &instance.record;
        Row {
            id: r.id.to_string(),
            name: r.name.as_str().to_string(),
            engine: r.engine().as_str(),
            version: r.version.clone(),
            status: r.status.as_str(),
            memory_mb: r.memory_mb.0,
            busy: r.running_operation.is_some(),
        }
    }
}

#[derive(Template)]
#[template(path = "console/instances.html")]
struct InstancesPage {
    page: Layout,
    rows: Vec<Row>,
}

#[derive(Template)]
#[template(path = "console/rows.html")]
struct RowsPartial {
    rows: Vec<Row>,
}

async fn rows(state: &AppState, signed: &Signed) -> Result<Vec<Row>, ApiError> {
    let instances = state.provisioner.list(signed.user.id, None).await?;
    Ok(instances.iter().map(Row::from).collect())
}

/// `GET /`: the user's instances, their statuses kept up to date by `instance_rows`.
pub(super) async fn list_instances(State(state): State<AppState>, signed: Signed) -> Response {
    match rows(&state, &signed).await {
        Ok(rows) => render(StatusCode::OK, &InstancesPage { page: signed.layout("Instances"), rows }),
        Err(error) => error_page(Some(&signed), error),
    }
}

/// `GET /partials/instances`: the table's rows, which the list page polls.
pub(super) async fn instance_rows(State(state): State<AppState>, signed: Signed) -> Response {
    match rows(&state, &signed).await {
        Ok(rows) => render(StatusCode::OK, &RowsPartial { rows }),
        Err(error) => error_page(Some(&signed), error),
    }
}

/// An engine of the catalogue, as the create form offers it (what `/v1/engines` says of it).
struct EngineChoice {
    engine: &'static str,
    versions: Vec<String>,
    default_version: String,
    memory_min: u32,
    memory_max: u32,
    memory_default: u32,
    options: Vec<&'static str>,
}

impl EngineChoice {
    fn takes(&self, option: &str) -> bool {
        self.options.contains(&option)
    }

    fn is_default(&self, version: &str) -> bool {
        version == self.default_version
    }
}

fn engine_choices(state: &AppState) -> Vec<EngineChoice> {
    state
        .config
        .catalogue
        .engines()
        .map(|(engine, catalogue)| EngineChoice {
            engine: engine.as_str(),
            versions: catalogue.versions.keys().cloned().collect(),
            default_version: catalogue.default_version.clone(),
            memory_min: catalogue.memory.min.0,
            memory_max: catalogue.memory.max.0,
            memory_default: catalogue.memory.default.0,
            options: crate::engines::profile(engine).options.to_vec(),
        })
        .collect()
}

/// What the create form was sent with, as typed: kept to fill the form again if it is refused.
#[derive(Deserialize, Default)]
pub(super) struct CreateForm {
    #[serde(default)]
    engine: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    version: String,
    #[serde(default)]
    memory_mb: String,
    #[serde(default)]
    charset: String,
    #[serde(default)]
    collation: String,
    #[serde(default)]
    database: String,
}

#[derive(Template)]
#[template(path = "console/new.html")]
struct NewPage {
    page: Layout,
    engines: Vec<EngineChoice>,
    chosen: Option<EngineChoice>,
    form: CreateForm,
    error: Option<String>,
}

impl NewPage {
    fn engine_selected(&self, choice: &EngineChoice) -> bool {
        choice.engine == self.form.engine
    }

    /// The version typed in the form sent before, else the engine's default.
    fn version_selected(&self, choice: &EngineChoice, version: &str) -> bool {
        if self.form.version.is_empty() { choice.is_default(version) } else { version == self.form.version }
    }

    fn of(state: &AppState, signed: &Signed, form: CreateForm, error: Option<String>) -> NewPage {
        let engines = engine_choices(state);
        let chosen = engine_choices(state).into_iter().find(|choice| choice.engine == form.engine);
        NewPage { page: signed.layout("New instance"), engines, chosen, form, error }
    }
}

#[derive(Deserialize)]
pub(super) struct EngineQuery {
    engine: Option<String>,
}

/// `GET /new?engine=…`: the engines to choose from, then the chosen one's form.
pub(super) async fn new_instance_page(
    State(state): State<AppState>,
    signed: Signed,
    Query(query): Query<EngineQuery>,
) -> Response {
    let form = CreateForm { engine: query.engine.unwrap_or_default(), ..Default::default() };
    render(StatusCode::OK, &NewPage::of(&state, &signed, form, None))
}

/// An optional field: empty is `None`, anything else parsed, or refused naming the field.
fn optional<T: std::str::FromStr<Err = crate::model::Invalid>>(field: &str, text: &str) -> Result<Option<T>, ApiError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|e: crate::model::Invalid| ApiError::Unprocessable(format!("{field}: {}", e.0)))
}

fn memory(text: &str) -> Result<Option<MemoryMb>, ApiError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse::<u32>()
        .map(|mb| Some(MemoryMb(mb)))
        .map_err(|_| ApiError::Unprocessable("memory_mb: a whole number of MiB".into()))
}

impl CreateForm {
    fn request(&self) -> Result<NewInstance, ApiError> {
        let engine: Engine = self
            .engine
            .parse()
            .map_err(|e: crate::model::Invalid| ApiError::Unprocessable(format!("engine: {}", e.0)))?;
        Ok(NewInstance {
            name: optional::<InstanceName>("name", &self.name)?,
            version: optional::<VersionName>("version", &self.version)?,
            memory: memory(&self.memory_mb)?,
            charset: optional::<Charset>("charset", &self.charset)?,
            collation: optional::<Collation>("collation", &self.collation)?,
            database: optional::<DatabaseName>("database", &self.database)?,
            ..NewInstance::of(engine)
        })
    }
}

/// `POST /new`: starts the create and shows the instance, whose panel follows its steps.
pub(super) async fn create_instance(State(state): State<AppState>, posted: Posted<CreateForm>) -> Response {
    let Posted { signed, form } = posted;
    let started = match form.request() {
        Ok(request) => state.provisioner.create(&signed.caller(), request, None).await.map_err(ApiError::from),
        Err(error) => Err(error),
    };
    match started {
        // Its operation's page, not the instance's: a create that fails is rolled back, and its
        // instance is gone, but its operation says why.
        Ok(running) => Redirect::to(&format!("/operations/{}", running.operation.id)).into_response(),
        Err(error) => {
            let (status, detail) = error.status_and_detail();
            render(status, &NewPage::of(&state, &signed, form, Some(detail)))
        }
    }
}

#[derive(Template)]
#[template(path = "console/operation.html")]
struct OperationPage {
    page: Layout,
    operation: OperationView,
}

#[derive(Template)]
#[template(path = "console/steps.html")]
struct StepsPartial {
    operation: OperationView,
}

impl OperationView {
    /// Whether it has ended (and its page stops polling).
    fn ended(&self) -> bool {
        !self.state.in_flight()
    }

    fn succeeded(&self) -> bool {
        self.state == crate::model::OperationState::Succeeded
    }

    /// Its error, in the API's words.
    fn error_detail(&self) -> Option<&str> {
        self.error.as_ref().map(|problem| problem.detail.as_str())
    }
}

async fn operation_of(state: &AppState, signed: &Signed, id: &str) -> Result<OperationView, ApiError> {
    let not_found = || ApiError::NotFound(format!("no operation with id {id:?}"));
    let id: crate::model::OperationId = id.parse().map_err(|_| not_found())?;
    let operation = state.provisioner.operation(&signed.caller(), &id).await.map_err(|e| match e {
        ProvisionError::NotFound => not_found(),
        other => other.into(),
    })?;
    Ok(OperationView::from(&operation))
}

/// `GET /operations/{id}`: an operation's steps as they happen (htmx polls `operation_steps`),
/// and where to go once it has ended.
pub(super) async fn show_operation(State(state): State<AppState>, signed: Signed, Path(id): Path<String>) -> Response {
    match operation_of(&state, &signed, &id).await {
        Ok(operation) => {
            let page = signed.layout(format!("{} {}", operation.kind.as_str(), operation.instance_id));
            render(StatusCode::OK, &OperationPage { page, operation })
        }
        Err(error) => error_page(Some(&signed), error),
    }
}

/// `GET /partials/operations/{id}`: the steps the operation's page polls.
pub(super) async fn operation_steps(State(state): State<AppState>, signed: Signed, Path(id): Path<String>) -> Response {
    match operation_of(&state, &signed, &id).await {
        Ok(operation) => render(StatusCode::OK, &StepsPartial { operation }),
        Err(error) => error_page(Some(&signed), error),
    }
}

/// An instance's status, and its latest operation's steps: what its page's panel shows.
struct StatusPanel {
    id: String,
    status: &'static str,
    reason: Option<String>,
    attention: Option<String>,
    busy: bool,
    operation: Option<OperationView>,
    /// The latest operation's error, in the API's words.
    operation_error: Option<String>,
}

impl StatusPanel {
    async fn of(state: &AppState, signed: &Signed, instance: &Instance) -> Result<StatusPanel, ApiError> {
        let r = &instance.record;
        let latest = state.provisioner.operations(signed.user.id, &r.id, None, 1).await?;
        let operation = latest.first().map(OperationView::from);
        let operation_error = operation.as_ref().and_then(|o| o.error.as_ref()).map(|p| p.detail.clone());
        Ok(StatusPanel {
            id: r.id.to_string(),
            status: r.status.as_str(),
            reason: r.status_reason.clone(),
            attention: r.attention.clone(),
            busy: r.running_operation.is_some() || r.status == Status::Provisioning,
            operation,
            operation_error,
        })
    }

    fn operation_kind(&self) -> &'static str {
        self.operation.as_ref().map_or("", |o| o.kind.as_str())
    }

    fn operation_state(&self) -> &'static str {
        self.operation.as_ref().map_or("", |o| o.state.as_str())
    }
}

#[derive(Template)]
#[template(path = "console/status.html")]
struct StatusPartial {
    panel: StatusPanel,
}

/// A backup, as the instance's page lists it.
struct BackupRow {
    id: String,
    kind: &'static str,
    state: &'static str,
    started_at: String,
    size: String,
    reason: Option<String>,
    restorable: bool,
}

/// The backup policy's form, filled with the policy there is.
#[derive(Default)]
struct PolicyForm {
    schedule: String,
    keep_last: String,
    keep_days: String,
    verify: bool,
}

#[derive(Template)]
#[template(path = "console/instance.html")]
struct InstancePage {
    page: Layout,
    id: String,
    name: String,
    engine: &'static str,
    version: String,
    memory_mb: u32,
    memory_min: u32,
    memory_max: u32,
    created_at: String,
    host: String,
    port: String,
    user: String,
    /// The URI with its password shown as dots, unless `revealed`.
    uri: Option<String>,
    revealed: bool,
    panel: StatusPanel,
    error: Option<String>,
    backups_on: bool,
    backups: Vec<BackupRow>,
    policy: PolicyForm,
}

/// What the console shows instead of a password not asked for.
const MASK: &str = "••••••••";

async fn instance_page(
    state: &AppState,
    signed: &Signed,
    id: &str,
    revealed: bool,
    error: Option<ApiError>,
) -> Response {
    let page = async {
        let id = parse_id(id)?;
        let instance = state.provisioner.get(signed.user.id, &id).await?;
        let panel = StatusPanel::of(state, signed, &instance).await?;
        let backups_on = state.config.backups.is_some();
        let (mut backups, mut policy) = (Vec::new(), PolicyForm::default());
        if backups_on {
            backups = state
                .provisioner
                .list_backups(signed.user.id, Some(&id), None, 20)
                .await?
                .into_iter()
                .map(|b| BackupRow {
                    id: b.id.to_string(),
                    kind: b.kind.as_str(),
                    state: b.state.as_str(),
                    started_at: crate::store::format_time(b.started_at),
                    size: b.size_bytes.map_or_else(String::new, |size| format!("{:.1} MiB", size as f64 / 1048576.0)),
                    reason: b.reason,
                    restorable: b.state == crate::model::BackupState::Succeeded,
                })
                .collect();
            match state.provisioner.backup_policy(signed.user.id, &id).await {
                Ok(p) => {
                    policy = PolicyForm {
                        schedule: p.schedule.to_string(),
                        keep_last: p.keep_last.map(|k| k.get().to_string()).unwrap_or_default(),
                        keep_days: p.keep_days.map(|k| k.get().to_string()).unwrap_or_default(),
                        verify: p.verify,
                    }
                }
                Err(ProvisionError::NoBackupPolicy(_)) => {}
                Err(other) => return Err(other.into()),
            }
        }
        let uri = if revealed {
            instance.uri()
        } else {
            Instance { password: instance.password.as_ref().map(|_| Secret::new(MASK.into())), ..instance.clone() }
                .uri()
        };
        let bounds =
            state.config.catalogue.engines().find(|(e, _)| *e == instance.record.engine()).map(|(_, c)| c.memory);
        let r = &instance.record;
        Ok::<_, ApiError>(InstancePage {
            page: signed.layout(r.name.as_str().to_string()),
            id: r.id.to_string(),
            name: r.name.as_str().to_string(),
            engine: r.engine().as_str(),
            version: r.version.clone(),
            memory_mb: r.memory_mb.0,
            memory_min: bounds.map_or(1, |b| b.min.0),
            memory_max: bounds.map_or(u32::MAX, |b| b.max.0),
            created_at: r.created_at.clone(),
            host: instance.host.clone(),
            port: r.port.map(|p| p.to_string()).unwrap_or_default(),
            user: r.username.clone().unwrap_or_default(),
            uri,
            revealed,
            panel,
            error: None,
            backups_on,
            backups,
            policy,
        })
    };
    match page.await {
        Ok(mut page) => {
            let status = match error {
                Some(error) => {
                    let (status, detail) = error.status_and_detail();
                    page.error = Some(detail);
                    status
                }
                None => StatusCode::OK,
            };
            render(status, &page)
        }
        Err(error) => error_page(Some(signed), error),
    }
}

/// `GET /instances/{id}`: the instance, its connection (password hidden), what can be done to it.
pub(super) async fn show_instance(State(state): State<AppState>, signed: Signed, Path(id): Path<String>) -> Response {
    instance_page(&state, &signed, &id, false, None).await
}

/// `POST /instances/{id}/reveal`: the same, with the password, asked for (a POST, so it is never
/// in a link, a history or a prefetch).
pub(super) async fn reveal_password(
    State(state): State<AppState>,
    Path(id): Path<String>,
    posted: Posted<CsrfOnly>,
) -> Response {
    instance_page(&state, &posted.signed, &id, true, None).await
}

/// `GET /partials/instances/{id}/status`: the panel the instance's page polls.
pub(super) async fn instance_status(State(state): State<AppState>, signed: Signed, Path(id): Path<String>) -> Response {
    let panel = async {
        let instance = state.provisioner.get(signed.user.id, &parse_id(&id)?).await?;
        StatusPanel::of(&state, &signed, &instance).await
    };
    match panel.await {
        Ok(panel) => render(StatusCode::OK, &StatusPartial { panel }),
        // Deleted meanwhile (from another tab, say): the panel says so and stops polling. An error
        // answer would not be swapped in, and htmx would log it on every poll.
        Err(ApiError::Provision(ProvisionError::NotFound)) => render(StatusCode::OK, &GonePartial),
        Err(error) => error_page(Some(&signed), error),
    }
}

#[derive(Template)]
#[template(
    source = r#"<section id="status" class="card"><h2>Status: <span id="status-word">deleted</span></h2><p>This instance no longer exists. <a href="/">Back to your instances</a></p></section>"#,
    ext = "html"
)]
struct GonePartial;

/// After a change was started: its instance's page, or that page with the API's reason it was refused.
async fn after_change<T>(state: &AppState, signed: &Signed, id: &str, started: Result<T, ApiError>) -> Response {
    match started {
        Ok(_) => Redirect::to(&format!("/instances/{id}")).into_response(),
        Err(error) => instance_page(state, signed, id, false, Some(error)).await,
    }
}

#[derive(Deserialize)]
pub(super) struct ActionForm {
    action: String,
}

/// `POST /instances/{id}/action`: stop, start, restart or rotate-password.
pub(super) async fn act_on_instance(
    State(state): State<AppState>,
    Path(id): Path<String>,
    posted: Posted<ActionForm>,
) -> Response {
    let Posted { signed, form } = posted;
    let started = async {
        let instance = parse_id(&id)?;
        let (caller, p) = (signed.caller(), &state.provisioner);
        let running = match form.action.as_str() {
            "stop" => p.stop(&caller, &instance, None).await?,
            "start" => p.start(&caller, &instance, None).await?,
            "restart" => p.restart(&caller, &instance, None).await?,
            "rotate-password" => p.rotate_password(&caller, &instance, None).await?,
            other => {
                return Err(ApiError::Unprocessable(format!(
                    "action: {other:?} is not stop, start, restart or rotate-password"
                )));
            }
        };
        Ok::<_, ApiError>(running.operation)
    };
    let started = started.await;
    after_change(&state, &signed, &id, started).await
}

#[derive(Deserialize)]
pub(super) struct ResizeForm {
    memory_mb: String,
}

/// `POST /instances/{id}/resize`: a new memory cap, in place.
pub(super) async fn resize_instance(
    State(state): State<AppState>,
    Path(id): Path<String>,
    posted: Posted<ResizeForm>,
) -> Response {
    let Posted { signed, form } = posted;
    let started = async {
        let memory =
            memory(&form.memory_mb)?.ok_or_else(|| ApiError::Unprocessable("memory_mb: say how many MiB".into()))?;
        Ok::<_, ApiError>(state.provisioner.resize(&signed.caller(), &parse_id(&id)?, memory, None).await?.operation)
    };
    let started = started.await;
    after_change(&state, &signed, &id, started).await
}

#[derive(Template)]
#[template(path = "console/delete.html")]
struct DeletePage {
    page: Layout,
    id: String,
    name: String,
    engine: &'static str,
}

/// `GET /instances/{id}/delete`: asks first; the data goes with the instance.
pub(super) async fn confirm_delete(State(state): State<AppState>, signed: Signed, Path(id): Path<String>) -> Response {
    let found = async { Ok::<_, ApiError>(state.provisioner.get(signed.user.id, &parse_id(&id)?).await?) };
    match found.await {
        Ok(instance) => render(
            StatusCode::OK,
            &DeletePage {
                page: signed.layout(format!("Delete {}", instance.record.name.as_str())),
                id: instance.record.id.to_string(),
                name: instance.record.name.as_str().to_string(),
                engine: instance.record.engine().as_str(),
            },
        ),
        Err(error) => error_page(Some(&signed), error),
    }
}

/// `POST /instances/{id}/delete`: deletes it, and goes back to the list, where it shows deleting
/// until it is gone.
pub(super) async fn delete_instance(
    State(state): State<AppState>,
    Path(id): Path<String>,
    posted: Posted<CsrfOnly>,
) -> Response {
    let signed = posted.signed;
    let started = async { Ok::<_, ApiError>(state.provisioner.delete(&signed.caller(), &parse_id(&id)?, None).await?) };
    match started.await {
        Ok(_) => Redirect::to("/").into_response(),
        Err(error) => instance_page(&state, &signed, &id, false, Some(error)).await,
    }
}

#[derive(Template)]
#[template(path = "console/history.html")]
struct HistoryPage {
    page: Layout,
    id: String,
    name: String,
    logs: Vec<String>,
    /// Why there are no logs to show (no container yet, say), in the API's words.
    logs_error: Option<String>,
    events: Vec<crate::store::Event>,
}

/// How many of the server's log lines the history page shows.
const LOG_LINES: usize = 200;

/// `GET /instances/{id}/history`: the server's last log lines (its password removed, as the API
/// gives them) and the instance's events.
pub(super) async fn instance_history(
    State(state): State<AppState>,
    signed: Signed,
    Path(id): Path<String>,
) -> Response {
    let page = async {
        let id = parse_id(&id)?;
        let instance = state.provisioner.get(signed.user.id, &id).await?;
        let events = state.provisioner.events(signed.user.id, &id, None, 100).await?;
        let (logs, logs_error) = match state.provisioner.logs(signed.user.id, &id, LOG_LINES).await {
            Ok(lines) => (lines, None),
            Err(error) => (Vec::new(), Some(ApiError::from(error).status_and_detail().1)),
        };
        Ok::<_, ApiError>(HistoryPage {
            page: signed.layout(format!("{}: logs and events", instance.record.name.as_str())),
            id: id.to_string(),
            name: instance.record.name.as_str().to_string(),
            logs,
            logs_error,
            events,
        })
    };
    match page.await {
        Ok(page) => render(StatusCode::OK, &page),
        Err(error) => error_page(Some(&signed), error),
    }
}

/// `POST /instances/{id}/backups`: takes a backup to the default target.
pub(super) async fn take_backup(
    State(state): State<AppState>,
    Path(id): Path<String>,
    posted: Posted<CsrfOnly>,
) -> Response {
    let signed = posted.signed;
    let started = async {
        Ok::<_, ApiError>(
            state.provisioner.back_up(&signed.caller(), &parse_id(&id)?, None, false, None).await?.operation,
        )
    };
    let started = started.await;
    after_change(&state, &signed, &id, started).await
}

#[derive(Deserialize)]
pub(super) struct RestoreForm {
    backup: String,
}

/// `POST /instances/{id}/restore`: loads one of the user's backups into the instance, in place.
pub(super) async fn restore_backup(
    State(state): State<AppState>,
    Path(id): Path<String>,
    posted: Posted<RestoreForm>,
) -> Response {
    let Posted { signed, form } = posted;
    let started = async {
        let backup: BackupId = form
            .backup
            .parse()
            .map_err(|e: crate::model::Invalid| ApiError::Unprocessable(format!("backup: {}", e.0)))?;
        Ok::<_, ApiError>(
            state.provisioner.restore_in_place(&signed.caller(), &parse_id(&id)?, &backup, None).await?.operation,
        )
    };
    let started = started.await;
    after_change(&state, &signed, &id, started).await
}

#[derive(Deserialize)]
pub(super) struct PolicyFields {
    #[serde(default)]
    schedule: String,
    #[serde(default)]
    keep_last: String,
    #[serde(default)]
    keep_days: String,
    verify: Option<String>,
}

/// `POST /instances/{id}/policy`: sets the backup policy; an empty schedule removes it.
pub(super) async fn put_policy(
    State(state): State<AppState>,
    Path(id): Path<String>,
    posted: Posted<PolicyFields>,
) -> Response {
    let Posted { signed, form } = posted;
    let changed = async {
        let instance = parse_id(&id)?;
        let Some(schedule) = optional::<Schedule>("schedule", &form.schedule)? else {
            return Ok(state.provisioner.delete_backup_policy(signed.user.id, &instance).await?);
        };
        let count = |field: &str, text: &str| -> Result<Option<u32>, ApiError> {
            let text = text.trim();
            if text.is_empty() {
                return Ok(None);
            }
            text.parse().map(Some).map_err(|_| ApiError::Unprocessable(format!("{field}: a whole number")))
        };
        let invalid = |e: crate::model::Invalid| ApiError::Unprocessable(e.0);
        let keep_last = count("keep_last", &form.keep_last)?.map(KeepLast::new).transpose().map_err(invalid)?;
        let keep_days = count("keep_days", &form.keep_days)?.map(KeepDays::new).transpose().map_err(invalid)?;
        let policy = crate::store::NewPolicy {
            schedule: &schedule,
            target: None,
            keep_last,
            keep_days,
            verify: form.verify.is_some(),
        };
        state.provisioner.put_backup_policy(signed.user.id, &instance, &policy).await?;
        Ok::<_, ApiError>(())
    };
    let changed = changed.await;
    after_change(&state, &signed, &id, changed).await
}

/// A user, as the admin page lists them.
struct UserRow {
    name: String,
    is_admin: bool,
    is_demo: bool,
    disabled: bool,
    instances: u64,
    memory_mb: u64,
    quota_instances: String,
    quota_memory_mb: String,
}

#[derive(Template)]
#[template(path = "console/admin.html")]
struct AdminPage {
    page: Layout,
    users: Vec<UserRow>,
    quarantined: Vec<crate::store::Quarantined>,
    leader: bool,
    passes: u64,
    repairs: Vec<(&'static str, u64)>,
}

/// `GET /admin`: users with their usage and quotas, the quarantine and the reconciler, for
/// admins; anyone else is refused as the admin API refuses them.
pub(super) async fn admin_page(State(state): State<AppState>, signed: Signed) -> Response {
    if !signed.user.is_admin {
        return error_page(Some(&signed), ApiError::Forbidden("only admins may do this"));
    }
    let page = async {
        let default = state.config.quotas;
        let users = state
            .users
            .list()
            .await?
            .into_iter()
            .map(|listed| UserRow {
                name: listed.user.name.clone(),
                is_admin: listed.user.is_admin,
                is_demo: listed.user.is_demo,
                disabled: listed.user.is_disabled(),
                instances: listed.usage.instances,
                memory_mb: listed.usage.memory_mb,
                quota_instances: listed
                    .user
                    .quota
                    .instances
                    .map_or_else(|| format!("{} (default)", default.instances), |q| q.to_string()),
                quota_memory_mb: listed
                    .user
                    .quota
                    .memory_mb
                    .map_or_else(|| format!("{} (default)", default.memory_mb), |q| q.to_string()),
            })
            .collect();
        let quarantined = state.provisioner.quarantined().await?;
        let report = state.reconciler.report();
        Ok::<_, ApiError>(AdminPage {
            page: signed.layout("Administration"),
            users,
            quarantined,
            leader: report.leader,
            passes: report.passes,
            repairs: report.repairs.into_iter().collect(),
        })
    };
    match page.await {
        Ok(page) => render(StatusCode::OK, &page),
        Err(error) => error_page(Some(&signed), error),
    }
}
