//! Validated values. Each is parsed once, where it enters (a request body, a flag, a store row), so
//! everything past that point can trust it: a bad value is refused before any Docker call.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why a value was refused, in words a person can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

/// Implements `Deserialize` through `FromStr`, so a bad value fails while the body is read.
macro_rules! deserialize_from_str {
    ($t:ty) => {
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

/// States a string newtype's constraints in the OpenAPI document, as its `FromStr` checks them, so
/// that a generated client or a fuzzer sends values the server takes.
macro_rules! string_schema {
    ($t:ty, $pattern:literal, $min:literal..=$max:literal, $example:literal, $description:literal) => {
        impl utoipa::PartialSchema for $t {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::Type::String)
                    .pattern(Some($pattern))
                    .min_length(Some($min))
                    .max_length(Some($max))
                    .description(Some($description))
                    .examples([$example])
                    .into()
            }
        }
        impl utoipa::ToSchema for $t {}
    };
}

/// An instance's id: 12 lowercase hex characters, the length of a short Docker id, which the old
/// tool's clients store as `dockerId`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct InstanceId(String);

impl InstanceId {
    pub fn random() -> Self {
        let bytes: [u8; 6] = rand::random();
        Self(hex::encode(bytes))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for InstanceId {
    type Err = Invalid;
    fn from_str(s: &str) -> Result<Self, Invalid> {
        if s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            Ok(Self(s.to_string()))
        } else {
            Err(Invalid("an instance id is 12 lowercase hex characters".into()))
        }
    }
}

deserialize_from_str!(InstanceId);
string_schema!(InstanceId, "^[0-9a-f]{12}$", 12..=12, "3f2a9c01b7de", "An instance's id: 12 lowercase hex characters.");

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A user-chosen instance name: `[a-z0-9-]{1,63}`, so it is safe in a container name, a DNS label,
/// a log line and a shell, wherever it ends up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct InstanceName(String);

impl InstanceName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for InstanceName {
    type Err = Invalid;
    fn from_str(s: &str) -> Result<Self, Invalid> {
        let allowed = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-';
        if (1..=63).contains(&s.len()) && s.bytes().all(allowed) {
            Ok(Self(s.to_string()))
        } else {
            Err(Invalid("name must be 1 to 63 characters of lowercase letters, digits and '-'".into()))
        }
    }
}
deserialize_from_str!(InstanceName);
string_schema!(InstanceName, "^[a-z0-9-]{1,63}$", 1..=63, "shop", "An instance's name, unique per user.");

/// A memory cap in MiB. Its bounds depend on the engine, so they are checked by the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct MemoryMb(pub u32);

impl<'de> Deserialize<'de> for MemoryMb {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        whole_number(d).map(MemoryMb)
    }
}

/// A whole number, also when JSON spells it as a float: `1024.0` is the integer 1024 to JSON
/// Schema (and so to the API's document, and to clients that write every number as a float),
/// while serde takes only `1024` for an integer type. A fraction, or a number out of `T`'s range,
/// is refused as serde refuses it.
pub fn whole_number<'de, D: serde::Deserializer<'de>, T: TryFrom<u64>>(d: D) -> Result<T, D::Error> {
    struct Whole<T>(std::marker::PhantomData<T>);

    impl<T: TryFrom<u64>> serde::de::Visitor<'_> for Whole<T> {
        type Value = T;

        fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
            formatter.write_str("a whole number, 0 or more")
        }

        fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<T, E> {
            T::try_from(n).map_err(|_| E::invalid_value(serde::de::Unexpected::Unsigned(n), &self))
        }

        fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<T, E> {
            let n = u64::try_from(n).map_err(|_| E::invalid_value(serde::de::Unexpected::Signed(n), &self))?;
            self.visit_u64(n)
        }

        fn visit_f64<E: serde::de::Error>(self, n: f64) -> Result<T, E> {
            // Below 2^64 every float is exact as a u64 when it has no fraction.
            if n.fract() == 0.0 && (0.0..18_446_744_073_709_551_616.0).contains(&n) {
                self.visit_u64(n as u64)
            } else {
                Err(E::invalid_value(serde::de::Unexpected::Float(n), &self))
            }
        }
    }

    d.deserialize_any(Whole(std::marker::PhantomData))
}

/// `whole_number`, or `null`.
pub fn optional_whole_number<'de, D: serde::Deserializer<'de>, T: TryFrom<u64>>(d: D) -> Result<Option<T>, D::Error> {
    struct WholeNumber<T>(T);

    impl<'de, T: TryFrom<u64>> Deserialize<'de> for WholeNumber<T> {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            whole_number(d).map(WholeNumber)
        }
    }

    Ok(Option::<WholeNumber<T>>::deserialize(d)?.map(|whole| whole.0))
}

/// The built-in catalogue's widest bounds (Redis's least, every engine's most): each engine's
/// own, which a configuration file may change, are in `GET /v1/engines`.
const MEMORY_MB_SCHEMA_MIN: u32 = 16;
const MEMORY_MB_SCHEMA_MAX: u32 = 65536;

impl utoipa::PartialSchema for MemoryMb {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::Type::Integer)
            .minimum(Some(MEMORY_MB_SCHEMA_MIN))
            .maximum(Some(MEMORY_MB_SCHEMA_MAX))
            .description(Some(
                "A memory cap in MiB, within the engine's bounds (GET /v1/engines: by default MySQL 256, \
                 Redis 16, PostgreSQL 128, to 65536); outside them 422.",
            ))
            .examples([1024])
            .into()
    }
}
impl utoipa::ToSchema for MemoryMb {}

impl MemoryMb {
    pub fn bytes(self) -> i64 {
        i64::from(self.0) * 1024 * 1024
    }
}

/// A MySQL character set's name: lowercase letters, digits and '_', as every server spells them.
/// Whether the version's server has it is its own list's to say (see [`ServerCollations`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Charset(String);

/// The longest character set name a server takes (`CHARACTER_SET_NAME` is `varchar(32)`).
const CHARSET_MAX_LEN: usize = 32;
/// The longest collation name a server takes (`COLLATION_NAME` is `varchar(64)`).
const COLLATION_MAX_LEN: usize = 64;

/// Whether `s` is shaped like a character set's or a collation's name: safe as a server argument.
fn is_charset_word(s: &str, max_len: usize) -> bool {
    (1..=max_len).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// `utf8` is the old name of `utf8mb3` on MySQL 8 and MariaDB 10.6 and later: their lists of
/// collations name only `utf8mb3` (`utf8mb3_general_ci`), but both servers take the old names.
const OLD_UTF8: &str = "utf8";
const UTF8MB3: &str = "utf8mb3";

impl Charset {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name a server's list gives it: `utf8mb3` for `utf8`, else its own.
    fn listed_name(&self) -> &str {
        if self.0 == OLD_UTF8 { UTF8MB3 } else { &self.0 }
    }
}

impl FromStr for Charset {
    type Err = Invalid;
    fn from_str(s: &str) -> Result<Self, Invalid> {
        if is_charset_word(s, CHARSET_MAX_LEN) {
            Ok(Self(s.to_string()))
        } else {
            Err(Invalid(format!(
                "unknown character set {s:?}: a character set's name is lowercase letters, digits and '_', \
                 like utf8mb4 or latin1"
            )))
        }
    }
}
deserialize_from_str!(Charset);
string_schema!(
    Charset,
    "^[a-z0-9_]{1,32}$",
    1..=32,
    "utf8mb4",
    "A MySQL character set the version's server has (`utf8` is `utf8mb3`); one it lacks is 422."
);

/// A MySQL collation's name, checked for shape here, against its character set by
/// [`Collation::check_belongs_to`], and against the server's own list by [`ServerCollations`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Collation(String);

impl Collation {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name a server's list gives it: `utf8mb3_general_ci` for `utf8_general_ci`, else its own.
    fn listed_name(&self) -> std::borrow::Cow<'_, str> {
        match self.0.strip_prefix(OLD_UTF8).and_then(|rest| rest.strip_prefix('_')) {
            Some(rest) => format!("{UTF8MB3}_{rest}").into(),
            None => self.0.as_str().into(),
        }
    }

    /// Refuses a collation of another character set (`latin1_swedish_ci` with `utf8mb4`), by the
    /// servers' naming rule: a collation's name is its character set's and a suffix (`binary` is
    /// both). Cheap, before anything runs; the server's list has the last word.
    pub fn check_belongs_to(&self, charset: &Charset) -> Result<(), Invalid> {
        let names_it = |collation: &str, charset: &str| {
            collation == charset || collation.strip_prefix(charset).is_some_and(|rest| rest.starts_with('_'))
        };
        if names_it(&self.0, &charset.0) || names_it(&self.listed_name(), charset.listed_name()) {
            Ok(())
        } else {
            Err(Invalid(format!(
                "collation {:?} is not a collation of character set {:?}; use one named {}_..., \
                 for example {}_general_ci or {}_bin",
                self.0, charset.0, charset.0, charset.0, charset.0
            )))
        }
    }
}

impl FromStr for Collation {
    type Err = Invalid;
    fn from_str(s: &str) -> Result<Self, Invalid> {
        if is_charset_word(s, COLLATION_MAX_LEN) {
            Ok(Self(s.to_string()))
        } else {
            Err(Invalid(format!(
                "unknown collation {s:?}: a collation's name is lowercase letters, digits and '_', \
                 like utf8mb4_general_ci or latin1_bin"
            )))
        }
    }
}
deserialize_from_str!(Collation);
string_schema!(
    Collation,
    "^[a-z0-9_]{1,64}$",
    1..=64,
    "utf8mb4_bin",
    "A MySQL collation of the character set, as the version's server lists them; another is 422."
);

/// The collations a MySQL or MariaDB server has, each with its character set, as the server
/// itself lists them: what a requested character set and collation are checked against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerCollations(std::collections::BTreeMap<String, String>);

/// How many of a character set's collations a refusal names as examples.
const COLLATION_EXAMPLES: usize = 8;

impl ServerCollations {
    /// From the server's `(collation, character set)` pairs.
    pub fn new(pairs: impl IntoIterator<Item = (String, String)>) -> Self {
        Self(pairs.into_iter().collect())
    }

    /// Refuses a character set the server lacks, or a collation it lacks or has for another
    /// character set, with the field to blame and what it has instead. `server` says which server
    /// it is, for the message.
    pub fn check(
        &self,
        server: &str,
        charset: &Charset,
        collation: Option<&Collation>,
    ) -> Result<(), (&'static str, Invalid)> {
        let is_this_charset = |listed: &str| listed == charset.0 || listed == charset.listed_name();
        let of_charset: Vec<&str> =
            self.0.iter().filter(|(_, cs)| is_this_charset(cs)).map(|(name, _)| name.as_str()).collect();
        if of_charset.is_empty() {
            let mut charsets: Vec<&str> = self.0.values().map(String::as_str).collect();
            charsets.sort_unstable();
            charsets.dedup();
            let reason = format!("unknown character set {:?}: {server} has {}", charset.0, charsets.join(", "));
            return Err(("charset", Invalid(reason)));
        }
        let Some(collation) = collation else { return Ok(()) };
        let listed = self.0.get(&collation.0).or_else(|| self.0.get(collation.listed_name().as_ref()));
        if listed.is_some_and(|cs| is_this_charset(cs)) {
            return Ok(());
        }
        let examples = of_charset.iter().take(COLLATION_EXAMPLES).copied().collect::<Vec<_>>().join(", ");
        let more = of_charset.len().saturating_sub(COLLATION_EXAMPLES);
        let more = if more > 0 { format!(" and {more} more") } else { String::new() };
        let reason = format!(
            "unknown collation {:?}: {server} has no such collation of {}; it has {examples}{more}",
            collation.0, charset.0
        );
        Err(("collation", Invalid(reason)))
    }
}

/// A database engine dbroker can provision. What each needs lives in [`crate::engines`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    Mysql,
    Redis,
    Postgres,
}

impl Engine {
    pub const ALL: [Engine; 3] = [Engine::Mysql, Engine::Redis, Engine::Postgres];

    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Mysql => "mysql",
            Engine::Redis => "redis",
            Engine::Postgres => "postgres",
        }
    }
}

impl FromStr for Engine {
    type Err = Invalid;
    fn from_str(s: &str) -> Result<Self, Invalid> {
        Engine::ALL
            .into_iter()
            .find(|e| e.as_str() == s)
            .ok_or_else(|| Invalid(format!("unknown engine {s:?}; use mysql, redis or postgres")))
    }
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A PostgreSQL database name: `[a-z_][a-z0-9_]{0,62}`, a valid unquoted identifier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct DatabaseName(String);

impl DatabaseName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The databases every PostgreSQL cluster has already: an instance's own database is another.
const RESERVED_DATABASES: &[&str] = &["postgres", "template0", "template1"];

impl FromStr for DatabaseName {
    type Err = Invalid;
    fn from_str(s: &str) -> Result<Self, Invalid> {
        let first_ok = s.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b == b'_');
        let rest_ok = s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if RESERVED_DATABASES.contains(&s) {
            Err(Invalid(format!("{s:?} is one of PostgreSQL's own databases; choose another name")))
        } else if first_ok && rest_ok && s.len() <= 63 {
            Ok(Self(s.to_string()))
        } else {
            Err(Invalid(
                "a database name is 1 to 63 lowercase letters, digits and '_', starting with a letter or '_'".into(),
            ))
        }
    }
}
deserialize_from_str!(DatabaseName);
string_schema!(
    DatabaseName,
    "^(?!(postgres|template0|template1)$)[a-z_][a-z0-9_]{0,62}$",
    1..=63,
    "orders",
    "A PostgreSQL database name: not one of PostgreSQL's own (postgres, template0, template1)."
);

/// A name from an engine's catalogue of versions (`8.0`, `16`): checked against the catalogue
/// by the provisioning layer, here only for shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct VersionName(String);

impl VersionName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for VersionName {
    type Err = Invalid;
    fn from_str(s: &str) -> Result<Self, Invalid> {
        let allowed = |b: u8| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_';
        if (1..=32).contains(&s.len()) && s.bytes().all(allowed) {
            Ok(Self(s.to_string()))
        } else {
            Err(Invalid("a version is 1 to 32 letters, digits, '.', '-' or '_', like 8.0".into()))
        }
    }
}
deserialize_from_str!(VersionName);
string_schema!(
    VersionName,
    "^[A-Za-z0-9._-]{1,32}$",
    1..=32,
    "8.0",
    "A version name from the engine's catalogue (GET /v1/engines); one it does not list is 422."
);

/// What an instance has that only its engine has: a MySQL server's character set and collation,
/// a PostgreSQL cluster's database; Redis has none. Typed from the request to the store and back,
/// so no layer re-parses them, and an option of another engine cannot be expressed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineSettings {
    Mysql { charset: Option<Charset>, collation: Option<Collation> },
    Redis,
    Postgres { database: DatabaseName },
}

impl EngineSettings {
    /// The settings from their stored parts; refused when a part does not parse or belongs to
    /// another engine.
    pub fn from_parts(
        engine: Engine,
        charset: Option<&str>,
        collation: Option<&str>,
        database: Option<&str>,
    ) -> Result<Self, Invalid> {
        let misplaced = |what: &str| Invalid(format!("{engine} instances have no {what}"));
        match engine {
            Engine::Mysql if database.is_none() => Ok(EngineSettings::Mysql {
                charset: charset.map(str::parse).transpose()?,
                collation: collation.map(str::parse).transpose()?,
            }),
            Engine::Postgres if charset.is_none() && collation.is_none() => Ok(EngineSettings::Postgres {
                database: database.ok_or_else(|| Invalid("a PostgreSQL instance has a database".into()))?.parse()?,
            }),
            Engine::Redis if charset.is_none() && collation.is_none() && database.is_none() => {
                Ok(EngineSettings::Redis)
            }
            Engine::Mysql => Err(misplaced("database")),
            Engine::Postgres | Engine::Redis => Err(misplaced("character set or collation")),
        }
    }

    pub fn engine(&self) -> Engine {
        match self {
            EngineSettings::Mysql { .. } => Engine::Mysql,
            EngineSettings::Redis => Engine::Redis,
            EngineSettings::Postgres { .. } => Engine::Postgres,
        }
    }

    pub fn charset(&self) -> Option<&Charset> {
        match self {
            EngineSettings::Mysql { charset, .. } => charset.as_ref(),
            _ => None,
        }
    }

    pub fn collation(&self) -> Option<&Collation> {
        match self {
            EngineSettings::Mysql { collation, .. } => collation.as_ref(),
            _ => None,
        }
    }

    pub fn database(&self) -> Option<&DatabaseName> {
        match self {
            EngineSettings::Postgres { database } => Some(database),
            _ => None,
        }
    }
}

/// A small enum stored as text (with a `CHECK` listing the same words in the schema) and sent as
/// that word on the wire: `as_str`, `FromStr`, `Display` and `ALL` written once.
macro_rules! text_enum {
    ($(#[$meta:meta])* pub enum $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($(#[$vmeta])* $variant,)+ }

        impl $name {
            pub const ALL: &[$name] = &[$($name::$variant,)+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text,)+ }
            }
        }

        impl FromStr for $name {
            type Err = Invalid;
            fn from_str(s: &str) -> Result<Self, Invalid> {
                $name::ALL.iter().copied().find(|v| v.as_str() == s).ok_or_else(|| {
                    let known: Vec<&str> = $name::ALL.iter().map(|v| v.as_str()).collect();
                    Invalid(format!("{s:?} is not one of {}", known.join(", ")))
                })
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
        deserialize_from_str!($name);

        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::Type::String)
                    .enum_values(Some($name::ALL.iter().map(|v| v.as_str())))
                    .into()
            }
        }
        impl utoipa::ToSchema for $name {}
    };
}

text_enum! {
    /// Which server a MySQL image runs: Oracle's MySQL or MariaDB. Both speak the same protocol
    /// and take the same options dbroker passes; a fact of the image, which dbroker reads from it
    /// (see `provision::image_facts`). Stored as text, with a `CHECK` in the schema.
    pub enum Flavor {
        Mysql = "mysql",
        Mariadb = "mariadb",
        /// Neither server is where the official images keep it: not a MySQL image, as far as
        /// dbroker can tell. It gets no template, and no list of collations is read from it: its
        /// server, if it is one, reports what it lacks when it starts.
        Unrecognised = "unrecognised",
    }
}

text_enum! {
    /// Where an instance is in its life. Stored as text, with a `CHECK` in the schema.
    pub enum Status {
        /// The record exists; its container is being created or is not ready yet.
        Provisioning = "provisioning",
        /// The database accepted its credentials.
        Running = "running",
        /// Stopped by its owner; keeps its port, data and credentials.
        Stopped = "stopped",
        /// Its server died on its own (exit code, OOM); Docker's restart policy brings it back.
        Exited = "exited",
        /// A create that could not finish was rolled back, or the container and volume were
        /// removed outside dbroker (see its `status_reason`).
        Failed = "failed",
        /// A delete is removing its container and volume.
        Deleting = "deleting",
    }
}

text_enum! {
    /// What happened to an instance, in its history. Stored as text, with a `CHECK` in the schema.
    pub enum EventKind {
        Created = "created",
        Ready = "ready",
        Stopped = "stopped",
        Started = "started",
        Restarted = "restarted",
        Resized = "resized",
        Rotated = "rotated",
        Exited = "exited",
        Repaired = "repaired",
        Deleted = "deleted",
        Failed = "failed",
    }
}

text_enum! {
    /// What an operation changes. Stored as text, with a `CHECK` in the schema.
    pub enum OperationKind {
        Create = "create",
        Delete = "delete",
        Start = "start",
        Stop = "stop",
        Restart = "restart",
        Resize = "resize",
        Rotate = "rotate",
        Adopt = "adopt",
        /// One of the reconciler's repairs (its name is in the operation's input).
        Repair = "repair",
        /// A backup of the instance's data to a target (see `store::backups`), and its
        /// verification if asked for. A restore into a new instance, or a clone, is that
        /// instance's create.
        Backup = "backup",
        /// A backup loaded into the instance in place (after a safety backup).
        Restore = "restore",
        /// A dump its owner sent, loaded into the instance.
        Import = "import",
    }
}

text_enum! {
    /// Where an operation is. Stored as text, with a `CHECK` in the schema.
    pub enum OperationState {
        /// Recorded; its worker has not begun.
        Pending = "pending",
        Running = "running",
        Succeeded = "succeeded",
        Failed = "failed",
    }
}

impl OperationState {
    /// Whether it is still in flight (and so holds its instance).
    pub fn in_flight(self) -> bool {
        matches!(self, OperationState::Pending | OperationState::Running)
    }
}

/// An operation's id: 16 lowercase hex characters, random, so it reveals nothing of others'.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct OperationId(String);

impl OperationId {
    pub fn random() -> Self {
        let bytes: [u8; 8] = rand::random();
        Self(hex::encode(bytes))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for OperationId {
    type Err = Invalid;
    fn from_str(s: &str) -> Result<Self, Invalid> {
        if s.len() == 16 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            Ok(Self(s.to_string()))
        } else {
            Err(Invalid("an operation id is 16 lowercase hex characters".into()))
        }
    }
}
deserialize_from_str!(OperationId);
string_schema!(
    OperationId,
    "^[0-9a-f]{16}$",
    16..=16,
    "9c0e51f2a7b3d4e6",
    "An operation's id: 16 lowercase hex characters."
);

impl fmt::Display for OperationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A backup's id: 16 lowercase hex characters, random, as an operation's.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct BackupId(String);

impl BackupId {
    pub fn random() -> Self {
        let bytes: [u8; 8] = rand::random();
        Self(hex::encode(bytes))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for BackupId {
    type Err = Invalid;
    fn from_str(s: &str) -> Result<Self, Invalid> {
        if s.len() == 16 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            Ok(Self(s.to_string()))
        } else {
            Err(Invalid("a backup id is 16 lowercase hex characters".into()))
        }
    }
}
deserialize_from_str!(BackupId);
string_schema!(BackupId, "^[0-9a-f]{16}$", 16..=16, "4b1d9e07c2a8f356", "A backup's id: 16 lowercase hex characters.");

impl fmt::Display for BackupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The name of a configured backup target (`[backups.targets.NAME]`): `[a-z0-9_-]{1,32}`, so it is
/// safe in a log line, a metric's label and a file name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct TargetName(String);

impl TargetName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for TargetName {
    type Err = Invalid;
    fn from_str(s: &str) -> Result<Self, Invalid> {
        let allowed = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_';
        if (1..=32).contains(&s.len()) && s.bytes().all(allowed) {
            Ok(Self(s.to_string()))
        } else {
            Err(Invalid("a target's name is 1 to 32 characters of lowercase letters, digits, '-' and '_'".into()))
        }
    }
}

impl fmt::Display for TargetName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
deserialize_from_str!(TargetName);
string_schema!(TargetName, "^[a-z0-9_-]{1,32}$", 1..=32, "offsite", "A configured backup target's name.");

text_enum! {
    /// Where a backup is. Stored as text, with a `CHECK` in the schema.
    pub enum BackupState {
        /// Its dump is being written to the target.
        Running = "running",
        /// Its object is complete on the target, with its size and checksums.
        Succeeded = "succeeded",
        /// It did not finish (its reason says why); no object of it is kept.
        Failed = "failed",
    }
}

text_enum! {
    /// Why a backup was taken, which decides whether retention may remove it (see
    /// `provision::backup_schedule`). Stored as text, with a `CHECK` in the schema.
    pub enum BackupKind {
        /// Asked for by its owner: kept until they delete it.
        Manual = "manual",
        /// Taken by the instance's backup policy: kept as the policy's retention says.
        Scheduled = "scheduled",
        /// Taken before a restore in place, to undo it: kept for the policy's `keep_days`.
        Safety = "safety",
    }
}

/// The longest schedule taken: a cron line is a few dozen characters; a longer one is a mistake.
const SCHEDULE_MAX_LEN: usize = 100;

/// A backup policy's schedule: a 5-field cron line (minute, hour, day of month, month, day of week,
/// as crontab(5) reads them, with `@daily` and the like), read by `croner`, in UTC. Kept, stored
/// and sent as the text given; a line no date ever matches (`0 0 30 2 *`) is refused, as it would
/// never run.
#[derive(Debug, Clone)]
pub struct Schedule {
    text: String,
    cron: croner::Cron,
}

impl Schedule {
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The first time the schedule names strictly after `time`, to the second; `None` if there is
    /// none that `time`'s types can hold.
    pub fn next_after(&self, time: time::OffsetDateTime) -> Option<time::OffsetDateTime> {
        let at = chrono::DateTime::<chrono::Utc>::from_timestamp(time.unix_timestamp(), time.nanosecond())?;
        // Exclusive: croner steps to the next whole second first, so a slot is never `time` itself.
        let next = self.cron.find_next_occurrence(&at, false).ok()?;
        time::OffsetDateTime::from_unix_timestamp(next.timestamp()).ok()
    }
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}
impl Eq for Schedule {}

impl FromStr for Schedule {
    type Err = Invalid;
    fn from_str(s: &str) -> Result<Self, Invalid> {
        use croner::parser::{CronParser, Seconds, Year};
        let printable = s.bytes().all(|b| b == b' ' || b.is_ascii_graphic());
        if s.trim() != s || s.is_empty() || s.len() > SCHEDULE_MAX_LEN || !printable {
            return Err(Invalid(format!(
                "a schedule is a cron line of 1 to {SCHEDULE_MAX_LEN} printable characters, with no space around it, \
                 such as \"30 2 * * *\""
            )));
        }
        // Five fields exactly: croner also reads seconds and years, which no crontab has, and a
        // sixth field is more likely a mistake than a second.
        let parser = CronParser::builder().seconds(Seconds::Disallowed).year(Year::Disallowed).build();
        let cron = parser.parse(s).map_err(|e| {
            Invalid(format!(
                "{s:?} is not a 5-field cron line (minute hour day-of-month month day-of-week, in UTC): {e}"
            ))
        })?;
        let schedule = Schedule { text: s.to_string(), cron };
        if schedule.next_after(time::OffsetDateTime::now_utc()).is_none() {
            return Err(Invalid(format!("{s:?} names no date that comes: it would never run")));
        }
        Ok(schedule)
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for Schedule {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}
deserialize_from_str!(Schedule);

impl utoipa::PartialSchema for Schedule {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::Type::String)
            .min_length(Some(1))
            .max_length(Some(SCHEDULE_MAX_LEN))
            // Printable ASCII, with no space around it (what `from_str` checks first).
            .pattern(Some("^[!-~]([ -~]*[!-~])?$"))
            .description(Some(
                "A 5-field cron line (minute hour day-of-month month day-of-week, or @daily and the like), in UTC.",
            ))
            .examples(["30 2 * * *"])
            .into()
    }
}
impl utoipa::ToSchema for Schedule {}

/// A count of whole things with bounds, read from a JSON number (see [`whole_number`]) and refused
/// outside them.
macro_rules! bounded_count {
    ($(#[$meta:meta])* $name:ident, $min:literal..=$max:literal, $what:literal) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        #[serde(transparent)]
        pub struct $name(u32);

        impl $name {
            pub const MIN: u32 = $min;
            pub const MAX: u32 = $max;

            pub fn new(value: u32) -> Result<Self, Invalid> {
                if ($min..=$max).contains(&value) {
                    Ok(Self(value))
                } else {
                    Err(Invalid(format!(concat!($what, " is {} to {}, not {}"), $min, $max, value)))
                }
            }

            pub fn get(self) -> u32 {
                self.0
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                $name::new(whole_number(d)?).map_err(serde::de::Error::custom)
            }
        }

        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::Type::Integer)
                    .minimum(Some($min))
                    .maximum(Some($max))
                    .description(Some(concat!($what, ", ", stringify!($min), " to ", stringify!($max))))
                    .into()
            }
        }
        impl utoipa::ToSchema for $name {}
    };
}

bounded_count!(
    /// How many of a policy's newest good backups retention keeps: at least one, so a policy
    /// always leaves something to restore.
    KeepLast,
    1..=1000,
    "keep_last"
);

bounded_count!(
    /// How many days a policy's backups are kept: at most ten years.
    KeepDays,
    1..=3650,
    "keep_days"
);

/// A user's name: `[a-z0-9_-]{1,64}` (the old tool's users are `user1`, `user2`, `user3`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct UserName(String);

impl UserName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for UserName {
    type Err = Invalid;
    fn from_str(s: &str) -> Result<Self, Invalid> {
        let allowed = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_';
        if (1..=64).contains(&s.len()) && s.bytes().all(allowed) {
            Ok(Self(s.to_string()))
        } else {
            Err(Invalid("a user name is 1 to 64 characters of lowercase letters, digits, '-' and '_'".into()))
        }
    }
}

impl fmt::Display for UserName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

deserialize_from_str!(UserName);
string_schema!(UserName, "^[a-z0-9_-]{1,64}$", 1..=64, "alice", "A user's name.");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_whole_number_written_as_a_float_is_read_exactly() {
        #[derive(Deserialize)]
        struct Limit(#[serde(deserialize_with = "whole_number")] u64);
        // Schemathesis drew it: serde_json's fast float parsing read it as ...046.5, a fraction.
        let read: Limit = serde_json::from_str("3758621434141046.0").unwrap();
        assert_eq!(read.0, 3_758_621_434_141_046);
        assert!(serde_json::from_str::<Limit>("3758621434141046.5").is_err());
    }

    #[test]
    fn a_backup_id_or_target_name_of_the_wrong_shape_is_rejected() {
        assert!(BackupId::random().as_str().parse::<BackupId>().is_ok());
        for bad in ["4B1D9E07C2A8F356", "4b1d9e07c2a8f35", "../../etc/passwd", ""] {
            assert!(bad.parse::<BackupId>().is_err(), "{bad:?} was accepted");
        }
        assert!("off-site_2".parse::<TargetName>().is_ok());
        for bad in ["Offsite", "off site", "a/b", "", &"a".repeat(33)] {
            assert!(bad.parse::<TargetName>().is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn a_five_field_cron_line_is_a_schedule_kept_as_written() {
        for good in ["30 2 * * *", "*/15 * * * *", "0 3 * * MON-FRI", "@daily", "0 0 1 jan *"] {
            let schedule: Schedule = good.parse().unwrap_or_else(|e| panic!("{good:?}: {e}"));
            assert_eq!(schedule.as_str(), good);
            assert_eq!(serde_json::to_value(&schedule).unwrap(), serde_json::json!(good));
        }
    }

    #[test]
    fn a_schedule_that_is_not_a_five_field_cron_line_is_rejected_saying_why() {
        for bad in
            ["", "* * * *", "0 30 2 * * *", "0 30 2 * * * 2030", "61 * * * *", "* 24 * * *", "every day", "* * * * *\n"]
        {
            let refused = bad.parse::<Schedule>().expect_err(bad);
            assert!(refused.0.contains("cron line"), "{bad:?}: {refused}");
        }
        let refused = serde_json::from_str::<Schedule>("\"* * *\"").unwrap_err().to_string();
        assert!(refused.contains("5-field"), "{refused}");
    }

    #[test]
    fn a_schedule_no_date_matches_is_rejected_as_never_running() {
        let refused = "0 0 30 2 *".parse::<Schedule>().unwrap_err();
        assert!(refused.0.contains("never run"), "{refused}");
    }

    #[test]
    fn a_schedules_next_time_is_strictly_after_the_time_given() {
        let at =
            |text: &str| time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).unwrap();
        let nightly: Schedule = "30 2 * * *".parse().unwrap();
        assert_eq!(nightly.next_after(at("2026-03-01T01:00:00Z")), Some(at("2026-03-01T02:30:00Z")));
        assert_eq!(nightly.next_after(at("2026-03-01T02:30:00Z")), Some(at("2026-03-02T02:30:00Z")), "not itself");
        assert_eq!(nightly.next_after(at("2026-03-01T02:29:59.5Z")), Some(at("2026-03-01T02:30:00Z")));
        let minutely: Schedule = "* * * * *".parse().unwrap();
        assert_eq!(minutely.next_after(at("2026-03-01T02:30:00.25Z")), Some(at("2026-03-01T02:31:00Z")));
    }

    #[test]
    fn keep_last_and_keep_days_outside_their_bounds_are_rejected() {
        assert_eq!(serde_json::from_str::<KeepLast>("2").unwrap().get(), 2);
        assert_eq!(serde_json::from_str::<KeepDays>("30.0").unwrap().get(), 30);
        for bad in ["0", "1001", "-1", "2.5", "\"3\""] {
            assert!(serde_json::from_str::<KeepLast>(bad).is_err(), "{bad} was accepted");
        }
        assert!(serde_json::from_str::<KeepDays>("3651").is_err());
        assert!(KeepDays::new(0).unwrap_err().0.contains("keep_days is 1 to 3650"));
    }

    #[test]
    fn a_random_instance_id_is_twelve_lowercase_hex_characters() {
        let id = InstanceId::random();
        assert!(id.as_str().parse::<InstanceId>().is_ok(), "{id}");
    }

    #[test]
    fn an_instance_id_with_uppercase_or_the_wrong_length_is_rejected() {
        assert!("6AECDCDF980B".parse::<InstanceId>().is_err());
        assert!("6aecdcdf980".parse::<InstanceId>().is_err());
        assert!("../etc/pass".parse::<InstanceId>().is_err());
    }

    #[test]
    fn a_name_with_uppercase_spaces_or_metacharacters_is_rejected() {
        for bad in ["Shop", "my db", "a;rm -rf /", "x'--", "$(id)", "", &"a".repeat(64)] {
            assert!(bad.parse::<InstanceName>().is_err(), "{bad:?} was accepted");
        }
        assert!("shop-db-1".parse::<InstanceName>().is_ok());
    }

    #[test]
    fn a_charset_or_collation_that_is_not_a_plain_word_is_rejected() {
        assert!("utf8mb4".parse::<Charset>().is_ok());
        assert!("utf8mb4_unicode_520_ci".parse::<Collation>().is_ok());
        for bad in ["utf8; DROP TABLE x", "UTF8", "", "latin1 ", "$(id)", &"a".repeat(33)] {
            assert!(bad.parse::<Charset>().is_err(), "{bad:?} was accepted");
        }
        for bad in ["utf8_general_ci'", "utf8-bin", "", &"a".repeat(65)] {
            assert!(bad.parse::<Collation>().is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn a_collation_of_another_charset_is_rejected() {
        let utf8: Charset = "utf8".parse().unwrap();
        let general: Collation = "utf8_general_ci".parse().unwrap();
        let swedish: Collation = "latin1_swedish_ci".parse().unwrap();
        assert!(general.check_belongs_to(&utf8).is_ok());
        assert!(swedish.check_belongs_to(&utf8).is_err());
        // utf8mb4_general_ci starts with "utf8" but is not a collation of utf8.
        let mb4: Collation = "utf8mb4_general_ci".parse().unwrap();
        assert!(mb4.check_belongs_to(&utf8).is_err());
        // utf8 is utf8mb3's old name, either way round.
        let mb3: Collation = "utf8mb3_bin".parse().unwrap();
        assert!(mb3.check_belongs_to(&utf8).is_ok());
        assert!(general.check_belongs_to(&"utf8mb3".parse().unwrap()).is_ok());
        let binary: Charset = "binary".parse().unwrap();
        assert!("binary".parse::<Collation>().unwrap().check_belongs_to(&binary).is_ok());
    }

    #[test]
    fn a_database_name_that_is_not_a_plain_identifier_is_rejected() {
        for bad in ["", "App", "1app", "app-db", "app; DROP", &"a".repeat(64)] {
            assert!(bad.parse::<DatabaseName>().is_err(), "{bad:?} was accepted");
        }
        assert!("app_2".parse::<DatabaseName>().is_ok());
    }

    #[test]
    fn a_database_name_postgresql_keeps_for_itself_is_rejected() {
        for reserved in ["postgres", "template0", "template1"] {
            let refused = reserved.parse::<DatabaseName>().unwrap_err();
            assert!(refused.0.contains("PostgreSQL's own"), "{reserved}: {refused}");
        }
    }

    #[test]
    fn a_version_with_spaces_or_slashes_is_rejected() {
        assert!("8.0".parse::<VersionName>().is_ok());
        assert!("8.0; rm".parse::<VersionName>().is_err());
        assert!("../x".parse::<VersionName>().is_err());
    }

    /// A few rows of MariaDB 10.11's `COLLATION_CHARACTER_SET_APPLICABILITY`.
    fn mariadb_10_11() -> ServerCollations {
        let pairs = [
            ("latin2_general_ci", "latin2"),
            ("latin2_bin", "latin2"),
            ("utf8mb3_general_ci", "utf8mb3"),
            ("utf8mb4_general_ci", "utf8mb4"),
            ("utf8mb4_uca1400_ai_ci", "utf8mb4"),
            ("binary", "binary"),
        ];
        ServerCollations::new(pairs.map(|(c, cs)| (c.to_string(), cs.to_string())))
    }

    fn check(list: &ServerCollations, charset: &str, collation: Option<&str>) -> Result<(), &'static str> {
        let collation = collation.map(|c| c.parse().unwrap());
        list.check("MariaDB", &charset.parse().unwrap(), collation.as_ref()).map_err(|(field, _)| field)
    }

    #[test]
    fn a_charset_and_collation_the_server_lists_are_accepted() {
        let list = mariadb_10_11();
        assert_eq!(check(&list, "latin2", None), Ok(()));
        assert_eq!(check(&list, "latin2", Some("latin2_bin")), Ok(()));
        assert_eq!(check(&list, "utf8mb4", Some("utf8mb4_uca1400_ai_ci")), Ok(()));
        assert_eq!(check(&list, "binary", Some("binary")), Ok(()));
    }

    #[test]
    fn a_charset_the_server_does_not_list_is_refused_naming_the_charset_and_those_it_has() {
        let (field, reason) = mariadb_10_11().check("MariaDB", &"gb18030".parse().unwrap(), None).unwrap_err();
        assert_eq!(field, "charset");
        assert!(reason.0.contains("\"gb18030\"") && reason.0.contains("latin2, utf8mb3, utf8mb4"), "{reason}");
    }

    #[test]
    fn a_collation_the_server_does_not_list_is_refused_naming_the_collation_and_some_it_has() {
        let list = mariadb_10_11();
        let vietnamese = "latin2_vietnamese_ci".parse().unwrap();
        let (field, reason) = list.check("MariaDB", &"latin2".parse().unwrap(), Some(&vietnamese)).unwrap_err();
        assert_eq!(field, "collation");
        assert!(reason.0.contains("latin2_bin, latin2_general_ci"), "{reason}");
        assert_eq!(check(&list, "utf8mb4", Some("utf8mb4_0900_ai_ci")), Err("collation"));
        // Listed, but for another character set.
        assert_eq!(check(&list, "latin2", Some("binary")), Err("collation"));
    }

    #[test]
    fn the_old_utf8_names_are_found_under_utf8mb3_and_as_older_servers_list_them() {
        let newer = mariadb_10_11();
        assert_eq!(check(&newer, "utf8", Some("utf8_general_ci")), Ok(()));
        assert_eq!(check(&newer, "utf8", Some("utf8mb3_general_ci")), Ok(()));
        assert_eq!(check(&newer, "utf8", Some("utf8_bogus_ci")), Err("collation"));
        // MySQL 8.0 before 8.0.30 lists them under the old name.
        let older = ServerCollations::new([("utf8_general_ci".to_string(), "utf8".to_string())]);
        assert_eq!(check(&older, "utf8", Some("utf8_general_ci")), Ok(()));
    }
}
