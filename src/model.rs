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

/// A memory cap in MiB. Its bounds depend on the engine, so they are checked by the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MemoryMb(pub u32);

impl MemoryMb {
    pub fn bytes(self) -> i64 {
        i64::from(self.0) * 1024 * 1024
    }
}

/// A MySQL character set that MySQL and MariaDB both know.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Charset(String);

/// Character sets common to MySQL 8 and MariaDB 10.11 (`SHOW CHARACTER SET`).
const KNOWN_CHARSETS: &[&str] = &[
    "armscii8", "ascii", "big5", "binary", "cp1250", "cp1251", "cp1256", "cp1257", "cp850", "cp852", "cp866", "cp932",
    "dec8", "eucjpms", "euckr", "gb2312", "gbk", "geostd8", "greek", "hebrew", "hp8", "keybcs2", "koi8r", "koi8u",
    "latin1", "latin2", "latin5", "latin7", "macce", "macroman", "sjis", "swe7", "tis620", "ucs2", "ujis", "utf16",
    "utf16le", "utf32", "utf8", "utf8mb3", "utf8mb4",
];

impl Charset {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Charset {
    type Err = Invalid;
    fn from_str(s: &str) -> Result<Self, Invalid> {
        if KNOWN_CHARSETS.contains(&s) {
            Ok(Self(s.to_string()))
        } else {
            Err(Invalid(format!("unknown character set {s:?}; known ones are {}", KNOWN_CHARSETS.join(", "))))
        }
    }
}
deserialize_from_str!(Charset);

/// A MySQL collation, checked for shape here and against its character set by [`Collation::check_belongs_to`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Collation(String);

/// The ways a collation name ends, after its character set's name (`utf8mb4` + `_general_ci`).
/// Language-specific collations follow the same `_<language>_ci` shape.
const COLLATION_SUFFIXES: &[&str] = &[
    "general_ci",
    "general_cs",
    "bin",
    "unicode_ci",
    "unicode_520_ci",
    "general_mysql500_ci",
    "swedish_ci",
    "german1_ci",
    "german2_ci",
    "danish_ci",
    "spanish_ci",
    "spanish2_ci",
    "polish_ci",
    "czech_ci",
    "estonian_ci",
    "icelandic_ci",
    "latvian_ci",
    "lithuanian_ci",
    "persian_ci",
    "roman_ci",
    "romanian_ci",
    "sinhala_ci",
    "slovak_ci",
    "slovenian_ci",
    "turkish_ci",
    "hungarian_ci",
    "croatian_ci",
    "vietnamese_ci",
    "unicode_nopad_ci",
    "general_nopad_ci",
    "nopad_bin",
    "0900_ai_ci",
    "0900_as_ci",
    "0900_as_cs",
    "0900_bin",
    "uca1400_ai_ci",
    "uca1400_as_cs",
    "uca1400_ai_cs",
    "uca1400_as_ci",
];

impl Collation {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Refuses a collation of another character set (`latin1_swedish_ci` with `utf8mb4`).
    pub fn check_belongs_to(&self, charset: &Charset) -> Result<(), Invalid> {
        let belongs = if charset.as_str() == "binary" {
            self.0 == "binary"
        } else {
            self.0
                .strip_prefix(charset.as_str())
                .and_then(|rest| rest.strip_prefix('_'))
                .is_some_and(|suffix| COLLATION_SUFFIXES.contains(&suffix))
        };
        if belongs {
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
        let known = s == "binary"
            || KNOWN_CHARSETS.iter().any(|cs| {
                s.strip_prefix(cs)
                    .and_then(|rest| rest.strip_prefix('_'))
                    .is_some_and(|suffix| COLLATION_SUFFIXES.contains(&suffix))
            });
        if known {
            Ok(Self(s.to_string()))
        } else {
            Err(Invalid(format!(
                "unknown collation {s:?}; a collation is a character set's name and a suffix, \
                 for example utf8mb4_general_ci or latin1_bin"
            )))
        }
    }
}
deserialize_from_str!(Collation);

/// A database engine dbroker can provision. What each needs lives in [`crate::engines`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
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

/// Which server a MySQL image runs: Oracle's MySQL or MariaDB. Both speak the same protocol and
/// take the same options dbroker passes, but each has collations the other lacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Flavor {
    #[default]
    Mysql,
    Mariadb,
}

impl Collation {
    /// Refuses a collation the server flavour does not have: MySQL 8's `_0900_` collations on
    /// MariaDB, MariaDB's `_uca1400_` ones on MySQL.
    pub fn check_flavor(&self, flavor: Flavor) -> Result<(), Invalid> {
        let (foreign, server, instead) = match flavor {
            Flavor::Mariadb => ("_0900_", "MariaDB", "_unicode_520_ci or _uca1400_ai_ci"),
            Flavor::Mysql => ("_uca1400_", "MySQL", "_unicode_520_ci or _0900_ai_ci"),
        };
        if self.0.contains(foreign) {
            Err(Invalid(format!("{server} has no collation {:?}; use one ending in {instead}", self.0)))
        } else {
            Ok(())
        }
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
    };
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

impl fmt::Display for OperationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A user's name: `[a-z0-9_-]{1,64}` (the old tool's users are `user1`, `user2`, `user3`).
#[derive(Debug, Clone, PartialEq, Eq)]
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn a_known_charset_is_accepted_and_an_unknown_one_is_rejected() {
        assert!("utf8mb4".parse::<Charset>().is_ok());
        assert!("utf9".parse::<Charset>().is_err());
        assert!("utf8; DROP TABLE x".parse::<Charset>().is_err());
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

    #[test]
    fn a_collation_of_the_other_flavour_is_rejected() {
        let mysql_only: Collation = "utf8mb4_0900_ai_ci".parse().unwrap();
        let mariadb_only: Collation = "utf8mb4_uca1400_ai_ci".parse().unwrap();
        assert!(mysql_only.check_flavor(Flavor::Mariadb).is_err());
        assert!(mysql_only.check_flavor(Flavor::Mysql).is_ok());
        assert!(mariadb_only.check_flavor(Flavor::Mysql).is_err());
        assert!(mariadb_only.check_flavor(Flavor::Mariadb).is_ok());
    }

    #[test]
    fn an_unknown_collation_is_rejected() {
        assert!("utf8_bogus_ci".parse::<Collation>().is_err());
        assert!("utf8_general_ci'".parse::<Collation>().is_err());
    }
}
