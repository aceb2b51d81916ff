//! The real management service and cluster manager on loopback ports, with a
//! fake portal joined through the common cluster-worker client.

use base64::Engine;
use conclave_common::cluster_worker::{ClusterConfig, ClusterWorker};
use conclave_common::grpc::Channel;
use conclave_common::load::ManualLoad;
use conclave_common::token::JoinToken;
use conclave_proto::cluster::v1 as cluster;
use conclave_proto::cluster::v1::cluster_manager_client::ClusterManagerClient;
use conclave_proto::management::v1 as pb;
use conclave_proto::management::v1::management_client::ManagementClient;
use management::clock::ManualClock;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tonic::Code;

const KEY: &str = "integration-test-key";

struct Stack {
    manager_addr: String,
    manager_stop: CancellationToken,
    portals: Vec<ClusterWorker>,
    data_dir: PathBuf,
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.manager_stop.cancel();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

async fn portal(manager: &str, info: cluster::WorkerInfo) -> ClusterWorker {
    let config = ClusterConfig {
        manager: manager.to_string(),
        report_load_interval: 100,
        ..ClusterConfig::default()
    };
    ClusterWorker::join(
        config,
        conclave_common::purpose::Purpose::Portal,
        info,
        Arc::new(ManualLoad::new(0.1)),
    )
    .await
    .unwrap()
}

async fn stack(portal_infos: Vec<cluster::WorkerInfo>) -> Stack {
    let config = cluster_manager::Config::loopback();
    let manager_stop = CancellationToken::new();
    let manager = cluster_manager::start(config, manager_stop.clone())
        .await
        .unwrap();
    let manager_addr = manager.local_addr().to_string();
    let mut portals = Vec::new();
    for info in portal_infos {
        portals.push(portal(&manager_addr, info).await);
    }
    // wait until every portal has reported a load and is schedulable
    let mut c = ClusterManagerClient::new(
        conclave_common::grpc::channel(&manager_addr, Duration::from_secs(2)).unwrap(),
    );
    for p in &portals {
        for _ in 0..100 {
            let attr = c
                .get_worker_attr(cluster::GetWorkerAttrRequest {
                    worker_id: p.id().into(),
                })
                .await
                .unwrap()
                .into_inner();
            if attr.load < 0.5 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let data_dir =
        std::env::temp_dir().join(format!("conclave-mgmt-{}", management::room::new_id()));
    Stack {
        manager_addr,
        manager_stop,
        portals,
        data_dir,
    }
}

fn portal_info(hostname: &str, port: u32) -> cluster::WorkerInfo {
    cluster::WorkerInfo {
        ip: "127.0.0.1".into(),
        hostname: hostname.into(),
        port,
        max_load: 0.85,
        ..Default::default()
    }
}

fn mgmt_config(stack: &Stack) -> management::Config {
    let mut c = management::Config {
        listen: "127.0.0.1:0".into(),
        service_key: KEY.into(),
        data_dir: stack.data_dir.display().to_string(),
        ..Default::default()
    };
    c.cluster.manager = stack.manager_addr.clone();
    c.rest.listen = "127.0.0.1:0".into();
    c.token.portal_schedule_budget = 3;
    c.token.portal_schedule_retry_interval = 50;
    c
}

struct Running {
    client: ManagementClient<Channel>,
    stop: CancellationToken,
    server: management::Management,
}

impl Running {
    async fn stop(self) {
        self.stop.cancel();
        self.server.stopped().await.unwrap();
    }
}

async fn start(config: management::Config, clock: ManualClock) -> Running {
    let stop = CancellationToken::new();
    let server = management::start_with_clock(config, Arc::new(clock), stop.clone())
        .await
        .unwrap();
    let channel =
        conclave_common::grpc::channel(&server.local_addr().to_string(), Duration::from_secs(5))
            .unwrap();
    Running {
        client: ManagementClient::new(channel),
        stop,
        server,
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

async fn create_room(c: &mut ManagementClient<Channel>, name: &str) -> pb::Room {
    c.create_room(pb::CreateRoomRequest {
        name: name.into(),
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner()
}

async fn token(
    c: &mut ManagementClient<Channel>,
    room: &str,
    user: &str,
    role: &str,
) -> Result<String, tonic::Status> {
    c.create_token(pb::CreateTokenRequest {
        room_id: room.into(),
        user: user.into(),
        role: role.into(),
        preference: None,
    })
    .await
    .map(|r| r.into_inner().token)
}

async fn consume(
    c: &mut ManagementClient<Channel>,
    id: &str,
) -> Result<pb::TokenGrant, tonic::Status> {
    c.consume_token(pb::ConsumeTokenRequest {
        token_id: id.into(),
    })
    .await
    .map(|r| r.into_inner())
}

#[tokio::test]
async fn rooms_are_created_with_owt_defaults_listed_updated_and_deleted() {
    let stack = stack(vec![]).await;
    let m = start(mgmt_config(&stack), ManualClock::new(now_ms())).await;
    let mut c = m.client.clone();
    let room = create_room(&mut c, "demo").await;
    assert_eq!(room.id.len(), 24);
    assert_eq!((room.participant_limit, room.input_limit), (-1, -1));
    let roles: Vec<_> = room.roles.iter().map(|r| r.role.as_str()).collect();
    assert_eq!(
        roles,
        [
            "presenter",
            "viewer",
            "audio_only_presenter",
            "video_only_viewer",
            "sip"
        ]
    );
    assert_eq!(room.views[0].label, "common");
    let n = room.notifying.unwrap();
    assert!(n.participant_activities && n.stream_change);
    assert_eq!(
        c.get_room(pb::GetRoomRequest {
            id: room.id.clone()
        })
        .await
        .unwrap()
        .into_inner(),
        room
    );

    let custom = c
        .create_room(pb::CreateRoomRequest {
            name: "small".into(),
            participant_limit: Some(2),
            roles: vec![pb::Role {
                role: "speaker".into(),
                publish: Some(pb::MediaPermission {
                    audio: true,
                    video: false,
                }),
                subscribe: Some(pb::MediaPermission {
                    audio: true,
                    video: true,
                }),
            }],
            views: vec![pb::View {
                label: "main".into(),
                audio: None,
                video: Some(false),
            }],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(custom.participant_limit, 2);
    assert_eq!(
        custom.views[0],
        pb::View {
            label: "main".into(),
            audio: Some(true),
            video: Some(false)
        }
    );

    let all = c
        .list_rooms(pb::ListRoomsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .rooms;
    assert_eq!(
        all.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
        ["demo", "small"]
    );
    let page2 = c
        .list_rooms(pb::ListRoomsRequest {
            page: 2,
            per_page: 1,
        })
        .await
        .unwrap()
        .into_inner()
        .rooms;
    assert_eq!(page2.len(), 1);
    assert_eq!(page2[0].name, "small");

    let updated = c
        .update_room(pb::UpdateRoomRequest {
            id: custom.id.clone(),
            name: Some("smaller".into()),
            participant_limit: Some(-1),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            updated.name.as_str(),
            updated.participant_limit,
            updated.roles.len()
        ),
        ("smaller", -1, 1)
    );

    c.delete_room(pb::DeleteRoomRequest {
        id: custom.id.clone(),
    })
    .await
    .unwrap();
    let err = c
        .get_room(pb::GetRoomRequest {
            id: custom.id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::NotFound, "Room not found")
    );
    let err = c
        .delete_room(pb::DeleteRoomRequest { id: custom.id })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    m.stop().await;
}

#[tokio::test]
async fn invalid_room_configurations_are_refused_naming_the_field() {
    let stack = stack(vec![]).await;
    let m = start(mgmt_config(&stack), ManualClock::new(now_ms())).await;
    let mut c = m.client.clone();
    let cases = [
        (pb::CreateRoomRequest::default(), "name"),
        (
            pb::CreateRoomRequest {
                name: "x".into(),
                participant_limit: Some(-3),
                ..Default::default()
            },
            "participantLimit",
        ),
        (
            pb::CreateRoomRequest {
                name: "x".into(),
                input_limit: Some(-2),
                ..Default::default()
            },
            "inputLimit",
        ),
        (
            pb::CreateRoomRequest {
                name: "x".into(),
                roles: vec![
                    pb::Role {
                        role: "a".into(),
                        ..Default::default()
                    },
                    pb::Role {
                        role: "a".into(),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            },
            "duplicate role name",
        ),
        (
            pb::CreateRoomRequest {
                name: "n".repeat(100_000),
                ..Default::default()
            },
            "name is longer",
        ),
    ];
    for (req, field) in cases {
        let err = c.create_room(req).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(
            err.message().contains(field),
            "`{}` should name {field}",
            err.message()
        );
    }
    let room = create_room(&mut c, "ok").await;
    let err = c
        .update_room(pb::UpdateRoomRequest {
            id: room.id.clone(),
            name: Some("".into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        c.get_room(pb::GetRoomRequest { id: room.id })
            .await
            .unwrap()
            .into_inner()
            .name,
        "ok"
    );
    for id in ["", "garbage", &"z".repeat(5000)] {
        let err = c
            .get_room(pb::GetRoomRequest { id: id.into() })
            .await
            .unwrap_err();
        assert!(
            matches!(err.code(), Code::InvalidArgument | Code::NotFound),
            "{id}: {err:?}"
        );
    }
    let err = c
        .list_rooms(pb::ListRoomsRequest {
            page: 1,
            per_page: 100_000,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    // a request over the size limit is refused, and the service goes on
    let err = c
        .create_room(pb::CreateRoomRequest {
            name: "n".repeat(2 * 1024 * 1024),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange, "{err:?}");
    create_room(&mut c, "still serving").await;
    m.stop().await;
}

#[tokio::test]
async fn a_token_points_at_the_scheduled_portal_and_is_consumed_once() {
    let stack = stack(vec![portal_info("portal.test", 8080)]).await;
    let m = start(mgmt_config(&stack), ManualClock::new(now_ms())).await;
    let mut c = m.client.clone();
    let room = create_room(&mut c, "demo").await;
    let text = token(&mut c, &room.id, "alice", "presenter").await.unwrap();
    // what an OWT client reads from it
    let json = base64::engine::general_purpose::STANDARD
        .decode(&text)
        .unwrap();
    let value: serde_json::Value = serde_json::from_slice(&json).unwrap();
    let mut keys: Vec<_> = value.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    // OWT's four, and what it grants, signed (token.sign_claims)
    assert_eq!(
        keys,
        ["claims", "host", "secure", "signature", "tokenId"],
        "{value}"
    );
    assert_eq!(value["host"], "portal.test:8080");
    assert_eq!(value["secure"], false);
    let decoded = JoinToken::decode(&text).unwrap();
    decoded.verify(KEY).unwrap();
    assert!(decoded.verify("another-key").is_err());

    let grant = consume(&mut c, &decoded.token_id).await.unwrap();
    assert_eq!(
        (
            grant.user.as_str(),
            grant.role.as_str(),
            grant.room_id.as_str()
        ),
        ("alice", "presenter", room.id.as_str())
    );
    let origin = grant.origin.unwrap();
    assert_eq!(
        (origin.isp.as_str(), origin.region.as_str()),
        ("isp", "region")
    );
    assert!(
        grant.code.parse::<u64>().is_ok_and(|n| n < 100_000_000_000),
        "{}",
        grant.code
    );
    // the claims are what the consumption grants
    let claims = decoded.claims.clone().unwrap();
    assert_eq!(
        [
            claims.room,
            claims.user,
            claims.role,
            claims.code,
            claims.isp,
            claims.region
        ],
        [
            &grant.room_id,
            &grant.user,
            &grant.role,
            &grant.code,
            "isp",
            "region"
        ]
        .map(String::from)
    );
    // the portal is reserved for the token's code
    let mut cm = ClusterManagerClient::new(
        conclave_common::grpc::channel(&stack.manager_addr, Duration::from_secs(2)).unwrap(),
    );
    let scheduled = cm
        .get_scheduled(cluster::GetScheduledRequest {
            purpose: "portal".into(),
            task: grant.code.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(scheduled.worker_id, stack.portals[0].id());

    let err = consume(&mut c, &decoded.token_id).await.unwrap_err();
    assert_eq!((err.code(), err.message()), (Code::NotFound, "Unknown"));
    for garbage in ["nope", "' OR 1=1 --", &"x".repeat(10_000)] {
        let err = consume(&mut c, garbage).await.unwrap_err();
        assert_eq!((err.code(), err.message()), (Code::NotFound, "Unknown"));
    }
    let err = consume(&mut c, "").await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    m.stop().await;
}

#[tokio::test]
async fn via_host_and_preference_steer_the_token() {
    let mut eu = portal_info("portal-eu", 8443);
    eu.via_host = "https://conf.example.com".into();
    eu.capacity = Some(cluster::Capacity {
        regions: vec!["eu".into()],
        ..Default::default()
    });
    let stack = stack(vec![portal_info("portal-us", 8080), eu]).await;
    let m = start(mgmt_config(&stack), ManualClock::new(now_ms())).await;
    let mut c = m.client.clone();
    let room = create_room(&mut c, "demo").await;
    let text = c
        .create_token(pb::CreateTokenRequest {
            room_id: room.id.clone(),
            user: "bob".into(),
            role: "viewer".into(),
            preference: Some(pb::Preference {
                isp: "".into(),
                region: "eu".into(),
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .token;
    let t = JoinToken::decode(&text).unwrap();
    assert_eq!((t.host.as_str(), t.secure), ("conf.example.com", true));
    t.verify(KEY).unwrap();
    let grant = consume(&mut c, &t.token_id).await.unwrap();
    assert_eq!(grant.origin.unwrap().region, "eu");
    m.stop().await;
}

#[tokio::test]
async fn create_token_errors_are_owts() {
    let stack = stack(vec![portal_info("portal.test", 8080)]).await;
    let m = start(mgmt_config(&stack), ManualClock::new(now_ms())).await;
    let mut c = m.client.clone();
    let room = create_room(&mut c, "demo").await;
    let err = token(&mut c, "000000000000000000000000", "alice", "presenter")
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::NotFound, "Room not found")
    );
    let err = token(&mut c, "", "alice", "presenter").await.unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::NotFound, "Room not found")
    );
    for (user, role) in [
        ("", "presenter"),
        ("alice", "admin"),
        ("alice", ""),
        (&"u".repeat(1000) as &str, "viewer"),
    ] {
        let err = token(&mut c, &room.id, user, role).await.unwrap_err();
        assert_eq!(
            (err.code(), err.message()),
            (Code::InvalidArgument, "Name or role not valid")
        );
    }
    m.stop().await;

    // no portal in the cluster: the retry budget runs out
    let empty = stack_without_portals().await;
    let m = start(mgmt_config(&empty), ManualClock::new(now_ms())).await;
    let mut c = m.client.clone();
    let room = create_room(&mut c, "lonely").await;
    let err = token(&mut c, &room.id, "alice", "presenter")
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::Unavailable, "Failed to get portal")
    );
    m.stop().await;
}

async fn stack_without_portals() -> Stack {
    stack(vec![]).await
}

#[tokio::test]
async fn concurrent_consumes_of_one_token_have_exactly_one_winner() {
    let stack = stack(vec![portal_info("portal.test", 8080)]).await;
    let m = start(mgmt_config(&stack), ManualClock::new(now_ms())).await;
    let mut c = m.client.clone();
    let room = create_room(&mut c, "race").await;
    for _ in 0..3 {
        let t = JoinToken::decode(&token(&mut c, &room.id, "alice", "presenter").await.unwrap())
            .unwrap();
        let mut tasks = Vec::new();
        for _ in 0..32 {
            let mut c = c.clone();
            let id = t.token_id.clone();
            tasks.push(tokio::spawn(async move { consume(&mut c, &id).await }));
        }
        let mut wins = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(_) => wins += 1,
                Err(e) => assert_eq!(e.message(), "Unknown"),
            }
        }
        assert_eq!(wins, 1);
    }
    m.stop().await;
}

/// `ConsumeTokens` (a portal's logins that came together): each token
/// answered in order as `ConsumeToken` would, a token named twice won once.
#[tokio::test]
async fn consume_tokens_answers_each_token_as_consume_token_would() {
    let stack = stack(vec![portal_info("portal.test", 8080)]).await;
    let clock = ManualClock::new(now_ms());
    let m = start(mgmt_config(&stack), clock.clone()).await;
    let mut c = m.client.clone();
    let room = create_room(&mut c, "batch").await;
    let old =
        JoinToken::decode(&token(&mut c, &room.id, "carol", "viewer").await.unwrap()).unwrap();
    clock.advance_ms(180_001);
    let mut ids = Vec::new();
    for user in ["alice", "bob"] {
        let t = token(&mut c, &room.id, user, "presenter").await.unwrap();
        ids.push(JoinToken::decode(&t).unwrap().token_id);
    }
    // (the expired one first: a take purges the expired tokens after it,
    // so after another one it would read Unknown, as with ConsumeToken)
    let asked = vec![
        old.token_id.clone(),
        ids[0].clone(),
        "no-such-token".to_string(),
        ids[1].clone(),
        ids[0].clone(),
        String::new(),
    ];
    let reply = c
        .consume_tokens(pb::ConsumeTokensRequest { token_ids: asked })
        .await
        .unwrap()
        .into_inner()
        .tokens;
    let outcome = |t: &pb::ConsumedToken| {
        (
            t.grant
                .as_ref()
                .map(|g| (g.user.clone(), g.room_id.clone())),
            Code::from(t.code),
            t.message.clone(),
        )
    };
    let got: Vec<_> = reply.iter().map(outcome).collect();
    assert_eq!(got[0], (None, Code::FailedPrecondition, "Expired".into()));
    let (winner, loser) = match (&got[1].0, &got[4].0) {
        (Some(_), None) => (1, 4),
        (None, Some(_)) => (4, 1),
        other => panic!("one of the two takes of a token wins: {other:?}"),
    };
    assert_eq!(
        got[winner],
        (
            Some(("alice".into(), room.id.clone())),
            Code::Ok,
            String::new()
        )
    );
    assert_eq!(got[loser], (None, Code::NotFound, "Unknown".into()));
    assert_eq!(got[2], (None, Code::NotFound, "Unknown".into()));
    assert_eq!(got[3].0, Some(("bob".into(), room.id.clone())));
    assert_eq!(got[5].1, Code::InvalidArgument);
    assert_eq!(got.len(), 6);
    // the batch consumed them: one at a time they are gone
    let err = consume(&mut c, &ids[1]).await.unwrap_err();
    assert_eq!(err.message(), "Unknown");
    let err = c
        .consume_tokens(pb::ConsumeTokensRequest {
            token_ids: vec!["x".into(); 1025],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    m.stop().await;
}

#[tokio::test]
async fn a_token_older_than_three_minutes_is_expired() {
    let stack = stack(vec![portal_info("portal.test", 8080)]).await;
    let clock = ManualClock::new(now_ms());
    let m = start(mgmt_config(&stack), clock.clone()).await;
    let mut c = m.client.clone();
    let room = create_room(&mut c, "slow").await;
    let old =
        JoinToken::decode(&token(&mut c, &room.id, "alice", "presenter").await.unwrap()).unwrap();
    clock.advance_ms(179_000);
    let fresh =
        JoinToken::decode(&token(&mut c, &room.id, "bob", "viewer").await.unwrap()).unwrap();
    clock.advance_ms(1_001);
    let err = consume(&mut c, &old.token_id).await.unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::FailedPrecondition, "Expired")
    );
    let err = consume(&mut c, &old.token_id).await.unwrap_err();
    assert_eq!(err.message(), "Unknown", "an expired token is gone");
    assert_eq!(consume(&mut c, &fresh.token_id).await.unwrap().user, "bob");
    m.stop().await;
}

#[tokio::test]
async fn rooms_and_unconsumed_tokens_survive_a_restart() {
    let stack = stack(vec![portal_info("portal.test", 8080)]).await;
    let clock = ManualClock::new(now_ms());
    let m = start(mgmt_config(&stack), clock.clone()).await;
    let mut c = m.client.clone();
    let room = create_room(&mut c, "durable").await;
    let kept =
        JoinToken::decode(&token(&mut c, &room.id, "alice", "presenter").await.unwrap()).unwrap();
    let used =
        JoinToken::decode(&token(&mut c, &room.id, "bob", "presenter").await.unwrap()).unwrap();
    consume(&mut c, &used.token_id).await.unwrap();
    m.stop().await;

    let m = start(mgmt_config(&stack), clock).await;
    let mut c = m.client.clone();
    assert_eq!(
        c.get_room(pb::GetRoomRequest {
            id: room.id.clone()
        })
        .await
        .unwrap()
        .into_inner(),
        room
    );
    assert_eq!(consume(&mut c, &kept.token_id).await.unwrap().user, "alice");
    assert_eq!(
        consume(&mut c, &used.token_id).await.unwrap_err().message(),
        "Unknown"
    );
    m.stop().await;
}

/// A service's key is shown once, stored sealed (the database file alone
/// does not reveal it), and still works after a restart; with another
/// cluster service key it cannot be unsealed, and the service cannot sign in.
#[tokio::test]
async fn service_keys_are_sealed_in_the_store_and_survive_a_restart() {
    let stack = stack(vec![]).await;
    let clock = ManualClock::new(now_ms());
    let m = start(mgmt_config(&stack), clock.clone()).await;
    let mut c = m.client.clone();
    let made = c
        .create_service(pb::CreateServiceRequest {
            name: "sealed".into(),
            key: Some("a-very-recognisable-service-key".into()),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(made.key, "a-very-recognisable-service-key");
    let listed = c
        .list_services(pb::ListServicesRequest {})
        .await
        .unwrap()
        .into_inner()
        .services;
    assert_eq!(listed.len(), 2, "the super service and this one");
    assert!(
        listed.iter().all(|s| s.key.is_empty()),
        "keys are never listed"
    );
    let dup = c
        .create_service(pb::CreateServiceRequest {
            name: "sealed".into(),
            key: None,
        })
        .await
        .unwrap_err();
    assert_eq!(dup.code(), Code::AlreadyExists);
    m.stop().await;
    // the database and its write-ahead log
    let mut saw_service = false;
    for entry in std::fs::read_dir(&stack.data_dir).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains("a-very-recognisable-service-key"));
        saw_service |= text.contains(&made.id);
    }
    assert!(saw_service, "the service row was read");

    let rest_sign_in = |addr: std::net::SocketAddr| {
        let rest = conclave_stack::owt_rest::OwtRest::new(
            &made.id,
            "a-very-recognisable-service-key",
            &addr.to_string(),
        );
        async move { rest.get_rooms(1, 50).await.unwrap().status }
    };
    let m = start(mgmt_config(&stack), clock.clone()).await;
    assert_eq!(rest_sign_in(m.server.rest_addr().unwrap()).await, 200);
    m.stop().await;
    let mut other_key = mgmt_config(&stack);
    other_key.service_key = "another-cluster-key".into();
    let m = start(other_key, clock).await;
    assert_eq!(rest_sign_in(m.server.rest_addr().unwrap()).await, 401);
    m.stop().await;
}

#[tokio::test]
async fn an_empty_service_key_is_refused_at_start() {
    let stack = stack(vec![]).await;
    let mut config = mgmt_config(&stack);
    config.service_key = String::new();
    let err = management::start(config, CancellationToken::new())
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("service key is empty"), "{err}");
}
