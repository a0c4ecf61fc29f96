//! The HTTP API's requests and answers, each a type: what the handlers read and write, what the
//! OpenAPI document (`api::openapi`) is generated from, and what a Rust client may reuse (each
//! deserializes what it serializes). The values' own constraints live in their newtypes
//! (`crate::model`), whose schemas state them.

use serde::{Deserialize, Deserializer, Serialize};
use utoipa::{IntoParams, ToSchema};

pub use super::rate_limit::{Class, CountedBy, Throttled};
use crate::model::{
    BackupId, BackupKind, BackupState, Charset, Collation, DatabaseName, Engine, InstanceId, InstanceName, MemoryMb,
    OperationId, OperationKind, OperationState, Status, UserName, VersionName,
};
use crate::model::{KeepDays, KeepLast, Schedule, TargetName};
pub use crate::store::{Event, Exceeded, LimitKind, Quarantined, Quota, QuotaOverride, Step, Usage};

// ---- v1: instances ----

/// `POST /v1/instances`. Unknown fields are refused: nothing else from a request (an image, a
/// port, privileges, mounts) can reach a container. Its schema is one shape per engine (below).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CreateInstance {
    pub engine: Engine,
    /// The engine's default version if absent.
    pub version: Option<VersionName>,
    /// Unique per user; a name in use is 409.
    pub name: Option<InstanceName>,
    /// The engine's default if absent.
    pub memory_mb: Option<MemoryMb>,
    /// MySQL only.
    pub charset: Option<Charset>,
    /// MySQL only.
    pub collation: Option<Collation>,
    /// PostgreSQL only; `app` if absent.
    pub database: Option<DatabaseName>,
    /// One of the caller's succeeded backups of this engine: the new instance answers once it
    /// holds that backup's data.
    pub from_backup: Option<BackupId>,
}

/// A create as each engine takes it: only its own options (another engine's is 422), and its
/// memory bounds from the built-in catalogue (a configuration file may change them; `GET
/// /v1/engines` says what they are).
impl utoipa::PartialSchema for CreateInstance {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{AdditionalProperties, OneOfBuilder, Schema};
        use utoipa::openapi::{ObjectBuilder, Ref, RefOr, Type};
        let optional = |schema: RefOr<Schema>| {
            Schema::OneOf(OneOfBuilder::new().item(schema).item(ObjectBuilder::new().schema_type(Type::Null)).build())
        };
        let named = |name: &str| RefOr::Ref(Ref::from_schema_name(name));
        let mut shapes = OneOfBuilder::new().description(Some(
            "A create: the engine, and the fields it takes (each optional); any other field is 422.",
        ));
        for engine in Engine::ALL {
            let profile = crate::engines::profile(engine);
            let memory = ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(profile.memory.min.0))
                .maximum(Some(profile.memory.max.0))
                .description(Some(format!("MiB; {} if absent", profile.memory.default.0)));
            let mut shape = ObjectBuilder::new()
                .schema_type(Type::Object)
                .property("engine", ObjectBuilder::new().schema_type(Type::String).enum_values(Some([engine.as_str()])))
                .required("engine")
                .property("version", optional(named("VersionName")))
                .property("name", optional(named("InstanceName")))
                .property("memory_mb", optional(memory.into()))
                .property("from_backup", optional(named("BackupId")))
                .additional_properties(Some(AdditionalProperties::FreeForm(false)));
            for option in profile.options {
                let schema = match *option {
                    "charset" => "Charset",
                    "collation" => "Collation",
                    _ => "DatabaseName",
                };
                shape = shape.property(*option, optional(named(schema)));
            }
            shapes = shapes.item(shape);
        }
        shapes.into()
    }
}

impl ToSchema for CreateInstance {
    fn schemas(schemas: &mut Vec<(String, utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>)>) {
        use utoipa::PartialSchema;
        schemas.extend([
            ("VersionName".into(), VersionName::schema()),
            ("InstanceName".into(), InstanceName::schema()),
            ("Charset".into(), Charset::schema()),
            ("Collation".into(), Collation::schema()),
            ("DatabaseName".into(), DatabaseName::schema()),
            ("BackupId".into(), BackupId::schema()),
        ]);
    }
}

/// `PATCH /v1/instances/{id}`: what can change in place.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeInstance {
    pub memory_mb: MemoryMb,
}

/// An instance as its owner sees it, with its credentials.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct InstanceView {
    pub id: InstanceId,
    pub name: InstanceName,
    pub engine: Engine,
    pub version: String,
    pub image: String,
    pub status: Status,
    /// Why the status is what it is, when that is not obvious (a failure, an exit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    /// Present (true) only when the server was killed for passing its memory cap.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub oom_killed: bool,
    /// The memory cap, MiB.
    pub memory_mb: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub charset: Option<Charset>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collation: Option<Collation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<DatabaseName>,
    pub created_at: String,
    pub connection: ConnectionView,
    /// The operation in flight on the instance, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_operation: Option<OperationId>,
    /// Why the reconciler stopped retrying a repair for now, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub needs_attention: Option<String>,
}

/// `{id}` in an instance's routes. The handlers read it as text: an id that cannot exist is
/// simply not found (404), as another user's is.
#[derive(Debug, Clone, Deserialize, Serialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct InstancePath {
    /// The instance's id; another user's, or one that cannot exist, is 404.
    pub id: InstanceId,
}

/// How to reach an instance's server.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ConnectionView {
    pub host: String,
    /// `null` for a failed instance, which holds no port.
    #[schema(required = true)]
    pub port: Option<u16>,
    /// The user to log in as, for engines that have users (not Redis).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// `null` if this master key cannot decrypt it (see `needs_attention`).
    #[schema(required = true)]
    pub password: Option<String>,
    /// `null` where the port or the password is.
    #[schema(required = true)]
    pub uri: Option<String>,
}

/// `GET /v1/instances`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Instances {
    pub instances: Vec<InstanceView>,
}

/// `GET /v1/instances?engine=`.
#[derive(Debug, Deserialize, Serialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only this engine's instances.
    pub engine: Option<Engine>,
}

/// `GET /v1/instances/{id}/logs?tail=`.
#[derive(Debug, Deserialize, Serialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LogsQuery {
    /// How many of the last lines: 0 to 10000 (`provision::MAX_LOG_LINES`), 100 if absent.
    #[param(minimum = 0, maximum = 10000)]
    pub tail: Option<usize>,
}

/// `GET /v1/instances/{id}/logs`: the server's last lines, its password removed.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Logs {
    pub lines: Vec<String>,
}

/// `GET /v1/instances/{id}/events?limit=&before=`.
#[derive(Debug, Deserialize, Serialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Events a page holds: 1 to 1000, 100 if absent.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// Only events older than this one (a page's `next`).
    pub before: Option<i64>,
}

/// A page of an instance's history, oldest first; `next` is the `before` of the page of older
/// ones, `null` on the first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EventsPage {
    pub events: Vec<Event>,
    #[schema(required = true)]
    pub next: Option<i64>,
}

// ---- v1: operations ----

/// `GET /v1/instances/{id}/operations?limit=&before=`.
#[derive(Debug, Deserialize, Serialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct OperationsQuery {
    /// Operations a page holds: 1 to 100, 20 if absent.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// Only operations older than this one (a page's `next`).
    pub before: Option<OperationId>,
}

/// A change, recorded before it touches anything and run to its end.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OperationView {
    pub id: OperationId,
    pub instance_id: InstanceId,
    pub kind: OperationKind,
    pub state: OperationState,
    pub requested_by: String,
    pub created_at: String,
    pub updated_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    pub steps: Vec<Step>,
    /// A failed operation's error, as the problem its request answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Problem>,
}

/// A page of an instance's operations, newest first; `next` is the `before` of the next page,
/// `null` on the last.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OperationsPage {
    pub operations: Vec<OperationView>,
    #[schema(required = true)]
    pub next: Option<OperationId>,
}

// ---- v1: backups ----

/// `POST /v1/instances/{id}/backups`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TakeBackup {
    /// A configured target's name; the default target if absent.
    pub target: Option<TargetName>,
    /// Restore the new backup into a throwaway server and check its content (`verified_at` or
    /// `verify_error` on the answer).
    pub verify: Option<bool>,
}

/// A backup: where it is, what it holds, and whether it is proven restorable.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BackupView {
    pub id: BackupId,
    /// The instance it was taken of, which may have been deleted since.
    pub instance_id: InstanceId,
    pub engine: Engine,
    pub version: String,
    pub target: TargetName,
    /// `manual`, `scheduled` (by the instance's policy) or `safety` (before an in-place restore).
    pub kind: BackupKind,
    pub state: BackupState,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Of the stored object, once it succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    /// Of the stored object, once it succeeded: `sha256sum` of the file on the target gives it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Whether the object is sealed to the configured recipient (`age -d -i KEY | zstd -d` opens it).
    pub encrypted: bool,
    pub started_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// When a restore of it into a throwaway server held what was backed up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified_at: Option<String>,
    /// Why that check failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_error: Option<String>,
    /// The operation that took it.
    pub operation_id: OperationId,
}

/// A page of backups, newest first; `next` is the `before` of the next page, `null` on the last.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Backups {
    pub backups: Vec<BackupView>,
    #[schema(required = true)]
    pub next: Option<BackupId>,
}

/// `GET /v1/backups?instance=&limit=&before=`, and `GET /v1/instances/{id}/backups?limit=&before=`
/// (whose instance is the path's).
#[derive(Debug, Deserialize, Serialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct BackupsQuery {
    /// Only the backups of this instance (deleted or not).
    pub instance: Option<InstanceId>,
    /// Backups a page holds: 1 to 100, 20 if absent.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// Only backups older than this one (a page's `next`).
    pub before: Option<BackupId>,
}

/// `{id}` in a backup's routes.
#[derive(Debug, Clone, Deserialize, Serialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct BackupPath {
    /// The backup's id; another user's, or one that cannot exist, is 404.
    pub id: BackupId,
}

/// `PUT /v1/instances/{id}/backup-policy`.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutBackupPolicy {
    /// When to back up: a 5-field cron line (minute hour day-of-month month day-of-week), in UTC.
    pub schedule: Schedule,
    /// The default target if absent.
    pub target: Option<TargetName>,
    /// Keep at most this many scheduled backups (the newest); all if absent.
    pub keep_last: Option<KeepLast>,
    /// Remove scheduled and safety backups older than this many days; none if absent. The newest
    /// succeeded backup is kept whatever its age, and manual ones until their owner deletes them.
    pub keep_days: Option<KeepDays>,
    /// Verify each scheduled backup (see `TakeBackup::verify`); false if absent.
    pub verify: Option<bool>,
}

/// An instance's backup policy.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BackupPolicyView {
    pub schedule: Schedule,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<TargetName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_last: Option<KeepLast>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_days: Option<KeepDays>,
    pub verify: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run_at: Option<String>,
    /// When the next scheduled backup starts (within a minute).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_run_at: Option<String>,
}

/// `POST /v1/instances/{id}/restore`.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestoreInstance {
    /// One of the caller's succeeded backups, of the instance's engine.
    pub backup: BackupId,
}

/// `POST /v1/instances/{id}/clone`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CloneInstance {
    /// The new instance's name; the engine and its id if absent.
    pub name: Option<InstanceName>,
}

// ---- v1: the catalogue ----

/// `GET /v1/engines`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Engines {
    pub engines: Vec<EngineView>,
}

/// One engine of the catalogue.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EngineView {
    pub engine: Engine,
    pub versions: Vec<VersionView>,
    pub default_version: String,
    pub memory_mb: MemoryBoundsView,
    /// The create fields it takes beyond engine, name, version and memory_mb.
    #[schema(schema_with = engine_options_schema)]
    pub options: Vec<String>,
}

/// `options`: the create fields only some engines take.
fn engine_options_schema() -> utoipa::openapi::schema::Array {
    use utoipa::openapi::{ArrayBuilder, ObjectBuilder, Type};
    let option = ObjectBuilder::new().schema_type(Type::String).enum_values(Some(["charset", "collation", "database"]));
    ArrayBuilder::new()
        .items(option)
        .description(Some("The create fields it takes beyond engine, name, version and memory_mb"))
        .build()
}

/// A version of an engine and the image that runs it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VersionView {
    pub version: String,
    pub image: String,
}

/// An engine's memory bounds and default, in MiB.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
pub struct MemoryBoundsView {
    pub min: u32,
    pub max: u32,
    pub default: u32,
}

// ---- v1: stats ----

/// An instance's figures, read at `read_at`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct InstanceStatsView {
    pub id: String,
    pub read_at: String,
    pub container: ContainerStatsView,
    /// What the server says of itself; `null` if it did not answer in time (or refused), and
    /// `server_unavailable` then says why.
    #[schema(required = true)]
    pub server: Option<ServerStatsView>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_unavailable: Option<String>,
}

/// What Docker reports of the container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ContainerStatsView {
    /// The CPU time used since the container started, all cores together (user and system), in
    /// seconds: two readings make a rate.
    pub cpu_seconds: f64,
    /// Memory in use, without the page cache the kernel reclaims before the cap (as `docker
    /// stats` counts it).
    pub memory_used_bytes: u64,
    /// The memory cap: the instance's `memory_mb`, in bytes.
    pub memory_limit_bytes: u64,
}

/// What the server says of itself, by engine. Connections and clients leave out the one dbroker
/// reads these figures with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "engine", rename_all = "lowercase")]
pub enum ServerStatsView {
    Mysql {
        /// `Threads_connected`.
        connections: u64,
        /// Every database but the server's own, with its tables' data and indexes in bytes.
        databases: Vec<DatabaseSizeView>,
    },
    Redis {
        /// `used_memory`: what Redis compares with its `maxmemory`.
        used_memory_bytes: u64,
        /// Keys in all its databases.
        keys: u64,
        connected_clients: u64,
    },
    Postgres {
        /// Client connections to any of the cluster's databases.
        connections: u64,
        /// The instance's database, with its size on disk.
        database: DatabaseSizeView,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DatabaseSizeView {
    pub name: String,
    pub bytes: u64,
}

// ---- admin ----

/// `POST /v1/admin/quarantine/{container}/adopt`.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Adopt {
    /// The user who will own the adopted instance; one who is no user is 422.
    #[schema(value_type = UserName)]
    pub owner: String,
}

/// What an adopt made: the instance's id and its owner.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Adopted {
    pub id: InstanceId,
    pub owner: String,
}

/// `GET /v1/admin/quarantine`: containers found with no record.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct QuarantineList {
    pub containers: Vec<Quarantined>,
}

/// `GET /v1/admin/pool`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PoolMembers {
    pub members: Vec<PoolMember>,
}

/// A warm-pool member: started, owned by nobody.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PoolMember {
    pub id: InstanceId,
    pub engine: Engine,
    pub version: String,
    pub status: Status,
    #[schema(required = true)]
    pub port: Option<u16>,
    pub created_at: String,
}

/// `GET /v1/admin/reconciler`: whether this process leads the repairs, its passes, and its
/// repairs by kind.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ReconcilerView {
    pub leader: bool,
    pub passes: u64,
    pub repairs: std::collections::BTreeMap<String, u64>,
}

/// `GET /v1/admin/instances`: each filter one value; paged like an instance's operations.
#[derive(Debug, Deserialize, Serialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AllInstancesQuery {
    /// Only this user's instances; a name that is no user is 422.
    pub owner: Option<UserName>,
    pub engine: Option<Engine>,
    pub status: Option<Status>,
    /// Instances a page holds: 1 to 1000, 100 if absent.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// Only instances older than this one (a page's `next`); one deleted since is 422.
    #[param(value_type = Option<InstanceId>)]
    pub before: Option<String>,
}

/// An instance as admins see it: whose it is and how it stands, never its credentials (an admin
/// does not use other users' databases; the owner has them).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OwnedInstanceView {
    pub id: InstanceId,
    pub owner: String,
    pub name: InstanceName,
    pub engine: Engine,
    pub version: String,
    pub image: String,
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub oom_killed: bool,
    /// The memory cap, MiB.
    pub memory_mb: u32,
    /// `null` for a failed instance, which holds no port.
    #[schema(required = true)]
    pub port: Option<u16>,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_operation: Option<OperationId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub needs_attention: Option<String>,
}

/// A page of every user's instances, newest first; `next` is the `before` of the next page,
/// `null` on the last.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OwnedInstancesPage {
    pub instances: Vec<OwnedInstanceView>,
    #[schema(required = true)]
    pub next: Option<InstanceId>,
}

// ---- admin: users ----

/// `POST /v1/admin/users`.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddUser {
    pub name: UserName,
    #[serde(default)]
    pub admin: bool,
    /// Their own quota; a limit left out is the configuration's default.
    #[serde(default, deserialize_with = "super::json::object")]
    pub quota: QuotaOverride,
}

/// `PATCH /v1/admin/users/{name}/quota`: a number sets the user's own limit, `null` puts the
/// configuration's default back, a limit left out stays as it is (at least one is given).
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(min_properties = 1)]
pub struct ChangeQuota {
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = crate::store::instances_limit_schema)]
    pub instances: Option<Option<u32>>,
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = crate::store::memory_limit_schema)]
    pub memory_mb: Option<Option<u64>>,
}

/// A limit that is there, a whole number or `null`: `Some(None)` for `null`, told apart from a
/// limit left out (`None`, by `#[serde(default)]`).
fn present<'de, D: Deserializer<'de>, T: TryFrom<u64>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    crate::model::optional_whole_number(d).map(Some)
}

/// A user as admins see them: never their token (only its hash is kept).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UserView {
    pub name: String,
    pub admin: bool,
    /// A demo user (`--demo-users`), whose token is their name.
    pub demo: bool,
    pub disabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_at: Option<String>,
    pub created_at: String,
    /// Their own quota: a limit is `null` where it is the configuration's default.
    pub quota: QuotaOverride,
    /// What they hold, as their quota counts it (in the list only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

/// A user and their new token: the only answer that ever holds it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UserWithToken {
    #[serde(flatten)]
    pub user: UserView,
    pub token: String,
    /// Said when a demo user became a real one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

/// `GET /v1/admin/users`: every user by name, with what they hold and the default quota.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Users {
    pub users: Vec<UserView>,
    /// The configuration's quota, which every limit that is `null` in a user's is.
    pub default_quota: Quota,
}

// ---- health ----

/// `GET /healthz`: each part `ok`, or what is wrong with it (the details are in the log).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `ok` or `unavailable`.
    #[schema(examples("ok"))]
    pub store: String,
    /// `ok` or `unreachable`.
    #[schema(examples("ok"))]
    pub docker: String,
}

// ---- errors ----

/// An error, as `application/problem+json` (RFC 9457): `type` is always `about:blank`, `title`
/// the status's reason; some carry more members (`extra`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    #[schema(examples("about:blank"))]
    pub kind: String,
    #[schema(examples("Not Found"))]
    pub title: String,
    pub status: u16,
    /// What went wrong, and what to do about it.
    pub detail: String,
    #[serde(flatten)]
    pub extra: ProblemExtra,
}

/// What some problems say besides their detail; the old routes' error envelope carries it as its
/// `data` (`{}` when empty).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ProblemExtra {
    /// `quota_exceeded` (403), `host_memory_exhausted` (503) or `rate_limited` (429).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// The operation in flight on the instance (409).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<OperationId>,
    /// The server's last lines, when it did not become ready (502).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_logs: Option<Vec<String>>,
    /// Which quota a change would pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<LimitKind>,
    /// A quota's limit (instances, or MiB), or which rate limit (`reads` or `changes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<ProblemLimit>,
    /// What is in use of the quota.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_use: Option<u64>,
    /// What the change asked for beyond it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested: Option<u64>,
    /// How a rate-limited request was counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counted_by: Option<CountedBy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_second: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
    /// Whole seconds to wait, as `Retry-After` says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
}

/// A problem's `limit`: a quota's number, or a rate limit's class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum ProblemLimit {
    Quota(u64),
    Rate(Class),
}

impl ProblemExtra {
    /// A quota or the host's budget that a change would pass, with the error's code.
    pub fn exceeded(code: &str, exceeded: Exceeded) -> Self {
        ProblemExtra {
            code: Some(code.to_string()),
            quota: Some(exceeded.quota),
            limit: Some(ProblemLimit::Quota(exceeded.limit)),
            in_use: Some(exceeded.in_use),
            requested: Some(exceeded.requested),
            ..Default::default()
        }
    }

    /// A rate limit the request went beyond.
    pub fn throttled(throttled: &Throttled) -> Self {
        ProblemExtra {
            code: Some("rate_limited".into()),
            limit: Some(ProblemLimit::Rate(throttled.limit)),
            counted_by: Some(throttled.counted_by),
            per_second: Some(throttled.per_second),
            burst: Some(throttled.burst),
            retry_after: Some(throttled.retry_after),
            ..Default::default()
        }
    }
}

// ---- the old tool's routes ----

/// The old tool's envelope: `code` is the HTTP status (200 on success), `msg` `success` or the
/// error's detail, `data` the answer (or an error's `ProblemExtra`, `{}` when it has none).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Envelope<T> {
    pub code: u16,
    pub msg: String,
    pub data: T,
}

impl<T> Envelope<T> {
    pub fn success(data: T) -> Self {
        Envelope { code: 200, msg: "success".into(), data }
    }
}

/// `POST /mysql`: the old defaults (`utf8` / `utf8_general_ci`) when nothing is asked.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateMysql {
    pub charset: Option<Charset>,
    /// The old tool's name (sic) for the collation.
    pub collection: Option<Collation>,
}

/// `POST /redis`.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRedis {
    #[serde(default, deserialize_with = "number_or_numeric_string")]
    #[schema(schema_with = legacy_redis_memory_schema)]
    pub memory: Option<MemoryMb>,
}

/// `POST /postgres`.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePostgres {
    pub database: Option<DatabaseName>,
    #[serde(default, deserialize_with = "number_or_numeric_string")]
    #[schema(schema_with = legacy_postgres_memory_schema)]
    pub memory: Option<MemoryMb>,
}

/// Old clients send `memory` as `500` or as `"500"`.
fn number_or_numeric_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<MemoryMb>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumberOrString {
        Number(MemoryMb),
        Text(String),
    }
    match Option::<NumberOrString>::deserialize(d)? {
        None => Ok(None),
        Some(NumberOrString::Number(n)) => Ok(Some(n)),
        Some(NumberOrString::Text(s)) => {
            s.trim().parse().map(|n| Some(MemoryMb(n))).map_err(|_| {
                serde::de::Error::custom(format!("memory must be a whole number of MB, like 500, not {s:?}"))
            })
        }
    }
}

fn legacy_redis_memory_schema() -> utoipa::openapi::schema::Schema {
    legacy_memory_schema(Engine::Redis)
}

fn legacy_postgres_memory_schema() -> utoipa::openapi::schema::Schema {
    legacy_memory_schema(Engine::Postgres)
}

/// `memory` as the old clients send it: MiB, a number or a string of digits (the engine's
/// default if absent), within the engine's bounds of the built-in catalogue, as the v1 create's.
/// A string's bounds are in no schema (JSON Schema bounds numbers only): outside them it is 422.
fn legacy_memory_schema(engine: Engine) -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::{ObjectBuilder, Type, schema::OneOfBuilder};
    let memory = crate::engines::profile(engine).memory;
    OneOfBuilder::new()
        .item(ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(memory.min.0)).maximum(Some(memory.max.0)))
        .item(ObjectBuilder::new().schema_type(Type::String).pattern(Some(r"^\s*[0-9]{2,5}\s*$")))
        .item(ObjectBuilder::new().schema_type(Type::Null))
        .description(Some(format!(
            "MiB, {} to {}, as a number or a string of digits ({} if absent or null)",
            memory.min.0, memory.max.0, memory.default.0
        )))
        .build()
        .into()
}

/// An instance as the old tool showed it: `user` for engines with users, `database` for
/// PostgreSQL.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LegacyInstance {
    pub host: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// `null` if this master key cannot decrypt it.
    #[schema(required = true)]
    pub pwd: Option<String>,
    /// `null` for a failed instance, which holds no port.
    #[schema(required = true)]
    pub port: Option<u16>,
    #[serde(rename = "dockerId")]
    pub docker_id: InstanceId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<DatabaseName>,
}
