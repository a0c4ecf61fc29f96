//! Each client command: what it asks the API, and what it prints. Answers go to standard output
//! (see `output`), what happened to standard error.

use std::io::{IsTerminal, Read, Write};
use std::time::Duration;

use reqwest::Method;

use super::output::{self, Format};
use super::progress::{self, Progress};
use super::{Client, ClientError, Login, connect};
use crate::api::types::{
    Backups, ChangeInstance, CloneInstance, CreateInstance, EventsPage, InstanceStatsView, InstanceView, Logs,
    RestoreInstance, TakeBackup,
};
use crate::cli::ClientCommand;
use crate::model::MemoryMb;
use crate::secrets::Secret;

/// How often `logs -f` reads the log again.
const FOLLOW_INTERVAL: Duration = Duration::from_secs(1);

/// Runs one client command.
pub async fn run(command: ClientCommand) -> Result<(), ClientError> {
    use ClientCommand as C;
    if let C::Completions { shell } = command {
        let mut cli = <crate::cli::Cli as clap::CommandFactory>::command();
        clap_complete::generate(shell, &mut cli, "dbroker", &mut std::io::stdout());
        return Ok(());
    }
    if let C::Login { url } = command {
        return login(url).await;
    }
    let login = Login::resolve()?;
    let client = Client::new(&login.url, login.token)?;
    let instance_path = |instance: &InstanceView, rest: &str| format!("/v1/instances/{}{rest}", instance.id);
    match command {
        C::Login { .. } | C::Completions { .. } => unreachable!("handled above"),
        C::Create { engine, name, version, memory_mb, charset, collation, database, wait, output } => {
            let request = CreateInstance {
                engine,
                version,
                name,
                memory_mb: memory_mb.map(MemoryMb),
                charset,
                collation,
                database,
                from_backup: None,
            };
            let started = client.start(Method::POST, "/v1/instances", &request).await?;
            let format = Format::new(output.json);
            if !wait {
                eprintln!(
                    "creating instance {} (operation {}): `dbroker show {}` says when it is running",
                    started.0.instance_id, started.0.id, started.0.instance_id
                );
                return match format {
                    Format::Json => output::print_json(&started.0),
                    Format::Table => {
                        println!("{}", started.0.instance_id);
                        Ok(())
                    }
                };
            }
            let ended = progress::follow(&client, started, &mut Progress::on_stderr()).await?;
            let instance: InstanceView = client.get(&format!("/v1/instances/{}", ended.instance_id)).await?;
            output::instance(format, &instance)
        }
        C::List { engine, output } => {
            let mut instances = client.instances().await?;
            instances.retain(|i| engine.is_none_or(|e| i.engine == e));
            output::instances(Format::new(output.json), &instances)
        }
        C::Show { instance, uri, password, output } => {
            let instance = client.resolve(&instance).await?;
            let missing = |what: &str| ClientError::Refused {
                status: 409,
                detail: format!(
                    "{} has no {what} now ({}{})",
                    instance.name.as_str(),
                    instance.status,
                    instance.needs_attention.as_deref().map(|a| format!(": {a}")).unwrap_or_default()
                ),
            };
            if uri {
                println!("{}", instance.connection.uri.as_deref().ok_or_else(|| missing("URI"))?);
            } else if password {
                println!("{}", instance.connection.password.as_deref().ok_or_else(|| missing("password"))?);
            } else {
                output::instance(Format::new(output.json), &instance)?;
            }
            Ok(())
        }
        C::Delete { instance } => {
            let instance = client.resolve(&instance).await?;
            client.change_without_answer(Method::DELETE, &instance_path(&instance, "")).await?;
            eprintln!("deleted {} ({})", instance.name.as_str(), instance.id);
            Ok(())
        }
        C::Stop { instance, output } => act(&client, &instance, "/stop", output.json).await,
        C::Start { instance, output } => act(&client, &instance, "/start", output.json).await,
        C::Restart { instance, output } => act(&client, &instance, "/restart", output.json).await,
        C::RotatePassword { instance, output } => act(&client, &instance, "/rotate-password", output.json).await,
        C::Resize { instance, memory_mb, output } => {
            let instance = client.resolve(&instance).await?;
            let body = ChangeInstance { memory_mb: MemoryMb(memory_mb) };
            let resized: InstanceView =
                client.change(Method::PATCH, &instance_path(&instance, ""), Some(&body)).await?;
            output::instance(Format::new(output.json), &resized)
        }
        C::Logs { instance, tail, follow } => logs(&client, &client.resolve(&instance).await?, tail, follow).await,
        C::Events { instance, limit, output } => {
            let instance = client.resolve(&instance).await?;
            let query = limit.map(|l| format!("?limit={l}")).unwrap_or_default();
            let page: EventsPage = client.get(&instance_path(&instance, &format!("/events{query}"))).await?;
            output::events(Format::new(output.json), &page.events)
        }
        C::Stats { instance, output } => {
            let instance = client.resolve(&instance).await?;
            let stats: InstanceStatsView = client.get(&instance_path(&instance, "/stats")).await?;
            output::stats(Format::new(output.json), &stats)
        }
        C::Backup { instance, target, verify, output } => {
            let instance = client.resolve(&instance).await?;
            let body = TakeBackup { target, verify: verify.then_some(true) };
            let backup = client.change(Method::POST, &instance_path(&instance, "/backups"), Some(&body)).await?;
            output::backup(Format::new(output.json), &backup)
        }
        C::Backups { instance, output } => {
            let path = match instance {
                Some(instance) => instance_path(&client.resolve(&instance).await?, "/backups"),
                None => "/v1/backups".to_string(),
            };
            let page: Backups = client.get(&path).await?;
            output::backups(Format::new(output.json), &page.backups)
        }
        C::Restore { instance, backup, output } => {
            let instance = client.resolve(&instance).await?;
            let body = RestoreInstance { backup };
            let restored = client.change(Method::POST, &instance_path(&instance, "/restore"), Some(&body)).await?;
            output::instance(Format::new(output.json), &restored)
        }
        C::Clone { instance, name, output } => {
            let instance = client.resolve(&instance).await?;
            let body = CloneInstance { name };
            let clone = client.change(Method::POST, &instance_path(&instance, "/clone"), Some(&body)).await?;
            output::instance(Format::new(output.json), &clone)
        }
        C::Export { instance } => {
            if std::io::stdout().is_terminal() {
                return Err(ClientError::Usage(format!(
                    "export writes a dump, not text: redirect it to a file (dbroker export {instance} > dump)"
                )));
            }
            let instance = client.resolve(&instance).await?;
            let response = client.download(&instance_path(&instance, "/export")).await?;
            let written = client.stream_into(response, &mut tokio::io::stdout()).await?;
            eprintln!("exported {} ({written} bytes)", instance.name.as_str());
            Ok(())
        }
        C::Import { instance, output } => {
            if std::io::stdin().is_terminal() {
                return Err(ClientError::Usage(format!(
                    "import reads a dump from standard input: dbroker import {instance} < dump"
                )));
            }
            let instance = client.resolve(&instance).await?;
            // Streamed as it is read: a dump may be larger than this machine's memory.
            let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(tokio::io::stdin()));
            let imported: InstanceView = client.upload(&instance_path(&instance, "/import"), body).await?;
            eprintln!("imported the dump into {}", imported.name.as_str());
            output::instance(Format::new(output.json), &imported)
        }
        C::Connect { instance } => connect::exec(&client.resolve(&instance).await?),
    }
}

/// `stop`, `start`, `restart`, `rotate-password`: a POST that answers the instance as it is after.
async fn act(client: &Client, instance: &str, action: &str, json: bool) -> Result<(), ClientError> {
    let instance = client.resolve(instance).await?;
    let path = format!("/v1/instances/{}{action}", instance.id);
    let changed: InstanceView = client.change(Method::POST, &path, None::<&()>).await?;
    output::instance(Format::new(json), &changed)
}

/// `logs [-f]`: the last `tail` lines, then, following, each new line as it comes, until
/// interrupted or the reader goes away (`logs -f | grep -m1 …` ends quietly).
async fn logs(client: &Client, instance: &InstanceView, tail: usize, follow: bool) -> Result<(), ClientError> {
    let print = |lines: &[String]| {
        let mut out = std::io::stdout().lock();
        lines.iter().try_for_each(|line| writeln!(out, "{line}")).and_then(|()| out.flush())
    };
    let path = |tail: usize| format!("/v1/instances/{}/logs?tail={tail}", instance.id);
    let mut shown = client.get::<Logs>(&path(tail)).await?.lines;
    let mut printed = print(&shown);
    while follow && printed.is_ok() {
        tokio::time::sleep(FOLLOW_INTERVAL).await;
        // The last lines again, at least as many as were shown, and print those after what was
        // shown last (see `new_lines`).
        let lines = client.get::<Logs>(&path(tail.max(100))).await?.lines;
        printed = print(new_lines(&shown, &lines));
        shown = lines;
    }
    match printed {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(ClientError::local("cannot print the log", e)),
        _ => Ok(()),
    }
}

/// `dbroker login URL`: the token from `DBROKER_TOKEN`, else standard input (so it is in no
/// argv and no shell history), checked by listing the caller's instances before it is saved.
async fn login(url: String) -> Result<(), ClientError> {
    let token = match std::env::var("DBROKER_TOKEN").ok().filter(|t| !t.trim().is_empty()) {
        Some(token) => token,
        None => {
            if std::io::stdin().is_terminal() {
                eprintln!("your dbroker token (then Enter, or Ctrl-D):");
            }
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| ClientError::local("cannot read the token from standard input", e))?;
            text
        }
    };
    let token = token.trim().to_string();
    if token.is_empty() {
        return Err(ClientError::Usage("no token: give it on standard input, or in DBROKER_TOKEN".into()));
    }
    let login = Login { url, token: Secret::new(token) };
    let client = Client::new(&login.url, login.token.clone())?;
    let instances = client.instances().await?;
    let login = Login { url: client.base().to_string(), ..login };
    let path = login.save()?;
    eprintln!("logged in to {} ({} instances); saved in {}", login.url, instances.len(), path.display());
    Ok(())
}

/// What `next` (the log's last lines now) holds after `shown` (its last lines before): after the
/// longest end of `shown` that `next` begins with. With none, every line is new (more came
/// between two reads than a read returns).
fn new_lines<'a>(shown: &[String], next: &'a [String]) -> &'a [String] {
    let overlap = (1..=shown.len().min(next.len())).rev().find(|&n| shown[shown.len() - n..] == next[..n]).unwrap_or(0);
    &next[overlap..]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<String> {
        text.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn a_followed_log_prints_only_the_lines_after_those_shown() {
        assert_eq!(new_lines(&lines("a b c"), &lines("b c d e")), lines("d e"));
    }

    #[test]
    fn a_log_that_has_not_moved_prints_nothing() {
        assert!(new_lines(&lines("a b c"), &lines("a b c")).is_empty());
    }

    #[test]
    fn a_log_that_moved_past_everything_shown_prints_all_it_read() {
        assert_eq!(new_lines(&lines("a b"), &lines("x y")), lines("x y"));
    }

    #[test]
    fn repeated_lines_match_the_longest_overlap() {
        assert_eq!(new_lines(&lines("x a a"), &lines("a a b")), lines("b"));
    }
}
