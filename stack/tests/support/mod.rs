//! A python-socketio client (portal/tests/clients/driver.py) driven
//! synchronously, and small process helpers for the stack tests.
#![allow(dead_code)]

use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Lines, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

/// The Engine.IO 4 Python, or `None` (with the reason printed) when the test
/// setup did not install it; under CI=true it must be there.
pub fn python() -> Option<String> {
    match std::env::var("CONCLAVE_PY_EIO4") {
        Ok(p) if !p.is_empty() => Some(p),
        _ => {
            assert!(
                std::env::var("CI").map_or(true, |v| v != "true"),
                "CONCLAVE_PY_EIO4 is required under CI=true: run scripts/test.sh"
            );
            eprintln!("SKIPPED: python-socketio not installed (run through scripts/test.sh)");
            None
        }
    }
}

pub struct Driver {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    pub sid: String,
}

impl Driver {
    pub fn spawn(python: &str) -> Driver {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../portal/tests/clients/driver.py"
        );
        let mut child = Command::new(python)
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python starts");
        let stdin = child.stdin.take().unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Driver {
            child,
            stdin,
            lines,
            sid: String::new(),
        }
    }

    pub fn ask(&mut self, cmd: Value) -> Value {
        writeln!(self.stdin, "{cmd}").unwrap();
        serde_json::from_str(&self.lines.next().expect("driver alive").unwrap()).unwrap()
    }

    /// Connect to `url` and log in with `token`; the login ack.
    pub fn login(&mut self, url: &str, token: &str) -> Value {
        let r = self.ask(json!({"cmd": "connect", "url": url, "transports": ["websocket"]}));
        assert_eq!(r["ok"], true, "{r}");
        self.sid = r["sid"].as_str().unwrap_or_default().to_string();
        let info = json!({"token": token, "protocol": "1.2", "userAgent": {"sdk": {"type": "C++", "version": "5.1"}}});
        self.ask(json!({"cmd": "emit", "event": "login", "args": [info]}))["ack"].clone()
    }

    pub fn wait_event(&mut self, event: &str, timeout_s: f64) -> Option<Value> {
        let r = self.ask(json!({"cmd": "wait_event", "event": event, "timeout": timeout_s}));
        if r.get("timeout").is_some() {
            None
        } else {
            Some(r["data"].clone())
        }
    }

    pub fn wait_disconnect(&mut self, timeout_s: f64) -> bool {
        self.ask(json!({"cmd": "wait_disconnect", "timeout": timeout_s}))
            .get("disconnected")
            .is_some()
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "{}", json!({"cmd": "quit"}));
        let _ = self.child.wait();
    }
}
