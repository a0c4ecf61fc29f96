//! The `dbroker` binary: parse the command line, start logging, dispatch.

use std::process::ExitCode;

use clap::Parser;
use dbroker::app::App;
use dbroker::cli::{Cli, Command, UserCommand};
use dbroker::provision::{Listed, NewUser, Users};
use dbroker::store::{LimitChange, QuotaChange, Store};

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    tracing_subscriber::fmt().with_env_filter(dbroker::app::log_filter()).with_writer(std::io::stderr).init();

    match Cli::parse().command {
        Command::Serve(args) => {
            let config = args.into_config().map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
            let app = App::build(config).await?;
            app.run_until_stopped(shutdown_signal()).await.map(|()| ExitCode::SUCCESS)
        }
        Command::User(command) => manage_users(command).await.map(|()| ExitCode::SUCCESS),
        // The client's errors are its own, each with its exit code (see `ClientError::exit_code`).
        Command::Client(command) => Ok(match dbroker::client::run(command).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("dbroker: {error}");
                ExitCode::from(error.exit_code())
            }
        }),
    }
}

/// `dbroker user ...`: the same service as the admin routes (`provision::Users`), straight on the
/// store, which a running dbroker shares (it sees a change within `AUTH_CACHE_TTL`). A token is
/// printed on stdout, once; everything else goes to stderr.
async fn manage_users(command: UserCommand) -> anyhow::Result<()> {
    let users = |store: &dbroker::cli::StoreArgs| {
        let (dir, url) = (store.data_dir.clone(), store.database_url());
        async move {
            if url.is_embedded() {
                std::fs::create_dir_all(&dir)?;
            }
            anyhow::Ok(Users::new(Store::open(&url).await?))
        }
    };
    match command {
        UserCommand::Add { name, admin, store } => {
            let added = users(&store).await?.add(NewUser { name, admin, quota: Default::default() }).await?;
            eprintln!("user {} added; their token (shown only now):", added.user.name);
            println!("{}", added.token.expose());
        }
        UserCommand::List { store } => {
            // What each holds is in `GET /v1/admin/users`; these columns stay as scripts read them.
            for Listed { user, .. } in users(&store).await?.list().await? {
                let role = if user.is_admin { "admin" } else { "user" };
                let kind = if user.is_demo { "demo" } else { "real" };
                let state = if user.is_disabled() { "disabled" } else { "enabled" };
                // An override, or "default": the default itself is the serving configuration's.
                let own = |limit: Option<u64>| limit.map_or("default".to_string(), |n| n.to_string());
                let instances = own(user.quota.instances.map(u64::from));
                let memory = own(user.quota.memory_mb);
                println!(
                    "{}\t{role}\t{kind}\t{state}\t{}\tinstances={instances}\tmemory_mb={memory}",
                    user.name, user.created_at
                );
            }
        }
        UserCommand::Remove { name, store } => {
            users(&store).await?.remove(&name).await?;
            eprintln!("user {name} removed");
        }
        UserCommand::RotateToken { name, store } => {
            let rotated = users(&store).await?.rotate_token(&name).await?;
            eprintln!(
                "{name}'s token replaced; the old one stops working within a second. The new one (shown only now):"
            );
            println!("{}", rotated.token.expose());
            if rotated.was_demo {
                eprintln!(
                    "{name} was a demo user and, with a token of its own, is now a real one: take {name} out of \
                     --demo-users, or dbroker refuses to start"
                );
            }
            if rotated.user.is_disabled() {
                eprintln!("{name} is disabled: the new token works once `dbroker user enable {name}` has run");
            }
        }
        UserCommand::Disable { name, store } => {
            let user = users(&store).await?.disable(&name).await?;
            eprintln!(
                "user {name} disabled: their token is refused within a second; their instances are left as they are"
            );
            if user.is_demo {
                eprintln!("{name} is a demo user: a dbroker started with {name} in --demo-users enables it again");
            }
        }
        UserCommand::Enable { name, store } => {
            let user = users(&store).await?.enable(&name).await?;
            eprintln!("user {name} enabled: their token works again");
            if user.is_demo {
                eprintln!("{name} is a demo user: a dbroker started without {name} in --demo-users disables it again");
            }
        }
        UserCommand::Quota { name, instances, memory_mb, default, store } => {
            let change = if default {
                QuotaChange { instances: LimitChange::Default, memory_mb: LimitChange::Default }
            } else {
                QuotaChange { instances: LimitChange::given(instances), memory_mb: LimitChange::given(memory_mb) }
            };
            users(&store).await?.change_quota(&name, change).await?;
            eprintln!(
                "{name}'s quota changed: the next create, resize or claim is checked against it; their instances \
                 are left as they are"
            );
        }
    }
    Ok(())
}

/// Resolves on SIGTERM (systemd, docker stop) or Ctrl-C.
async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await
            }
        }
    };
    tokio::select! {
        _ = terminate => {},
        _ = tokio::signal::ctrl_c() => {},
    }
    tracing::info!("shutting down: finishing requests in flight");
}
