//! The command-line client: the real `dbroker` binary against a real dbroker on the real engine,
//! with a home directory of the test's own (its login file), and `connect` driven in a real
//! terminal (tmux) while every process's command line is read for the password.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::backup_setup::BackupSetup;
use crate::helpers::{ALICE, BOB, TestApp, free_port, port_and_password, redis_connect, wait_until};

/// How long one client command may take: a create with `--wait` waits for MariaDB's first start.
const COMMAND_DEADLINE: Duration = Duration::from_secs(180);

/// How long a terminal may take to show what the test waits for.
const SCREEN_DEADLINE: Duration = Duration::from_secs(60);

/// The client as a user runs it: the binary, a home (and config directory) of its own, and the
/// server and token in `DBROKER_URL` and `DBROKER_TOKEN` when given.
struct Cli {
    home: tempfile::TempDir,
    url: Option<String>,
    token: Option<String>,
}

/// What a command did.
struct Outcome {
    code: i32,
    stdout: Vec<u8>,
    stderr: String,
}

impl Outcome {
    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    fn json(&self) -> Value {
        assert_eq!(self.code, 0, "the command failed: {}", self.stderr);
        serde_json::from_slice(&self.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout()))
    }
}

impl Cli {
    /// Nothing in the environment: only what `login` saves.
    fn logged_out() -> Cli {
        Cli { home: tempfile::tempdir().expect("a home directory"), url: None, token: None }
    }

    /// `app`'s URL and `token` in the environment.
    fn on(app: &TestApp, token: &str) -> Cli {
        Cli { url: Some(app.address.clone()), token: Some(token.into()), ..Cli::logged_out() }
    }

    fn config_dir(&self) -> PathBuf {
        self.home.path().join("config")
    }

    /// The variables the client reads, as this user has them (none inherited from the test).
    fn environment(&self) -> Vec<(String, String)> {
        let mut env = vec![
            ("HOME".to_string(), self.home.path().display().to_string()),
            ("XDG_CONFIG_HOME".to_string(), self.config_dir().display().to_string()),
        ];
        env.extend(self.url.iter().map(|url| ("DBROKER_URL".to_string(), url.clone())));
        env.extend(self.token.iter().map(|token| ("DBROKER_TOKEN".to_string(), token.clone())));
        env
    }

    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_dbroker"));
        command
            .args(args)
            .env_remove("DBROKER_URL")
            .env_remove("DBROKER_TOKEN")
            .envs(self.environment())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        command
    }

    async fn run(&self, args: &[&str]) -> Outcome {
        self.run_with_input(args, None).await
    }

    /// Runs the command with these variables besides the user's.
    async fn run_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> Outcome {
        let mut command = self.command(args);
        command.envs(env.iter().copied());
        Self::finish(command.spawn().expect("dbroker runs"), args).await
    }

    /// Runs the command with `input` on its standard input, written as it reads.
    async fn run_with_input(&self, args: &[&str], input: Option<Vec<u8>>) -> Outcome {
        let mut command = self.command(args);
        if input.is_some() {
            command.stdin(Stdio::piped());
        }
        let mut child = command.spawn().expect("dbroker runs");
        if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
            tokio::spawn(async move {
                let _ = stdin.write_all(&input).await;
            });
        }
        Self::finish(child, args).await
    }

    async fn finish(child: tokio::process::Child, args: &[&str]) -> Outcome {
        let output = tokio::time::timeout(COMMAND_DEADLINE, child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("dbroker {args:?} did not end within {COMMAND_DEADLINE:?}"))
            .expect("dbroker's output");
        Outcome {
            code: output.status.code().expect("an exit code, not a signal"),
            stdout: output.stdout,
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Runs a command that must succeed and answer JSON.
    async fn json(&self, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.push("--json");
        self.run(&args).await.json()
    }
}

#[tokio::test]
async fn completions_are_printed_and_bad_usage_exits_2() {
    let cli = Cli::logged_out();

    let completions = cli.run(&["completions", "bash"]).await;
    let unknown_engine = cli.run(&["create", "oracle"]).await;
    let missing_argument = cli.run(&["show"]).await;
    let not_logged_in = cli.run(&["list"]).await;

    assert_eq!(completions.code, 0, "{}", completions.stderr);
    assert!(completions.stdout().contains("rotate-password"), "{}", completions.stdout());
    assert_eq!(unknown_engine.code, 2, "{}", unknown_engine.stderr);
    assert!(unknown_engine.stderr.contains("mysql, redis or postgres"), "{}", unknown_engine.stderr);
    assert_eq!(missing_argument.code, 2, "{}", missing_argument.stderr);
    assert_eq!(not_logged_in.code, 2, "{}", not_logged_in.stderr);
    assert!(not_logged_in.stderr.contains("dbroker login"), "{}", not_logged_in.stderr);
}

#[tokio::test]
async fn login_checks_the_token_and_saves_it_in_a_file_only_its_user_reads() {
    let app = TestApp::spawn().await;
    let cli = Cli::logged_out();
    let login_file = cli.config_dir().join("dbroker/login.json");
    let closed = format!("http://127.0.0.1:{}", free_port());

    let refused = cli.run_with_input(&["login", &app.address], Some(b"not-a-token\n".to_vec())).await;
    let unreachable = cli.run_with_input(&["login", &closed], Some(b"alice\n".to_vec())).await;
    assert!(!login_file.exists(), "nothing is saved before the token is checked");
    let logged_in = cli.run_with_input(&["login", &app.address], Some(b"alice\n".to_vec())).await;
    let listed = cli.json(&["list"]).await;
    let url_from_env = cli.run_with_env(&["list"], &[("DBROKER_URL", &closed)]).await;
    let token_from_env = cli.run_with_env(&["list"], &[("DBROKER_TOKEN", "wrong")]).await;
    let bob = Cli { token: Some(BOB.into()), ..Cli::logged_out() };
    let bob_logged_in = bob.run(&["login", &app.address]).await;

    assert_eq!(refused.code, 1, "{}", refused.stderr);
    assert!(refused.stderr.to_lowercase().contains("token"), "the server's detail: {}", refused.stderr);
    assert_eq!(unreachable.code, 3, "{}", unreachable.stderr);
    assert_eq!(logged_in.code, 0, "{}", logged_in.stderr);
    assert!(!logged_in.stderr.contains(ALICE), "the token is never printed: {}", logged_in.stderr);
    let mode = std::fs::metadata(&login_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the login file is its user's only");
    let dir_mode = std::fs::metadata(login_file.parent().unwrap()).unwrap().permissions().mode() & 0o777;
    assert_eq!(dir_mode, 0o700);
    let saved: Value = serde_json::from_slice(&std::fs::read(&login_file).unwrap()).unwrap();
    assert_eq!(saved, json!({"url": app.address, "token": ALICE}));
    assert_eq!(listed, json!([]), "the saved login is used");
    assert_eq!(url_from_env.code, 3, "DBROKER_URL beats the file: {}", url_from_env.stderr);
    assert_eq!(token_from_env.code, 1, "DBROKER_TOKEN beats the file: {}", token_from_env.stderr);
    assert_eq!(bob_logged_in.code, 0, "login reads DBROKER_TOKEN: {}", bob_logged_in.stderr);
    assert!(bob.config_dir().join("dbroker/login.json").exists());
}

#[tokio::test]
async fn a_redis_lives_its_whole_life_through_the_cli() {
    let app = TestApp::spawn().await;
    let cli = Cli::on(&app, ALICE);

    // Create, piped: the answer on stdout, no progress line on stderr.
    let created = cli.run(&["create", "redis", "--name", "cache", "--memory-mb", "400", "--wait", "--json"]).await;
    let created_json = created.json();
    assert_eq!(created_json["status"], "running");
    assert_eq!(created_json["memory_mb"], 400);
    assert!(
        !created.stderr.contains('⠋') && !created.stderr.contains('✓'),
        "no progress when piped: {}",
        created.stderr
    );
    let (_, api_instance) =
        app.get(&format!("/v1/instances/{}", created_json["id"].as_str().unwrap()), "Bearer alice").await;

    let listed = cli.json(&["list"]).await;
    let table = cli.run(&["list"]).await;
    let uri = cli.run(&["show", "cache", "--uri"]).await;
    let password = cli.run(&["show", "cache", "--password"]).await;
    let by_id = cli.json(&["show", created_json["id"].as_str().unwrap()]).await;

    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["name"], "cache");
    assert!(table.stdout().starts_with("ID ") && table.stdout().contains("cache"), "{}", table.stdout());
    assert_eq!(uri.stdout().trim(), api_instance["connection"]["uri"].as_str().unwrap());
    assert_eq!(password.stdout().trim(), api_instance["connection"]["password"].as_str().unwrap());
    assert_eq!(by_id["name"], "cache", "an id names an instance too");

    // The lifecycle.
    assert_eq!(cli.json(&["stop", "cache"]).await["status"], "stopped");
    assert_eq!(cli.json(&["start", "cache"]).await["status"], "running");
    assert_eq!(cli.json(&["restart", "cache"]).await["status"], "running");
    assert_eq!(cli.json(&["resize", "cache", "--memory-mb", "600"]).await["memory_mb"], 600);
    let rotated = cli.json(&["rotate-password", "cache"]).await;
    let new_password = rotated["connection"]["password"].as_str().unwrap().to_string();
    assert_ne!(new_password, password.stdout().trim());
    let refused = cli.run(&["resize", "cache", "--memory-mb", "1"]).await;
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    assert!(refused.stderr.contains("memory"), "the server's detail: {}", refused.stderr);
    let unknown = cli.run(&["show", "nosuch"]).await;
    assert_eq!(unknown.code, 1, "{}", unknown.stderr);

    // What it says of itself.
    let logs = cli.run(&["logs", "cache", "--tail", "20"]).await;
    assert_eq!(logs.code, 0, "{}", logs.stderr);
    assert!(logs.stdout().contains("Ready to accept connections"), "{}", logs.stdout());
    let events = cli.json(&["events", "cache"]).await;
    let kinds: Vec<&str> = events.as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert!(kinds.contains(&"created") && kinds.contains(&"stopped"), "{kinds:?}");
    assert!(cli.run(&["events", "cache"]).await.stdout().contains("created"));
    let stats = cli.json(&["stats", "cache"]).await;
    assert_eq!(stats["container"]["memory_limit_bytes"], 600 * 1024 * 1024);
    assert_eq!(stats["server"]["engine"], "redis");

    // `logs -f` prints what the server logs after it started following.
    let mut follow = cli.command(&["logs", "cache", "--tail", "5", "-f"]).spawn().unwrap();
    let mut followed = follow.stdout.take().unwrap();
    let mut seen = Vec::new();
    read_until(&mut followed, &mut seen, "Ready to accept connections", 1).await;
    assert_eq!(cli.run(&["restart", "cache"]).await.code, 0);
    read_until(&mut followed, &mut seen, "Ready to accept connections", 2).await;
    // Its reader gone (as `| grep -m1` goes), it ends, without an error, at its next line.
    drop(followed);
    assert_eq!(cli.run(&["restart", "cache"]).await.code, 0);
    let ended = tokio::time::timeout(COMMAND_DEADLINE, follow.wait()).await.expect("logs -f ends").unwrap();
    assert_eq!(ended.code(), Some(0), "{ended:?}");

    // Export and import, streamed through stdout and stdin.
    let port = rotated["connection"]["port"].as_u64().unwrap() as u16;
    let mut redis = redis_connect(port, &new_password).await.expect("the rotated password works");
    let () = redis::cmd("SET").arg("greeting").arg("hello").query_async(&mut redis).await.unwrap();
    let export = cli.run(&["export", "cache"]).await;
    assert_eq!(export.code, 0, "{}", export.stderr);
    assert!(export.stdout.starts_with(b"REDIS"), "an RDB file");
    let () = redis::cmd("DEL").arg("greeting").query_async(&mut redis).await.unwrap();
    let imported = cli.run_with_input(&["import", "cache", "--json"], Some(export.stdout.clone())).await.json();
    let (port, password) = port_and_password(&imported);
    let mut redis = redis_connect(port, &password).await.unwrap();
    let greeting: Option<String> = redis::cmd("GET").arg("greeting").query_async(&mut redis).await.unwrap();
    assert_eq!(greeting.as_deref(), Some("hello"), "the import brought the exported key back");

    // A clone, then both deleted.
    let clone = cli.json(&["clone", "cache", "--name", "copy"]).await;
    let (port, password) = port_and_password(&clone);
    let mut copy = redis_connect(port, &password).await.unwrap();
    let greeting: Option<String> = redis::cmd("GET").arg("greeting").query_async(&mut copy).await.unwrap();
    assert_eq!(greeting.as_deref(), Some("hello"));

    // `connect` without the engine's client names the package that has it.
    let no_client = Cli { url: cli.url.clone(), token: cli.token.clone(), ..Cli::logged_out() };
    let mut command = no_client.command(&["connect", "cache"]);
    command.env("PATH", no_client.home.path());
    let missing = command.output().await.unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("redis-tools"), "{missing:?}");

    for name in ["cache", "copy"] {
        let deleted = cli.run(&["delete", name]).await;
        assert_eq!(deleted.code, 0, "{}", deleted.stderr);
    }
    assert_eq!(cli.json(&["list"]).await, json!([]));
}

#[tokio::test]
async fn a_create_without_wait_answers_its_operation_at_once() {
    let app = TestApp::spawn().await;
    let cli = Cli::on(&app, ALICE);

    let started = cli.json(&["create", "redis", "--name", "quick"]).await;

    assert!(matches!(started["state"].as_str(), Some("pending" | "running" | "succeeded")), "{started}");
    let id = started["instance_id"].as_str().unwrap().to_string();
    // Its record may come a moment after the operation's: until then `show` does not find it.
    wait_until("the instance to run", COMMAND_DEADLINE, || async {
        let shown = cli.run(&["show", &id, "--json"]).await;
        (shown.code == 0 && shown.json()["status"] == "running").then_some(())
    })
    .await;
    let by_name = Cli::on(&app, BOB).run(&["show", "quick"]).await;
    assert_eq!(by_name.code, 1, "another user's instance is not found: {}", by_name.stderr);
}

#[tokio::test]
async fn backups_are_taken_listed_and_restored_through_the_cli() {
    let setup = BackupSetup::new().await;
    let app = setup.spawn_app().await;
    let cli = Cli::on(&app, ALICE);
    let instance = cli.json(&["create", "redis", "--name", "kept", "--wait"]).await;
    let (port, password) = port_and_password(&instance);
    let mut redis = redis_connect(port, &password).await.unwrap();
    let () = redis::cmd("SET").arg("k").arg("before").query_async(&mut redis).await.unwrap();

    let backup = cli.json(&["backup", "kept", "--target", "local"]).await;
    let () = redis::cmd("SET").arg("k").arg("after").query_async(&mut redis).await.unwrap();
    let all = cli.json(&["backups"]).await;
    let of_instance = cli.run(&["backups", "kept"]).await;
    let restored = cli.json(&["restore", "kept", backup["id"].as_str().unwrap()]).await;

    assert_eq!(backup["state"], "succeeded", "{backup}");
    assert!(all.as_array().unwrap().iter().any(|b| b["id"] == backup["id"]), "{all}");
    assert!(of_instance.stdout().contains(backup["id"].as_str().unwrap()), "{}", of_instance.stdout());
    let (port, password) = port_and_password(&restored);
    let mut redis = redis_connect(port, &password).await.unwrap();
    let value: String = redis::cmd("GET").arg("k").query_async(&mut redis).await.unwrap();
    assert_eq!(value, "before");
}

/// Reads `out` into `seen` until `needle` is in it `times` times.
async fn read_until(out: &mut tokio::process::ChildStdout, seen: &mut Vec<u8>, needle: &str, times: usize) {
    let mut buffer = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + SCREEN_DEADLINE;
    while String::from_utf8_lossy(seen).matches(needle).count() < times {
        let read = tokio::time::timeout_at(deadline, out.read(&mut buffer))
            .await
            .unwrap_or_else(|_| panic!("{needle:?} {times} times did not come: {}", String::from_utf8_lossy(seen)));
        match read.unwrap() {
            0 => panic!("the output ended: {}", String::from_utf8_lossy(seen)),
            n => seen.extend_from_slice(&buffer[..n]),
        }
    }
}

// ---- connect, in a real terminal ----

/// A tmux server of the test's own with one shell in a pane; killed when dropped, and its socket
/// (in a directory of its own, not tmux's shared one) removed with the directory.
struct Terminal {
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Terminal {
    /// A shell in a terminal, with the client's environment: its commands are typed in as a user
    /// would, so nothing secret is in any argv but what dbroker itself puts there.
    fn open(cli: &Cli) -> Terminal {
        let dir = tempfile::tempdir().expect("a directory for tmux's socket");
        let terminal = Terminal { socket: dir.path().join("tmux"), _dir: dir };
        let mut command = std::process::Command::new("tmux");
        command.arg("-u").arg("-S").arg(&terminal.socket).args([
            "-f",
            "/dev/null",
            "new-session",
            "-d",
            "-x",
            "200",
            "-y",
            "50",
        ]);
        for (name, value) in cli.environment() {
            command.args(["-e", &format!("{name}={value}")]);
        }
        // tmux gives a new session its own client's PATH whatever `-e` says: `dbroker` is typed
        // with its path (see `type_dbroker`).
        command.args(["-e", "LANG=C.UTF-8", "--", "bash", "--norc", "--noprofile"]);
        let status = command.status().expect("tmux runs (scripts/test installs it)");
        assert!(status.success(), "tmux started");
        terminal
    }

    fn tmux(&self, args: &[&str]) -> String {
        let output = std::process::Command::new("tmux").arg("-S").arg(&self.socket).args(args).output().unwrap();
        assert!(output.status.success(), "tmux {args:?}: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Types the `dbroker` command with these arguments, and Enter.
    fn type_dbroker(&self, args: &str) {
        self.type_line(&format!("{} {args}", env!("CARGO_BIN_EXE_dbroker")));
    }

    /// Types `line` and Enter.
    fn type_line(&self, line: &str) {
        // tmux reads an argument's last `;` as the end of its command, unless escaped.
        let line = match line.strip_suffix(';') {
            Some(start) => format!("{start}\\;"),
            None => line.to_string(),
        };
        self.tmux(&["send-keys", "-t", "0", "-l", &line]);
        self.tmux(&["send-keys", "-t", "0", "Enter"]);
    }

    fn screen(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-t", "0", "-S", "-200"])
    }

    /// Waits until the screen holds `text` `times` times; says what it holds if it never does.
    async fn wait_for(&self, text: &str, times: usize) -> String {
        let deadline = std::time::Instant::now() + SCREEN_DEADLINE;
        loop {
            let screen = self.screen();
            if screen.matches(text).count() >= times {
                return screen;
            }
            assert!(std::time::Instant::now() < deadline, "{text:?} never came on the terminal:\n{screen}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = std::process::Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .arg("kill-server")
            .stderr(Stdio::null())
            .status();
    }
}

/// Every process: its `/proc` directory and its command line (arguments joined by spaces).
fn every_process() -> Vec<(PathBuf, String)> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()))
        .filter_map(|e| {
            let line = std::fs::read(e.path().join("cmdline")).ok()?;
            Some((e.path(), String::from_utf8_lossy(&line).replace('\0', " ")))
        })
        .collect()
}

/// Waits until the engine's client runs on `instance`'s port, then asserts that no process's
/// argv holds its password, and that the client has it in `variable` (and no dbroker token).
async fn assert_client_has_the_password_only_in_its_environment(client: &str, variable: &str, instance: &Value) {
    let (port, password) = port_and_password(instance);
    let port = format!(" {port} ");
    let (processes, client_dir) = wait_until(&format!("{client} to run"), SCREEN_DEADLINE, || async {
        let processes = every_process();
        let runs = |l: &String| l.split(' ').next().is_some_and(|p| p.ends_with(client)) && l.contains(&port);
        let dir = processes.iter().find(|(_, line)| runs(line)).map(|(dir, _)| dir.clone())?;
        Some((processes, dir))
    })
    .await;
    let holding: Vec<&String> = processes.iter().map(|(_, line)| line).filter(|l| l.contains(&password)).collect();
    assert!(holding.is_empty(), "the password is in a command line: {holding:?}");
    let environ = std::fs::read(client_dir.join("environ")).expect("the client's environment");
    let environ: Vec<String> = environ.split(|b| *b == 0).map(|v| String::from_utf8_lossy(v).into_owned()).collect();
    assert!(environ.contains(&format!("{variable}={password}")), "{client} is given the password in {variable}");
    assert!(!environ.iter().any(|v| v.starts_with("DBROKER_TOKEN=")), "{client} is not handed the dbroker token");
}

#[tokio::test]
async fn connect_opens_redis_cli_on_a_redis_in_the_terminal() {
    let app = TestApp::spawn().await;
    let cli = Cli::on(&app, ALICE);
    let terminal = Terminal::open(&cli);

    // The create's progress on a terminal: its line ends with how it ended.
    terminal.type_dbroker("create redis --name tty --wait");
    let screen = terminal.wait_for("status:", 1).await;
    assert!(screen.contains("create") && screen.contains("succeeded"), "the progress line's end: {screen}");
    // A dump is not written to a terminal, nor read from one.
    terminal.type_dbroker("export tty");
    terminal.wait_for("redirect it to a file", 1).await;
    terminal.type_dbroker("import tty");
    terminal.wait_for("import reads a dump from standard input", 1).await;
    terminal.type_dbroker("connect tty");
    let instance = cli.json(&["show", "tty"]).await;
    assert_client_has_the_password_only_in_its_environment("redis-cli", "REDISCLI_AUTH", &instance).await;
    // Its prompt first: what is typed before it reads the terminal is flushed when it takes it.
    terminal.wait_for(&format!("127.0.0.1:{}>", instance["connection"]["port"]), 1).await;
    terminal.type_line("PING");
    terminal.wait_for("PONG", 1).await;
    terminal.type_line("quit");
}

#[tokio::test]
async fn connect_opens_mariadb_on_a_mysql_in_the_terminal() {
    let app = TestApp::spawn().await;
    let cli = Cli::on(&app, ALICE);
    let instance = cli
        .json(&[
            "create",
            "mysql",
            "--name",
            "shop",
            "--charset",
            "utf8mb4",
            "--collation",
            "utf8mb4_unicode_ci",
            "--wait",
        ])
        .await;
    assert_eq!(
        (instance["charset"].as_str(), instance["collation"].as_str()),
        (Some("utf8mb4"), Some("utf8mb4_unicode_ci"))
    );
    let terminal = Terminal::open(&cli);

    terminal.type_dbroker("connect shop");
    assert_client_has_the_password_only_in_its_environment("mariadb", "MYSQL_PWD", &instance).await;
    terminal.wait_for("MariaDB [", 1).await;
    // The answer spelt so that the typed query does not hold it.
    terminal.type_line("SELECT CONCAT('ans', 40+2) AS answer;");
    terminal.wait_for("ans42", 1).await;
    terminal.type_line("quit");
}

#[tokio::test]
async fn connect_opens_psql_on_a_postgres_in_the_terminal() {
    let app = TestApp::spawn().await;
    let cli = Cli::on(&app, ALICE);
    let instance = cli
        .json(&["create", "postgres", "--name", "books", "--version", "15", "--database", "library", "--wait"])
        .await;
    assert_eq!((instance["version"].as_str(), instance["database"].as_str()), (Some("15"), Some("library")));
    let terminal = Terminal::open(&cli);

    terminal.type_dbroker("connect books");
    assert_client_has_the_password_only_in_its_environment("psql", "PGPASSWORD", &instance).await;
    terminal.wait_for("library=#", 1).await;
    terminal.type_line("SELECT 'ans' || (40+2) AS answer, current_database();");
    let screen = terminal.wait_for("ans42", 1).await;
    assert!(screen.contains("library"), "connected to the instance's database: {screen}");
    terminal.type_line("\\q");
}
