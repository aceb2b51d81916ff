//! The one-command local stack: start it, log in once with a real
//! python-socketio client, stop it with Ctrl-C (SIGINT).

mod support;

use conclave_common::process::ServiceProcess;
use conclave_common::testing::workspace_bin;
use std::time::Duration;

#[test]
fn the_local_stack_starts_serves_a_login_and_stops() {
    let Some(python) = support::python() else {
        return;
    };
    let data = std::env::temp_dir().join(format!("conclave-stack-test-{}", std::process::id()));
    let data_arg = data.display().to_string();
    let bin = workspace_bin("conclave-stack");
    let (mut stack, token) = ServiceProcess::start_named(
        "stack",
        bin.to_str().unwrap(),
        &[
            "--any-ports",
            "--data-dir",
            &data_arg,
            "--hostname",
            "127.0.0.1",
        ],
        &[],
        "conclave-stack ready",
        "token",
    )
    .expect("the stack starts");
    // The token carries the portal's host:port, as clients read it.
    let host = conclave_common::token::JoinToken::decode(&token)
        .expect("a real token")
        .host;
    let url = format!("http://{host}");

    let mut client = support::Driver::spawn(&python);
    let ack = client.login(&url, &token);
    assert_eq!(ack[0], "ok", "{ack}");
    assert_eq!(ack[1]["user"], "demo");
    drop(client);

    stack.signal("INT");
    let status = stack
        .wait_exit(Duration::from_secs(30))
        .expect("the stack stops on Ctrl-C");
    assert!(status.success(), "{status:?}");
    let mut saw_stopped = false;
    while let Ok(line) = stack.lines.try_recv() {
        saw_stopped |= line.contains("conclave-stack stopped");
    }
    assert!(saw_stopped, "it says it stopped");
    // nothing serves any more
    assert!(
        std::net::TcpStream::connect_timeout(&host.parse().unwrap(), Duration::from_millis(500))
            .is_err()
    );
    let _ = std::fs::remove_dir_all(data);
}
