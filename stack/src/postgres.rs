//! A throwaway PostgreSQL server for tests: Debian's binaries, a data
//! directory made here, loopback only, password authentication over TCP.
//! PostgreSQL refuses to run as root, so when the tests run as root the
//! server runs as the `postgres` user (made by Debian's package), else
//! as the current user.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The database user and password of every test server.
pub const USER: &str = "conclave";
pub const PASSWORD: &str = "conclave-test-pw";

pub struct Postgres {
    bin: PathBuf,
    dir: PathBuf,
    pub port: u16,
    /// Who the server runs as (None: this process's user).
    run_as: Option<String>,
    child: Option<Child>,
}

/// The directory of PostgreSQL's server binaries (`initdb`, `postgres`), the
/// newest under /usr/lib/postgresql, or `$CONCLAVE_PG_BIN`.
pub fn bin_dir() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("CONCLAVE_PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

/// Whether a server can be started here; under `CI=true` a missing
/// PostgreSQL is a failure, not a skip.
pub fn available() -> bool {
    crate::testing::required(
        bin_dir().is_some(),
        "PostgreSQL server",
        "apt-get install postgresql",
    )
}

fn is_root() -> bool {
    // the owner of /proc/self is this process's user
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

impl Postgres {
    /// A fresh server on a free loopback port, ready for connections.
    pub fn start() -> std::io::Result<Postgres> {
        let bin = bin_dir().ok_or_else(|| std::io::Error::other("no PostgreSQL binaries"))?;
        let dir = std::env::temp_dir().join(format!(
            "conclave-pg-{}-{}",
            std::process::id(),
            crate::testing::free_port()
        ));
        std::fs::create_dir_all(&dir)?;
        let run_as = is_root().then(|| "postgres".to_string());
        let pwfile = dir.join("pw");
        std::fs::write(&pwfile, PASSWORD)?;
        if let Some(user) = &run_as {
            let (ok, out) = crate::testing::run(Command::new("chown").args(["-R", user]).arg(&dir));
            if !ok {
                return Err(std::io::Error::other(format!(
                    "chown {}: {out}",
                    dir.display()
                )));
            }
        }
        let mut pg = Postgres {
            bin,
            dir,
            port: crate::testing::free_port(),
            run_as,
            child: None,
        };
        let data = pg.dir.join("data");
        let out = pg
            .command("initdb")
            .arg("-D")
            .arg(&data)
            .args(["-U", USER, "-E", "UTF8", "--locale=C"])
            .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
            .arg(format!("--pwfile={}", pwfile.display()))
            .output()?;
        if !out.status.success() {
            return Err(std::io::Error::other(format!(
                "initdb: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        pg.start_again()?;
        Ok(pg)
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        match &self.run_as {
            Some(user) => {
                let mut c = Command::new("setpriv");
                c.args([
                    &format!("--reuid={user}"),
                    &format!("--regid={user}"),
                    "--init-groups",
                    "--",
                ])
                .arg(path);
                c
            }
            None => Command::new(path),
        }
    }

    /// Start the server (again, after [`stop`](Self::stop) or
    /// [`kill`](Self::kill)) on the same port and data, and wait until it
    /// accepts connections.
    pub fn start_again(&mut self) -> std::io::Result<()> {
        let log = std::fs::File::create(self.dir.join(format!("log-{}", self.port)))?;
        let child = self
            .command("postgres")
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-p", &self.port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .arg("-c")
            .arg(format!("unix_socket_directories={}", self.dir.display()))
            // a test server: speed over durability across OS crashes
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
            .args(["-c", "max_connections=200"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = Command::new(self.bin.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-t", "1"])
                .output()?;
            if out.status.success() {
                return Ok(());
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                return Err(std::io::Error::other(format!(
                    "postgres exited ({status}): {}",
                    self.log()
                )));
            }
            if Instant::now() > deadline {
                return Err(std::io::Error::other(format!(
                    "postgres not ready in 30 s: {}",
                    self.log()
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// What the server logged since its last start.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join(format!("log-{}", self.port))).unwrap_or_default()
    }

    fn signal(&mut self, signal: &str) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill")
                .args([&format!("-{signal}"), &child.id().to_string()])
                .status();
        }
    }

    fn wait(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
    }

    /// Fast shutdown (SIGINT): clients are disconnected, the server stops.
    pub fn stop(&mut self) {
        self.signal("INT");
        self.wait();
    }

    /// SIGKILL, as a crash.
    pub fn kill(&mut self) {
        self.signal("KILL");
        self.wait();
        // the children of a killed postmaster exit on their own; give them
        // a moment to release the shared memory before a restart
        std::thread::sleep(Duration::from_millis(300));
    }

    /// SIGSTOP: the server stalls with its connections open.
    pub fn pause(&mut self) {
        self.signal("STOP");
    }

    pub fn resume(&mut self) {
        self.signal("CONT");
    }

    /// `postgres://` URL of `database` on this server.
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://{USER}:{PASSWORD}@127.0.0.1:{}/{database}",
            self.port
        )
    }

    /// Make a new, empty database.
    pub fn create_database(&self, name: &str) -> std::io::Result<String> {
        let out = Command::new(self.bin.join("psql"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", USER])
            .args(["-d", "postgres", "-v", "ON_ERROR_STOP=1", "-c"])
            .arg(format!("CREATE DATABASE \"{name}\""))
            .env("PGPASSWORD", PASSWORD)
            .output()?;
        if !out.status.success() {
            return Err(std::io::Error::other(format!(
                "CREATE DATABASE {name}: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(self.url(name))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.resume();
        // immediate shutdown: nothing to keep
        self.signal("QUIT");
        self.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
