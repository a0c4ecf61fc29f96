//! Named leases: a holder and an expiry, taken and renewed with one conditional statement, so
//! that of several processes exactly one holds a lease at a time, and a holder that died loses it
//! once it expires (the reconciler's leadership).

use std::time::Duration;

use super::sql::params;
use super::{Store, StoreError, millis_from_now, now_millis};

impl Store {
    /// Takes or renews lease `name` for `holder` for `ttl`: `true` if `holder` holds it now.
    /// Another holder's lease is taken only once it has expired.
    pub async fn try_lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool, StoreError> {
        let changed = self
            .db
            .execute(
                "INSERT INTO leases (name, holder, until) VALUES ($1, $2, $3) \
                 ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, until = excluded.until \
                 WHERE leases.holder = excluded.holder OR leases.until < $4",
                params![name, holder, millis_from_now(ttl), now_millis()],
            )
            .await?;
        Ok(changed > 0)
    }

    /// Gives lease `name` up, if `holder` holds it, so another may take it at once.
    pub async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        self.db.execute("DELETE FROM leases WHERE name = $1 AND holder = $2", params![name, holder]).await?;
        Ok(())
    }
}
