//! Where the store lives: `--database-url`. An SQLite file (the embedded default, one host) or a
//! PostgreSQL database (several replicas). A PostgreSQL URL may hold a password, so it never prints
//! itself whole.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// A parsed `--database-url`.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// `sqlite://PATH`: a file, made if missing, with its `-wal` and `-shm` beside it.
    Sqlite(PathBuf),
    /// `postgres://…` (or `postgresql://…`), as libpq reads it: user, password, host, port,
    /// database and options such as `sslmode`.
    Postgres(String),
}

impl DatabaseUrl {
    /// The default: `dbroker.db` in the data directory.
    pub fn in_data_dir(data_dir: &Path) -> DatabaseUrl {
        DatabaseUrl::Sqlite(data_dir.join("dbroker.db"))
    }

    /// Whether the store is a file on this host's disk (so only processes on this host can share it).
    pub fn is_embedded(&self) -> bool {
        matches!(self, DatabaseUrl::Sqlite(_))
    }
}

impl FromStr for DatabaseUrl {
    type Err = String;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        if let Some(path) = url.strip_prefix("sqlite://") {
            // `sqlite://` with no path, or with sqlx's query options, is not a file this can own.
            if path.is_empty() || path.contains('?') {
                return Err(format!("{url:?}: give the file, as sqlite:///var/lib/dbroker/dbroker.db"));
            }
            return Ok(DatabaseUrl::Sqlite(PathBuf::from(path)));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            // Parsed here, so that a malformed URL is refused at start-up, naming no password.
            url.parse::<sqlx::postgres::PgConnectOptions>()
                .map_err(|e| format!("{}: not a PostgreSQL URL libpq would read ({e})", redacted(url)))?;
            return Ok(DatabaseUrl::Postgres(url.to_string()));
        }
        Err(format!("{}: a database URL begins with sqlite:// or postgres://", redacted(url)))
    }
}

/// A URL with any password between `:` and `@` of its authority replaced.
fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return "the database URL".into() };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rsplit_once('@') {
        Some((credentials, host)) => {
            let user = credentials.split_once(':').map_or(credentials, |(user, _)| user);
            let password = if credentials.contains(':') { ":[redacted]" } else { "" };
            format!("{scheme}://{user}{password}@{host}{}", &rest[authority_end..])
        }
        None => url.to_string(),
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DatabaseUrl::Sqlite(path) => write!(f, "sqlite://{}", path.display()),
            DatabaseUrl::Postgres(url) => f.write_str(&redacted(url)),
        }
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_and_postgres_urls_parse_and_anything_else_is_refused_with_the_schemes_named() {
        assert_eq!("sqlite:///var/lib/d.db".parse(), Ok(DatabaseUrl::Sqlite("/var/lib/d.db".into())));
        assert!(matches!("postgres://u:p@db:5432/dbroker".parse(), Ok(DatabaseUrl::Postgres(_))));
        assert!(matches!("postgresql://db/dbroker?sslmode=require".parse(), Ok(DatabaseUrl::Postgres(_))));
        let refused = "mysql://u:hunter2@db/x".parse::<DatabaseUrl>().unwrap_err();
        assert!(refused.contains("sqlite://") && refused.contains("postgres://"), "{refused}");
        assert!("sqlite://".parse::<DatabaseUrl>().is_err());
    }

    #[test]
    fn a_postgres_urls_password_never_prints() {
        let url: DatabaseUrl = "postgres://dbroker:hunter2@db:5432/dbroker".parse().unwrap();
        let shown = format!("{url} {url:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("postgres://dbroker:[redacted]@db:5432/dbroker"), "{shown}");
        let refused = "mysql://u:hunter2@db/x".parse::<DatabaseUrl>().unwrap_err();
        assert!(!refused.contains("hunter2"), "{refused}");
    }
}
