//! When a backup policy runs, and which of an instance's backups its retention removes: pure
//! functions of a policy's settings, its backups and the time, so each rule is tested alone. The
//! store keeps what they decide (`next_due_at`, see `Store::record_backup_run`); the scheduler,
//! which runs on the leader only, and the retention sweep call them.

use std::collections::HashSet;

use time::OffsetDateTime;

use crate::model::{BackupId, BackupKind, BackupState, KeepDays, KeepLast, Schedule};
use crate::store::{BackupPolicy, BackupRecord};

/// When a policy runs next: the first time its schedule names after its last run, or after it was
/// set (or changed) if that is later. `None`: never again.
///
/// Counting from the last run, not from the time the last run was due, is what makes a run that
/// was missed while no dbroker ran (any number of times over) run once at start-up: the run
/// recorded then moves the next one past now, not to the next time missed.
pub fn next_run(
    schedule: &Schedule,
    last_run: Option<OffsetDateTime>,
    set_at: OffsetDateTime,
) -> Option<OffsetDateTime> {
    let since = last_run.map_or(set_at, |last_run| last_run.max(set_at));
    schedule.next_after(since)
}

/// Whether a policy is due at `now` (see [`next_run`]).
pub fn is_due(
    schedule: &Schedule,
    last_run: Option<OffsetDateTime>,
    set_at: OffsetDateTime,
    now: OffsetDateTime,
) -> bool {
    next_run(schedule, last_run, set_at).is_some_and(|next| next <= now)
}

/// How long a policy keeps its instance's backups: the newest `keep_last` good ones, none older
/// than `keep_days`; either `None` sets no such limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    pub keep_last: Option<KeepLast>,
    pub keep_days: Option<KeepDays>,
}

impl From<&BackupPolicy> for Retention {
    fn from(policy: &BackupPolicy) -> Self {
        Retention { keep_last: policy.keep_last, keep_days: policy.keep_days }
    }
}

/// Which of one instance's `backups` (in any order) retention removes at `now`:
/// - a scheduled backup beyond the newest `keep_last` scheduled ones of its outcome (succeeded
///   and failed are counted apart, so failures never push good backups out, and old failures
///   still go), or older than `keep_days`;
/// - a safety backup (taken before a restore in place) older than `keep_days`: it is not one of
///   the policy's, so it takes no place among `keep_last`;
/// - never a manual backup (its owner asked for it, and deletes it), never a running one, and
///   never the instance's newest succeeded backup, whatever its age: the last good copy stays.
///
/// Age and order are by finished time, newest first (ties broken by id, so the answer does not
/// depend on the order given).
pub fn to_remove(backups: &[BackupRecord], retention: Retention, now: OffsetDateTime) -> Vec<BackupId> {
    let mut finished: Vec<(&BackupRecord, OffsetDateTime)> = backups
        .iter()
        .filter_map(|b| Some((b, b.finished_at?)))
        .filter(|(b, _)| b.state != BackupState::Running)
        .collect();
    finished.sort_by(|(a, a_at), (b, b_at)| b_at.cmp(a_at).then_with(|| b.id.cmp(&a.id)));
    let newest_good = finished.iter().find(|(b, _)| b.state == BackupState::Succeeded).map(|(b, _)| &b.id);
    let too_old = |at: OffsetDateTime| {
        retention.keep_days.is_some_and(|days| now - at > time::Duration::days(i64::from(days.get())))
    };

    let mut remove = HashSet::new();
    // How many scheduled backups of each outcome are newer than the one looked at, and it.
    let (mut succeeded, mut failed) = (0u32, 0u32);
    for (backup, at) in &finished {
        let removed = match backup.kind {
            BackupKind::Manual => false,
            BackupKind::Safety => too_old(*at),
            BackupKind::Scheduled => {
                let counted = if backup.state == BackupState::Succeeded { &mut succeeded } else { &mut failed };
                *counted += 1;
                retention.keep_last.is_some_and(|last| *counted > last.get()) || too_old(*at)
            }
        };
        if removed && Some(&backup.id) != newest_good {
            remove.insert(backup.id.clone());
        }
    }
    // In the order given, for the caller's log.
    backups.iter().filter(|b| remove.contains(&b.id)).map(|b| b.id.clone()).collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::model::{Engine, InstanceId, OperationId};

    fn at(text: &str) -> OffsetDateTime {
        OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).unwrap()
    }

    fn hourly() -> Schedule {
        "0 * * * *".parse().unwrap()
    }

    #[test]
    fn a_policy_is_due_at_its_schedules_first_time_after_it_was_set_and_not_before() {
        let set_at = at("2026-03-01T10:20:00Z");
        assert!(!is_due(&hourly(), None, set_at, at("2026-03-01T10:59:59Z")));
        assert!(is_due(&hourly(), None, set_at, at("2026-03-01T11:00:00Z")));
        assert_eq!(next_run(&hourly(), None, set_at), Some(at("2026-03-01T11:00:00Z")));
    }

    #[test]
    fn a_new_policy_does_not_run_for_a_time_before_it_was_set() {
        // 10:00 came before the policy existed: its first run is 11:00, not at once.
        assert!(!is_due(&hourly(), None, at("2026-03-01T10:00:30Z"), at("2026-03-01T10:01:00Z")));
    }

    #[test]
    fn after_a_run_the_next_is_the_schedules_first_time_after_that_run() {
        let set_at = at("2026-03-01T08:00:00Z");
        let ran = at("2026-03-01T11:00:02Z");
        assert_eq!(next_run(&hourly(), Some(ran), set_at), Some(at("2026-03-01T12:00:00Z")));
        assert!(!is_due(&hourly(), Some(ran), set_at, at("2026-03-01T11:59:00Z")));
        assert!(is_due(&hourly(), Some(ran), set_at, at("2026-03-01T12:00:00Z")));
    }

    #[test]
    fn a_run_missed_while_dbroker_was_down_runs_once_at_start_up_not_once_per_time_missed() {
        // Down from 01:30 to 11:20: ten hourly times missed.
        let set_at = at("2026-03-01T00:00:00Z");
        let mut last_run = Some(at("2026-03-01T01:00:00Z"));
        let mut runs = 0;
        let mut now = at("2026-03-01T11:20:00Z");
        // A scheduler that looks every ten seconds until the next hour would be due.
        while now < at("2026-03-01T12:00:00Z") {
            if is_due(&hourly(), last_run, set_at, now) {
                runs += 1;
                last_run = Some(now);
            }
            now += Duration::from_secs(10);
        }
        assert_eq!(runs, 1);
        assert_eq!(next_run(&hourly(), last_run, set_at), Some(at("2026-03-01T12:00:00Z")));
    }

    #[test]
    fn a_policy_changed_after_its_last_run_counts_from_the_change() {
        // Ran at 09:00 daily; changed at 10:30 to hourly: next at 11:00, not due at once for 10:00.
        let changed = at("2026-03-01T10:30:00Z");
        assert_eq!(next_run(&hourly(), Some(at("2026-03-01T09:00:00Z")), changed), Some(at("2026-03-01T11:00:00Z")));
    }

    /// A backup of one instance, finished `days_ago` days before `NOW` (running: started then).
    fn backup(n: u8, kind: BackupKind, state: BackupState, days_ago: i64) -> BackupRecord {
        let when = at(NOW) - time::Duration::days(days_ago) + time::Duration::seconds(i64::from(n));
        BackupRecord {
            id: format!("{n:016x}").parse().unwrap(),
            instance_id: "0123456789ab".parse::<InstanceId>().unwrap(),
            owner_id: 1,
            engine: Engine::Redis,
            version: "7.0".into(),
            target: "local".parse().unwrap(),
            object_key: format!("k{n}"),
            kind,
            state,
            encrypted: true,
            size_bytes: (state == BackupState::Succeeded).then_some(10),
            sha256: None,
            content_digest: None,
            reason: (state == BackupState::Failed).then(|| "failed".into()),
            operation_id: "0123456789abcdef".parse::<OperationId>().unwrap(),
            started_at: when,
            finished_at: (state != BackupState::Running).then_some(when),
            verified_at: None,
            verify_error: None,
        }
    }

    const NOW: &str = "2026-03-31T12:00:00Z";

    fn good(n: u8, days_ago: i64) -> BackupRecord {
        backup(n, BackupKind::Scheduled, BackupState::Succeeded, days_ago)
    }

    fn removed(backups: &[BackupRecord], keep_last: Option<u32>, keep_days: Option<u32>) -> Vec<u8> {
        let retention = Retention {
            keep_last: keep_last.map(|n| KeepLast::new(n).unwrap()),
            keep_days: keep_days.map(|n| KeepDays::new(n).unwrap()),
        };
        let ids = to_remove(backups, retention, at(NOW));
        let mut numbers: Vec<u8> = ids.iter().map(|id| u8::from_str_radix(&id.as_str()[14..], 16).unwrap()).collect();
        numbers.sort();
        numbers
    }

    #[test]
    fn the_oldest_scheduled_backups_beyond_keep_last_are_removed() {
        let backups = [good(1, 3), good(2, 2), good(3, 1)];
        assert_eq!(removed(&backups, Some(2), None), [1]);
        assert_eq!(removed(&backups, Some(1), None), [1, 2]);
        assert_eq!(removed(&backups, Some(3), None), Vec::<u8>::new());
    }

    #[test]
    fn scheduled_backups_older_than_keep_days_are_removed() {
        let backups = [good(1, 40), good(2, 31), good(3, 29), good(4, 1)];
        assert_eq!(removed(&backups, None, Some(30)), [1, 2]);
    }

    #[test]
    fn the_newest_succeeded_backup_is_never_removed_however_old() {
        let backups = [good(1, 400), good(2, 300), backup(3, BackupKind::Scheduled, BackupState::Failed, 1)];
        assert_eq!(removed(&backups, None, Some(30)), [1], "2 is the last good copy");
    }

    #[test]
    fn a_running_backup_is_never_removed() {
        let backups = [backup(1, BackupKind::Scheduled, BackupState::Running, 90), good(2, 2), good(3, 1)];
        assert_eq!(removed(&backups, Some(1), Some(30)), [2]);
    }

    #[test]
    fn a_manual_backup_is_kept_until_its_owner_deletes_it() {
        let backups = [backup(1, BackupKind::Manual, BackupState::Succeeded, 90), good(2, 2), good(3, 1)];
        assert_eq!(removed(&backups, Some(1), Some(30)), [2]);
    }

    #[test]
    fn a_safety_backup_goes_after_keep_days_and_takes_no_place_among_keep_last() {
        let safety = |n, days_ago| backup(n, BackupKind::Safety, BackupState::Succeeded, days_ago);
        let backups = [good(1, 5), good(2, 4), safety(3, 3), safety(4, 40)];
        assert_eq!(removed(&backups, Some(2), Some(30)), [4], "1 and 2 are the last two scheduled");
    }

    #[test]
    fn failed_backups_do_not_push_good_ones_out_and_are_removed_beyond_keep_last_themselves() {
        let failed = |n, days_ago| backup(n, BackupKind::Scheduled, BackupState::Failed, days_ago);
        let backups = [good(1, 6), good(2, 5), failed(3, 4), failed(4, 3), failed(5, 2)];
        assert_eq!(removed(&backups, Some(2), None), [3]);
    }

    #[test]
    fn without_keep_last_or_keep_days_nothing_is_removed() {
        let backups = [good(1, 4000), good(2, 3000), backup(3, BackupKind::Scheduled, BackupState::Failed, 2000)];
        assert_eq!(removed(&backups, None, None), Vec::<u8>::new());
    }
}
