//! What a query of the store is made of on either backend: its SQL, written once in the dialect
//! SQLite and PostgreSQL share (`$1` placeholders, `TRUE`/`FALSE`, `ON CONFLICT`, `RETURNING`,
//! `CAST(… AS BIGINT)`), its parameters as [`Param`]s, and its rows read through [`Columns`]. Where
//! the two really differ (how a value is stored, how a transaction takes the write lock, how a
//! row is read fastest), `sqlite` and `postgres` decide, each in one place.
//!
//! Values as each backend keeps them: integers are 64-bit (`INTEGER`, `BIGINT`); booleans are
//! `BOOLEAN` in PostgreSQL and 0 or 1 in SQLite; bytes are `BYTEA` or `BLOB`; times are
//! `TIMESTAMPTZ` in PostgreSQL and RFC 3339 text in UTC in SQLite, of one width so that they sort
//! as text. Lease expiries are Unix milliseconds in both.

use time::OffsetDateTime;

use super::StoreError;

/// One parameter of a query, owned, so that a read can move to another thread with its query.
#[derive(Debug, Clone)]
pub(super) enum Param {
    Text(Option<String>),
    Int(Option<i64>),
    Bool(bool),
    Bytes(Option<Vec<u8>>),
    Time(Option<OffsetDateTime>),
}

/// A query's parameters, `$1` first: `params![id.as_str(), owner_id]`.
macro_rules! params {
    ($($param:expr),* $(,)?) => { vec![$($crate::store::sql::Param::from($param)),*] };
}
pub(super) use params;

impl From<&str> for Param {
    fn from(value: &str) -> Self {
        Param::Text(Some(value.to_owned()))
    }
}

impl From<String> for Param {
    fn from(value: String) -> Self {
        Param::Text(Some(value))
    }
}

impl From<Option<&str>> for Param {
    fn from(value: Option<&str>) -> Self {
        Param::Text(value.map(str::to_owned))
    }
}

impl From<Option<String>> for Param {
    fn from(value: Option<String>) -> Self {
        Param::Text(value)
    }
}

impl From<i64> for Param {
    fn from(value: i64) -> Self {
        Param::Int(Some(value))
    }
}

impl From<Option<i64>> for Param {
    fn from(value: Option<i64>) -> Self {
        Param::Int(value)
    }
}

impl From<u32> for Param {
    fn from(value: u32) -> Self {
        Param::Int(Some(value.into()))
    }
}

impl From<Option<u32>> for Param {
    fn from(value: Option<u32>) -> Self {
        Param::Int(value.map(i64::from))
    }
}

impl From<u16> for Param {
    fn from(value: u16) -> Self {
        Param::Int(Some(value.into()))
    }
}

impl From<bool> for Param {
    fn from(value: bool) -> Self {
        Param::Bool(value)
    }
}

impl From<&[u8]> for Param {
    fn from(value: &[u8]) -> Self {
        Param::Bytes(Some(value.to_vec()))
    }
}

impl From<Option<&[u8]>> for Param {
    fn from(value: Option<&[u8]>) -> Self {
        Param::Bytes(value.map(<[u8]>::to_vec))
    }
}

impl From<OffsetDateTime> for Param {
    fn from(value: OffsetDateTime) -> Self {
        Param::Time(Some(value))
    }
}

impl From<Option<OffsetDateTime>> for Param {
    fn from(value: Option<OffsetDateTime>) -> Self {
        Param::Time(value)
    }
}

/// Now, to the microsecond (what PostgreSQL keeps), so that a time written reads back the same.
pub(super) fn now() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    now.replace_microsecond(now.microsecond()).expect("a microsecond of a valid time is valid")
}

/// A time as the API shows it and SQLite stores it: RFC 3339 in UTC, always six decimals.
pub(crate) fn format_time(time: OffsetDateTime) -> String {
    const FORMAT: &[time::format_description::BorrowedFormatItem<'_>] =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");
    time.to_offset(time::UtcOffset::UTC).format(FORMAT).expect("a UTC time formats")
}

/// A row of either backend, read by position (looking columns up by name was a fifth of the list
/// route's CPU): each method reads one column as the type the schema gives it.
pub(super) trait Columns {
    fn opt_text(&self, column: usize) -> Result<Option<String>, StoreError>;
    fn opt_int(&self, column: usize) -> Result<Option<i64>, StoreError>;
    fn flag(&self, column: usize) -> Result<bool, StoreError>;
    fn opt_bytes(&self, column: usize) -> Result<Option<Vec<u8>>, StoreError>;
    /// A time, as the API shows it (see [`format_time`]).
    fn opt_time(&self, column: usize) -> Result<Option<String>, StoreError>;

    fn text(&self, column: usize) -> Result<String, StoreError> {
        self.opt_text(column)?.ok_or_else(|| null(column))
    }
    fn int(&self, column: usize) -> Result<i64, StoreError> {
        self.opt_int(column)?.ok_or_else(|| null(column))
    }
    fn bytes(&self, column: usize) -> Result<Vec<u8>, StoreError> {
        self.opt_bytes(column)?.ok_or_else(|| null(column))
    }
    fn time(&self, column: usize) -> Result<String, StoreError> {
        self.opt_time(column)?.ok_or_else(|| null(column))
    }
}

fn null(column: usize) -> StoreError {
    StoreError::Corrupt(format!("column {column} is NULL"))
}

/// A column's text parsed into a typed value (an id, a kind, a status).
pub(super) fn parsed<T: std::str::FromStr<Err = crate::model::Invalid>>(
    row: &dyn Columns,
    column: usize,
) -> Result<T, StoreError> {
    parsed_text(&row.text(column)?)
}

/// A stored text parsed into a typed value.
pub(super) fn parsed_text<T: std::str::FromStr<Err = crate::model::Invalid>>(text: &str) -> Result<T, StoreError> {
    text.parse().map_err(|e: crate::model::Invalid| StoreError::Corrupt(e.0))
}

/// A column's integer as a narrower one.
pub(super) fn narrowed<T: TryFrom<i64>>(value: i64) -> Result<T, StoreError> {
    T::try_from(value).map_err(|_| StoreError::Corrupt(format!("{value} is out of range")))
}

/// The rows the query returns, each read by `map`: what every query that reads runs with.
pub(super) type Map<T> = fn(&dyn Columns) -> Result<T, StoreError>;

/// The calls that run shared SQL through one sqlx backend, and `Columns` for its rows: the same for
/// each but for the types, and for how a text and a time are bound (`$text` and `$time` turn a
/// `String` and an `OffsetDateTime` into what the backend stores).
macro_rules! sqlx_calls {
    ($database:ty, $executor:ident, $row:ty, $text:expr, $time:expr) => {
        type Query = sqlx::query::Query<'static, $database, <$database as sqlx::Database>::Arguments>;

        fn bind(mut query: Query, params: Vec<Param>) -> Query {
            for param in params {
                query = match param {
                    Param::Text(value) => query.bind(value.map($text)),
                    Param::Int(value) => query.bind(value),
                    Param::Bool(value) => query.bind(value),
                    Param::Bytes(value) => query.bind(value),
                    Param::Time(value) => query.bind(value.map($time)),
                };
            }
            query
        }

        pub(super) async fn execute<'e>(
            executor: impl sqlx::$executor<'e>,
            sql: &'static str,
            params: Vec<Param>,
        ) -> Result<u64, StoreError> {
            Ok(bind(sqlx::query(sql), params).execute(executor).await?.rows_affected())
        }

        pub(super) async fn fetch_all<'e, T>(
            executor: impl sqlx::$executor<'e>,
            sql: &'static str,
            params: Vec<Param>,
            map: Map<T>,
        ) -> Result<Vec<T>, StoreError> {
            bind(sqlx::query(sql), params).fetch_all(executor).await?.iter().map(|row| map(row)).collect()
        }

        pub(super) async fn fetch_optional<'e, T>(
            executor: impl sqlx::$executor<'e>,
            sql: &'static str,
            params: Vec<Param>,
            map: Map<T>,
        ) -> Result<Option<T>, StoreError> {
            bind(sqlx::query(sql), params).fetch_optional(executor).await?.map(|row| map(&row)).transpose()
        }

        impl Columns for $row {
            fn opt_text(&self, column: usize) -> Result<Option<String>, StoreError> {
                Ok(sqlx::Row::try_get(self, column)?)
            }
            fn opt_int(&self, column: usize) -> Result<Option<i64>, StoreError> {
                Ok(sqlx::Row::try_get(self, column)?)
            }
            fn flag(&self, column: usize) -> Result<bool, StoreError> {
                Ok(sqlx::Row::try_get(self, column)?)
            }
            fn opt_bytes(&self, column: usize) -> Result<Option<Vec<u8>>, StoreError> {
                Ok(sqlx::Row::try_get(self, column)?)
            }
            fn opt_time(&self, column: usize) -> Result<Option<String>, StoreError> {
                read_time(self, column)
            }
        }
    };
}
pub(super) use sqlx_calls;
