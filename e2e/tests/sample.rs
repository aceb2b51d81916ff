//! The sample application server and page (issue 18) in a real browser:
//! headless Chromium through Selenium (`clients/browser.py`), against the
//! real stack and the `conclave-sample` binary, which gets its tokens from
//! the REST API with MAuth.

use conclave_e2e::*;
use conclave_proto::management::v1 as pb;
use conclave_stack::owt_rest::{OwtRest, raw};
use conclave_stack::process::ServiceProcess;
use conclave_stack::testing::workspace_bin;
use serde_json::{Value, json};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// Python with Selenium, and Debian's chromium and chromedriver.
fn browser_python() -> Option<String> {
    let python = std::env::var("CONCLAVE_PY_EIO4")
        .ok()
        .filter(|p| !p.is_empty());
    let ready = python.as_ref().is_some_and(|p| {
        std::process::Command::new(p)
            .args(["-c", "import selenium"])
            .output()
            .is_ok_and(|o| o.status.success())
    }) && std::path::Path::new("/usr/bin/chromium").exists()
        && std::path::Path::new("/usr/bin/chromedriver").exists();
    if ready {
        return python;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!(
            "chromium, chromedriver and selenium are required under CI=true: run the tests through scripts/test.sh"
        );
    }
    eprintln!("SKIPPED: no headless Chromium with Selenium (run through scripts/test.sh)");
    None
}

struct Browser {
    _child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Browser {
    async fn start(python: &str) -> Browser {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/clients/browser.py");
        let mut child = Command::new(python)
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("the browser driver starts");
        let stdin = child.stdin.take().unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Browser {
            _child: child,
            stdin,
            lines,
        }
    }

    async fn cmd(&mut self, cmd: Value) -> Value {
        self.stdin
            .write_all(format!("{cmd}\n").as_bytes())
            .await
            .unwrap();
        self.stdin.flush().await.unwrap();
        let line = tokio::time::timeout(Duration::from_secs(60), self.lines.next_line())
            .await
            .expect("the browser driver answers")
            .unwrap()
            .expect("the browser driver is alive");
        let v: Value = serde_json::from_str(&line).unwrap();
        assert!(v.get("error").is_none(), "{cmd} -> {v}");
        v
    }

    async fn open(&mut self, url: &str) -> u64 {
        self.cmd(json!({"cmd": "open", "url": url})).await["session"]
            .as_u64()
            .unwrap()
    }

    async fn js(&mut self, s: u64, script: &str) -> Value {
        self.cmd(json!({"cmd": "js", "s": s, "script": script}))
            .await["value"]
            .clone()
    }

    /// Wait until `script` returns something truthy; its value.
    async fn until(&mut self, s: u64, script: &str, what: &str) -> Value {
        let v = self
            .cmd(json!({"cmd": "wait_js", "s": s, "script": script, "timeout": 15}))
            .await;
        assert_eq!(v["ok"], true, "{what}: last value {}", v["value"]);
        v["value"].clone()
    }

    async fn text(&mut self, s: u64, id: &str) -> String {
        self.cmd(json!({"cmd": "text", "s": s, "id": id})).await["text"]
            .as_str()
            .unwrap()
            .to_string()
    }

    async fn join(&mut self, s: u64, name: &str) -> String {
        self.cmd(json!({"cmd": "type", "s": s, "id": "name", "text": name}))
            .await;
        self.cmd(json!({"cmd": "click", "s": s, "id": "join"}))
            .await;
        self.until(
            s,
            "return document.body.dataset.state === 'connected' && document.body.dataset.participantId",
            &format!("{name} joins"),
        )
        .await
        .as_str()
        .unwrap()
        .to_string()
    }

    async fn say(&mut self, s: u64, message: &str) {
        self.cmd(json!({"cmd": "type", "s": s, "id": "message", "text": message, "enter": true}))
            .await;
    }
}

fn contains(id: &str, text: &str) -> String {
    format!(
        "return document.getElementById('{id}').textContent.includes({})",
        json!(text)
    )
}

/// The stack, a service, and `conclave-sample` on a free port signing as it.
async fn sample(stack: &Stack) -> (ServiceProcess, String, OwtRest) {
    let s = stack
        .management_client()
        .create_service(pb::CreateServiceRequest {
            name: "sample-test".into(),
            key: None,
        })
        .await
        .unwrap()
        .into_inner();
    let sets = [
        "listen=127.0.0.1:0".to_string(),
        format!("rest_url=http://{}/", stack.management_rest),
        format!("service_id={}", s.id),
        format!("service_key={}", s.key),
    ];
    let args: Vec<String> = sets
        .iter()
        .flat_map(|s| ["--set".to_string(), s.clone()])
        .collect();
    let bin = workspace_bin("conclave-sample");
    let (process, addr) = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ServiceProcess::start_named(
            "sample",
            bin.to_str().unwrap(),
            &args,
            &[],
            "sample serving",
            "local_addr",
        )
    })
    .await
    .unwrap()
    .expect("conclave-sample starts");
    let rest = OwtRest::new(&s.id, &s.key, &stack.management_rest);
    (process, addr, rest)
}

async fn post_tokens(addr: &str, body: &str) -> (u16, String) {
    let a = raw(
        addr,
        "POST",
        "/tokens",
        Some(body),
        "application/json",
        None,
    )
    .await
    .unwrap();
    (a.status, a.body)
}

#[tokio::test]
async fn the_sample_server_gives_raw_tokens_for_the_sample_room() {
    let stack = stack(&[]).await;
    let (_sample, addr, rest) = sample(&stack).await;
    let (status, token) = post_tokens(&addr, r#"{"user":"user","role":"presenter"}"#).await;
    assert_eq!(status, 200, "{token}");
    let decoded = conclave_common::token::JoinToken::decode(&token).expect("a raw token");
    assert_eq!(decoded.host, stack.portal_socket);
    // it made the sample room through the REST API, once
    let rooms = rest.get_rooms(1, 100).await.unwrap().json();
    let names: Vec<&str> = rooms
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["sampleRoom"]);
    let (status, _) = post_tokens(&addr, r#"{"user":"again"}"#).await;
    assert_eq!(status, 200);
    assert_eq!(
        rest.get_rooms(1, 100)
            .await
            .unwrap()
            .json()
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // the older route, a named room, and refusals in the sample's form
    let room = rooms[0]["_id"].as_str().unwrap();
    let legacy = raw(
        &addr,
        "POST",
        "/createToken/",
        Some(&json!({"room": room, "username": "old", "role": "viewer"}).to_string()),
        "application/json",
        None,
    )
    .await
    .unwrap();
    assert_eq!(legacy.status, 200, "{legacy:?}");
    let (status, body) = post_tokens(&addr, r#"{"user":"u","role":"emperor"}"#).await;
    assert_eq!(status, 401);
    assert!(body.contains("Name or role not valid"), "{body}");
    let (status, body) = post_tokens(
        &addr,
        &json!({"room": "5e0000000000000000000000", "user": "u"}).to_string(),
    )
    .await;
    assert_eq!(status, 401);
    assert!(body.contains("Room not found"), "{body}");
    assert_eq!(post_tokens(&addr, "not json").await.0, 400);
    assert_eq!(post_tokens(&addr, r#"{"user":""}"#).await.0, 400);
    assert_eq!(
        post_tokens(&addr, &format!(r#"{{"user":"{}"}}"#, "x".repeat(20_000)))
            .await
            .0,
        400
    );
    // the page and its scripts, with a content security policy
    let page = raw(&addr, "GET", "/", None, "", None).await.unwrap();
    assert_eq!(page.status, 200);
    assert!(page.body.contains("<label for=\"name\">Your name</label>"));
    assert!(
        page.header("content-security-policy")
            .unwrap()
            .contains("default-src 'self'")
    );
    for script in [
        "/sio.js",
        "/owt.js",
        "/app.js",
        "/tests.js",
        "/style.css",
        "/tests.html",
    ] {
        assert_eq!(
            raw(&addr, "GET", script, None, "", None)
                .await
                .unwrap()
                .status,
            200,
            "{script}"
        );
    }
    assert_eq!(
        raw(&addr, "GET", "/nothing", None, "", None)
            .await
            .unwrap()
            .status,
        404
    );
}

#[tokio::test]
async fn two_browsers_meet_chat_survive_a_blip_and_see_leave_and_drop() {
    let Some(python) = browser_python() else {
        return;
    };
    let stack = stack(&[]).await;
    let (_sample, addr, rest) = sample(&stack).await;
    let url = format!("http://{addr}/");
    let mut b = Browser::start(&python).await;

    // the page's own unit tests, in this browser
    let t = b.open(&format!("http://{addr}/tests.html")).await;
    b.until(
        t,
        "return document.getElementById('summary').dataset.done === 'true'",
        "tests finish",
    )
    .await;
    let summary = b.text(t, "summary").await;
    let failed = b
        .js(
            t,
            "return document.getElementById('summary').dataset.failed",
        )
        .await;
    assert_eq!(failed, "0", "{summary}\n{}", b.text(t, "results").await);
    let passed: u32 = b
        .js(
            t,
            "return document.getElementById('summary').dataset.passed",
        )
        .await
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(passed >= 10, "{summary}");

    // two people join the sample room and see each other
    let alice_s = b.open(&url).await;
    let bob_s = b.open(&url).await;
    let alice = b.join(alice_s, "Alice").await;
    let bob = b.join(bob_s, "Bob").await;
    b.until(alice_s, &contains("participants", "Bob"), "Alice sees Bob")
        .await;
    b.until(bob_s, &contains("participants", "Alice"), "Bob sees Alice")
        .await;
    assert_eq!(b.text(alice_s, "count").await, "2");

    // they chat both ways
    b.say(alice_s, "Hello Bob").await;
    b.until(
        bob_s,
        &contains("messages", "Alice: Hello Bob"),
        "Bob reads Alice",
    )
    .await;
    b.say(bob_s, "Hi Alice").await;
    b.until(
        alice_s,
        &contains("messages", "Bob: Hi Alice"),
        "Alice reads Bob",
    )
    .await;
    // and privately
    b.cmd(json!({"cmd": "select", "s": bob_s, "id": "to", "value": alice}))
        .await;
    b.say(bob_s, "just for you").await;
    b.until(
        alice_s,
        &contains("messages", "Bob (to you): just for you"),
        "a private text",
    )
    .await;
    b.cmd(json!({"cmd": "select", "s": bob_s, "id": "to", "value": "all"}))
        .await;

    // Alice's network blips for 3 s; Bob writes meanwhile; she comes back
    // as the same participant with his message, and Bob saw nothing
    b.js(alice_s, "window.conclave.blip(3000); return true")
        .await;
    b.until(
        alice_s,
        "return document.body.dataset.state === 'reconnecting'",
        "Alice notices",
    )
    .await;
    b.say(bob_s, "while you were away").await;
    b.until(
        bob_s,
        &contains("messages", "you: while you were away"),
        "Bob's text is sent",
    )
    .await;
    b.until(
        alice_s,
        "return document.body.dataset.state === 'connected'",
        "Alice is back",
    )
    .await;
    b.until(
        alice_s,
        &contains(
            "messages",
            "Bob: while you were away (sent while you were away)",
        ),
        "Alice gets what she missed",
    )
    .await;
    assert_eq!(
        b.js(alice_s, "return window.conclave.conference.id").await,
        alice.as_str()
    );
    let bob_log = b.text(bob_s, "messages").await;
    assert!(
        !bob_log.contains("Alice left") && !bob_log.contains("Alice joined"),
        "{bob_log}"
    );
    let ids: Vec<String> = stack
        .clients()
        .await
        .into_iter()
        .map(|c| c.participant_id)
        .collect();
    assert!(ids.contains(&alice) && ids.contains(&bob), "{ids:?}");
    let shot = format!("{}/sample-page.png", env!("CARGO_TARGET_TMPDIR"));
    b.cmd(json!({"cmd": "screenshot", "s": alice_s, "path": shot}))
        .await;
    assert!(
        std::fs::metadata(&shot).unwrap().len() > 10_000,
        "a real screenshot"
    );

    // Bob closes his tab: Alice sees him leave at once
    b.cmd(json!({"cmd": "close_tab", "s": bob_s})).await;
    b.until(
        alice_s,
        &contains("messages", "Bob left"),
        "Alice sees Bob leave",
    )
    .await;
    assert_eq!(b.text(alice_s, "count").await, "1");

    // the application deletes Alice over REST: her page shows the drop
    let room = b.text(alice_s, "room-id").await;
    let dropped = rest.drop_participant(&room, &alice).await.unwrap();
    assert_eq!(dropped.status, 200, "{dropped:?}");
    b.until(
        alice_s,
        "return document.body.dataset.state === 'dropped'",
        "Alice is dropped",
    )
    .await;
    let errors = b.text(alice_s, "errors").await;
    assert_eq!(errors, "Dropped: Dropped by the application (REST API)");
    b.cmd(json!({"cmd": "quit"})).await;
}
