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

/// The address to advertise for a setting: "" is the first non-loopback
/// address; a network in CIDR form ("10.0.9.0/24") is this machine's
/// address in it (an orchestrator's overlay network, whose addresses others
/// can reach, when a container has several interfaces), else the first
/// non-loopback address; anything else is used as given.
pub fn advertised_ip(setting: &str) -> String {
    if setting.is_empty() {
        return first_non_loopback_ip();
    }
    let Some(network) = parse_cidr(setting) else {
        return setting.to_string();
    };
    let addrs = if_addrs::get_if_addrs().unwrap_or_default();
    let ips: Vec<IpAddr> = addrs.iter().map(|a| a.ip()).collect();
    match in_network(&ips, network) {
        Some(IpAddr::V6(v6)) => format!("[{v6}]"),
        Some(ip) => ip.to_string(),
        None => {
            tracing::warn!(network = %setting, "no address of this machine is in the network; advertising the first non-loopback one");
            first_non_loopback_ip()
        }
    }
}

/// A network "address/prefix", or None when `s` is not one.
fn parse_cidr(s: &str) -> Option<(IpAddr, u8)> {
    let (addr, prefix) = s.split_once('/')?;
    let addr: IpAddr = addr.parse().ok()?;
    let prefix: u8 = prefix.parse().ok()?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    (prefix <= max).then_some((addr, prefix))
}

/// The first of `ips` inside `network`.
fn in_network(ips: &[IpAddr], (network, prefix): (IpAddr, u8)) -> Option<IpAddr> {
    let inside = |ip: &IpAddr| match (ip, network) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(*a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(*a) & mask == u128::from(n) & mask
        }
        _ => false,
    };
    ips.iter().copied().find(inside)
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
    fn an_address_is_picked_by_its_network() {
        let ips: Vec<IpAddr> = ["127.0.0.1", "172.18.0.5", "10.0.9.7", "fd00::5"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let pick =
            |cidr: &str| in_network(&ips, parse_cidr(cidr).unwrap()).map(|ip| ip.to_string());
        assert_eq!(pick("10.0.9.0/24").as_deref(), Some("10.0.9.7"));
        assert_eq!(pick("172.16.0.0/12").as_deref(), Some("172.18.0.5"));
        assert_eq!(pick("10.1.0.0/16"), None);
        assert_eq!(pick("0.0.0.0/0").as_deref(), Some("127.0.0.1"));
        assert_eq!(pick("fd00::/8").as_deref(), Some("fd00::5"));
        assert_eq!(parse_cidr("10.0.0.1"), None);
        assert_eq!(parse_cidr("10.0.0.0/33"), None);
        assert_eq!(parse_cidr("conference-agent/1"), None);
        // not a network: used as given; loopback is always there
        assert_eq!(advertised_ip("agent.example.com"), "agent.example.com");
        assert_eq!(advertised_ip("127.0.0.0/8"), "127.0.0.1");
    }

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
