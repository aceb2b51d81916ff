//! Starting a Conclave service as a child process and learning the address
//! it bound from its log (services bind port 0 in tests and the local stack).

use conclave_common::handshake::field;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A service process that is killed when dropped. Its standard input is a
/// pipe held here and it is started with `CONCLAVE_EXIT_WITH_STDIN=true`, so
/// a Conclave service also stops when the process that started it dies,
/// SIGKILL included.
pub struct ServiceProcess {
    pub child: Child,
    /// Closing it (dropping it, or this process dying) stops the service.
    pub stdin: Option<std::process::ChildStdin>,
    /// Log lines seen so far keep arriving here.
    pub lines: mpsc::Receiver<String>,
    /// The lines read while waiting for the process to be ready.
    pub history: Vec<String>,
}

impl ServiceProcess {
    /// Start `program` with `args`, its log on stdout, and wait for the log
    /// line that names `marker`; returns the value after `key=` on that line.
    pub fn start(
        program: &str,
        args: &[&str],
        env: &[(&str, &str)],
        marker: &str,
        key: &str,
    ) -> Result<(ServiceProcess, String), String> {
        Self::start_named("service", program, args, env, marker, key)
    }

    /// As [`start`](Self::start), relaying its log lines as `[name] line`.
    pub fn start_named(
        name: &str,
        program: &str,
        args: &[&str],
        env: &[(&str, &str)],
        marker: &str,
        key: &str,
    ) -> Result<(ServiceProcess, String), String> {
        let (process, line) = Self::start_until(name, program, args, env, &|l| {
            l.contains(marker) && field(l, key).is_some()
        })
        .map_err(|e| format!("{e} (waiting for `{marker}`)"))?;
        let value = field(&line, key).unwrap_or_default();
        Ok((process, value))
    }

    /// Start and wait for the first log line `ready` accepts; returns it.
    pub fn start_until(
        name: &str,
        program: &str,
        args: &[&str],
        env: &[(&str, &str)],
        ready: &dyn Fn(&str) -> bool,
    ) -> Result<(ServiceProcess, String), String> {
        let mut cmd = Command::new(program);
        cmd.args(args)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env(conclave_common::shutdown::EXIT_WITH_STDIN_ENV, "true")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .stdin(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {program}: {e}"))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let stdin = child.stdin.take();
        let (tx, rx) = mpsc::channel();
        let name = name.to_string();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                // A closed stdout must not end the relay (the child would block).
                let _ = writeln!(std::io::stdout(), "[{name}] {line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let mut process = ServiceProcess {
            child,
            stdin,
            lines: rx,
            history: Vec::new(),
        };
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = process
                .lines
                .recv_timeout(left)
                .map_err(|_| format!("{program} was not ready in time"))?;
            process.history.push(line.clone());
            if ready(&line) {
                return Ok((process, line));
            }
        }
    }

    /// Send a signal (e.g. "TERM", "KILL", "STOP") with kill(1).
    pub fn signal(&self, name: &str) {
        let _ = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status();
    }

    /// Wait up to `limit` for the process to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
