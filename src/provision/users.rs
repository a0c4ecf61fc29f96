//! Who may call the API: add a user, list them, disable and enable them, rotate a token, set a
//! quota, remove them. One service for `dbroker user ...` (straight on the store, on a host whose
//! dbroker may not be running) and the admin routes (`/v1/admin/users`): it needs the store only,
//! never the Docker engine, and none of it touches a user's instances.
//!
//! A token exists in the clear only in what `add` and `rotate_token` return, to be shown once:
//! the store keeps its hash. A running dbroker takes known tokens on trust for
//! `api::auth::AUTH_CACHE_TTL`; the admin routes forget a changed user's at once in their own
//! process, and every other process sharing the store sees the change within that time.

use super::ProvisionError;
use crate::model::UserName;
use crate::secrets::{Secret, generate_token};
use crate::store::{LimitChange, QuotaChange, QuotaOverride, Store, StoreError, Usage, User};

/// The user-management service; cheap to clone.
#[derive(Clone)]
pub struct Users {
    store: Store,
}

/// A user to add.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub name: UserName,
    /// The user may administer dbroker.
    pub admin: bool,
    /// Their own quota, where it is not to be the configuration's default.
    pub quota: QuotaOverride,
}

/// A user and their new token, which nothing can show again.
#[derive(Debug)]
pub struct WithToken {
    pub user: User,
    pub token: Secret,
    /// A demo user whose token was rotated is a real user now: a dbroker started with them in
    /// `--demo-users` refuses to start until they are taken out of it.
    pub was_demo: bool,
}

/// A user with what they hold, as their quota counts it.
#[derive(Debug, Clone)]
pub struct Listed {
    pub user: User,
    pub usage: Usage,
}

/// The largest memory quota the store can hold (a signed 64-bit integer).
const MAX_MEMORY_QUOTA_MB: u64 = i64::MAX as u64;

impl Users {
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    /// Adds a user with a fresh token. `UserNameTaken` if the name exists.
    pub async fn add(&self, new: NewUser) -> Result<WithToken, ProvisionError> {
        check_memory_quota(new.quota.memory_mb)?;
        let token = generate_token();
        let user = self.store.add_user_with_quota(&new.name, token.expose(), new.admin, new.quota).await.map_err(
            |e| match e {
                StoreError::NameTaken => ProvisionError::UserNameTaken(new.name.clone()),
                other => other.into(),
            },
        )?;
        Ok(WithToken { user, token, was_demo: false })
    }

    /// Every user, by name, with what each holds.
    pub async fn list(&self) -> Result<Vec<Listed>, ProvisionError> {
        let (users, mut usage) = (self.store.list_users().await?, self.store.usage_by_owner().await?);
        Ok(users.into_iter().map(|user| Listed { usage: usage.remove(&user.id).unwrap_or_default(), user }).collect())
    }

    /// Gives the user a new token; the old one stops working. Returns the user as they are now.
    pub async fn rotate_token(&self, name: &UserName) -> Result<WithToken, ProvisionError> {
        let token = generate_token();
        let before = self.store.rotate_token(name, token.expose()).await.map_err(|e| of_user(name, e))?;
        let was_demo = before.is_demo;
        Ok(WithToken { user: User { is_demo: false, ..before }, token, was_demo })
    }

    /// Refuses the user's token, keeping it and their instances. Returns the user as they are now.
    pub async fn disable(&self, name: &UserName) -> Result<User, ProvisionError> {
        self.store.disable_user(name).await.map_err(|e| of_user(name, e))
    }

    /// Accepts the user's token again. Returns the user as they are now.
    pub async fn enable(&self, name: &UserName) -> Result<User, ProvisionError> {
        self.store.enable_user(name).await.map_err(|e| of_user(name, e))
    }

    /// Changes the user's own quota, limit by limit; the next create, resize or claim is checked
    /// against it, and their instances are left as they are, even beyond it. Returns the user as
    /// they are now.
    pub async fn change_quota(&self, name: &UserName, change: QuotaChange) -> Result<User, ProvisionError> {
        if let LimitChange::Set(memory_mb) = change.memory_mb {
            check_memory_quota(Some(memory_mb))?;
        }
        self.store.change_quota(name, change).await.map_err(|e| of_user(name, e))
    }

    /// Removes a user who owns no instances (failed ones included: each is a record to delete
    /// first), and returns them as they were; `UserOwnsInstances` otherwise. Removing a user
    /// never deletes anyone's data.
    pub async fn remove(&self, name: &UserName) -> Result<User, ProvisionError> {
        self.store.remove_user(name).await.map_err(|e| match e {
            StoreError::OwnsInstances(count) => ProvisionError::UserOwnsInstances { name: name.clone(), count },
            StoreError::OwnsBackups(count) => {
                ProvisionError::Conflict(format!("{name} has {count} backup(s): delete them before the user"))
            }
            other => of_user(name, other),
        })
    }
}

/// A store error about the user `name`: their absence is `NoSuchUser`, not an instance's.
fn of_user(name: &UserName, error: StoreError) -> ProvisionError {
    match error {
        StoreError::NotFound => ProvisionError::NoSuchUser(name.clone()),
        other => other.into(),
    }
}

fn check_memory_quota(memory_mb: Option<u64>) -> Result<(), ProvisionError> {
    match memory_mb {
        Some(mb) if mb > MAX_MEMORY_QUOTA_MB => Err(ProvisionError::Invalid {
            field: "memory_mb",
            reason: format!("a memory quota is at most {MAX_MEMORY_QUOTA_MB} MiB"),
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn users() -> (Users, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&crate::store::DatabaseUrl::in_data_dir(dir.path())).await.unwrap();
        (Users::new(store), dir)
    }

    fn named(name: &str) -> NewUser {
        NewUser { name: name.parse().unwrap(), admin: false, quota: QuotaOverride::default() }
    }

    #[tokio::test]
    async fn a_new_users_token_is_random_and_only_its_hash_is_stored() {
        let (users, _dir) = users().await;

        let carol = users.add(named("carol")).await.unwrap();
        let dave = users.add(named("dave")).await.unwrap();

        assert_ne!(carol.token.expose(), dave.token.expose());
        let found = users.store.user_by_token_hash(&crate::secrets::hash_token(carol.token.expose())).await.unwrap();
        assert_eq!(found.map(|u| u.name), Some("carol".to_string()));
    }

    #[tokio::test]
    async fn adding_a_name_that_exists_is_name_taken_and_changes_nothing() {
        let (users, _dir) = users().await;
        let first = users.add(named("carol")).await.unwrap();

        let again = users.add(NewUser { admin: true, ..named("carol") }).await.unwrap_err();

        assert!(matches!(again, ProvisionError::UserNameTaken(_)), "{again:?}");
        assert_eq!(again.code(), "name_taken");
        let listed = users.list().await.unwrap();
        assert_eq!(listed.len(), 1);
        assert!(!listed[0].user.is_admin, "the first carol is as she was");
        let still = users.store.user_by_token_hash(&crate::secrets::hash_token(first.token.expose())).await.unwrap();
        assert!(still.is_some(), "her token still works");
    }

    #[tokio::test]
    async fn a_user_added_with_a_quota_lists_it_and_a_change_keeps_sets_or_resets_each_limit() {
        let (users, _dir) = users().await;
        let quota = QuotaOverride { instances: Some(3), memory_mb: None };
        users.add(NewUser { quota, ..named("carol") }).await.unwrap();
        let carol: UserName = "carol".parse().unwrap();

        let set_memory = QuotaChange { instances: LimitChange::Keep, memory_mb: LimitChange::Set(512) };
        let after_set = users.change_quota(&carol, set_memory).await.unwrap();
        let reset_instances = QuotaChange { instances: LimitChange::Default, memory_mb: LimitChange::Keep };
        let after_reset = users.change_quota(&carol, reset_instances).await.unwrap();

        assert_eq!(after_set.quota, QuotaOverride { instances: Some(3), memory_mb: Some(512) });
        assert_eq!(after_reset.quota, QuotaOverride { instances: None, memory_mb: Some(512) });
        assert_eq!(users.list().await.unwrap()[0].user.quota, after_reset.quota);
    }

    #[tokio::test]
    async fn a_memory_quota_the_store_cannot_hold_is_invalid() {
        let (users, _dir) = users().await;
        let huge = QuotaOverride { instances: None, memory_mb: Some(u64::MAX) };

        let added = users.add(NewUser { quota: huge, ..named("carol") }).await.unwrap_err();

        assert!(matches!(added, ProvisionError::Invalid { field: "memory_mb", .. }), "{added:?}");
        assert!(users.list().await.unwrap().is_empty(), "nothing added");
    }

    #[tokio::test]
    async fn an_unknown_user_is_no_such_user_for_every_change() {
        let (users, _dir) = users().await;
        let nobody: UserName = "nobody".parse().unwrap();

        let errors = [
            users.disable(&nobody).await.unwrap_err(),
            users.enable(&nobody).await.unwrap_err(),
            users.rotate_token(&nobody).await.unwrap_err(),
            users.change_quota(&nobody, QuotaChange::default()).await.unwrap_err(),
            users.remove(&nobody).await.unwrap_err(),
        ];

        for error in errors {
            assert!(matches!(error, ProvisionError::NoSuchUser(_)), "{error:?}");
            assert_eq!(error.to_string(), "no user named nobody");
        }
    }

    #[tokio::test]
    async fn rotating_a_token_replaces_it_and_makes_a_demo_user_a_real_one() {
        let (users, _dir) = users().await;
        let old = users.add(named("carol")).await.unwrap();
        users.store.sync_demo_users(&["dave".parse().unwrap()]).await.unwrap();

        let carol = users.rotate_token(&"carol".parse().unwrap()).await.unwrap();
        let dave = users.rotate_token(&"dave".parse().unwrap()).await.unwrap();

        let hash = crate::secrets::hash_token;
        assert!(users.store.user_by_token_hash(&hash(old.token.expose())).await.unwrap().is_none());
        assert!(users.store.user_by_token_hash(&hash(carol.token.expose())).await.unwrap().is_some());
        assert!(!carol.was_demo);
        assert!(dave.was_demo && !dave.user.is_demo, "a token of its own makes a demo user a real one");
        assert!(users.store.user_by_token_hash(&hash("dave")).await.unwrap().is_none(), "its name is no token");
    }

    #[tokio::test]
    async fn a_user_who_owns_an_instance_is_not_removed_and_one_who_owns_none_is() {
        let (users, _dir) = users().await;
        let carol = users.add(named("carol")).await.unwrap().user;
        users.add(named("dave")).await.unwrap();
        let id = crate::model::InstanceId::random();
        let record = crate::store::NewInstanceRecord {
            node_id: crate::store::Node::LOCAL,
            id: &id,
            owner_id: Some(carol.id),
            name: &"cache".parse().unwrap(),
            settings: &crate::model::EngineSettings::Redis,
            version: "7.2",
            image: "redis:7.2",
            memory_mb: crate::model::MemoryMb(64),
            port: 20000,
            username: None,
            password_enc: b"sealed",
            status: crate::model::Status::Running,
            template_image: None,
        };
        users.store.insert_instance(&record).await.unwrap();

        let refused = users.remove(&"carol".parse().unwrap()).await.unwrap_err();
        let removed = users.remove(&"dave".parse().unwrap()).await.unwrap();

        assert!(matches!(refused, ProvisionError::UserOwnsInstances { count: 1, .. }), "{refused:?}");
        assert!(refused.to_string().starts_with("carol still owns 1 instance(s)"), "{refused}");
        assert_eq!(removed.name, "dave");
        let listed = users.list().await.unwrap();
        assert_eq!(listed.iter().map(|l| l.user.name.as_str()).collect::<Vec<_>>(), ["carol"]);
        assert_eq!(listed[0].usage, Usage { instances: 1, memory_mb: 64 }, "what she holds is listed");
    }
}
