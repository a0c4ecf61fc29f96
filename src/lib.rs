//! dbroker: a self-service database provisioning service.
//!
//! A tour, in the order a request flows through it:
//! - [`api`]: the HTTP layer: routes, authentication, the v1 API and the old tool's routes, and the
//!   one place where errors become responses.
//! - `console`: the web console at `/`: server-rendered pages, signed in with a token, over the
//!   same service as the API.
//! - [`provision`]: the service itself: every change an operation recorded and leased in the store
//!   and run to its end (create, lifecycle, delete, adopt), the warm pool, templates, and the
//!   reconciler that repairs drift and takes over the operations of processes that died.
//! - [`engines`]: what each database engine needs: image, arguments, data path, URI, and a readiness
//!   probe that logs in with a real client.
//! - [`runtime`]: the Docker Engine API, wrapped once, in our own words.
//! - [`store`]: users, instance records, operations and leases in SQLite.
//! - [`model`] and [`secrets`]: validated values, credentials and their encryption at rest.
//! - [`backups`]: backups' targets (a directory, S3) and the sealed (compressed, encrypted) stream.
//! - [`metrics`]: the Prometheus figures, recorded where things happen, served on a listener of
//!   their own.
//! - [`config`] and [`app`]: typed configuration, and building and running the service.
//! - [`client`]: the command-line client on the v1 API (`dbroker login|create|list|…|connect`).

pub mod api;
pub mod app;
pub mod backups;
pub mod cli;
pub mod client;
pub mod config;
mod console;
pub mod engines;
pub mod metrics;
pub mod model;
pub mod provision;
pub mod runtime;
pub mod secrets;
pub mod store;
