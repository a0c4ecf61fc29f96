//! dbroker's integration tests: one binary, on a real Docker engine and real database servers.
//! Run them with `scripts/test`, which starts the engine and builds the offline images first.

mod admin_users;
mod auth;
mod bad_input;
mod catalogue;
mod connections;
mod failures;
mod first_run;
mod healing;
mod helpers;
mod images;
mod isolation;
mod lifecycle;
mod master_key;
mod metrics;
mod mysql;
mod openapi;
mod operations;
mod packaging;
mod pool;
mod ports;
mod postgres;
mod private_files;
mod quotas;
mod races;
mod rate_limits;
mod read_answers;
mod redis;
mod replicas;
mod schemathesis;
mod secrets_in_containers;
mod secrets_in_logs;
mod stats;
mod templates;
mod test_stores;
mod users;
