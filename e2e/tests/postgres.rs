//! Management on PostgreSQL (issue 21), against a real server started
//! here (Debian's postgresql, as an unprivileged user): the shared store
//! suite, two replicas racing for the same tokens, a replica killed under
//! load, the database stopped and started under a trickle of logins, and
//! the SQLite → PostgreSQL → SQLite copy.

use conclave_e2e::*;
use conclave_proto::management::v1 as mgmt;
use conclave_proto::management::v1::management_client::ManagementClient;
use conclave_stack::postgres::{self, Postgres};
use loadgen::sio::Client;
use management::store::{self, PgStore, SqliteStore, Store, StoreConfig};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static DB: AtomicU32 = AtomicU32::new(0);

fn fresh_db(pg: &Postgres) -> String {
    let n = DB.fetch_add(1, Ordering::Relaxed);
    pg.create_database(&format!("t{n}")).unwrap()
}

fn pg_config(url: &str) -> StoreConfig {
    StoreConfig {
        url: url.to_string(),
        pool_size: 8,
        timeout: 1000,
    }
}

fn client(addr: &str) -> ManagementClient<conclave_common::grpc::Channel> {
    ManagementClient::new(conclave_common::grpc::channel(addr, Duration::from_secs(5)).unwrap())
}

async fn create_token(addr: &str, room: &str, user: &str) -> Result<String, tonic::Status> {
    client(addr)
        .create_token(conclave_common::grpc::request(
            mgmt::CreateTokenRequest {
                room_id: room.into(),
                user: user.into(),
                role: "presenter".into(),
                preference: None,
            },
            Duration::from_secs(3),
        ))
        .await
        .map(|r| r.into_inner().token)
}

fn token_id(token: &str) -> String {
    conclave_common::token::JoinToken::decode(token)
        .unwrap()
        .token_id
}

async fn consume(addr: &str, id: &str) -> Result<mgmt::TokenGrant, tonic::Status> {
    client(addr)
        .consume_token(mgmt::ConsumeTokenRequest {
            token_id: id.into(),
        })
        .await
        .map(|r| r.into_inner())
}

async fn login(portal: &str, token: &str) -> Result<Vec<serde_json::Value>, String> {
    let c = Client::connect(portal).await.map_err(|e| e.to_string())?;
    let ack = c
        .call(
            "login",
            &[json!({"token": token, "protocol": "1.2",
                     "userAgent": {"sdk": {"type": "conclave-loadgen", "version": "5.1"}}})],
            Duration::from_secs(10),
        )
        .await
        .map_err(|e| e.to_string())?;
    c.disconnect();
    Ok(ack)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_passes_the_shared_store_suite() {
    if !postgres::available() {
        return;
    }
    let pg = Arc::new(Postgres::start().unwrap());
    store::suite::run(|| {
        let pg = pg.clone();
        async move {
            let url = fresh_db(&pg);
            Arc::new(PgStore::connect(&pg_config(&url)).await.unwrap()) as Arc<dyn Store>
        }
    })
    .await;
    // two replicas starting on one new database migrate it once
    let url = fresh_db(&pg);
    let config = pg_config(&url);
    let (a, b) = tokio::join!(PgStore::connect(&config), PgStore::connect(&config));
    let (a, b) = (a.unwrap(), b.unwrap());
    let room = management::room::Room::with_defaults("shared".into());
    a.insert_room(&room).await.unwrap();
    assert_eq!(b.room(&room.id).await.unwrap(), Some(room));
    // a bad URL is a clear configuration error
    let err = PgStore::connect(&pg_config("postgres://u:secret@127.0.0.1:notaport/x"))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("store.url") && !err.contains("secret"),
        "{err}"
    );
    // nothing listening: Unavailable within the deadline, not a hang
    let dead = free_port();
    let started = Instant::now();
    let err = PgStore::connect(&pg_config(&format!("postgres://u:p@127.0.0.1:{dead}/x")))
        .await
        .err()
        .unwrap();
    assert!(matches!(err, store::StoreError::Unavailable(_)), "{err}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_give_each_token_to_exactly_one_of_32_consumers() {
    if !postgres::available() || !have_clients() {
        return;
    }
    let pg = Postgres::start().unwrap();
    let url = fresh_db(&pg);
    let mut stack = stack_with_management(&[&format!("store.url={url}")]).await;
    let a = stack.management.clone();
    let b = stack.add_management().await;
    let room = stack.room(-1).await;
    // 1 000 tokens, made half on each replica
    let mut ids = Vec::new();
    for i in 0..1000 {
        let addr = if i % 2 == 0 { &a } else { &b };
        ids.push(token_id(
            &create_token(addr, &room, &format!("u{i}")).await.unwrap(),
        ));
    }
    let ids = Arc::new(ids);
    // 32 consumers, alternating replicas, all walking the tokens in the
    // same order so that they race for each one
    let mut consumers = Vec::new();
    for c in 0..32 {
        let ids = ids.clone();
        let addr = if c % 2 == 0 { a.clone() } else { b.clone() };
        consumers.push(tokio::spawn(async move {
            let mut won = Vec::new();
            let mut refused = 0;
            for id in ids.iter() {
                match consume(&addr, id).await {
                    Ok(_) => won.push(id.clone()),
                    Err(s) if s.code() == tonic::Code::NotFound => refused += 1,
                    Err(s) => panic!("consumer {c}: {s:?}"),
                }
            }
            (won, refused)
        }));
    }
    let mut winners: std::collections::HashMap<String, u32> = Default::default();
    let mut refused = 0;
    for c in consumers {
        let (won, r) = c.await.unwrap();
        refused += r;
        for id in won {
            *winners.entry(id).or_default() += 1;
        }
    }
    assert_eq!(winners.len(), 1000, "every token consumed");
    assert!(
        winners.values().all(|&n| n == 1),
        "one winner per token: {:?}",
        winners
            .iter()
            .filter(|(_, n)| **n > 1)
            .take(5)
            .collect::<Vec<_>>()
    );
    assert_eq!(refused, 31 * 1000, "every other attempt refused as Unknown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_killed_under_load_loses_no_acknowledged_token() {
    if !postgres::available() || !have_clients() {
        return;
    }
    let pg = Postgres::start().unwrap();
    let url = fresh_db(&pg);
    let mut stack = stack_with_management(&[&format!("store.url={url}")]).await;
    let a = stack.management.clone();
    let b = stack.add_management().await;
    // a portal, and an agent whose nodes, that know both replicas; the
    // first agent leaves, so rooms go to the new one
    let portal = stack
        .add_portal_with(vec![format!("management={a},{b}")])
        .await;
    stack
        .add_agent_with(vec![format!("node.management={a},{b}")])
        .await;
    stack.processes[2].signal("TERM");
    stack.processes[2].wait_exit(Duration::from_secs(10));
    let conference_workers = || async {
        stack
            .manager_client()
            .get_workers(conclave_proto::cluster::v1::GetWorkersRequest {
                purpose: "conference".into(),
            })
            .await
            .map(|r| r.into_inner().workers.len())
            .unwrap_or_default()
    };
    assert!(
        conclave_stack::testing::eventually(Duration::from_secs(10), || async {
            conference_workers().await == 1
        })
        .await,
        "the first agent left"
    );
    let room = stack.room(-1).await;

    let acked = Arc::new(std::sync::Mutex::new(Vec::new()));
    let load = {
        let (a, room, acked) = (a.clone(), room.clone(), acked.clone());
        tokio::spawn(async move {
            let mut errors = 0;
            for i in 0.. {
                match create_token(&a, &room, &format!("load{i}")).await {
                    Ok(t) => acked.lock().unwrap().push(t),
                    Err(_) => {
                        errors += 1;
                        if errors > 3 {
                            break;
                        }
                    }
                }
            }
        })
    };
    // kill replica A while tokens are being made on it
    assert!(
        conclave_stack::testing::eventually(Duration::from_secs(20), || {
            let n = acked.lock().unwrap().len();
            async move { n >= 100 }
        })
        .await
    );
    stack.processes[1].signal("KILL");
    stack.processes[1].wait_exit(Duration::from_secs(5));
    load.await.unwrap();
    let acked = acked.lock().unwrap().clone();
    // every token A acknowledged is there for B, once
    for token in &acked {
        let id = token_id(token);
        consume(&b, &id)
            .await
            .unwrap_or_else(|s| panic!("acknowledged token {id} lost: {s:?}"));
        assert_eq!(
            consume(&b, &id).await.unwrap_err().code(),
            tonic::Code::NotFound
        );
    }
    // the portal and the node (loading the room for the first login) that
    // knew both replicas work through B now
    let token = create_token(&b, &room, "after").await.unwrap();
    let ack = login(&portal, &token).await.unwrap();
    assert_eq!(ack[0], "ok", "{ack:?}");
    eprintln!(
        "{} acknowledged tokens, all consumable on the other replica",
        acked.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_database_stopped_and_started_under_a_trickle_of_logins() {
    if !postgres::available() || !have_clients() {
        return;
    }
    let mut pg = Postgres::start().unwrap();
    let url = fresh_db(&pg);
    let stack = stack_with_management(&[&format!("store.url={url}"), "store.timeout=1000"]).await;
    let m = stack.management.clone();
    let portal = stack.portal_socket.clone();
    let room = stack.room(-1).await;
    let service = client(&m)
        .create_service(mgmt::CreateServiceRequest {
            name: "outage-app".into(),
            key: None,
        })
        .await
        .unwrap()
        .into_inner();
    let rest =
        conclave_stack::owt_rest::OwtRest::new(&service.id, &service.key, &stack.management_rest);
    assert_eq!(rest.get_rooms(1, 10).await.unwrap().status, 200);
    for i in 0..3 {
        let token = create_token(&m, &room, &format!("before{i}"))
            .await
            .unwrap();
        assert_eq!(login(&portal, &token).await.unwrap()[0], "ok");
    }
    let kept = create_token(&m, &room, "kept").await.unwrap();

    pg.stop();
    // the outage: clear errors, each within its deadline
    for i in 0..5 {
        let started = Instant::now();
        let err = create_token(&m, &room, &format!("during{i}"))
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
        assert!(err.message().contains("database unavailable"), "{err:?}");
        assert!(
            started.elapsed() < Duration::from_millis(2500),
            "{:?}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let answer = rest.get_rooms(1, 10).await.unwrap();
    assert_eq!(answer.status, 503, "{answer:?}");
    assert_eq!(answer.json()["error"]["code"], 2001, "{answer:?}");
    let ack = login(&portal, &kept).await.unwrap();
    assert_eq!(ack[0], "error", "a login during the outage fails: {ack:?}");

    // back: logins work again within 2 s
    pg.start_again().unwrap();
    let back = Instant::now();
    let mut recovered = None;
    while back.elapsed() < Duration::from_secs(10) {
        if let Ok(token) = create_token(&m, &room, "after").await
            && login(&portal, &token).await.is_ok_and(|a| a[0] == "ok")
        {
            recovered = Some(back.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let recovered = recovered.expect("logins work again");
    eprintln!("logins worked again {recovered:?} after the database returned");
    assert!(recovered < Duration::from_secs(2), "{recovered:?}");
    // the token made before the outage was never consumed: it still works
    let ack = login(&portal, &kept).await.unwrap();
    assert_eq!(ack[0], "ok", "{ack:?}");
    assert_eq!(rest.get_rooms(1, 10).await.unwrap().status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_to_postgres_and_back_round_trips() {
    if !postgres::available() {
        return;
    }
    let pg = Postgres::start().unwrap();
    let url = fresh_db(&pg);
    let base = std::env::temp_dir().join(format!("conclave-copy-{}", std::process::id()));
    let (first, second) = (base.join("first"), base.join("second"));
    // a SQLite store with a service, rooms and tokens
    {
        let s = SqliteStore::open(&first).unwrap();
        s.insert_service(&management::services::StoredService {
            id: "svc1".into(),
            name: "app".into(),
            sealed_key: "sealed".into(),
        })
        .await
        .unwrap();
        let mut owned = management::room::Room::with_defaults("owned".into());
        owned.service = "svc1".into();
        s.insert_room(&owned).await.unwrap();
        s.insert_room(&management::room::Room::with_defaults("plain".into()))
            .await
            .unwrap();
        for i in 0..3 {
            s.insert_token(&store::TokenRecord {
                id: format!("tok{i}"),
                code: "1".into(),
                user: format!("u{i}"),
                role: "presenter".into(),
                room_id: owned.id.clone(),
                origin: Default::default(),
                host: "h:1".into(),
                secure: false,
                created_ms: 100 + i,
            })
            .await
            .unwrap();
        }
    }
    let bin = conclave_stack::testing::workspace_bin("management");
    let copy = |args: Vec<String>| {
        let out = std::process::Command::new(&bin)
            .args(&args)
            .env("CONCLAVE_SERVICE_KEY", KEY)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let out = copy(vec![
        "--set".into(),
        format!("data_dir={}", first.display()),
        "--copy-store-to".into(),
        url.clone(),
    ]);
    assert!(
        out.contains("copied 1 services, 2 rooms, 3 tokens"),
        "{out}"
    );
    // again: nothing doubled
    let out = copy(vec![
        "--set".into(),
        format!("data_dir={}", first.display()),
        "--copy-store-to".into(),
        url.clone(),
    ]);
    assert!(
        out.contains("copied 0 services, 0 rooms, 0 tokens (6 already there)"),
        "{out}"
    );
    // and back out of PostgreSQL into a new SQLite file
    let out = copy(vec![
        "--set".into(),
        format!("store.url={url}"),
        "--copy-store-to".into(),
        second.display().to_string(),
    ]);
    assert!(
        out.contains("copied 1 services, 2 rooms, 3 tokens"),
        "{out}"
    );
    let (a, b) = (
        SqliteStore::open(&first).unwrap(),
        SqliteStore::open(&second).unwrap(),
    );
    assert_eq!(a.services().await.unwrap(), b.services().await.unwrap());
    assert_eq!(
        a.rooms(None, 0, None).await.unwrap(),
        b.rooms(None, 0, None).await.unwrap()
    );
    assert_eq!(a.tokens().await.unwrap(), b.tokens().await.unwrap());
    // copying a store onto itself is refused
    let out = std::process::Command::new(&bin)
        .args(["--set", &format!("data_dir={}", first.display())])
        .arg("--copy-store-to")
        .arg(&first)
        .env("CONCLAVE_SERVICE_KEY", KEY)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let _ = std::fs::remove_dir_all(&base);
}
