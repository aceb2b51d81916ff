//! The one-line handshake between a conference agent and the nodes it spawns:
//! a node prints `CONCLAVE_NODE_READY port=<n>` on stdout once it serves.

/// The ready line's prefix.
pub const NODE_READY_PREFIX: &str = "CONCLAVE_NODE_READY";

/// The ready line for a node serving on `port` (and metrics on `metrics`).
pub fn ready_line(port: u16, metrics: Option<u16>) -> String {
    match metrics {
        Some(m) => format!("{NODE_READY_PREFIX} port={port} metrics_port={m}"),
        None => format!("{NODE_READY_PREFIX} port={port}"),
    }
}

/// The metrics port in a ready line.
pub fn parse_ready_metrics(line: &str) -> Option<u16> {
    let rest = line.strip_prefix(NODE_READY_PREFIX)?;
    field(rest, "metrics_port")?.parse().ok()
}

/// The port in a ready line, `None` for any other line.
pub fn parse_ready(line: &str) -> Option<u16> {
    let rest = line.strip_prefix(NODE_READY_PREFIX)?;
    field(rest, "port")?.parse().ok()
}

/// The value of `key=value` in a line (up to the next space, quote or comma).
pub fn field(line: &str, key: &str) -> Option<String> {
    let start = line.find(&format!("{key}="))? + key.len() + 1;
    let value: String = line[start..]
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != '"' && *c != ',')
        .collect();
    (!value.is_empty()).then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_lines_round_trip() {
        assert_eq!(parse_ready(&ready_line(40123, None)), Some(40123));
        assert_eq!(parse_ready(&ready_line(40123, Some(9))), Some(40123));
        assert_eq!(parse_ready_metrics(&ready_line(40123, Some(9))), Some(9));
        assert_eq!(parse_ready_metrics(&ready_line(40123, None)), None);
        assert_eq!(parse_ready("CONCLAVE_NODE_READY port=x"), None);
        assert_eq!(parse_ready("INFO something port=5"), None);
        assert_eq!(
            field("a local_addr=127.0.0.1:5 b", "local_addr").as_deref(),
            Some("127.0.0.1:5")
        );
        assert_eq!(field("nothing here", "local_addr"), None);
    }
}
