//! What a MySQL image is, read from the image itself rather than from the configuration: which
//! server it runs (Oracle's MySQL or MariaDB), from a file it has, and the collations that server
//! has, from the server itself. Each is read once per image id and kept in the store, so neither
//! a restart nor another process reads it again; a changed image has another id and is read anew.
//! A create's character set and collation are checked against the server's list before anything
//! of the instance exists, so one the server lacks is a 422, not a server that will not start.

use std::collections::HashMap;

use super::templates::build_container_name;
use super::{LABEL_DEPLOYMENT, LABEL_PREFIX, ProvisionError, Provisioner};
use crate::engines::{self, Endpoint};
use crate::model::{Engine, EngineSettings, Flavor, OperationId, ServerCollations};

impl Provisioner {
    /// Which server the MySQL image `image` (id `image_id`) runs; `None` for the other engines,
    /// which have one server each. Read on first use by looking for each server's binary in a
    /// container of the image that never starts: tens of milliseconds, no server run.
    pub(super) async fn flavor_of(
        &self,
        engine: Engine,
        image: &str,
        image_id: &str,
        operation: &OperationId,
    ) -> Result<Option<Flavor>, ProvisionError> {
        if engine != Engine::Mysql {
            return Ok(None);
        }
        if let Some(flavor) = self.store.image_flavor(image_id).await? {
            return Ok(Some(flavor));
        }
        // Named and labelled like a template's build, so that the reconciler removes one left by
        // a process that died (see `templates`).
        let name = build_container_name(&self.config.instance_prefix, operation);
        let paths = engines::MYSQL_SERVER_PATHS.map(|(_, path)| path);
        let found = self.runtime.image_has_paths(image, &paths, &name, self.one_off_labels()).await?;
        let flavor = engines::MYSQL_SERVER_PATHS
            .into_iter()
            .zip(found)
            .find_map(|((flavor, _), found)| found.then_some(flavor))
            .unwrap_or(Flavor::Unrecognised);
        self.store.set_image_flavor(image_id, flavor).await?;
        tracing::info!(image, %flavor, "read which server a MySQL image runs");
        Ok(Some(flavor))
    }

    /// Refuses a character set or collation that the server of `image` (id `image_id`, which runs
    /// `flavor`) lacks, as `Invalid` naming the field. Only a request with a character set of its
    /// own is checked (the server's defaults are the server's own), so only such a create may have
    /// to start the image's server once to read its list. An image whose server dbroker does not
    /// recognise is not asked: its server, if it is one, refuses what it lacks when it starts.
    pub(super) async fn check_server_has(
        &self,
        flavor: Option<Flavor>,
        settings: &EngineSettings,
        version: &str,
        image: &str,
        image_id: &str,
        operation: &OperationId,
    ) -> Result<(), ProvisionError> {
        let EngineSettings::Mysql { charset: Some(charset), collation } = settings else { return Ok(()) };
        if flavor == Some(Flavor::Unrecognised) {
            tracing::info!(image, "no MySQL server found in the image; its collations are not checked");
            return Ok(());
        }
        let collations = match self.store.image_collations(image_id).await? {
            Some(collations) => collations,
            None => self.read_collations(image, image_id, operation).await?,
        };
        let server = format!("the server of version {version}");
        collations
            .check(&server, charset, collation.as_ref())
            .map_err(|(field, invalid)| ProvisionError::Invalid { field, reason: invalid.0 })
    }

    /// Reads and keeps the collations of a MySQL server that answers at `endpoint`, the server of
    /// image `source_id`: a template's build runs one anyway. A failure only costs the first
    /// create with a character set a start of the server, so it is logged, not returned.
    pub(super) async fn keep_collations(&self, engine: Engine, source_id: &str, endpoint: &Endpoint<'_>) {
        if engine != Engine::Mysql {
            return;
        }
        let kept = match engines::mysql_collations(endpoint).await {
            Ok(pairs) => self.store.set_image_collations(source_id, &pairs).await.map_err(|e| e.to_string()),
            Err(reason) => Err(reason),
        };
        if let Err(error) = kept {
            tracing::warn!(%error, "could not read the collations of a template's server");
        }
    }

    /// Starts a throwaway server of `image` to read its collations, keeps them and removes it.
    /// Once per image id: creates that arrive meanwhile wait for it, and then find the list kept.
    async fn read_collations(
        &self,
        image: &str,
        image_id: &str,
        operation: &OperationId,
    ) -> Result<ServerCollations, ProvisionError> {
        // One throwaway server at a time, a template's build included: each is a server's first start.
        let _one_at_a_time = self.template_lock.lock().await;
        if let Some(collations) = self.store.image_collations(image_id).await? {
            return Ok(collations);
        }
        let engine = Engine::Mysql;
        let (throwaway, password) = self.first_start(engine, image, engines::profile(engine).data_path, operation);
        let name = throwaway.name.clone();
        let read = async {
            let port = self.runtime.run_throwaway(throwaway).await?;
            let endpoint = Endpoint { host: "127.0.0.1", port, password: &password, database: None };
            self.wait_ready(engine, &name, &endpoint).await?;
            engines::mysql_collations(&endpoint)
                .await
                .map_err(|e| ProvisionError::ServerRefused(format!("listing the server's collations: {e}")))
        }
        .await;
        // Its data is in an anonymous volume at most, which goes with it.
        if let Err(error) = self.runtime.remove_container(&name).await {
            tracing::warn!(container = %name, %error, "could not remove the server that listed its collations");
        }
        let pairs = read?;
        self.store.set_image_collations(image_id, &pairs).await?;
        tracing::info!(image, collations = pairs.len(), "read the collations of a MySQL image's server");
        Ok(ServerCollations::new(pairs))
    }

    /// The labels of a one-off container: this deployment's, and no instance's.
    pub(super) fn one_off_labels(&self) -> HashMap<String, String> {
        HashMap::from([
            (LABEL_PREFIX.to_string(), self.config.instance_prefix.clone()),
            (LABEL_DEPLOYMENT.to_string(), self.store.deployment_id().to_string()),
        ])
    }
}
