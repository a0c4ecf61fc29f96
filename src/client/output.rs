//! What the client prints on standard output: a table (or `key: value` lines) for people, or,
//! with `--json`, the API's own answer as JSON for scripts (the same fields the API documents).
//! Messages about what happened go to standard error, so a pipe reads only the answer.

use serde::Serialize;

use super::ClientError;
use crate::api::types::{BackupView, Event, InstanceStatsView, InstanceView, ServerStatsView};

/// How the answer is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
}

impl Format {
    pub fn new(json: bool) -> Self {
        if json { Format::Json } else { Format::Table }
    }
}

/// `value` as pretty JSON, one document on standard output.
pub fn print_json(value: &impl Serialize) -> Result<(), ClientError> {
    let text =
        serde_json::to_string_pretty(value).map_err(|e| ClientError::Local(format!("cannot print JSON: {e}")))?;
    println!("{text}");
    Ok(())
}

/// Columns padded to their widest cell, two spaces apart; the last column is not padded.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        let padded: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, cell)| if i == last { cell.to_string() } else { format!("{cell:<width$}", width = widths[i]) })
            .collect();
        padded.join("  ").trim_end().to_string()
    };
    let mut out = vec![line(headers.to_vec())];
    out.extend(rows.iter().map(|row| line(row.iter().map(String::as_str).collect())));
    out.join("\n")
}

/// Instances, one a row.
pub fn instances(format: Format, instances: &[InstanceView]) -> Result<(), ClientError> {
    if format == Format::Json {
        return print_json(&instances);
    }
    let rows: Vec<Vec<String>> = instances
        .iter()
        .map(|i| {
            vec![
                i.id.to_string(),
                i.name.as_str().to_string(),
                i.engine.to_string(),
                i.version.clone(),
                i.status.to_string(),
                i.memory_mb.to_string(),
                i.connection.port.map_or("-".into(), |p| p.to_string()),
            ]
        })
        .collect();
    println!("{}", table(&["ID", "NAME", "ENGINE", "VERSION", "STATUS", "MEMORY_MB", "PORT"], &rows));
    Ok(())
}

/// One instance, a field a line; its password only as `show --password` asks for it.
pub fn instance(format: Format, instance: &InstanceView) -> Result<(), ClientError> {
    if format == Format::Json {
        return print_json(instance);
    }
    let c = &instance.connection;
    let mut fields = vec![
        ("id", instance.id.to_string()),
        ("name", instance.name.as_str().to_string()),
        ("engine", instance.engine.to_string()),
        ("version", instance.version.clone()),
        ("status", instance.status.to_string()),
        ("memory_mb", instance.memory_mb.to_string()),
        ("host", c.host.clone()),
        ("port", c.port.map_or("-".into(), |p| p.to_string())),
    ];
    let optional = [
        ("user", c.user.clone()),
        ("database", instance.database.as_ref().map(|d| d.as_str().to_string())),
        ("charset", instance.charset.as_ref().map(|c| c.as_str().to_string())),
        ("collation", instance.collation.as_ref().map(|c| c.as_str().to_string())),
        ("status_reason", instance.status_reason.clone()),
        ("running_operation", instance.running_operation.as_ref().map(|o| o.to_string())),
        ("needs_attention", instance.needs_attention.clone()),
    ];
    fields.extend(optional.into_iter().filter_map(|(key, value)| Some((key, value?))));
    fields.push(("created_at", instance.created_at.clone()));
    println!("{}", key_values(&fields));
    Ok(())
}

/// `key: value` lines, the values aligned.
fn key_values(fields: &[(&str, String)]) -> String {
    let width = fields.iter().map(|(k, _)| k.len() + 1).max().unwrap_or(0);
    fields.iter().map(|(k, v)| format!("{:<width$} {v}", format!("{k}:"))).collect::<Vec<_>>().join("\n")
}

pub fn events(format: Format, events: &[Event]) -> Result<(), ClientError> {
    if format == Format::Json {
        return print_json(&events);
    }
    let rows: Vec<Vec<String>> = events
        .iter()
        .map(|e| vec![e.at.clone(), e.kind.to_string(), e.actor.clone(), e.detail.clone().unwrap_or_default()])
        .collect();
    println!("{}", table(&["AT", "EVENT", "BY", "DETAIL"], &rows));
    Ok(())
}

pub fn backups(format: Format, backups: &[BackupView]) -> Result<(), ClientError> {
    if format == Format::Json {
        return print_json(&backups);
    }
    let rows: Vec<Vec<String>> = backups
        .iter()
        .map(|b| {
            vec![
                b.id.to_string(),
                b.instance_id.to_string(),
                b.engine.to_string(),
                b.target.to_string(),
                b.kind.to_string(),
                b.state.to_string(),
                b.size_bytes.map_or("-".into(), |s| s.to_string()),
                b.started_at.clone(),
            ]
        })
        .collect();
    println!("{}", table(&["ID", "INSTANCE", "ENGINE", "TARGET", "KIND", "STATE", "BYTES", "STARTED"], &rows));
    Ok(())
}

pub fn backup(format: Format, backup: &BackupView) -> Result<(), ClientError> {
    if format == Format::Json {
        return print_json(backup);
    }
    backups(format, std::slice::from_ref(backup))
}

pub fn stats(format: Format, stats: &InstanceStatsView) -> Result<(), ClientError> {
    if format == Format::Json {
        return print_json(stats);
    }
    let c = &stats.container;
    let mut fields = vec![
        ("read_at", stats.read_at.clone()),
        ("cpu_seconds", format!("{:.2}", c.cpu_seconds)),
        ("memory_used_bytes", c.memory_used_bytes.to_string()),
        ("memory_limit_bytes", c.memory_limit_bytes.to_string()),
    ];
    match &stats.server {
        Some(ServerStatsView::Mysql { connections, databases }) => {
            fields.push(("connections", connections.to_string()));
            fields.extend(databases.iter().map(|d| ("database", format!("{} ({} bytes)", d.name, d.bytes))));
        }
        Some(ServerStatsView::Redis { used_memory_bytes, keys, connected_clients }) => {
            fields.push(("used_memory_bytes", used_memory_bytes.to_string()));
            fields.push(("keys", keys.to_string()));
            fields.push(("connected_clients", connected_clients.to_string()));
        }
        Some(ServerStatsView::Postgres { connections, database }) => {
            fields.push(("connections", connections.to_string()));
            fields.push(("database", format!("{} ({} bytes)", database.name, database.bytes)));
        }
        None => fields.push(("server", stats.server_unavailable.clone().unwrap_or_else(|| "unavailable".into()))),
    }
    println!("{}", key_values(&fields));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tables_columns_are_as_wide_as_their_widest_cell() {
        let rows =
            vec![vec!["a".to_string(), "long-name".into(), "x".into()], vec!["bbb".into(), "n".into(), "".into()]];

        let printed = table(&["ID", "NAME", "NOTE"], &rows);

        assert_eq!(printed, "ID   NAME       NOTE\na    long-name  x\nbbb  n");
    }

    #[test]
    fn key_values_are_aligned_after_the_longest_key() {
        let printed = key_values(&[("id", "1".into()), ("status", "running".into())]);

        assert_eq!(printed, "id:     1\nstatus: running");
    }
}
