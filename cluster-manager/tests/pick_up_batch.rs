//! Tasks added within a window go to the real manager in one `PickUpTasks`
//! (a portal's token tasks, one per login). A test binary of its own: it
//! counts the process's gRPC client calls, which other tests would add to.

mod support;

use futures_util::future::join_all;
use std::time::Duration;
use support::*;

/// Calls of `method` this process's gRPC clients made, every outcome.
fn calls(method: &str) -> f64 {
    conclave_common::metrics::handle()
        .render()
        .lines()
        .filter(|l| {
            l.starts_with("grpc_client_requests_total")
                && l.contains(&format!("method=\"/cluster.v1.ClusterManager/{method}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn tasks_added_within_the_window_are_announced_in_one_call() {
    conclave_common::metrics::handle();
    let m = start(config("127.0.0.1:0")).await;
    let (a, _) = worker(&m.addr, "portal", 7201, 0.1).await;
    let (b, _) = worker(&m.addr, "portal", 7202, 0.1).await;
    let window = Duration::from_millis(300);

    // 200 logins' tasks within the window: one call, every task held
    let before = calls("PickUpTasks");
    let codes: Vec<String> = (0..200).map(|i| format!("code-{i}")).collect();
    let added = join_all(codes.iter().map(|c| a.add_task_within(c, window))).await;
    assert!(added.iter().all(Result::is_ok), "{added:?}");
    assert_eq!(calls("PickUpTasks") - before, 1.0);
    let mut held = tasks_of(m.addr.clone(), a.id().to_string()).await;
    held.sort();
    let mut expected = codes.clone();
    expected.sort();
    assert_eq!(held, expected);

    // removed within the window: laid down after the batch's call, so the
    // manager does not keep it; removed and added again: held
    let before = calls("PickUpTasks");
    let (gone, removed, kept, removed_too, again) = tokio::join!(
        a.add_task_within("gone", window),
        a.remove_task("gone"),
        a.add_task_within("kept", window),
        a.remove_task("kept"),
        a.add_task_within("kept", window),
    );
    for r in [gone, removed, kept, removed_too, again] {
        r.unwrap();
    }
    assert_eq!(calls("PickUpTasks") - before, 1.0);
    let held = tasks_of(m.addr.clone(), a.id().to_string()).await;
    assert!(
        !held.contains(&"gone".to_string()),
        "laid down after its pick-up"
    );
    assert!(held.contains(&"kept".to_string()));
    assert!(!a.tasks().contains(&"gone".to_string()));

    // a task another worker executes is refused to its caller alone
    b.add_task("taken").await.unwrap();
    let (taken, free) = tokio::join!(
        a.add_task_within("taken", window),
        a.add_task_within("free", window),
    );
    assert!(
        matches!(
            taken,
            Err(conclave_common::cluster_worker::WorkerError::TaskRefused { .. })
        ),
        "{taken:?}"
    );
    free.unwrap();
    assert!(!a.tasks().contains(&"taken".to_string()));
    assert_eq!(
        tasks_of(m.addr.clone(), b.id().to_string()).await,
        ["taken"]
    );
    assert!(
        tasks_of(m.addr.clone(), a.id().to_string())
            .await
            .contains(&"free".to_string())
    );

    // after a quit, a batch still gathering is not sent
    let before = calls("PickUpTasks");
    let (late, quit) = tokio::join!(a.add_task_within("late", window), a.quit());
    late.unwrap();
    quit.unwrap();
    assert_eq!(calls("PickUpTasks") - before, 0.0);
    b.quit().await.unwrap();
    m.stop().await;
}
