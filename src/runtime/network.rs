//! The network dbroker's containers run on: a bridge of dbroker's own with inter-container
//! communication off, so that no tenant's server can reach another's (a database superuser can
//! run programs in its container: PostgreSQL's `COPY ... FROM PROGRAM`). Clients, and dbroker's
//! own probes, reach a server through its published port, which ICC does not touch.
//!
//! One network for every instance, not one each: Docker's default address pools hold about 30
//! bridge networks, so a network per instance would cap a host at about 30 instances. With ICC
//! off, members of one network reach each other no more than members of two.

use std::collections::HashMap;

use bollard::models::{EndpointSettings, NetworkCreateRequest, NetworkingConfig};
use bollard::query_parameters::ListNetworksOptionsBuilder;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{Runtime, RuntimeError};

/// The bridge driver's option that, set to "false", drops traffic between its containers.
const ICC_OPTION: &str = "com.docker.network.bridge.enable_icc";

/// The network a container joins, made the first time a container needs it.
#[derive(Debug, Clone)]
pub struct NetworkSpec {
    pub name: String,
    pub labels: HashMap<String, String>,
}

/// The endpoint of a container joining `network`, whose id is `id`. Without the id in it, Docker
/// 20.10 looks the network up by name when the container starts (whatever its network mode says),
/// and refuses while a second network of the name exists ("ambiguous"), even for a moment.
pub(super) fn endpoint(network: &NetworkSpec, id: &str) -> NetworkingConfig {
    let settings = EndpointSettings { network_id: Some(id.to_string()), ..Default::default() };
    NetworkingConfig { endpoints_config: Some(HashMap::from([(network.name.clone(), settings)])) }
}

impl Runtime {
    /// The id of the network `network` names, made now if there is none: a bridge with
    /// inter-container communication off. It is kept once made (it is cheap, and every container
    /// on it refers to it).
    ///
    /// Two processes may make it at once: Docker 20.10 then makes two networks of one name (its
    /// duplicate check is off by default, and racy when on), and newer engines refuse the second
    /// (409). Either way each process settles on the oldest network of the name it sees once its
    /// own create has returned, and removes its own if that lost, before anything joins it. (Only
    /// a network still being made when the other process looked, yet dated earlier, can escape
    /// this and leave two in use; containers on either are cut off all the same, since Docker
    /// also drops traffic between bridges.) Containers name the network by id (see `endpoint`), so a
    /// duplicate is never ambiguous.
    pub async fn ensure_network(&self, network: &NetworkSpec) -> Result<String, RuntimeError> {
        // Within one process, one at a time: a burst of creates on a fresh host makes one network,
        // not twenty that would each take an address pool for a moment.
        let _one_at_a_time = self.network_lock.lock().await;
        if let Some(id) = self.oldest_network(&network.name).await? {
            return Ok(id);
        }
        let request = NetworkCreateRequest {
            name: network.name.clone(),
            driver: Some("bridge".into()),
            options: Some(HashMap::from([(ICC_OPTION.to_string(), "false".to_string())])),
            labels: Some(network.labels.clone()),
            ..Default::default()
        };
        let created = self.docker().await?.create_network(request).await.map_err(self.failed("create_network"));
        let oldest = self.oldest_network(&network.name).await?;
        match (created, oldest) {
            (Ok(ours), Some(oldest)) => {
                if ours.id != oldest {
                    tracing::debug!(network = %network.name, "another process made the network first");
                    if let Err(error) =
                        self.docker().await?.remove_network(&ours.id).await.map_err(self.failed("remove_network"))
                    {
                        tracing::warn!(network = %network.name, %error, "could not remove a duplicate network");
                    }
                }
                Ok(oldest)
            }
            (Ok(ours), None) => Ok(ours.id),
            // Refused because another process made it (409), or for a reason of its own (no
            // address pool left) while another process did: the network is there all the same.
            (Err(_), Some(oldest)) => Ok(oldest),
            (Err(error), None) => Err(error),
        }
    }

    /// The id of the oldest network called exactly `name` (Docker's name filter also matches
    /// parts of names).
    async fn oldest_network(&self, name: &str) -> Result<Option<String>, RuntimeError> {
        let filters = HashMap::from([("name", vec![name.to_string()])]);
        let options = ListNetworksOptionsBuilder::default().filters(&filters).build();
        let networks = self.docker().await?.list_networks(Some(options)).await.map_err(self.failed("list_networks"))?;
        let created = |at: &Option<String>| at.as_deref().and_then(|at| OffsetDateTime::parse(at, &Rfc3339).ok());
        Ok(networks
            .into_iter()
            .filter(|n| n.name.as_deref() == Some(name))
            .filter_map(|n| Some((created(&n.created), n.id?)))
            // A network whose date cannot be read sorts last; the id breaks a tie.
            .min_by(|(a, a_id), (b, b_id)| (a.is_none(), a, a_id).cmp(&(b.is_none(), b, b_id)))
            .map(|(_, id)| id))
    }
}
