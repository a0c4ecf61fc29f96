//! Building and running the service, the same way for `main` and for the tests:
//! `App::build(config)`, then `port()`, then `run_until_stopped(shutdown)`.

use std::future::Future;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api::{self, AppState};
use crate::config::{Catalogue, Config};
use crate::metrics::Metrics;
use crate::model::UserName;
use crate::provision::{Provisioner, Reconciler};
use crate::runtime::Runtime;
use crate::secrets::MasterKey;
use crate::store::{Store, StoreError};

/// The log filter: `RUST_LOG`, else `info`. bollard logs the bodies of its requests at debug
/// and trace level, and a container's body holds its password, so bollard never logs below info,
/// whatever `RUST_LOG` asks.
pub fn log_filter() -> tracing_subscriber::EnvFilter {
    tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
        .add_directive("bollard=info".parse().expect("a valid directive"))
}

/// The service, built and listening, not yet serving.
pub struct App {
    listener: TcpListener,
    /// `/metrics`, apart from the API; `None` if turned off.
    metrics_listener: Option<TcpListener>,
    state: AppState,
}

/// The metrics listener's limits: one Prometheus or two scrape it, but a scrape is never turned away
/// while the API is busy, and shutdown does not wait for one.
const METRICS_LIMITS: api::Limits =
    api::Limits { max_connections: 64, shutdown_grace: std::time::Duration::from_secs(2) };

impl App {
    /// Opens the store, loads the master key, makes the demo users those of the configuration and
    /// binds the listener. The Docker engine need not answer yet: until it does, creates answer 503
    /// and reads still work. A demo user's name that belongs to a real user is an error, and then
    /// no user is changed. A store shared by replicas with no master key given is refused before
    /// anything is opened or made.
    pub async fn build(config: Config) -> anyhow::Result<App> {
        config.master_key.check_for_store(!config.database_url.is_embedded())?;
        // Only dbroker's user may look into its data directory: the store, the master key.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&config.data_dir)
            .and_then(|()| std::fs::set_permissions(&config.data_dir, std::fs::Permissions::from_mode(0o700)))
            .with_context(|| format!("cannot create the data directory {}", config.data_dir.display()))?;
        let store = Store::open(&config.database_url).await.context("cannot open the store")?;
        // A new key only for a store with no password yet: one made for a store that holds some
        // could read none of them, and the passwords of the instances made with it would be lost
        // once the right key is back.
        let sample = store.oldest_password().await?;
        let key = MasterKey::load(&config.master_key, &config.data_dir, sample.is_none())?;
        if let Some(sample) = &sample
            && key.decrypt(sample).is_err()
        {
            anyhow::bail!(
                "the master key of {} does not decrypt the store's passwords: it is not the key they were \
                 encrypted with. Restore that key from where it was backed up (every replica of one store needs \
                 the same)",
                config.master_key.describe(&config.data_dir)
            );
        }

        sync_demo_users(&store, &config.demo_users).await?;

        let metrics = Metrics::new();
        let runtime = Runtime::new(config.docker_host.clone()).counting_errors_in(metrics.docker_errors());
        let engine_answers = match runtime.ping().await {
            Ok(()) => true,
            Err(error) => {
                tracing::warn!(%error, "the Docker engine does not answer yet; creates will fail until it does");
                false
            }
        };
        log_catalogue(&runtime, &config.catalogue, engine_answers).await;
        let listener =
            TcpListener::bind(config.listen).await.with_context(|| format!("cannot listen on {}", config.listen))?;
        let metrics_listener = match config.metrics_listen {
            Some(address) => Some(TcpListener::bind(address).await.with_context(|| {
                format!("cannot listen on {address} for /metrics (--metrics-listen; `off` turns it off)")
            })?),
            None => None,
        };
        let config = Arc::new(config);
        let backups = config
            .backups
            .as_ref()
            .map(crate::backups::Backups::from_settings)
            .transpose()
            .context("cannot set up the backup targets ([backups] of the configuration file)")?;
        let provisioner = Provisioner::new(store.clone(), runtime, key, config.clone(), metrics.clone(), backups);
        store.register_node(provisioner.node()).await.context("cannot write this node's row to the store")?;
        if engine_answers && let Err(error) = provisioner.prepare_network().await {
            tracing::warn!(%error, "could not make dbroker's network; the first create will try again");
        }
        let reconciler = Reconciler::new(provisioner.clone());
        let users = crate::provision::Users::new(store.clone());
        let state = AppState::from(api::Handles {
            provisioner,
            reconciler,
            store,
            config,
            auth_cache: Default::default(),
            users,
            metrics,
        });
        Ok(App { listener, metrics_listener, state })
    }

    /// The port the API listens on (useful with `--listen 127.0.0.1:0`).
    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or_default()
    }

    /// The port `/metrics` is served on; `None` if turned off.
    pub fn metrics_port(&self) -> Option<u16> {
        self.metrics_listener.as_ref().and_then(|l| l.local_addr().ok()).map(|a| a.port())
    }

    /// Serves, and runs the reconciler, until `shutdown` resolves; then finishes the requests in
    /// flight and waits for every operation still running (each ends done or rolled back), so
    /// nothing is left half-made. The wait is bounded: past a server's start (the ready timeout)
    /// and a lease, dbroker exits anyway, and whoever starts next takes over what is left once its
    /// lease expires.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let provisioner = self.state.provisioner.clone();
        let stop_reconciler = CancellationToken::new();
        let stop_leases = CancellationToken::new();
        let reconciler = tokio::spawn(self.state.reconciler.clone().run(stop_reconciler.clone()));
        let leases = tokio::spawn(provisioner.clone().keep_leases(stop_leases.clone()));
        tracing::info!(address = %self.listener.local_addr()?, "dbroker listening");
        // Both listeners stop at once; the metrics one does not wait for the API's requests.
        let stop_serving = CancellationToken::new();
        let metrics_server = self.metrics_listener.map(|listener| {
            if let Ok(address) = listener.local_addr() {
                tracing::info!(%address, "serving /metrics");
            }
            let router = api::metrics_router(self.state.clone());
            tokio::spawn(api::serve(listener, router, stop_serving.clone().cancelled_owned(), METRICS_LIMITS))
        });
        let stopping = stop_serving.clone();
        let shutdown = async move {
            shutdown.await;
            stopping.cancel();
        };
        // A request in flight may be a create that answers once its server is ready.
        let limits = api::Limits::for_this_process(provisioner.config().ready_timeout);
        api::serve(self.listener, api::router(self.state), shutdown, limits).await;
        if let Some(server) = metrics_server {
            let _ = server.await;
        }
        stop_reconciler.cancel();
        let _ = reconciler.await;
        let tasks = provisioner.tasks();
        tasks.close();
        let bound = provisioner.config().ready_timeout + provisioner.config().operation_lease;
        if tokio::time::timeout(bound, tasks.wait()).await.is_err() {
            tracing::warn!(
                running = tasks.len(),
                "operations still running at shutdown after {bound:?}; whoever starts next takes them over"
            );
        }
        stop_leases.cancel();
        let _ = leases.await;
        tracing::info!("dbroker stopped");
        Ok(())
    }
}

/// Says which image each engine version runs and whether this host has it, one line each, so
/// that whoever starts dbroker sees what its creates will run (and, on a host that reaches no
/// registry, which of them would fail) before the first create. It only looks: an image is pulled
/// when first needed, and a missing one never stops start-up.
async fn log_catalogue(runtime: &Runtime, catalogue: &Catalogue, engine_answers: bool) {
    for (engine, entry) in catalogue.engines() {
        for (version, spec) in &entry.versions {
            let default = if *version == entry.default_version { " (default)" } else { "" };
            let presence = if !engine_answers {
                "unknown: the Docker engine does not answer".to_string()
            } else {
                match runtime.image(&spec.image).await {
                    Ok(Some(_)) => "present".to_string(),
                    Ok(None) => "not on this host: pulled on first use".to_string(),
                    Err(error) => format!("unknown: {error}"),
                }
            };
            tracing::info!("catalogue: {engine} {version}{default} → {} ({presence})", spec.image);
        }
    }
}

/// Makes the enabled demo users exactly those of `--demo-users` (see `Store::sync_demo_users`),
/// on every start, with or without the flag: a trial token must stop working once the flag is
/// gone. Logs counts, not names, where a name is a token that works.
async fn sync_demo_users(store: &Store, names: &[UserName]) -> anyhow::Result<()> {
    let demo = match store.sync_demo_users(names).await {
        Ok(demo) => demo,
        Err(StoreError::NotADemoUser(name)) => anyhow::bail!(
            "--demo-users names {name}, who is a real user with a token of their own; take {name} out of \
             --demo-users (DBROKER_DEMO_USERS, demo_users in the configuration file): a demo user's token \
             is its name, which dbroker never gives a real user"
        ),
        Err(error) => return Err(anyhow::Error::new(error).context("cannot set up the demo users")),
    };
    if demo.named > 0 {
        tracing::warn!(
            count = demo.named,
            "demo users enabled: their token is their name. For trials only, never in production"
        );
    }
    if demo.disabled > 0 {
        tracing::info!(count = demo.disabled, "demo users no longer in --demo-users disabled");
    }
    for name in &demo.admins_disabled {
        tracing::warn!(
            user = %name,
            "an admin's token was their name (an older dbroker's --demo-users gave it them): disabled. \
             Give them a token of their own with `dbroker user rotate-token {name}`, then `dbroker user enable {name}`"
        );
    }
    Ok(())
}
