//! Following an operation (`GET /v1/operations/{id}`) until it ends, and showing its steps as
//! they happen: a spinner and the latest step on one line of standard error when it is a
//! terminal, nothing at all when it is not (a script's log reads only the answer and errors).

use std::io::{IsTerminal, Write};
use std::time::Duration;

use super::{Client, ClientError, Started};
use crate::api::types::OperationView;
use crate::model::OperationState;

/// How soon the operation is read again: at first soon (a Redis is ready in about 0.3 s, a
/// warm pool's claim in milliseconds), then half as often each time, down to every `POLL_MAX`:
/// each step of a long create still shows, well below the default read rate limit (50 a second).
const POLL_FIRST: Duration = Duration::from_millis(20);
const POLL_MAX: Duration = Duration::from_millis(250);

/// The spinner's frames, one a poll.
const FRAMES: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

/// Where the steps are shown, if anywhere.
pub struct Progress {
    terminal: bool,
    frame: usize,
}

impl Progress {
    /// A progress line on standard error if it is a terminal, else nothing.
    pub fn on_stderr() -> Progress {
        Progress { terminal: std::io::stderr().is_terminal(), frame: 0 }
    }

    fn show(&mut self, operation: &OperationView) {
        if !self.terminal {
            return;
        }
        let frame = FRAMES[self.frame % FRAMES.len()];
        self.frame += 1;
        // Back to the line's start and clear it (ANSI), so each poll rewrites one line.
        eprint!("\r\x1b[2K{}", line(frame, operation));
        let _ = std::io::stderr().flush();
    }

    fn finish(&mut self, operation: &OperationView) {
        if self.terminal {
            let mark = if operation.state == OperationState::Succeeded { '✓' } else { '✗' };
            eprintln!("\r\x1b[2K{}", line(mark, operation));
        }
    }
}

/// `⠋ create 3f2a9c01b7de: container started (3 steps)`: what the operation is doing now.
fn line(mark: char, operation: &OperationView) -> String {
    let now = match operation.steps.last() {
        Some(step) if operation.state.in_flight() => step.step.clone(),
        _ => operation.state.to_string(),
    };
    let steps = match operation.steps.len() {
        1 => " (1 step)".to_string(),
        n => format!(" ({n} steps)"),
    };
    format!("{mark} {} {}: {now}{steps}", operation.kind, operation.instance_id)
}

/// Reads the operation until it has ended, showing it on `progress`: the ended operation if it
/// succeeded, its error (the problem its request would have answered) if it failed.
pub async fn follow(client: &Client, started: Started, progress: &mut Progress) -> Result<OperationView, ClientError> {
    let mut operation = started.0;
    let mut interval = POLL_FIRST;
    while operation.state.in_flight() {
        progress.show(&operation);
        tokio::time::sleep(interval).await;
        interval = (interval * 2).min(POLL_MAX);
        operation = client.operation(&operation.id).await?;
    }
    progress.finish(&operation);
    match operation.error.take() {
        Some(problem) if operation.state == OperationState::Failed => Err(problem.into()),
        None if operation.state == OperationState::Failed => {
            Err(ClientError::Refused { status: 500, detail: format!("operation {} failed", operation.id) })
        }
        _ => Ok(operation),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::types::Step;

    fn operation(state: &str, steps: &[&str]) -> OperationView {
        serde_json::from_value(serde_json::json!({
            "id": "0123456789abcdef", "instance_id": "3f2a9c01b7de", "kind": "create", "state": state,
            "requested_by": "alice", "created_at": "t", "updated_at": "t",
            "steps": steps.iter().map(|s| Step { step: s.to_string(), at: "t".into() }).collect::<Vec<_>>(),
        }))
        .unwrap()
    }

    #[test]
    fn a_running_operation_shows_its_latest_step() {
        let running = operation("running", &["recorded", "container started"]);

        assert_eq!(line('⠋', &running), "⠋ create 3f2a9c01b7de: container started (2 steps)");
    }

    #[test]
    fn an_ended_operation_shows_how_it_ended() {
        let ended = operation("succeeded", &["recorded", "container started", "ready"]);

        assert_eq!(line('✓', &ended), "✓ create 3f2a9c01b7de: succeeded (3 steps)");
    }
}
