//! Which dbroker processes are alive, and which one leads the repairs. Both are lock files in the
//! data directory: the kernel releases a process's locks when it dies, however it dies, so a
//! SIGKILL is noticed at once and no stale heartbeat needs to expire. (Several hosts, later, need
//! leases in the shared store instead.)

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

/// This process's identity, held as an exclusive lock on `processes/<id>.lock` while it lives.
pub struct ProcessClaim {
    id: String,
    _lock: File,
}

fn processes_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("processes")
}

fn lock_path(data_dir: &Path, process_id: &str) -> PathBuf {
    processes_dir(data_dir).join(format!("{process_id}.lock"))
}

impl ProcessClaim {
    pub fn acquire(data_dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(processes_dir(data_dir))?;
        let id = hex::encode(rand::random::<[u8; 8]>());
        let file = OpenOptions::new().create_new(true).write(true).open(lock_path(data_dir, &id))?;
        file.lock()?;
        Ok(Self { id, _lock: file })
    }

    pub fn id(&self) -> &str {
        &self.id
    }
}

/// Whether the process that claimed something is still alive. A process whose lock can be taken
/// is dead; its lock file is removed then.
pub fn is_alive(data_dir: &Path, process_id: &str) -> bool {
    // Ids are ours (hex); anything else cannot name a lock file.
    if process_id.is_empty() || !process_id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return false;
    }
    let path = lock_path(data_dir, process_id);
    let Ok(file) = OpenOptions::new().write(true).open(&path) else {
        return false;
    };
    match file.try_lock() {
        Ok(()) => {
            let _ = std::fs::remove_file(&path);
            false
        }
        Err(TryLockError::WouldBlock) => true,
        // Cannot tell: assume alive, so nothing in flight is undone by mistake.
        Err(TryLockError::Error(_)) => true,
    }
}

/// Leadership of the repairs: one process at a time holds `reconciler.lock`. Once taken, it is
/// kept until the process ends, and another process takes over then.
pub struct Leadership {
    path: PathBuf,
    held: Option<File>,
}

impl Leadership {
    pub fn new(data_dir: &Path) -> Self {
        Self { path: data_dir.join("reconciler.lock"), held: None }
    }

    /// Whether this process leads, taking the lead if nobody holds it.
    pub fn try_lead(&mut self) -> bool {
        if self.held.is_some() {
            return true;
        }
        let Ok(file) = OpenOptions::new().create(true).truncate(false).write(true).open(&self.path) else {
            return false;
        };
        if file.try_lock().is_ok() {
            self.held = Some(file);
        }
        self.held.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_process_claim_is_seen_alive_and_a_dropped_one_dead() {
        let dir = tempfile::tempdir().unwrap();
        let claim = ProcessClaim::acquire(dir.path()).unwrap();
        let id = claim.id().to_string();

        assert!(is_alive(dir.path(), &id));
        drop(claim);
        assert!(!is_alive(dir.path(), &id));
        assert!(!is_alive(dir.path(), "../../etc/passwd"));
    }

    #[test]
    fn only_one_holder_leads_until_it_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let mut first = Leadership::new(dir.path());
        let mut second = Leadership::new(dir.path());

        assert!(first.try_lead());
        assert!(!second.try_lead());
        drop(first);
        assert!(second.try_lead());
    }
}
