//! The `dbroker` binary: parse the command line, start logging, dispatch.

use clap::Parser;
use dbroker::app::App;
use dbroker::cli::{Cli, Command, UserCommand};
use dbroker::secrets::generate_token;
use dbroker::store::{Store, StoreError};

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
                println!("{}\t{role}\t{}", user.name, user.created_at);
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
