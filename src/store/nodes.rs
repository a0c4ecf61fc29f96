//! Nodes: the Docker hosts instances run on. Today the fleet is one node, [`Node::LOCAL`], whose
//! row every start writes from its flags (replicas of one fleet are given the same); many hosts
//! will add rows, each with its own engine, addresses and ports, and port leases are already
//! unique per node.

use std::net::IpAddr;

use super::sql::{Columns, narrowed, now, params};
use super::{Store, StoreError};
use crate::config::PortRange;

/// A Docker host, as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub id: String,
    /// The Docker engine's endpoint (`unix://…`, `tcp://…`); `None` for `DOCKER_HOST` or the
    /// local socket.
    pub engine: Option<String>,
    /// The host address instance ports are published on.
    pub publish_ip: IpAddr,
    /// The host name put in connection details.
    pub advertise_host: String,
    /// The host ports it hands to instances.
    pub port_range: PortRange,
}

impl Node {
    /// The one node there is today.
    pub const LOCAL: &str = "local";
}

impl Store {
    /// Writes `node`'s row, as it is now: its engine, addresses and ports as this start's flags
    /// give them.
    pub async fn register_node(&self, node: &Node) -> Result<(), StoreError> {
        self.db
            .execute(
                "INSERT INTO nodes (id, engine, publish_ip, advertise_host, port_first, port_last, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO UPDATE SET engine = excluded.engine, \
                 publish_ip = excluded.publish_ip, advertise_host = excluded.advertise_host, \
                 port_first = excluded.port_first, port_last = excluded.port_last, updated_at = excluded.updated_at",
                params![
                    node.id.as_str(),
                    node.engine.as_deref(),
                    node.publish_ip.to_string(),
                    node.advertise_host.as_str(),
                    node.port_range.first,
                    node.port_range.last,
                    now(),
                ],
            )
            .await?;
        Ok(())
    }

    /// Every node, by id.
    pub async fn nodes(&self) -> Result<Vec<Node>, StoreError> {
        self.db
            .fetch_all(
                "SELECT id, engine, publish_ip, advertise_host, port_first, port_last FROM nodes ORDER BY id",
                params![],
                node_from_row,
            )
            .await
    }
}

fn node_from_row(row: &dyn Columns) -> Result<Node, StoreError> {
    let publish_ip = row.text(2)?;
    Ok(Node {
        id: row.text(0)?,
        engine: row.opt_text(1)?,
        publish_ip: publish_ip.parse().map_err(|_| StoreError::Corrupt(format!("{publish_ip:?} is no address")))?,
        advertise_host: row.text(3)?,
        port_range: PortRange { first: narrowed(row.int(4)?)?, last: narrowed(row.int(5)?)? },
    })
}
