//! The `dbroker` binary: parse the command line, start logging, dispatch.

use clap::Parser;
use dbroker::app::App;
use dbroker::cli::{Cli, Command, UserCommand};
use dbroker::secrets::generate_token;
use dbroker::store::{QuotaOverride, Store, StoreError};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter(dbroker::app::log_filter()).with_writer(std::io::stderr).init();

    match Cli::parse().command {
        Command::Serve(args) => {
            let config = args.into_config().map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
            let app = App::build(config).await?;
            app.run_until_stopped(shutdown_signal()).await
        }
        Command::User(command) => manage_users(command).await,
    }
}

/// `dbroker user ...`: straight on the store, which a running dbroker shares (it sees a change
/// within `AUTH_CACHE_TTL`). A token is printed on stdout, once; everything else goes to stderr.
async fn manage_users(command: UserCommand) -> anyhow::Result<()> {
    let open = |dir: &std::path::Path| {
        let dir = dir.to_path_buf();
        async move {
            std::fs::create_dir_all(&dir)?;
            anyhow::Ok(Store::open(&dir).await?)
        }
    };
    match command {
        UserCommand::Add { name, admin, store } => {
            let store = open(&store.data_dir).await?;
            let token = generate_token();
            match store.add_user(&name, token.expose(), admin).await {
                Ok(_) => {
                    eprintln!("user {name} added; their token (shown only now):");
                    println!("{}", token.expose());
                    Ok(())
                }
                Err(StoreError::NameTaken) => anyhow::bail!("a user named {name} exists already"),
                Err(e) => Err(e.into()),
            }
        }
        UserCommand::List { store } => {
            for user in open(&store.data_dir).await?.list_users().await? {
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
            Ok(())
        }
        UserCommand::Remove { name, store } => match open(&store.data_dir).await?.remove_user(&name).await {
            Ok(None) => {
                eprintln!("user {name} removed");
                Ok(())
            }
            Ok(Some(count)) => {
                anyhow::bail!("{name} still owns {count} instance(s); delete them first")
            }
            Err(StoreError::NotFound) => anyhow::bail!("no user named {name}"),
            Err(e) => Err(e.into()),
        },
        UserCommand::RotateToken { name, store } => {
            let store = open(&store.data_dir).await?;
            let token = generate_token();
            match store.rotate_token(&name, token.expose()).await {
                Ok(before) => {
                    eprintln!(
                        "{name}'s token replaced; the old one stops working within a second. The new one (shown only now):"
                    );
                    println!("{}", token.expose());
                    if before.is_demo {
                        eprintln!(
                            "{name} was a demo user and, with a token of its own, is now a real one: take {name} out \
                             of --demo-users, or dbroker refuses to start"
                        );
                    }
                    if before.is_disabled() {
                        eprintln!("{name} is disabled: the new token works once `dbroker user enable {name}` has run");
                    }
                    Ok(())
                }
                Err(StoreError::NotFound) => anyhow::bail!("no user named {name}"),
                Err(e) => Err(e.into()),
            }
        }
        UserCommand::Disable { name, store } => match open(&store.data_dir).await?.disable_user(&name).await {
            Ok(user) => {
                eprintln!(
                    "user {name} disabled: their token is refused within a second; their instances are left as they are"
                );
                if user.is_demo {
                    eprintln!("{name} is a demo user: a dbroker started with {name} in --demo-users enables it again");
                }
                Ok(())
            }
            Err(StoreError::NotFound) => anyhow::bail!("no user named {name}"),
            Err(e) => Err(e.into()),
        },
        UserCommand::Enable { name, store } => match open(&store.data_dir).await?.enable_user(&name).await {
            Ok(user) => {
                eprintln!("user {name} enabled: their token works again");
                if user.is_demo {
                    eprintln!(
                        "{name} is a demo user: a dbroker started without {name} in --demo-users disables it again"
                    );
                }
                Ok(())
            }
            Err(StoreError::NotFound) => anyhow::bail!("no user named {name}"),
            Err(e) => Err(e.into()),
        },
        UserCommand::Quota { name, instances, memory_mb, default, store } => {
            let store = open(&store.data_dir).await?;
            let changed = if default {
                store.clear_quota(&name).await
            } else {
                store.set_quota(&name, QuotaOverride { instances, memory_mb }).await
            };
            match changed {
                Ok(()) => {
                    eprintln!(
                        "{name}'s quota changed: the next create, resize or claim is checked against it; \
                         their instances are left as they are"
                    );
                    Ok(())
                }
                Err(StoreError::NotFound) => anyhow::bail!("no user named {name}"),
                Err(e) => Err(e.into()),
            }
        }
    }
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
