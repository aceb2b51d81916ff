//! The real cluster manager on a loopback port, driven over gRPC by the real
//! cluster-worker client.

mod support;

use conclave_proto::cluster::v1 as pb;
use conclave_proto::cluster::v1::cluster_event::Kind;
use std::time::Duration;
use support::*;
use tokio_stream::StreamExt;
use tonic::Code;

#[tokio::test]
async fn two_workers_join_report_load_and_are_scheduled_by_strategy() {
    let mut cfg = config("127.0.0.1:0");
    cfg.strategy.conference = "round-robin".into();
    cfg.strategy.portal = "least-used".into();
    let m = start(cfg).await;
    let (a, _la) = worker(&m.addr, "conference", 7101, 0.2).await;
    let (b, _lb) = worker(&m.addr, "conference", 7102, 0.4).await;
    assert!(a.id().starts_with("conference-") && a.id().ends_with("@test-host"));
    assert!(
        eventually(Duration::from_secs(3), || async {
            load_of(&m.addr, a.id()).await == Some(0.2)
                && load_of(&m.addr, b.id()).await == Some(0.4)
        })
        .await,
        "loads reach the manager"
    );
    let mut workers = client(&m.addr)
        .get_workers(pb::GetWorkersRequest {
            purpose: "conference".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .workers;
    workers.sort();
    let mut expected = vec![a.id().to_string(), b.id().to_string()];
    expected.sort();
    assert_eq!(workers, expected);

    // round-robin across the two, in join order
    let picks = [
        schedule(&m.addr, "conference", "r1").await.unwrap(),
        schedule(&m.addr, "conference", "r2").await.unwrap(),
        schedule(&m.addr, "conference", "r3").await.unwrap(),
    ];
    assert_eq!(picks, [a.id(), b.id(), a.id()]);
    // an assigned task keeps its worker
    assert_eq!(schedule(&m.addr, "conference", "r2").await.unwrap(), b.id());
    let reply = client(&m.addr)
        .schedule(pb::ScheduleRequest {
            purpose: "conference".into(),
            task: "r2".into(),
            preference: None,
            reserve_time_ms: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.info.unwrap().port, 7102);

    // least-used for portals follows the reported loads
    let (p1, l1) = worker(&m.addr, "portal", 8081, 0.5).await;
    let (p2, _l2) = worker(&m.addr, "portal", 8082, 0.3).await;
    assert!(
        eventually(Duration::from_secs(3), || async {
            load_of(&m.addr, p1.id()).await == Some(0.5)
                && load_of(&m.addr, p2.id()).await == Some(0.3)
        })
        .await
    );
    assert_eq!(
        schedule(&m.addr, "portal", "code-1").await.unwrap(),
        p2.id()
    );
    l1.set(0.1);
    assert!(
        eventually(Duration::from_secs(3), || async {
            load_of(&m.addr, p1.id()).await == Some(0.1)
        })
        .await
    );
    assert_eq!(
        schedule(&m.addr, "portal", "code-2").await.unwrap(),
        p1.id()
    );
    // a worker at max load takes nothing new
    l1.set(0.9);
    assert!(
        eventually(Duration::from_secs(3), || async {
            load_of(&m.addr, p1.id()).await == Some(0.9)
        })
        .await
    );
    assert_eq!(
        schedule(&m.addr, "portal", "code-3").await.unwrap(),
        p2.id()
    );

    for w in [&a, &b, &p1, &p2] {
        w.quit().await.unwrap();
    }
    assert!(
        client(&m.addr)
            .get_workers(pb::GetWorkersRequest {
                purpose: "all".into()
            })
            .await
            .unwrap()
            .into_inner()
            .workers
            .is_empty()
    );
    m.stop().await;
}

/// The tasks the manager at `addr` has for worker `id`.
#[tokio::test]
async fn tasks_are_picked_up_and_laid_down_through_the_worker() {
    let m = start(config("127.0.0.1:0")).await;
    let (a, _) = worker(&m.addr, "conference", 7101, 0.1).await;
    assert!(
        eventually(Duration::from_secs(3), || async {
            load_of(&m.addr, a.id()).await == Some(0.1)
        })
        .await
    );
    assert_eq!(
        schedule(&m.addr, "conference", "room").await.unwrap(),
        a.id()
    );
    a.add_task("room").await.unwrap();
    a.add_task("room").await.unwrap();
    let tasks = |id: String| tasks_of(m.addr.clone(), id);
    assert_eq!(tasks(a.id().to_string()).await, ["room"]);
    assert_eq!(a.tasks(), ["room"]);
    a.remove_task("room").await.unwrap();
    assert!(tasks(a.id().to_string()).await.is_empty());
    // affinity is kept after lay-down
    assert_eq!(
        get_scheduled(&m.addr, "conference", "room").await.unwrap(),
        a.id()
    );
    a.reject_task("room").await.unwrap();
    let err = get_scheduled(&m.addr, "conference", "room")
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::NotFound, "No such a task")
    );
    a.report_state(1).await.unwrap();
    let err = schedule(&m.addr, "conference", "room2").await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert_eq!(
        err.message(),
        "Failed in scheduling conference worker, reason: No worker available, all in full load."
    );
    a.quit().await.unwrap();
    m.stop().await;
}

/// A task removed while its `PickUpTasks` is on the way (a participant that
/// leaves right after its login answer, which does not wait for the
/// announcement) is laid down after the pick-up, never before it, so the
/// manager does not keep it; added again meanwhile, it stays.
#[tokio::test]
async fn a_task_removed_while_its_pick_up_is_on_the_way_ends_laid_down() {
    let m = start(config("127.0.0.1:0")).await;
    let (a, _) = worker(&m.addr, "portal", 7105, 0.1).await;
    let tasks = |id: String| tasks_of(m.addr.clone(), id);
    // (join! polls in order: the add's call is out when the remove runs)
    let (added, removed) = tokio::join!(a.add_task("code-1"), a.remove_task("code-1"));
    added.unwrap();
    removed.unwrap();
    assert!(a.tasks().is_empty());
    assert!(
        tasks(a.id().to_string()).await.is_empty(),
        "laid down after the pick-up"
    );
    let (added, removed, again) = tokio::join!(
        a.add_task("code-2"),
        a.remove_task("code-2"),
        a.add_task("code-2")
    );
    added.unwrap();
    removed.unwrap();
    again.unwrap();
    assert_eq!(a.tasks(), ["code-2"]);
    assert_eq!(tasks(a.id().to_string()).await, ["code-2"]);
    a.quit().await.unwrap();
    m.stop().await;
}

#[tokio::test]
async fn a_silent_worker_is_removed_in_about_four_seconds_and_watch_reports_it() {
    let m = start(config("127.0.0.1:0")).await;
    let mut watch = client(&m.addr)
        .watch(pb::WatchRequest { purposes: vec![] })
        .await
        .unwrap()
        .into_inner();
    let (a, _) = worker(&m.addr, "conference", 7101, 0.1).await;
    let (b, _) = worker(&m.addr, "conference", 7102, 0.1).await;
    let joined = watch.next().await.unwrap().unwrap();
    assert_eq!(joined.kind, Kind::WorkerJoined as i32);
    assert_eq!(
        (joined.id.as_str(), joined.r#type.as_str()),
        (a.id(), "worker")
    );
    assert_eq!(joined.info.unwrap().port, 7101);
    assert_eq!(watch.next().await.unwrap().unwrap().id, b.id());
    assert!(
        eventually(Duration::from_secs(3), || async {
            load_of(&m.addr, a.id()).await == Some(0.1)
        })
        .await
    );
    schedule(&m.addr, "conference", "room-a").await.unwrap();
    a.add_task("room-a").await.unwrap();
    assert_eq!(
        get_scheduled(&m.addr, "conference", "room-a")
            .await
            .unwrap(),
        a.id()
    );

    let a_id = a.id().to_string();
    let silenced = tokio::time::Instant::now();
    drop(a); // stops keep-alives without quitting, like a crashed process
    let lost = tokio::time::timeout(Duration::from_secs(8), watch.next())
        .await
        .expect("loss reported")
        .unwrap()
        .unwrap();
    let took = silenced.elapsed();
    assert_eq!(lost.kind, Kind::WorkerLost as i32);
    assert_eq!(
        (
            lost.id.as_str(),
            lost.reason.as_str(),
            lost.purpose.as_str()
        ),
        (a_id.as_str(), "timeout", "conference")
    );
    assert!(
        took >= Duration::from_millis(2500) && took <= Duration::from_millis(6000),
        "removed after {took:?}, expected about 4 s"
    );
    let err = get_scheduled(&m.addr, "conference", "room-a")
        .await
        .unwrap_err();
    assert_eq!(
        err.message(),
        "No such a task",
        "its executing task was released"
    );
    let workers = client(&m.addr)
        .get_workers(pb::GetWorkersRequest {
            purpose: "all".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .workers;
    assert_eq!(workers, [b.id()], "the live worker stays");
    // the room goes to the live worker now
    assert_eq!(
        schedule(&m.addr, "conference", "room-a").await.unwrap(),
        b.id()
    );

    // node exits reported by agents come out on Watch too
    client(&m.addr)
        .report_node_exit(pb::ReportNodeExitRequest {
            worker_id: b.id().into(),
            node_id: format!("{}_0", b.id()),
            purpose: "conference".into(),
            reason: "abnormal".into(),
            tasks: vec![],
        })
        .await
        .unwrap();
    let exit = watch.next().await.unwrap().unwrap();
    assert_eq!(exit.kind, Kind::NodeExited as i32);
    assert_eq!(
        (exit.r#type.as_str(), exit.worker_id.as_str()),
        ("node", b.id())
    );
    b.quit().await.unwrap();
    let quit = watch.next().await.unwrap().unwrap();
    assert_eq!(
        (quit.kind, quit.reason.as_str()),
        (Kind::WorkerLost as i32, "quit")
    );
    m.stop().await;
    // the stream ends with the server
    assert!(
        tokio::time::timeout(Duration::from_secs(2), watch.next())
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn watch_filters_by_purpose() {
    let m = start(config("127.0.0.1:0")).await;
    let mut watch = client(&m.addr)
        .watch(pb::WatchRequest {
            purposes: vec!["portal".into()],
        })
        .await
        .unwrap()
        .into_inner();
    let (c, _) = worker(&m.addr, "conference", 7101, 0.1).await;
    let (p, _) = worker(&m.addr, "portal", 8080, 0.1).await;
    let first = watch.next().await.unwrap().unwrap();
    assert_eq!(first.id, p.id());
    c.quit().await.unwrap();
    p.quit().await.unwrap();
    let second = watch.next().await.unwrap().unwrap();
    assert_eq!(
        (second.id.as_str(), second.reason.as_str()),
        (p.id(), "quit")
    );
    m.stop().await;
}

#[tokio::test]
async fn a_restarted_manager_is_initializing_and_workers_reannounce_their_tasks() {
    let m = start(config("127.0.0.1:0")).await;
    let addr = m.addr.clone();
    let (a, _) = worker(&addr, "conference", 7101, 0.1).await;
    let (b, _) = worker(&addr, "conference", 7102, 0.1).await;
    let (p, _) = worker(&addr, "portal", 8080, 0.1).await;
    let mut lost_events = a.subscribe();
    assert!(
        eventually(Duration::from_secs(3), || async {
            load_of(&addr, a.id()).await == Some(0.1) && load_of(&addr, b.id()).await == Some(0.1)
        })
        .await
    );
    a.add_task("room-1").await.unwrap();
    a.add_task("room-2").await.unwrap();
    b.add_task("room-3").await.unwrap();
    p.add_task("code-1").await.unwrap();
    let before = [
        get_scheduled(&addr, "conference", "room-1").await.unwrap(),
        get_scheduled(&addr, "conference", "room-2").await.unwrap(),
        get_scheduled(&addr, "conference", "room-3").await.unwrap(),
        get_scheduled(&addr, "portal", "code-1").await.unwrap(),
    ];
    assert_eq!(before, [a.id(), a.id(), b.id(), p.id()]);

    m.stop().await;
    // down for a moment: keep-alives fail
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let mut cfg = config(&addr);
    cfg.manager.initial_time = 3000;
    let m2 = start(cfg).await;
    let reply = client(&addr)
        .join(pb::JoinRequest {
            purpose: "probe".into(),
            worker_id: "probe-1".into(),
            info: Some(info(1)),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.state, "initializing");
    let err = schedule(&addr, "conference", "room-9").await.unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::Unavailable, "cluster manager is not ready.")
    );

    assert!(
        eventually(Duration::from_secs(5), || async {
            let now = [
                get_scheduled(&addr, "conference", "room-1").await,
                get_scheduled(&addr, "conference", "room-2").await,
                get_scheduled(&addr, "conference", "room-3").await,
                get_scheduled(&addr, "portal", "code-1").await,
            ];
            now.iter()
                .zip(before.iter())
                .all(|(n, b)| n.as_ref().ok() == Some(b))
        })
        .await,
        "GetScheduled answers as before the restart"
    );
    assert!(a.is_registered() && b.is_registered() && p.is_registered());
    assert_eq!(
        a.tasks(),
        ["room-1", "room-2"],
        "tasks kept: the manager was initializing"
    );
    assert_eq!(
        lost_events.try_recv().ok(),
        Some(conclave_common::cluster_worker::WorkerEvent::Recovered),
        "recovery without loss"
    );
    // once in service, existing rooms keep their agent
    tokio::time::sleep(Duration::from_millis(3000)).await;
    assert_eq!(
        schedule(&addr, "conference", "room-3").await.unwrap(),
        b.id()
    );
    for w in [&a, &b, &p] {
        w.quit().await.unwrap();
    }
    m2.stop().await;
}

#[tokio::test]
async fn a_worker_forgotten_by_an_in_service_manager_loses_its_tasks() {
    let m = start(config("127.0.0.1:0")).await;
    let (a, _) = worker(&m.addr, "portal", 8080, 0.1).await;
    let mut events = a.subscribe();
    a.add_task("code-1").await.unwrap();
    // The manager forgets the worker as if it had timed out.
    client(&m.addr)
        .quit(pb::QuitRequest {
            worker_id: a.id().into(),
        })
        .await
        .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first, conclave_common::cluster_worker::WorkerEvent::Lost);
    let second = tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        second,
        conclave_common::cluster_worker::WorkerEvent::Recovered
    );
    assert!(a.tasks().is_empty());
    assert_eq!(
        client(&m.addr)
            .get_workers(pb::GetWorkersRequest {
                purpose: "portal".into()
            })
            .await
            .unwrap()
            .into_inner()
            .workers,
        [a.id()],
        "rejoined"
    );
    a.quit().await.unwrap();
    m.stop().await;
}

#[tokio::test]
async fn joining_an_absent_manager_fails_after_the_retries() {
    let mut cfg = worker_config("127.0.0.1:1");
    cfg.join_retry = 2;
    cfg.join_retry_interval = 10;
    let started = tokio::time::Instant::now();
    let err = conclave_common::cluster_worker::ClusterWorker::join(
        cfg,
        conclave_common::purpose::Purpose::Portal,
        info(1),
        std::sync::Arc::new(conclave_common::load::ManualLoad::new(0.0)),
    )
    .await
    .err()
    .expect("no manager");
    assert!(err.to_string().contains("after 3 attempts"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn bad_input_gets_clear_errors() {
    let m = start(config("127.0.0.1:0")).await;
    let mut c = client(&m.addr);
    let (w, _) = worker(&m.addr, "conference", 7101, 0.1).await;

    let err = c
        .join(pb::JoinRequest {
            purpose: "".into(),
            worker_id: "x".into(),
            info: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("purpose"));
    let err = c
        .join(pb::JoinRequest {
            purpose: "portal".into(),
            worker_id: "".into(),
            info: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("workerId"));
    let err = c
        .join(pb::JoinRequest {
            purpose: "portal".into(),
            worker_id: "w".repeat(100_000),
            info: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    for load in [-0.5, 1.5, f64::NAN] {
        let err = c
            .report_load(pb::ReportLoadRequest {
                worker_id: w.id().into(),
                load,
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "load {load}");
        assert!(err.message().contains("load must be within [0, 1]"));
    }
    let err = c
        .report_load(pb::ReportLoadRequest {
            worker_id: "ghost".into(),
            load: 0.5,
        })
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::NotFound, "Worker [ghost] does NOT exist.")
    );
    let err = c
        .quit(pb::QuitRequest {
            worker_id: "ghost".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::NotFound, "Worker [ghost] does NOT exist.")
    );
    let err = c
        .get_worker_attr(pb::GetWorkerAttrRequest {
            worker_id: "ghost".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = c
        .get_tasks(pb::GetTasksRequest {
            worker_id: "ghost".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = c
        .pick_up_tasks(pb::PickUpTasksRequest {
            worker_id: "ghost".into(),
            tasks: vec!["t".into()],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = c
        .pick_up_tasks(pb::PickUpTasksRequest {
            worker_id: w.id().into(),
            tasks: vec!["".into()],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let keep = c
        .keep_alive(pb::KeepAliveRequest {
            worker_id: "ghost".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(keep.message, "whoareyou");
    let err = c
        .schedule(pb::ScheduleRequest {
            purpose: "conference".into(),
            task: "t".into(),
            preference: None,
            reserve_time_ms: -1,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("reserveTimeMs"));
    let err = c
        .schedule(pb::ScheduleRequest {
            purpose: "".into(),
            task: "t".into(),
            preference: None,
            reserve_time_ms: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = schedule(&m.addr, "sip", "t").await.unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::Unavailable, "No scheduler for purpose: sip")
    );
    let err = get_scheduled(&m.addr, "sip", "t").await.unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::NotFound, "Invalid purpose.")
    );
    let err = c
        .get_workers(pb::GetWorkersRequest { purpose: "".into() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    // the manager is still serving
    assert_eq!(
        c.keep_alive(pb::KeepAliveRequest {
            worker_id: w.id().into()
        })
        .await
        .unwrap()
        .into_inner()
        .message,
        "ok"
    );
    w.quit().await.unwrap();
    m.stop().await;
}
