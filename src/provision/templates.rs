//! Data-directory templates. Most of a MariaDB or PostgreSQL create is the server's first-run
//! initialisation of its data directory; a template does it once per engine and image: a
//! throwaway container runs the image's own real first start with its data at
//! `engines::TEMPLATE_DATA_PATH`, is stopped cleanly and committed as
//! `dbroker-template/ENGINE:SOURCE-ID`. An instance made from it mounts its new, empty volume at
//! that path, and Docker copies the template into it when the container is created; the server
//! then only has to start. Files that hold a server's identity are set aside in the template and
//! each copy gets its own before it starts (see `identity`). The template's superuser password is
//! in its password file (the engine's `config_path`, committed with the build container, never in
//! a label: a container shows its image's labels); a copy's file holds the instance's own, which
//! replaces the template's on the server as soon as it answers. A changed image has another id,
//! so it gets a new template.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::{ProvisionError, Provisioner};
use crate::engines::{self, Endpoint, Launched, Settings, TEMPLATE_DATA_PATH};
use crate::model::OperationId;
use crate::model::{Engine, Flavor};
use crate::runtime::{ContainerState, Throwaway};
use crate::secrets::Secret;

/// Labels of a template image: the image it was made from.
pub const LABEL_TEMPLATE_OF: &str = "dbroker.template-of";
/// How a template is laid out: templates of another format (older dbrokers') are built again.
/// Format 2 has its identity files set aside (see `identity`); format 3 keeps its password in its
/// password file rather than in a label.
const LABEL_TEMPLATE_FORMAT: &str = "dbroker.template-format";
const TEMPLATE_FORMAT: &str = "3";

/// How often a template's first start is polled for readiness.
const BUILD_POLL_INTERVAL: Duration = Duration::from_millis(100);

/// A ready template: the image to run, and the password its data directory was initialised with.
pub(super) struct Template {
    pub image_id: String,
    pub password: Secret,
}

impl Provisioner {
    /// The template for `engine` on `source_image` (whose id is `source_id`), built on first use; `None` for engines that
    /// need none, and when a template cannot be built (the create then initialises its own data
    /// directory, and reports whatever goes wrong there).
    pub(super) async fn template_for(
        &self,
        engine: Engine,
        flavor: Option<Flavor>,
        source_image: &str,
        source_id: &str,
        operation: &OperationId,
    ) -> Result<Option<Template>, ProvisionError> {
        if !engines::uses_templates(engine, flavor) {
            return Ok(None);
        }
        // One build at a time: creates that arrive during a build wait for it and then reuse it.
        let _building = self.template_lock.lock().await;
        let short_id = source_id.trim_start_matches("sha256:").chars().take(16).collect::<String>();
        let reference = format!("dbroker-template/{engine}:{short_id}");
        if let Some((image_id, labels)) = self.runtime.image(&reference).await?
            && labels.get(LABEL_TEMPLATE_OF).map(String::as_str) == Some(source_id)
            && labels.get(LABEL_TEMPLATE_FORMAT).map(String::as_str) == Some(TEMPLATE_FORMAT)
            && let Some(password) = self.template_password(engine, &image_id, operation).await?
        {
            return Ok(Some(Template { image_id, password }));
        }
        match self.build_template(engine, source_image, source_id, &reference, operation).await {
            Ok(template) => {
                self.store.set_template_password(&template.image_id, &self.key.encrypt(&template.password)).await?;
                Ok(Some(template))
            }
            // A server that does not start within the ready timeout would not for the create either.
            Err(error @ (ProvisionError::EngineUnreachable(_) | ProvisionError::NotReady { .. })) => Err(error),
            Err(error) => {
                tracing::warn!(%engine, source_image, error = %error, "could not build a template; creating without");
                Ok(None)
            }
        }
    }

    /// The password of template `image_id`: as this store keeps it, or read from the template's
    /// password file the first time. `None` if the template has none (it is built again).
    async fn template_password(
        &self,
        engine: Engine,
        image_id: &str,
        operation: &OperationId,
    ) -> Result<Option<Secret>, ProvisionError> {
        if let Some(password) = self.store.template_password(image_id).await?.and_then(|p| self.key.decrypt(&p).ok()) {
            return Ok(Some(password));
        }
        let name = build_container_name(&self.config.instance_prefix, operation);
        let path = engines::profile(engine).config_path;
        let file = self.runtime.image_file(image_id, path, &name, self.one_off_labels()).await?;
        let config_file = file.as_deref().and_then(|contents| std::str::from_utf8(contents).ok());
        let Some(recovered) = engines::recover(engine, &Launched { env: &[], args: &[], config_file }) else {
            return Ok(None);
        };
        self.store.set_template_password(image_id, &self.key.encrypt(&recovered.password)).await?;
        Ok(Some(recovered.password))
    }

    /// A throwaway first start of `image`'s server (see `Runtime::run_throwaway`), with the
    /// engine's defaults, its data at `data_path` and a new password, which it returns with it.
    /// Named for `operation`, not labelled for it: Docker's commit merges a build container's
    /// labels into the template image, and so into every copy of it. If its process dies, the
    /// reconciler finds it by its name and removes it once that operation is no longer in flight.
    pub(super) fn first_start(
        &self,
        engine: Engine,
        image: &str,
        data_path: &str,
        operation: &OperationId,
    ) -> (Throwaway, Secret) {
        let password = Secret::generate_password();
        let memory = self.config.catalogue.engine(engine).memory.default;
        let instance = engines::default_settings(engine);
        let launch = engines::launch(engine, &Settings { password: &password, memory, instance: &instance, data_path });
        let throwaway = Throwaway {
            name: build_container_name(&self.config.instance_prefix, operation),
            image: image.to_string(),
            env: launch.env,
            args: launch.args,
            container_port: engines::profile(engine).port,
            labels: self.one_off_labels(),
            memory_bytes: memory.bytes(),
            files: vec![super::spec_file(engine, launch.config_file)],
            network: self.network(),
            capabilities: engines::profile(engine).capabilities,
        };
        (throwaway, password)
    }

    /// The template whose image id is `image_id`, if the host still has it: the copy of a template
    /// whose create a crash interrupted may still answer as the template. `operation` is the one
    /// that looks (see `template_password`).
    pub(super) async fn template_by_id(
        &self,
        engine: Engine,
        image_id: &str,
        operation: &OperationId,
    ) -> Result<Option<Template>, ProvisionError> {
        let Some((image_id, _)) = self.runtime.image(image_id).await? else { return Ok(None) };
        let password = self.template_password(engine, &image_id, operation).await?;
        Ok(password.map(|password| Template { image_id, password }))
    }

    /// Polls a throwaway server (see `first_start`) with a real login until it answers, it exits,
    /// or the ready timeout passes.
    pub(super) async fn wait_throwaway_ready(
        &self,
        engine: Engine,
        name: &str,
        endpoint: &Endpoint<'_>,
    ) -> Result<(), ProvisionError> {
        let deadline = Instant::now() + self.config.ready_timeout;
        while let Err(reason) = engines::probe(engine, endpoint).await {
            if Instant::now() >= deadline {
                let reason = format!("not ready within {:?} (last attempt: {reason})", self.config.ready_timeout);
                return Err(ProvisionError::NotReady { reason, last_logs: Vec::new() });
            }
            if !matches!(self.runtime.state(name).await?, ContainerState::Running { .. }) {
                // A template's create that follows without a template reports why, with the logs.
                return Err(ProvisionError::ServerRefused("the throwaway server exited".into()));
            }
            tokio::time::sleep(BUILD_POLL_INTERVAL).await;
        }
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(%engine, source_image))]
    async fn build_template(
        &self,
        engine: Engine,
        source_image: &str,
        source_id: &str,
        reference: &str,
        operation: &OperationId,
    ) -> Result<Template, ProvisionError> {
        let started = Instant::now();
        // Its password file is committed with the template: where a process that did not build
        // it finds its password.
        let (throwaway, password) = self.first_start(engine, source_image, TEMPLATE_DATA_PATH, operation);
        let name = throwaway.name.clone();
        let built = async {
            let port = self.runtime.run_throwaway(throwaway).await?;
            let endpoint = Endpoint { host: "127.0.0.1", port, password: &password, database: None };
            self.wait_throwaway_ready(engine, &name, &endpoint).await?;
            self.keep_collations(engine, source_id, &endpoint).await;
            // A clean shutdown, so every copy starts without recovery.
            self.runtime.stop(&name).await?;
            self.set_identity_aside(engine, &name).await?;
            let labels = HashMap::from([
                (LABEL_TEMPLATE_OF.to_string(), source_id.to_string()),
                (LABEL_TEMPLATE_FORMAT.to_string(), TEMPLATE_FORMAT.to_string()),
            ]);
            Ok::<_, ProvisionError>(self.runtime.commit(&name, reference, source_image, labels).await?)
        }
        .await;
        if let Err(error) = self.runtime.remove_container(&name).await {
            tracing::warn!(container = %name, error = %error, "could not remove a template's build container");
        }
        let image_id = built?;
        tracing::info!(reference, elapsed = ?started.elapsed(), "built a data-directory template");
        Ok(Template { image_id, password })
    }
}

/// What the name of a template's build container starts with: `PREFIX-template-build-`, then the
/// id of the operation that builds it and a random tail.
pub(super) fn build_container_prefix(instance_prefix: &str) -> String {
    format!("{instance_prefix}-template-build-")
}

pub(super) fn build_container_name(instance_prefix: &str, operation: &OperationId) -> String {
    format!("{}{operation}-{}", build_container_prefix(instance_prefix), hex::encode(rand::random::<[u8; 3]>()))
}

/// The operation a build container of this deployment was made for, read from its name.
pub(super) fn build_operation(instance_prefix: &str, container: &str) -> Option<OperationId> {
    let rest = container.strip_prefix(&build_container_prefix(instance_prefix))?;
    rest.split('-').next()?.parse().ok()
}
