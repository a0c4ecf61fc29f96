-- Per-user quota overrides (`dbroker user quota`): how many instances a user may hold, and the
-- sum of their memory caps in MiB. NULL: the configuration's default (`[quotas]`), so a change
-- of the default reaches every user without an override. Checked in the same write transaction
-- as the change that needs room (see store/quotas.rs), never by a trigger: the limits of the host
-- and the defaults come from the configuration, which the schema does not know.
ALTER TABLE users ADD COLUMN quota_instances INTEGER CHECK (quota_instances >= 0);
ALTER TABLE users ADD COLUMN quota_memory_mb INTEGER CHECK (quota_memory_mb >= 0);
