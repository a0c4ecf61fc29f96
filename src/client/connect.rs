//! `dbroker connect`: the engine's own client (mariadb or mysql, redis-cli, psql), started in
//! this process's place (exec) so it has the terminal as if typed. The password goes through the
//! client's own environment variable, never its argv, which every user of the host can read in
//! `/proc/*/cmdline`; host, port, user and database are no secrets and go as arguments.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::ClientError;
use crate::api::types::InstanceView;
use crate::model::Engine;

/// An engine's client: the programs that may be it, in the order tried, the variable it reads
/// the password from, and the Debian package that has it.
struct EngineClient {
    programs: &'static [&'static str],
    password_variable: &'static str,
    package: &'static str,
}

fn client_of(engine: Engine) -> EngineClient {
    match engine {
        // MariaDB's client speaks to MySQL servers too; Debian's `mysql` is a link to it, where
        // Oracle's client may be what is installed instead.
        Engine::Mysql => {
            EngineClient { programs: &["mariadb", "mysql"], password_variable: "MYSQL_PWD", package: "mariadb-client" }
        }
        Engine::Redis => {
            EngineClient { programs: &["redis-cli"], password_variable: "REDISCLI_AUTH", package: "redis-tools" }
        }
        Engine::Postgres => {
            EngineClient { programs: &["psql"], password_variable: "PGPASSWORD", package: "postgresql-client" }
        }
    }
}

/// The first of `programs` on `PATH`.
fn find_on_path(programs: &[&str], path: Option<&std::ffi::OsStr>) -> Option<PathBuf> {
    let dirs: Vec<PathBuf> = path.map(|p| std::env::split_paths(p).collect()).unwrap_or_default();
    programs.iter().find_map(|program| dirs.iter().map(|dir| dir.join(program)).find(|file| is_executable(file)))
}

fn is_executable(file: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(file).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The command that opens `instance` in its engine's client, its password in its environment.
fn command(instance: &InstanceView) -> Result<Command, ClientError> {
    let c = &instance.connection;
    let port = c.port.ok_or_else(|| ClientError::Refused {
        status: 409,
        detail: format!("{} holds no port: it is {}", instance.name.as_str(), instance.status),
    })?;
    let password = c.password.as_deref().ok_or_else(|| ClientError::Refused {
        status: 409,
        detail: format!(
            "{}'s password cannot be read now: {}",
            instance.name.as_str(),
            instance.needs_attention.as_deref().unwrap_or("ask an admin")
        ),
    })?;
    let client = client_of(instance.engine);
    let program = find_on_path(client.programs, std::env::var_os("PATH").as_deref()).ok_or_else(|| {
        ClientError::Local(format!(
            "{} needs {}, which is not installed: install Debian's {} (apt-get install {})",
            instance.engine,
            client.programs.join(" or "),
            client.package,
            client.package
        ))
    })?;
    let mut command = Command::new(program);
    let port = port.to_string();
    match instance.engine {
        Engine::Mysql => {
            let user = c.user.as_deref().unwrap_or("root");
            command.args(["--protocol=TCP", "--host", &c.host, "--port", &port, "--user", user]);
        }
        Engine::Redis => {
            command.args(["-h", &c.host, "-p", &port]);
        }
        Engine::Postgres => {
            let user = c.user.as_deref().unwrap_or("postgres");
            let database = instance.database.as_ref().map_or("postgres", |d| d.as_str());
            command.args(["-h", &c.host, "-p", &port, "-U", user, "-d", database]);
        }
    }
    // The client needs no dbroker token: it is not handed on.
    command.env_remove("DBROKER_TOKEN").env(client.password_variable, password);
    Ok(command)
}

/// Replaces this process with the engine's client; returns only if that cannot start.
pub fn exec(instance: &InstanceView) -> Result<(), ClientError> {
    let error = command(instance)?.exec();
    Err(ClientError::Local(format!("cannot start {}'s client: {error}", instance.engine)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_client_found_on_the_path_is_taken() {
        let dir = tempfile::tempdir().unwrap();
        let mysql = dir.path().join("mysql");
        std::fs::write(&mysql, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&mysql, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();

        let found = find_on_path(&["mariadb", "mysql"], Some(dir.path().as_os_str()));

        assert_eq!(found, Some(mysql));
    }

    #[test]
    fn a_file_that_cannot_be_run_is_no_client() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("psql"), "not a program").unwrap();

        assert_eq!(find_on_path(&["psql"], Some(dir.path().as_os_str())), None);
    }
}
