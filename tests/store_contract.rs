//! The store's contract, held to on each backend: every test here runs once on SQLite (a file of
//! its own) and once on PostgreSQL (a database of its own on the server `scripts/test` starts,
//! `DBROKER_TEST_POSTGRES_URL`), as `NAME::on_sqlite` and `NAME::on_postgres`. What is shared
//! across processes is what matters most here: constraints mapped to the same errors, the write
//! lock that keeps quotas, leases, operations taken over, and values read back as written.

use std::time::Duration;

use dbroker::model::{
    BackupId, BackupKind, BackupState, Engine, EngineSettings, EventKind, InstanceId, KeepDays, KeepLast, MemoryMb,
    OperationId, OperationKind, Schedule, Status, TargetName, UserName,
};
use dbroker::store::{
    BackupFilter, BackupQuota, BackupUsage, DatabaseUrl, LimitChange, LimitKind, Limits, NewBackup, NewInstanceRecord,
    NewOperation, NewPolicy, Node, PoolClaim, Quota, QuotaChange, Store, StoreError, StoredObject,
};
use sqlx::{ConnectOptions, Connection};
use time::OffsetDateTime;

/// The node every test's instances are on unless it says otherwise.
fn node(id: &str, first: u16) -> Node {
    Node {
        id: id.to_string(),
        engine: None,
        publish_ip: "127.0.0.1".parse().unwrap(),
        advertise_host: "db.example".into(),
        port_range: dbroker::config::PortRange { first, last: first + 99 },
    }
}

/// A store of the test's own, with the local node, removed when dropped.
struct TestStore {
    store: Store,
    url: DatabaseUrl,
    _dir: Option<tempfile::TempDir>,
    _database: Option<TestDatabase>,
}

/// A PostgreSQL database of a test's own (the server's admin URL, its name), dropped when this is,
/// also when the test panics before its store opens.
struct TestDatabase {
    admin: String,
    name: String,
}

impl TestStore {
    async fn sqlite() -> TestStore {
        let dir = tempfile::tempdir().unwrap();
        let url = DatabaseUrl::in_data_dir(dir.path());
        TestStore { store: Store::open(&url).await.unwrap(), url, _dir: Some(dir), _database: None }
    }

    async fn postgres() -> TestStore {
        let admin = std::env::var("DBROKER_TEST_POSTGRES_URL")
            .expect("DBROKER_TEST_POSTGRES_URL names a PostgreSQL server: run the tests with scripts/test");
        let name = format!("dbt_store_{}_{:x}", std::process::id(), rand_suffix());
        let mut connection = admin_connection(&admin).await;
        // The name is made here of digits and letters, never taken from outside.
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut connection).await.unwrap();
        connection.close().await.ok();
        let database = TestDatabase { admin: admin.clone(), name: name.clone() };
        let mut options: sqlx::postgres::PgConnectOptions = admin.parse().unwrap();
        options = options.database(&name);
        let url = DatabaseUrl::Postgres(options.to_url_lossy().to_string());
        let store = Store::open(&url).await.expect("the store opens on PostgreSQL");
        TestStore { store, url, _dir: None, _database: Some(database) }
    }
}

async fn admin_connection(admin: &str) -> sqlx::PgConnection {
    admin.parse::<sqlx::postgres::PgConnectOptions>().unwrap().connect().await.expect("the test PostgreSQL answers")
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 & 0xffff_ffff_ffff
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        // A thread and runtime of its own: the test's runtime may not block here.
        std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async move {
                let mut connection = admin_connection(&admin).await;
                let drop = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                sqlx::raw_sql(sqlx::AssertSqlSafe(drop)).execute(&mut connection).await.ok();
            })
        })
        .join()
        .unwrap();
    }
}

/// One test of the contract, run on each backend.
macro_rules! contract {
    ($name:ident, |$test:ident| $body:block) => {
        mod $name {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_sqlite() {
                let $test = TestStore::sqlite().await;
                $test.store.register_node(&node(Node::LOCAL, 20000)).await.unwrap();
                $body
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_postgres() {
                let $test = TestStore::postgres().await;
                $test.store.register_node(&node(Node::LOCAL, 20000)).await.unwrap();
                $body
            }
        }
    };
}

const NO_LIMITS: Limits =
    Limits { default_quota: Quota { instances: u32::MAX, memory_mb: u64::MAX }, host_memory_mb: u64::MAX };

async fn user(store: &Store, name: &str) -> i64 {
    store.add_user(&name.parse().unwrap(), &format!("token-of-{name}"), false).await.unwrap().id
}

/// A Redis record of `owner` called `name` on `port`, written within `limits`.
async fn insert(
    store: &Store,
    owner: Option<i64>,
    name: &str,
    port: u16,
    limits: &Limits,
) -> Result<InstanceId, StoreError> {
    insert_on(store, Node::LOCAL, owner, name, port, limits).await
}

/// As `insert`, on `node`.
async fn insert_on(
    store: &Store,
    node: &str,
    owner: Option<i64>,
    name: &str,
    port: u16,
    limits: &Limits,
) -> Result<InstanceId, StoreError> {
    let id = InstanceId::random();
    let new = NewInstanceRecord {
        id: &id,
        node_id: node,
        owner_id: owner,
        name: &name.parse().unwrap(),
        settings: &EngineSettings::Redis,
        version: "7.0",
        image: "redis:7.0",
        memory_mb: MemoryMb(64),
        port,
        username: None,
        password_enc: &[0, 1, 2, 255],
        status: Status::Running,
        template_image: None,
    };
    store.insert_instance_within(&new, limits).await.map(|_| id)
}

fn operation<'a>(id: &'a OperationId, instance: &'a InstanceId, owner: i64, key: Option<&'a str>) -> NewOperation<'a> {
    NewOperation {
        id,
        instance_id: instance,
        kind: OperationKind::Restart,
        requested_by: "alice",
        owner_id: Some(owner),
        holder: "replica-a",
        lease: Duration::from_secs(60),
        input: serde_json::json!({"why": "a test"}),
        idempotency: key.map(|key| (key, "hash")),
    }
}

contract!(a_record_reads_back_as_it_was_written, |test| {
    let alice = user(&test.store, "alice").await;
    let id = insert(&test.store, Some(alice), "shop", 20001, &NO_LIMITS).await.unwrap();

    let record = test.store.find_instance(alice, &id).await.unwrap().expect("alice's instance");

    assert_eq!((record.name.as_str(), record.port, record.owner_id), ("shop", Some(20001), Some(alice)));
    assert_eq!(record.password_enc, vec![0, 1, 2, 255], "bytes, including a zero");
    assert!(!record.oom_killed);
    assert!(time::OffsetDateTime::parse(&record.created_at, &time::format_description::well_known::Rfc3339).is_ok());
    assert!(test.store.find_instance(alice + 1, &id).await.unwrap().is_none(), "another owner sees nothing");
    test.store.mark_exited(&id, 137, true).await.unwrap();
    let exited = test.store.instance(&id).await.unwrap().unwrap();
    assert_eq!((exited.status, exited.exit_code, exited.oom_killed), (Status::Exited, Some(137), true));
});

contract!(a_port_or_a_name_taken_is_its_own_error, |test| {
    let alice = user(&test.store, "alice").await;
    let first = insert(&test.store, Some(alice), "shop", 20001, &NO_LIMITS).await.unwrap();

    let port = insert(&test.store, Some(alice), "other", 20001, &NO_LIMITS).await;
    let name = insert(&test.store, Some(alice), "shop", 20002, &NO_LIMITS).await;
    let second = insert(&test.store, Some(alice), "second", 20002, &NO_LIMITS).await.unwrap();
    let moved = test.store.move_port(&second, 20001).await;
    let user_name = test.store.add_user(&"alice".parse().unwrap(), "another-token", false).await;

    assert!(matches!(port, Err(StoreError::PortTaken)), "{port:?}");
    assert!(matches!(name, Err(StoreError::NameTaken)), "{name:?}");
    assert!(matches!(moved, Err(StoreError::PortTaken)), "{moved:?}");
    assert!(matches!(user_name, Err(StoreError::NameTaken)), "{user_name:?}");
    assert_eq!(test.store.list_instances(alice, None).await.unwrap().len(), 2, "nothing half-written");
    let bob = user(&test.store, "bob").await;
    insert(&test.store, Some(bob), "shop", 20003, &NO_LIMITS).await.expect("names are per user");
    test.store.delete_instance(&first).await.unwrap();
    insert(&test.store, Some(alice), "shop", 20001, &NO_LIMITS).await.expect("a deleted record frees both");
});

contract!(one_operation_in_flight_per_instance_and_an_idempotency_key_once, |test| {
    let alice = user(&test.store, "alice").await;
    let instance = insert(&test.store, Some(alice), "shop", 20001, &NO_LIMITS).await.unwrap();
    let (first, second, third) = (OperationId::random(), OperationId::random(), OperationId::random());
    test.store.insert_operation(&operation(&first, &instance, alice, Some("key-1"))).await.unwrap();

    let busy = test.store.insert_operation(&operation(&second, &instance, alice, None)).await;
    let reused = test.store.insert_operation(&operation(&third, &instance, alice, Some("key-1"))).await;

    assert!(matches!(busy, Err(StoreError::OperationInFlight)), "{busy:?}");
    assert!(matches!(reused, Err(StoreError::IdempotencyKeyUsed)), "{reused:?}");
    let by_key = test.store.operation_by_key(alice, "key-1").await.unwrap().expect("found by its key");
    assert_eq!(by_key.id, first);
    assert_eq!(by_key.input, serde_json::json!({"why": "a test"}));
    assert!(test.store.finish_operation(&first, "replica-a", None).await.unwrap());
    test.store.insert_operation(&operation(&second, &instance, alice, None)).await.expect("room once it ended");
    assert_eq!(test.store.operation_in_flight(&instance).await.unwrap().map(|o| o.id), Some(second));
});

contract!(an_expired_operation_lease_is_taken_over_once_and_its_first_holder_loses_it, |test| {
    let alice = user(&test.store, "alice").await;
    let instance = insert(&test.store, Some(alice), "shop", 20001, &NO_LIMITS).await.unwrap();
    let id = OperationId::random();
    test.store.insert_operation(&operation(&id, &instance, alice, None)).await.unwrap();
    assert!(!test.store.take_over_operation(&id, "replica-b", Duration::from_secs(60)).await.unwrap(), "not yet");
    // Its holder renews it one last time, for no time at all, as one that dies right after would.
    test.store.renew_lease(&id, "replica-a", Duration::ZERO).await.unwrap();

    let abandoned = poll(|| async { test.store.abandoned_operations().await.unwrap().into_iter().next() }).await;
    let takers = [("replica-b", test.store.clone()), ("replica-c", test.store.clone())].map(|(holder, store)| {
        let id = id.clone();
        tokio::spawn(async move { store.take_over_operation(&id, holder, Duration::from_secs(60)).await.unwrap() })
    });
    let mut taken = 0;
    for taker in takers {
        taken += usize::from(taker.await.unwrap());
    }

    assert_eq!(abandoned.id, id);
    assert_eq!(taken, 1, "exactly one replica takes it over");
    assert!(!test.store.record_steps(&id, "replica-a", &[]).await.unwrap(), "the first holder lost it");
    let holder = test.store.operation(&id).await.unwrap().unwrap().holder.unwrap();
    assert!(test.store.finish_operation(&id, &holder, None).await.unwrap());
});

contract!(a_named_lease_has_one_holder_until_it_expires_or_is_released, |test| {
    let store = &test.store;
    assert!(store.try_lease("leader", "replica-a", Duration::from_secs(60)).await.unwrap());
    assert!(!store.try_lease("leader", "replica-b", Duration::from_secs(60)).await.unwrap());
    // Renewed one last time, for no time at all, as by a holder that dies right after.
    assert!(store.try_lease("leader", "replica-a", Duration::ZERO).await.unwrap(), "renewed");

    poll(|| async { store.try_lease("leader", "replica-b", Duration::from_secs(60)).await.unwrap().then_some(()) })
        .await;
    assert!(!store.try_lease("leader", "replica-a", Duration::from_secs(60)).await.unwrap(), "b holds it now");
    store.release_lease("leader", "replica-b").await.unwrap();
    assert!(store.try_lease("leader", "replica-a", Duration::from_secs(60)).await.unwrap());
});

contract!(concurrent_creates_never_pass_a_quota_together, |test| {
    let alice = user(&test.store, "alice").await;
    let limits = Limits { default_quota: Quota { instances: 3, memory_mb: u64::MAX }, host_memory_mb: u64::MAX };
    let creates: Vec<_> = (0..8u16)
        .map(|n| {
            let store = test.store.clone();
            tokio::spawn(async move { insert(&store, Some(alice), &format!("i{n}"), 20001 + n, &limits).await })
        })
        .collect();
    let mut passed = 0;
    for create in creates {
        match create.await.unwrap() {
            Ok(_) => passed += 1,
            Err(StoreError::OverLimit(exceeded)) => assert_eq!((exceeded.limit, exceeded.in_use), (3, 3)),
            Err(other) => panic!("{other:?}"),
        }
    }
    assert_eq!(passed, 3);
    assert_eq!(test.store.list_instances(alice, None).await.unwrap().len(), 3);
});

contract!(two_claims_never_get_the_same_pool_member, |test| {
    let alice = user(&test.store, "alice").await;
    let bob = user(&test.store, "bob").await;
    let member = insert(&test.store, None, "pool-member", 20001, &NO_LIMITS).await.unwrap();
    let claims: Vec<_> = [alice, bob]
        .into_iter()
        .map(|owner| {
            let store = test.store.clone();
            tokio::spawn(async move {
                let operation = OperationId::random();
                let pending = InstanceId::random();
                store.insert_operation(&super::operation(&operation, &pending, owner, None)).await.unwrap();
                let claim = PoolClaim {
                    engine: dbroker::model::Engine::Redis,
                    version: "7.0",
                    owner_id: owner,
                    name: None,
                    memory: MemoryMb(128),
                    operation: &operation,
                };
                store.claim_pool_member(&claim, &NO_LIMITS).await.unwrap().map(|(record, pool_memory)| {
                    (record.id, record.owner_id, record.name.as_str().to_string(), record.memory_mb, pool_memory)
                })
            })
        })
        .collect();
    let mut claimed = Vec::new();
    for claim in claims {
        claimed.extend(claim.await.unwrap());
    }

    assert_eq!(claimed.len(), 1, "{claimed:?}");
    let (id, owner, name, memory, pool_memory) = claimed.pop().unwrap();
    assert_eq!(id, member);
    assert!(owner == Some(alice) || owner == Some(bob));
    assert_eq!((name, memory, pool_memory), (format!("redis-{member}"), MemoryMb(128), MemoryMb(64)));
    assert!(test.store.pool_members().await.unwrap().is_empty());
});

contract!(users_demo_users_and_quotas_round_trip, |test| {
    let store = &test.store;
    let carol: UserName = "carol".parse().unwrap();
    store.add_user(&carol, "carols-token", true).await.unwrap();
    let demo = store.sync_demo_users(&["alice".parse().unwrap()]).await.unwrap();
    assert_eq!(demo.named, 1);
    assert!(matches!(store.sync_demo_users(std::slice::from_ref(&carol)).await, Err(StoreError::NotADemoUser(_))));

    let disabled = store.disable_user(&carol).await.unwrap();
    let quota = QuotaChange { instances: LimitChange::Set(7), memory_mb: LimitChange::Set(u64::MAX >> 1) };
    let changed = store.change_quota(&carol, quota).await.unwrap();
    let by_token = store.user_by_token_hash(&dbroker::secrets::hash_token("carols-token")).await.unwrap().unwrap();

    assert!(disabled.is_disabled() && disabled.is_admin && !disabled.is_demo);
    assert_eq!((changed.quota.instances, changed.quota.memory_mb), (Some(7), Some(u64::MAX >> 1)));
    assert_eq!(by_token.disabled_at, disabled.disabled_at, "a time reads back as it was written");
    let names: Vec<_> = store.list_users().await.unwrap().into_iter().map(|u| (u.name, u.is_demo)).collect();
    assert_eq!(names, [("alice".to_string(), true), ("carol".to_string(), false)]);
    assert!(matches!(store.enable_user(&"nobody".parse().unwrap()).await, Err(StoreError::NotFound)));
    store.remove_user(&carol).await.unwrap();
    assert!(store.user_by_name("carol").await.unwrap().is_none());
});

contract!(sessions_are_found_by_their_id_until_they_expire_end_or_their_user_changes, |test| {
    let store = &test.store;
    let dora: UserName = "dora".parse().unwrap();
    let id = store.add_user(&dora, "doras-token", false).await.unwrap().id;
    let csrf = "c".repeat(43);
    store.start_session("session-one", id, &csrf, Duration::from_secs(600)).await.unwrap();
    store.start_session("session-two", id, &csrf, Duration::from_secs(600)).await.unwrap();
    store.start_session("session-gone", id, &csrf, Duration::ZERO).await.unwrap();

    let found = store.session("session-one").await.unwrap().expect("a live session is found");
    assert_eq!((found.user.name.as_str(), found.csrf_token.as_str()), ("dora", csrf.as_str()));
    assert!(store.session("no-such-session").await.unwrap().is_none());
    // Expired at once: refused as soon as a millisecond has passed.
    poll(async || store.session("session-gone").await.unwrap().is_none().then_some(())).await;
    assert_eq!(
        sessions_keyed(&test.url, "session-one").await,
        (0, 1),
        "the store keeps the session id's hash, never the id"
    );

    assert!(store.end_session("session-one").await.unwrap());
    assert!(!store.end_session("session-one").await.unwrap(), "a session ends once");
    assert!(store.session("session-one").await.unwrap().is_none());

    store.disable_user(&dora).await.unwrap();
    let disabled = store.session("session-two").await.unwrap().unwrap();
    assert!(disabled.user.is_disabled(), "the session's user is read as they are now");
    store.rotate_token(&dora, "doras-new-token").await.unwrap();
    assert!(store.session("session-two").await.unwrap().is_none(), "a rotated token signs its sessions out");

    store.start_session("session-three", id, &csrf, Duration::from_secs(600)).await.unwrap();
    store.remove_user(&dora).await.expect("a user with sessions can be removed");
    assert!(store.session("session-three").await.unwrap().is_none());
});

contract!(pages_of_instances_and_events_end_where_the_next_begins, |test| {
    let alice = user(&test.store, "alice").await;
    let mut ids = Vec::new();
    for n in 0..5u16 {
        ids.push(insert(&test.store, Some(alice), &format!("i{n}"), 20001 + n, &NO_LIMITS).await.unwrap());
    }
    let filter = dbroker::store::InstanceFilter { owner_id: Some(alice), ..Default::default() };
    let first = test.store.owned_instances(&filter, None, 3).await.unwrap().unwrap();
    let last = first.last().map(|o| o.record.id.clone());
    let second = test.store.owned_instances(&filter, last.as_ref(), 3).await.unwrap().unwrap();
    let mut paged: Vec<_> = first.iter().chain(&second).map(|o| o.record.id.clone()).collect();
    paged.reverse();
    assert_eq!(paged, ids, "newest first, each once");
    assert_eq!(first[0].owner, "alice");

    for kind in [EventKind::Created, EventKind::Ready, EventKind::Stopped] {
        test.store.add_event(&ids[0], kind, "alice", Some("detail")).await.unwrap();
    }
    let latest = test.store.events(&ids[0], None, 2).await.unwrap();
    let older = test.store.events(&ids[0], Some(latest[0].id), 2).await.unwrap();
    let kinds: Vec<_> = older.iter().chain(&latest).map(|e| e.kind).collect();
    assert_eq!(kinds, [EventKind::Created, EventKind::Ready, EventKind::Stopped]);
    assert_eq!(test.store.prune_history(Duration::ZERO).await.unwrap(), 3, "older than now: all");
});

contract!(a_text_with_a_nul_character_matches_nothing_and_is_kept_in_a_detail, |test| {
    let store = &test.store;
    let alice = user(store, "alice").await;
    let id = insert(store, Some(alice), "shop", 20001, &NO_LIMITS).await.unwrap();

    assert!(store.user_by_name("ali\0ce").await.unwrap().is_none());
    assert!(store.quarantined_container("dbroker-\0").await.unwrap().is_none());
    store.add_event(&id, EventKind::Exited, "dbroker", Some("a log line with a \0 in it")).await.unwrap();
    let detail = store.events(&id, None, 1).await.unwrap().pop().unwrap().detail.unwrap();
    assert!(detail.starts_with("a log line with a ") && detail.ends_with(" in it"), "{detail:?}");
});

contract!(the_deployment_id_is_made_once_and_read_by_every_later_open, |test| {
    let again = Store::open(&test.url).await.unwrap();
    assert_eq!(again.deployment_id(), test.store.deployment_id());
    assert_eq!(test.store.deployment_id().len(), 16);
});

contract!(image_facts_and_template_passwords_are_kept, |test| {
    let store = &test.store;
    store.set_image_flavor("sha256:abc", dbroker::model::Flavor::Mariadb).await.unwrap();
    assert!(store.image_collations("sha256:abc").await.unwrap().is_none(), "not read yet");
    let pairs = [("utf8mb4_general_ci".to_string(), "utf8mb4".to_string())];
    store.set_image_collations("sha256:abc", &pairs).await.unwrap();
    store.set_template_password("sha256:t", &[9, 9]).await.unwrap();
    store.set_template_password("sha256:t", &[7]).await.unwrap();

    assert_eq!(store.image_flavor("sha256:abc").await.unwrap(), Some(dbroker::model::Flavor::Mariadb));
    assert!(store.image_collations("sha256:abc").await.unwrap().is_some());
    assert_eq!(store.template_password("sha256:t").await.unwrap(), Some(vec![7]));
    assert_eq!(store.oldest_password().await.unwrap(), Some(vec![7]), "what the master key is checked against");
});

contract!(a_port_is_leased_once_per_node_and_a_nodes_row_is_rewritten_by_each_start, |test| {
    let store = &test.store;
    let other = node("host-2", 30000);
    store.register_node(&other).await.unwrap();
    let moved = Node { advertise_host: "db2.example".into(), ..node(Node::LOCAL, 21000) };
    store.register_node(&moved).await.unwrap();
    let alice = user(store, "alice").await;

    insert_on(store, Node::LOCAL, Some(alice), "a", 21001, &NO_LIMITS).await.unwrap();
    insert_on(store, "host-2", Some(alice), "b", 21001, &NO_LIMITS).await.expect("the same port on another node");
    let taken = insert_on(store, Node::LOCAL, Some(alice), "c", 21001, &NO_LIMITS).await;
    let unknown = insert_on(store, "nowhere", Some(alice), "d", 21002, &NO_LIMITS).await;

    assert!(matches!(taken, Err(StoreError::PortTaken)), "{taken:?}");
    assert!(unknown.is_err(), "an instance is on a node the store knows");
    assert_eq!(store.nodes().await.unwrap(), [other, moved]);
    assert_eq!(store.leased_ports(Node::LOCAL, 21000, 21099).await.unwrap(), [21001].into());
});

const NO_BACKUP_LIMITS: BackupQuota = BackupQuota { backups: u32::MAX, storage_mb: u64::MAX };

/// Records a running backup of `instance` for `owner`, taken by operation `operation`, within `quota`.
async fn backup_of(
    store: &Store,
    instance: &InstanceId,
    owner: i64,
    kind: BackupKind,
    operation: &OperationId,
    quota: Option<&BackupQuota>,
) -> Result<BackupId, StoreError> {
    let id = BackupId::random();
    let new = NewBackup {
        id: &id,
        instance_id: instance,
        owner_id: owner,
        engine: Engine::Redis,
        version: "7.0",
        target: &"offsite".parse().unwrap(),
        object_key: &format!("prod/{instance}/{id}.rdb.zst.age"),
        kind,
        encrypted: true,
        operation_id: operation,
    };
    store.insert_backup(&new, quota).await.map(|record| record.id)
}

/// A backup of `instance` that succeeded, `size` bytes stored.
async fn stored_backup(store: &Store, instance: &InstanceId, owner: i64, size: u64) -> BackupId {
    let operation = OperationId::random();
    let id =
        backup_of(store, instance, owner, BackupKind::Scheduled, &operation, Some(&NO_BACKUP_LIMITS)).await.unwrap();
    let stored = StoredObject { size_bytes: size, sha256: &"ab".repeat(32), content_digest: "digest" };
    assert!(store.backup_succeeded(&id, &stored).await.unwrap());
    id
}

contract!(a_backup_reads_back_as_written_and_ends_once_succeeded_or_failed, |test| {
    let store = &test.store;
    let alice = user(store, "alice").await;
    let instance = insert(store, Some(alice), "shop", 20001, &NO_LIMITS).await.unwrap();
    let operation = OperationId::random();
    let id = backup_of(store, &instance, alice, BackupKind::Manual, &operation, None).await.unwrap();

    let running = store.find_backup(alice, &id).await.unwrap().expect("alice's backup");
    let stored = StoredObject { size_bytes: 5_000_000_000, sha256: &"0f".repeat(32), content_digest: "crc:1234" };
    assert!(store.backup_succeeded(&id, &stored).await.unwrap());
    let again = store.backup_succeeded(&id, &stored).await.unwrap();
    let failed_late = store.backup_failed(&id, "too late").await.unwrap();
    let succeeded = store.backup(&id).await.unwrap().unwrap();

    assert_eq!((running.state, running.kind, running.owner_id), (BackupState::Running, BackupKind::Manual, alice));
    assert_eq!((running.engine, running.version.as_str(), running.target.as_str()), (Engine::Redis, "7.0", "offsite"));
    assert_eq!((running.operation_id.clone(), running.encrypted, running.finished_at), (operation, true, None));
    assert_eq!(running.object_key, format!("prod/{instance}/{id}.rdb.zst.age"));
    assert!(store.find_backup(alice + 1, &id).await.unwrap().is_none(), "another owner sees nothing");
    assert!(!again && !failed_late, "a backup ends once");
    assert_eq!(succeeded.state, BackupState::Succeeded);
    assert_eq!(succeeded.size_bytes, Some(5_000_000_000), "beyond 32 bits");
    assert_eq!(
        (succeeded.sha256.as_deref(), succeeded.content_digest.as_deref()),
        (Some(&*"0f".repeat(32)), Some("crc:1234"))
    );
    assert!(succeeded.finished_at.unwrap() >= succeeded.started_at);
    assert!(succeeded.started_at > OffsetDateTime::now_utc() - Duration::from_secs(60));

    // A verification's outcome replaces the last one's.
    assert!(store.set_backup_verified(&id, Err("the server did not start")).await.unwrap());
    let unverified = store.backup(&id).await.unwrap().unwrap();
    assert!(store.set_backup_verified(&id, Ok(())).await.unwrap());
    let verified = store.backup(&id).await.unwrap().unwrap();
    assert_eq!((unverified.verified_at, unverified.verify_error.as_deref()), (None, Some("the server did not start")));
    assert!(verified.verified_at.is_some() && verified.verify_error.is_none());

    let other = backup_of(store, &instance, alice, BackupKind::Safety, &OperationId::random(), None).await.unwrap();
    assert!(!store.set_backup_verified(&other, Ok(())).await.unwrap(), "only a succeeded backup is verified");
    assert!(!store.delete_backup(&other).await.unwrap(), "a running backup is not deleted");
    assert!(store.backup_failed(&other, "the target refused the credentials").await.unwrap());
    assert!(!store.backup_succeeded(&other, &stored).await.unwrap(), "a failed backup stays failed");
    let failed = store.backup(&other).await.unwrap().unwrap();
    assert_eq!(
        (failed.state, failed.reason.as_deref()),
        (BackupState::Failed, Some("the target refused the credentials"))
    );
    assert!(failed.finished_at.is_some() && failed.size_bytes.is_none());
    assert!(store.delete_backup(&other).await.unwrap());
    assert!(store.backup(&other).await.unwrap().is_none());
});

contract!(a_backup_is_kept_after_its_instances_record_is_deleted, |test| {
    let store = &test.store;
    let alice = user(store, "alice").await;
    let instance = insert(store, Some(alice), "shop", 20001, &NO_LIMITS).await.unwrap();
    let id = stored_backup(store, &instance, alice, 100).await;
    let schedule: Schedule = "* * * * *".parse().unwrap();
    let policy = NewPolicy { schedule: &schedule, target: None, keep_last: None, keep_days: None, verify: false };
    store.put_backup_policy(&instance, &policy).await.unwrap();
    let later = OffsetDateTime::now_utc() + Duration::from_secs(120);
    assert_eq!(store.due_backup_policies(later).await.unwrap().len(), 1);

    store.delete_instance(&instance).await.unwrap();

    let kept = store.find_backup(alice, &id).await.unwrap().expect("the backup outlives its instance");
    assert_eq!(kept.instance_id, instance);
    let of_instance = BackupFilter { owner_id: Some(alice), instance_id: Some(&instance) };
    assert_eq!(store.list_backups(&of_instance, None, 10).await.unwrap().unwrap(), [kept.clone()]);
    assert_eq!(store.backups_of_instance(&instance).await.unwrap(), [kept]);
    assert!(store.due_backup_policies(later).await.unwrap().is_empty(), "a deleted instance is not backed up");
    assert_eq!(store.backup_policies().await.unwrap().len(), 1, "its policy is kept, for its retention");
    let removed = store.remove_user(&"alice".parse().unwrap()).await;
    assert!(matches!(removed, Err(StoreError::OwnsBackups(1))), "{removed:?}");
    store.delete_backup(&id).await.unwrap();
    store.remove_user(&"alice".parse().unwrap()).await.expect("no backups left");
});

contract!(a_policy_reads_back_as_written_and_its_due_run_is_recorded_once_by_two_racers, |test| {
    let store = &test.store;
    let alice = user(store, "alice").await;
    let instance = insert(store, Some(alice), "shop", 20001, &NO_LIMITS).await.unwrap();
    let schedule: Schedule = "*/5 * * * *".parse().unwrap();
    let target: TargetName = "local".parse().unwrap();
    let new = NewPolicy {
        schedule: &schedule,
        target: Some(&target),
        keep_last: Some(KeepLast::new(2).unwrap()),
        keep_days: Some(KeepDays::new(30).unwrap()),
        verify: true,
    };
    let before = OffsetDateTime::now_utc();
    let policy = store.put_backup_policy(&instance, &new).await.unwrap();
    assert_eq!(store.backup_policy(&instance).await.unwrap().as_ref(), Some(&policy), "read back as written");
    assert_eq!((policy.schedule.as_str(), policy.target.as_ref()), ("*/5 * * * *", Some(&target)));
    assert_eq!(
        (policy.keep_last.map(KeepLast::get), policy.keep_days.map(KeepDays::get), policy.verify),
        (Some(2), Some(30), true)
    );
    let due_at = policy.next_due_at.expect("a schedule that runs");
    assert!(due_at > before && due_at <= before + Duration::from_secs(300), "{due_at}");
    assert_eq!(policy.last_run_at, None);
    assert!(store.due_backup_policies(due_at - Duration::from_secs(1)).await.unwrap().is_empty(), "not yet due");

    let due = store.due_backup_policies(due_at).await.unwrap();
    assert_eq!(due.len(), 1);
    let racers: Vec<_> = (0..2)
        .map(|_| {
            let (store, policy) = (store.clone(), due[0].clone());
            tokio::spawn(async move { store.record_backup_run(&policy, due_at).await.unwrap() })
        })
        .collect();
    let mut runs = 0;
    for racer in racers {
        runs += usize::from(racer.await.unwrap());
    }

    assert_eq!(runs, 1, "exactly one process runs it");
    let ran = store.backup_policy(&instance).await.unwrap().unwrap();
    assert_eq!(ran.last_run_at, Some(due_at));
    assert_eq!(ran.next_due_at, Some(due_at + Duration::from_secs(300)), "the schedule's next time");
    for kept in [&policy, &ran] {
        let decided = dbroker::provision::backup_schedule::next_run(&kept.schedule, kept.last_run_at, kept.updated_at);
        assert_eq!(kept.next_due_at, decided, "the store keeps what the schedule's rules decide");
    }
    assert!(store.due_backup_policies(due_at).await.unwrap().is_empty(), "recorded once, due no more");
    // A change of the policy since it was read wins over a run recorded from the old one.
    store.put_backup_policy(&instance, &NewPolicy { verify: false, ..new.clone() }).await.unwrap();
    assert!(!store.record_backup_run(&ran, due_at + Duration::from_secs(300)).await.unwrap());
    assert_eq!(store.backup_policy(&instance).await.unwrap().unwrap().last_run_at, Some(due_at), "its last run kept");
    assert!(store.delete_backup_policy(&instance).await.unwrap());
    assert!(store.backup_policy(&instance).await.unwrap().is_none());
    assert!(!store.delete_backup_policy(&instance).await.unwrap());
});

contract!(backup_usage_sums_what_is_stored_and_the_quota_refuses_one_more, |test| {
    let store = &test.store;
    let alice = user(store, "alice").await;
    let bob = user(store, "bob").await;
    let instance = insert(store, Some(alice), "shop", 20001, &NO_LIMITS).await.unwrap();
    const MIB: u64 = 1024 * 1024;
    stored_backup(store, &instance, alice, MIB).await;
    stored_backup(store, &instance, alice, 2 * MIB).await;
    let failed = backup_of(store, &instance, alice, BackupKind::Manual, &OperationId::random(), None).await.unwrap();
    store.backup_failed(&failed, "the disk is full").await.unwrap();
    backup_of(store, &instance, alice, BackupKind::Manual, &OperationId::random(), None).await.unwrap();

    let usage = store.backup_usage(alice).await.unwrap();
    let by_owner = store.backup_usage_by_owner().await.unwrap();
    let three = BackupQuota { backups: 3, storage_mb: 100 };
    let by_count = backup_of(store, &instance, alice, BackupKind::Manual, &OperationId::random(), Some(&three)).await;
    let full = BackupQuota { backups: 100, storage_mb: 3 };
    let by_bytes = store.check_backup_room(alice, &full).await;

    assert_eq!(usage, BackupUsage { backups: 3, bytes: 3 * MIB }, "running and stored count, a failed one does not");
    assert_eq!(by_owner.len(), 1);
    assert_eq!(by_owner[&alice], usage);
    assert_eq!(store.backup_usage(bob).await.unwrap(), BackupUsage::default());
    match by_count {
        Err(StoreError::OverLimit(exceeded)) => {
            assert_eq!((exceeded.quota, exceeded.limit, exceeded.in_use), (LimitKind::Backups, 3, 3))
        }
        other => panic!("{other:?}"),
    }
    match by_bytes {
        Err(StoreError::OverLimit(exceeded)) => {
            assert_eq!((exceeded.quota, exceeded.limit, exceeded.in_use), (LimitKind::BackupStorage, 3, 3))
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(store.backup_usage(alice).await.unwrap().backups, 3, "the refused one recorded nothing");
    // Their own limits win over the default; and a safety backup is taken whatever the room.
    store.change_backup_quota(alice, LimitChange::Set(4), LimitChange::Keep).await.unwrap();
    backup_of(store, &instance, alice, BackupKind::Manual, &OperationId::random(), Some(&three)).await.unwrap();
    let over = backup_of(store, &instance, alice, BackupKind::Manual, &OperationId::random(), Some(&three)).await;
    assert!(matches!(over, Err(StoreError::OverLimit(_))), "{over:?}");
    backup_of(store, &instance, alice, BackupKind::Safety, &OperationId::random(), None).await.unwrap();
    store.change_backup_quota(alice, LimitChange::Default, LimitChange::Set(10)).await.unwrap();
    assert!(store.check_backup_room(alice, &three).await.is_err(), "back to the default count");
    assert!(store.check_backup_room(alice, &full).await.is_ok(), "10 MiB of their own, not the default 3");
    assert!(matches!(
        store.change_backup_quota(bob + 100, LimitChange::Default, LimitChange::Keep).await,
        Err(StoreError::NotFound)
    ));
});

contract!(concurrent_backups_never_pass_the_quota_together, |test| {
    let alice = user(&test.store, "alice").await;
    let instance = insert(&test.store, Some(alice), "shop", 20001, &NO_LIMITS).await.unwrap();
    let quota = BackupQuota { backups: 3, storage_mb: u64::MAX };
    let backups: Vec<_> = (0..8)
        .map(|_| {
            let (store, instance) = (test.store.clone(), instance.clone());
            tokio::spawn(async move {
                backup_of(&store, &instance, alice, BackupKind::Manual, &OperationId::random(), Some(&quota)).await
            })
        })
        .collect();
    let mut passed = 0;
    for backup in backups {
        match backup.await.unwrap() {
            Ok(_) => passed += 1,
            Err(StoreError::OverLimit(_)) => {}
            Err(other) => panic!("{other:?}"),
        }
    }
    assert_eq!(passed, 3);
    assert_eq!(test.store.backup_usage(alice).await.unwrap().backups, 3);
});

contract!(a_running_backup_whose_operation_ended_is_failed_and_one_in_flight_is_not, |test| {
    let store = &test.store;
    let alice = user(store, "alice").await;
    let instance = insert(store, Some(alice), "shop", 20001, &NO_LIMITS).await.unwrap();
    let operation = OperationId::random();
    let new = NewOperation { kind: OperationKind::Backup, ..super::operation(&operation, &instance, alice, None) };
    store.insert_operation(&new).await.expect("the store takes a backup's operation");
    let in_flight = backup_of(store, &instance, alice, BackupKind::Manual, &operation, None).await.unwrap();
    let never_recorded =
        backup_of(store, &instance, alice, BackupKind::Manual, &OperationId::random(), None).await.unwrap();

    let first = store.fail_orphaned_backups("dbroker stopped while it ran").await.unwrap();
    assert!(
        store.finish_operation(&operation, "replica-a", Some(&serde_json::json!({"detail": "lost"}))).await.unwrap()
    );
    let second = store.fail_orphaned_backups("dbroker stopped while it ran").await.unwrap();

    assert_eq!(first.iter().map(|b| &b.id).collect::<Vec<_>>(), [&never_recorded], "its operation is not in flight");
    assert_eq!(second.iter().map(|b| &b.id).collect::<Vec<_>>(), [&in_flight]);
    assert_eq!(
        (second[0].state, second[0].reason.as_deref()),
        (BackupState::Failed, Some("dbroker stopped while it ran"))
    );
    assert_eq!(store.backup(&in_flight).await.unwrap().unwrap().state, BackupState::Failed);
    for kind in [OperationKind::Restore, OperationKind::Import] {
        let id = OperationId::random();
        store.insert_operation(&NewOperation { kind, ..super::operation(&id, &instance, alice, None) }).await.unwrap();
        assert!(store.finish_operation(&id, "replica-a", None).await.unwrap());
        assert_eq!(store.operation(&id).await.unwrap().unwrap().kind, kind);
    }
});

contract!(pages_of_backups_end_where_the_next_begins, |test| {
    let store = &test.store;
    let alice = user(store, "alice").await;
    let bob = user(store, "bob").await;
    let shop = insert(store, Some(alice), "shop", 20001, &NO_LIMITS).await.unwrap();
    let other = insert(store, Some(alice), "other", 20002, &NO_LIMITS).await.unwrap();
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(stored_backup(store, if n % 2 == 0 { &shop } else { &other }, alice, n).await);
    }
    let bobs = insert(store, Some(bob), "bobs", 20003, &NO_LIMITS).await.unwrap();
    stored_backup(store, &bobs, bob, 1).await;

    let alices = BackupFilter { owner_id: Some(alice), instance_id: None };
    let first = store.list_backups(&alices, None, 3).await.unwrap().unwrap();
    let second = store.list_backups(&alices, first.last().map(|b| &b.id), 3).await.unwrap().unwrap();
    let of_shop = BackupFilter { owner_id: Some(alice), instance_id: Some(&shop) };
    let shops = store.list_backups(&of_shop, None, 10).await.unwrap().unwrap();
    let everyone = store.list_backups(&BackupFilter::default(), None, 10).await.unwrap().unwrap();
    let gone = store.list_backups(&alices, Some(&BackupId::random()), 3).await.unwrap();

    let mut paged: Vec<_> = first.iter().chain(&second).map(|b| b.id.clone()).collect();
    paged.reverse();
    assert_eq!(paged, ids, "newest first, each once");
    assert_eq!(
        shops.iter().map(|b| b.id.clone()).collect::<Vec<_>>(),
        [ids[4].clone(), ids[2].clone(), ids[0].clone()]
    );
    assert_eq!(everyone.len(), 6, "an admin's listing");
    assert!(gone.is_none(), "a page after a backup that is not there");
});

/// How many session rows are keyed by `text` itself, and by its hash, read straight from the database.
async fn sessions_keyed(url: &DatabaseUrl, text: &str) -> (i64, i64) {
    const SQL: &str = "SELECT count(*) FROM sessions WHERE id_hash = $1";
    let hash = dbroker::secrets::hash_token(text);
    match url {
        DatabaseUrl::Sqlite(path) => {
            let mut db = sqlx::sqlite::SqliteConnectOptions::new().filename(path).connect().await.unwrap();
            let plain: i64 = sqlx::query_scalar(SQL).bind(text).fetch_one(&mut db).await.unwrap();
            let hashed: i64 = sqlx::query_scalar(SQL).bind(&hash).fetch_one(&mut db).await.unwrap();
            (plain, hashed)
        }
        DatabaseUrl::Postgres(url) => {
            let mut db = sqlx::PgConnection::connect(url).await.unwrap();
            let plain: i64 = sqlx::query_scalar(SQL).bind(text).fetch_one(&mut db).await.unwrap();
            let hashed: i64 = sqlx::query_scalar(SQL).bind(&hash).fetch_one(&mut db).await.unwrap();
            (plain, hashed)
        }
    }
}

/// Polls `attempt` every 50 ms until it gives `Some`, for at most 10 s.
async fn poll<T, F: Future<Output = Option<T>>>(mut attempt: impl FnMut() -> F) -> T {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(value) = attempt().await {
            return value;
        }
        assert!(std::time::Instant::now() < deadline, "timed out");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
