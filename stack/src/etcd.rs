//! A throwaway one-member etcd for tests (Debian's etcd-server): loopback
//! ports picked here, a data directory made here, removed on drop.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Etcd {
    dir: PathBuf,
    /// `http://127.0.0.1:<port>`
    pub url: String,
    child: Option<Child>,
}

/// The etcd binary: `$CONCLAVE_ETCD`, else one on PATH.
pub fn binary() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("CONCLAVE_ETCD") {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("etcd"))
            .find(|p| p.is_file())
    })
}

/// Whether etcd can be started here; under `CI=true` a missing etcd is a
/// failure, not a skip.
pub fn available() -> bool {
    crate::testing::required(binary().is_some(), "etcd", "apt-get install etcd-server")
}

impl Etcd {
    /// Start etcd and wait until it answers.
    pub fn start() -> std::io::Result<Etcd> {
        let bin = binary().ok_or_else(|| std::io::Error::other("no etcd binary"))?;
        let (client, peer) = (crate::testing::free_port(), crate::testing::free_port());
        let dir =
            std::env::temp_dir().join(format!("conclave-etcd-{}-{client}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let log = std::fs::File::create(dir.join("log"))?;
        let child = Command::new(bin)
            .args(["--name", "test"])
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args([
                "--listen-client-urls",
                &url,
                "--advertise-client-urls",
                &url,
            ])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("test={peer_url}")])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let mut etcd = Etcd {
            dir,
            url,
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !etcd.log().contains("ready to serve client requests") {
            if let Some(status) = etcd
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                return Err(std::io::Error::other(format!(
                    "etcd exited ({status}): {}",
                    etcd.log()
                )));
            }
            if Instant::now() > deadline {
                return Err(std::io::Error::other(format!(
                    "etcd not ready in 20 s: {}",
                    etcd.log()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(etcd)
    }

    fn signal(&self, name: &str) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill")
                .args([&format!("-{name}"), &child.id().to_string()])
                .status();
        }
    }

    /// SIGSTOP: etcd stalls with its connections open (unreachable, as far
    /// as its clients can tell).
    pub fn pause(&self) {
        self.signal("STOP");
    }

    pub fn resume(&self) {
        self.signal("CONT");
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.resume();
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
