//! Host identity: what a worker advertises so that others can reach it.

use std::net::IpAddr;

/// The machine's host name, or "" when it cannot be read.
pub fn hostname() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}

/// The first non-loopback IPv4 address, else the first non-loopback IPv6
/// (in brackets, ready for host:port), else "127.0.0.1".
pub fn first_non_loopback_ip() -> String {
    let addrs = if_addrs::get_if_addrs().unwrap_or_default();
    let non_loopback: Vec<IpAddr> = addrs
        .iter()
        .filter(|a| !a.is_loopback())
        .map(|a| a.ip())
        .collect();
    if let Some(v4) = non_loopback.iter().find(|ip| ip.is_ipv4()) {
        return v4.to_string();
    }
    if let Some(v6) = non_loopback.first() {
        return format!("[{v6}]");
    }
    "127.0.0.1".into()
}

/// `<purpose>-<20 hex digits>@<hostname or ip>` (OWT's cluster-worker id).
pub fn worker_id(purpose: &str, hostname: &str, ip: &str) -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    let hex: String = (0..5)
        .map(|_| format!("{:04x}", rng.random::<u16>()))
        .collect();
    let host = if hostname.is_empty() { ip } else { hostname };
    format!("{purpose}-{hex}@{host}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_id_has_owt_shape() {
        let id = worker_id("portal", "", "10.0.0.5");
        let (head, host) = id.split_once('@').unwrap();
        assert_eq!(host, "10.0.0.5");
        let hex = head.strip_prefix("portal-").unwrap();
        assert_eq!(hex.len(), 20);
        assert!(hex.chars().all(|c| c.is_ascii_hexdigit()));
        assert!(worker_id("conference", "box", "1.2.3.4").ends_with("@box"));
        assert_ne!(worker_id("a", "h", ""), worker_id("a", "h", ""));
    }
}
