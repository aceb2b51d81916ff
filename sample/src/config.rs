//! The sample server's configuration: the one place its defaults are set
//! and documented. `conclave-sample --print-config` prints the effective values.

use conclave_common::telemetry::{LogConfig, TraceConfig};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the page and `/tokens` are served. Default "0.0.0.0:3001" (OWT's sample port).
    pub listen: String,
    /// The REST API, as an OWT application server's `API.init` takes it
    /// (http:// or https://). Default "http://127.0.0.1:3000/".
    pub rest_url: String,
    /// For an https `rest_url`: the PEM CA certificate(s) to trust ("" =
    /// none, which refuses every server). Default "".
    pub rest_ca: String,
    /// Serve the page over https: `cert` and `key` PEM files (a camera
    /// needs a secure page). Default: plaintext.
    pub tls: conclave_common::tls::ServerTls,
    /// The service the sample signs its REST calls as. When either is empty,
    /// the sample finds or makes the service `service_name` over management's
    /// gRPC and keeps its key in `data_dir`. Default "" for both.
    pub service_id: String,
    pub service_key: String,
    /// Default "sampleService" (OWT's initdb makes one by that name).
    pub service_name: String,
    /// Management's gRPC address, to make the service. Default "127.0.0.1:7000".
    pub management: String,
    /// Mutual TLS for that gRPC call, as every service's `[tls]` table
    /// (`ca`, `cert`, `key`, `server_name`); needed when management's
    /// gRPC requires client certificates. Default: plaintext.
    pub grpc_tls: conclave_common::tls::ServiceTls,
    /// Where the made service's id and key are kept. Default "data/sample".
    pub data_dir: String,
    /// The room tokens are for when a request names none. Default "sampleRoom".
    pub room: String,
    pub log: LogConfig,
    pub trace: TraceConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "0.0.0.0:3001".into(),
            rest_url: "http://127.0.0.1:3000/".into(),
            rest_ca: String::new(),
            tls: conclave_common::tls::ServerTls::default(),
            service_id: String::new(),
            service_key: String::new(),
            service_name: "sampleService".into(),
            management: "127.0.0.1:7000".into(),
            grpc_tls: conclave_common::tls::ServiceTls::default(),
            data_dir: "data/sample".into(),
            room: "sampleRoom".into(),
            log: LogConfig::default(),
            trace: TraceConfig::default(),
        }
    }
}

impl conclave_common::cli::ServiceConfig for Config {
    const SERVICE: &'static str = "conclave-sample";

    fn log(&self) -> &LogConfig {
        &self.log
    }

    fn trace(&self) -> &TraceConfig {
        &self.trace
    }

    fn tls(&self) -> Option<&conclave_common::tls::ServiceTls> {
        Some(&self.grpc_tls)
    }
}

/// host:port of an `http://` or `https://` URL (the port defaults to 80 or
/// 443), and whether it is https.
pub fn rest_addr(url: &str) -> Result<(String, bool), String> {
    let (rest, secure) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
        (Some(r), _) => (r, false),
        (_, Some(r)) => (r, true),
        _ => {
            return Err(format!(
                "rest_url must start with http:// or https:// (got `{url}`)"
            ));
        }
    };
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() {
        return Err(format!("rest_url has no host (got `{url}`)"));
    }
    let port = if secure { 443 } else { 80 };
    Ok((
        if host.contains(':') {
            host.to_string()
        } else {
            format!("{host}:{port}")
        },
        secure,
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn rest_urls() {
        assert_eq!(
            super::rest_addr("http://localhost:3000/").unwrap(),
            ("localhost:3000".into(), false)
        );
        assert_eq!(
            super::rest_addr("http://rest.example.com").unwrap(),
            ("rest.example.com:80".into(), false)
        );
        assert_eq!(
            super::rest_addr("https://rest.example.com/").unwrap(),
            ("rest.example.com:443".into(), true)
        );
        assert!(super::rest_addr("ftp://x/").is_err());
        assert!(super::rest_addr("http:///").is_err());
    }
}
