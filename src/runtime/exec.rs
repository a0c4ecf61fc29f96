//! Commands run inside a running container through Docker's exec API, streaming: a dump tool's
//! output read at the caller's pace, a load's input fed from the caller's reader, and at the end
//! the exit code with the tail of what the command wrote to stderr.
//!
//! Nothing here builds a shell line: the command is an argv of separate strings. Where a caller
//! needs a shell (to read a password file inside the container), its script is a constant and
//! every variable part is a separate argument after it.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bollard::container::LogOutput;
use bollard::exec::{StartExecOptions, StartExecResults};
use bollard::models::ExecConfig;
use bytes::Bytes;
use futures_util::Stream;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};
use tokio::task::JoinHandle;

use super::{Runtime, RuntimeError};

/// How much of a command's stderr is kept for the error a person reads: its last lines, which is
/// where tools put the reason they stopped.
pub const STDERR_TAIL_BYTES: usize = 8 * 1024;

/// How long Docker may take to report a command's exit once its output has ended (the process
/// has closed its stdout and stderr, so it is exiting).
const EXIT_REPORT_DEADLINE: Duration = Duration::from_secs(10);
const EXIT_POLL_INTERVAL: Duration = Duration::from_millis(20);

/// How much of a command's input is read from the caller at a time: all dbroker holds of it.
const FEED_BYTES: usize = 64 * 1024;

/// What a caller's reader gives a command as its stdin.
pub type Input = Box<dyn AsyncRead + Send + Unpin + 'static>;

/// A command to run in a container. `env` is shown by `docker inspect` of the exec and in
/// `/proc/PID/environ`: it must never hold a secret (a script reads those from the container's
/// own files).
pub struct Exec {
    pub argv: Vec<String>,
    pub env: Vec<String>,
    /// The user it runs as (a name or uid the image knows); `None`: the container's.
    pub user: Option<String>,
    /// Fed to the command's stdin, which is closed at its end; `None`: no stdin at all.
    pub stdin: Option<Input>,
}

impl Exec {
    /// `argv` as the container's user, with no environment of its own and no stdin.
    pub fn new<S: Into<String>>(argv: impl IntoIterator<Item = S>) -> Self {
        Exec { argv: argv.into_iter().map(Into::into).collect(), env: Vec::new(), user: None, stdin: None }
    }

    pub fn as_user(self, user: &str) -> Self {
        Exec { user: Some(user.to_string()), ..self }
    }

    pub fn with_stdin(self, stdin: impl AsyncRead + Send + Unpin + 'static) -> Self {
        Exec { stdin: Some(Box::new(stdin)), ..self }
    }
}

impl std::fmt::Debug for Exec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exec").field("argv", &self.argv).field("user", &self.user).finish_non_exhaustive()
    }
}

type Output = Pin<Box<dyn Stream<Item = Result<LogOutput, bollard::errors::Error>> + Send>>;

/// A command running in a container. It is an `AsyncRead` of the command's stdout: nothing is
/// read from Docker until the caller reads, so a slow reader slows the command down (Docker's
/// and the kernel's buffers fill, and the command blocks on its writes) instead of dbroker's
/// memory growing. stderr is read as it comes, its last `STDERR_TAIL_BYTES` kept.
/// [`Execution::finish`] reads what is left, waits for the exit and says how it went.
pub struct Execution {
    runtime: Runtime,
    id: String,
    output: Output,
    /// Stdout bytes of the last frame that did not fit the caller's buffer.
    pending: Bytes,
    stderr: VecDeque<u8>,
    ended: bool,
    /// Copies the caller's input into the command's stdin; its error, if any, is the input's
    /// (one writing to the command only means it stopped reading, which its exit explains).
    feeder: Option<JoinHandle<Result<(), std::io::Error>>>,
}

impl Runtime {
    /// Starts `command` in the running `container`. Its stdout is the returned `Execution`; call
    /// `finish` for its outcome.
    pub async fn exec(&self, container: &str, command: Exec) -> Result<Execution, RuntimeError> {
        let docker = self.docker().await?;
        let Exec { argv, env, user, stdin } = command;
        let config = ExecConfig {
            attach_stdin: Some(stdin.is_some()),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            // No TTY: stdout and stderr come apart, and binary output passes untouched.
            tty: Some(false),
            env: Some(env),
            cmd: Some(argv),
            user,
            ..Default::default()
        };
        let id = docker.create_exec(container, config).await.map_err(self.failed("create_exec"))?.id;
        let started =
            docker.start_exec(&id, Some(StartExecOptions::default())).await.map_err(self.failed("start_exec"))?;
        let StartExecResults::Attached { output, mut input } = started else {
            return Err(RuntimeError::Refused("the exec started detached".into()));
        };
        let feeder = stdin.map(|mut stdin| {
            // A task of its own: the command may need its stdout read before it reads more input
            // (psql prints as it goes), which the caller or `finish` does meanwhile.
            tokio::spawn(async move {
                let mut buf = vec![0u8; FEED_BYTES];
                let fed = loop {
                    match stdin.read(&mut buf).await {
                        Ok(0) => break Ok(()),
                        Ok(n) => {
                            if input.write_all(&buf[..n]).await.is_err() {
                                break Ok(());
                            }
                        }
                        Err(e) => break Err(e),
                    }
                };
                // The end of the input, or its failure, closes the command's stdin either way:
                // a command must not wait for more. Commands that must not act on a cut input
                // are told its end explicitly by their caller (see `engines::dump`).
                let _ = input.shutdown().await;
                fed
            })
        });
        Ok(Execution {
            runtime: self.clone(),
            id,
            output,
            pending: Bytes::new(),
            stderr: VecDeque::new(),
            ended: false,
            feeder,
        })
    }
}

impl Execution {
    /// Reads the rest of stdout (discarding it), waits for the command to exit, and says how it
    /// went: `ExecInput` if the caller's input failed before its end (whatever the command made
    /// of the cut input: that failure is the cause), else `ExecFailed` with its stderr's tail for
    /// a non-zero exit.
    pub async fn finish(mut self) -> Result<(), RuntimeError> {
        let mut sink = tokio::io::sink();
        tokio::io::copy(&mut self, &mut sink).await.map_err(|e| RuntimeError::Unreachable(e.to_string()))?;
        let code = exit_code(&self.runtime, &self.id).await?;
        if let Some(feeder) = self.feeder.take() {
            feeder
                .await
                .map_err(|e| RuntimeError::ExecInput(e.to_string()))?
                .map_err(|e| RuntimeError::ExecInput(e.to_string()))?;
        }
        if code != 0 {
            return Err(RuntimeError::ExecFailed { code, stderr: self.stderr_tail() });
        }
        Ok(())
    }

    /// The last `STDERR_TAIL_BYTES` of stderr so far, as text.
    pub fn stderr_tail(&self) -> String {
        let (a, b) = self.stderr.as_slices();
        String::from_utf8_lossy(&[a, b].concat()).trim().to_string()
    }

    fn keep_stderr(&mut self, message: &[u8]) {
        self.stderr.extend(message);
        let excess = self.stderr.len().saturating_sub(STDERR_TAIL_BYTES);
        self.stderr.drain(..excess);
    }
}

impl AsyncRead for Execution {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        loop {
            if !this.pending.is_empty() {
                let n = this.pending.len().min(buf.remaining());
                buf.put_slice(&this.pending.split_to(n));
                return Poll::Ready(Ok(()));
            }
            if this.ended {
                return Poll::Ready(Ok(()));
            }
            match this.output.as_mut().poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => this.ended = true,
                Poll::Ready(Some(Ok(LogOutput::StdOut { message } | LogOutput::Console { message }))) => {
                    this.pending = message
                }
                Poll::Ready(Some(Ok(LogOutput::StdErr { message }))) => this.keep_stderr(&message),
                Poll::Ready(Some(Ok(LogOutput::StdIn { .. }))) => {}
                Poll::Ready(Some(Err(e))) => {
                    this.ended = true;
                    return Poll::Ready(Err(std::io::Error::other(e)));
                }
            }
        }
    }
}

impl Drop for Execution {
    /// An execution given up on stops feeding its input; the command itself ends when its
    /// output's connection closes (it gets SIGPIPE on its next write).
    fn drop(&mut self) {
        if let Some(feeder) = self.feeder.take() {
            feeder.abort();
        }
    }
}

/// The exit code of exec `id`, once Docker reports it. A function of the runtime and the id, not
/// of the `Execution`: that holds Docker's output stream, which is not `Sync`, and a reference to
/// it held across an await would make every caller's future not `Send`.
async fn exit_code(runtime: &Runtime, id: &str) -> Result<i64, RuntimeError> {
    let docker = runtime.docker().await?;
    let deadline = tokio::time::Instant::now() + EXIT_REPORT_DEADLINE;
    loop {
        let inspect = docker.inspect_exec(id).await.map_err(runtime.failed("inspect_exec"))?;
        match (inspect.running, inspect.exit_code) {
            (Some(false), Some(code)) => return Ok(code),
            _ if tokio::time::Instant::now() >= deadline => {
                return Err(RuntimeError::Refused(format!(
                    "the command's output ended but Docker reported no exit within {EXIT_REPORT_DEADLINE:?}"
                )));
            }
            _ => tokio::time::sleep(EXIT_POLL_INTERVAL).await,
        }
    }
}
