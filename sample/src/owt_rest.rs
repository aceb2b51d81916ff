//! A client of OWT's REST API that behaves on the wire as the official one
//! (owt-client-javascript `src/sdk/rest/API.js`; reference §2.3): the
//! MAuth header without spaces and without username or role, `Host`
//! without the port, `Content-Type: text/plain;charset=UTF-8` on bodiless
//! requests, the trailing slashes OWT's client puts on sub-resources, and
//! token replies read as raw text. Written from the reference, over a raw
//! HTTP/1.1 connection so that every header is the one the official client
//! sends. Used by tests, benchmarks and the sample application server.

use std::time::{SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// An answer: status and body text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub body: String,
    /// Header names in lower case, with their values.
    pub headers: Vec<(String, String)>,
}

impl Answer {
    /// The official client's success test: 100 or 200–205.
    pub fn ok(&self) -> bool {
        self.status == 100 || (200..=205).contains(&self.status)
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `API.init(id, key, url)`.
#[derive(Debug, Clone)]
pub struct OwtRest {
    pub service_id: String,
    pub key: String,
    /// host:port of the REST API.
    pub addr: String,
    /// https, trusting these roots; `None`: plain http.
    pub tls: Option<TlsClient>,
}

/// The roots an https client trusts.
#[derive(Clone)]
pub struct TlsClient {
    config: std::sync::Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsClient")
    }
}

impl TlsClient {
    /// Trust the PEM CA certificate(s) in `path` only.
    pub fn from_ca_file(path: &str) -> std::io::Result<TlsClient> {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let pem = std::fs::read(path)?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| std::io::Error::other(format!("{path}: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| std::io::Error::other(format!("{path}: {e}")))?;
        }
        let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(std::io::Error::other)?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(TlsClient {
            config: std::sync::Arc::new(config),
        })
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// 16 hex digits, as `crypto.randomBytes(8).toString('hex')`.
fn cnonce() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_i64(now_ms());
    format!("{:016x}", h.finish())
}

impl OwtRest {
    pub fn new(service_id: &str, key: &str, addr: &str) -> OwtRest {
        OwtRest {
            service_id: service_id.into(),
            key: key.into(),
            addr: addr.into(),
            tls: None,
        }
    }

    /// The same client over https.
    pub fn with_tls(mut self, tls: TlsClient) -> OwtRest {
        self.tls = Some(tls);
        self
    }

    /// The MAuth header for `timestamp` and `cnonce`.
    pub fn authorization(&self, timestamp: i64, cnonce: &str) -> String {
        let ts = timestamp.to_string();
        let signature = conclave_common::token::sign(&self.key, &format!("{ts},{cnonce}"));
        format!(
            "MAuth realm=http://marte3.dit.upm.es,mauth_signature_method=HMAC_SHA256,mauth_serviceid={},mauth_cnonce={cnonce},mauth_timestamp={ts},mauth_signature={signature}",
            self.service_id
        )
    }

    /// One request under `/v1/` (or any path starting with `/`), signed now.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> std::io::Result<Answer> {
        let auth = self.authorization(now_ms(), &cnonce());
        self.send_with(method, path, body, Some(&auth)).await
    }

    /// A request with the given `Authorization` (or none).
    pub async fn send_with(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
        authorization: Option<&str>,
    ) -> std::io::Result<Answer> {
        let path = if path.starts_with('/') {
            path.to_string()
        } else {
            format!("/v1/{path}")
        };
        let text = body.map(|b| b.to_string());
        request(
            &self.addr,
            self.tls.as_ref(),
            method,
            &path,
            text.as_deref(),
            "application/json",
            authorization,
        )
        .await
    }

    pub async fn create_room(
        &self,
        name: &str,
        options: serde_json::Value,
    ) -> std::io::Result<Answer> {
        self.send(
            "POST",
            "rooms",
            Some(&serde_json::json!({"name": name, "options": options})),
        )
        .await
    }

    pub async fn get_rooms(&self, page: u32, per_page: u32) -> std::io::Result<Answer> {
        self.send(
            "GET",
            &format!("rooms?page={page}&per_page={per_page}"),
            None,
        )
        .await
    }

    pub async fn get_room(&self, room: &str) -> std::io::Result<Answer> {
        self.send("GET", &format!("rooms/{room}"), None).await
    }

    pub async fn update_room(
        &self,
        room: &str,
        config: &serde_json::Value,
    ) -> std::io::Result<Answer> {
        self.send("PUT", &format!("rooms/{room}"), Some(config))
            .await
    }

    pub async fn delete_room(&self, room: &str) -> std::io::Result<Answer> {
        self.send("DELETE", &format!("rooms/{room}"), None).await
    }

    pub async fn get_participants(&self, room: &str) -> std::io::Result<Answer> {
        self.send("GET", &format!("rooms/{room}/participants/"), None)
            .await
    }

    pub async fn get_participant(&self, room: &str, p: &str) -> std::io::Result<Answer> {
        self.send("GET", &format!("rooms/{room}/participants/{p}"), None)
            .await
    }

    pub async fn update_participant(
        &self,
        room: &str,
        p: &str,
        items: &serde_json::Value,
    ) -> std::io::Result<Answer> {
        self.send(
            "PATCH",
            &format!("rooms/{room}/participants/{p}"),
            Some(items),
        )
        .await
    }

    pub async fn drop_participant(&self, room: &str, p: &str) -> std::io::Result<Answer> {
        self.send("DELETE", &format!("rooms/{room}/participants/{p}"), None)
            .await
    }

    pub async fn get_streams(&self, room: &str) -> std::io::Result<Answer> {
        self.send("GET", &format!("rooms/{room}/streams/"), None)
            .await
    }

    /// `createToken(room, user, role, preference)`: the body is the token.
    pub async fn create_token(
        &self,
        room: &str,
        user: &str,
        role: &str,
    ) -> std::io::Result<Answer> {
        self.send(
            "POST",
            &format!("rooms/{room}/tokens/"),
            Some(&serde_json::json!({
                "user": user,
                "role": role,
                "preference": {"isp": "isp", "region": "region"}
            })),
        )
        .await
    }
}

/// One HTTP/1.1 request on its own connection, as Node's `http.request`
/// with the default agent: `Host` is the host name alone.
pub async fn raw(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
    content_type: &str,
    authorization: Option<&str>,
) -> std::io::Result<Answer> {
    request(addr, None, method, path, body, content_type, authorization).await
}

/// As [`raw`], over https when `tls` is given.
pub async fn request(
    addr: &str,
    tls: Option<&TlsClient>,
    method: &str,
    path: &str,
    body: Option<&str>,
    content_type: &str,
    authorization: Option<&str>,
) -> std::io::Result<Answer> {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    if let Some(auth) = authorization {
        head.push_str(&format!("Authorization: {auth}\r\n"));
    }
    match body {
        Some(b) => head.push_str(&format!(
            "Content-Type: {content_type}\r\nContent-Length: {}\r\n",
            b.len()
        )),
        None => head.push_str("Content-Type: text/plain;charset=UTF-8\r\n"),
    }
    head.push_str("\r\n");
    let tcp = TcpStream::connect(addr).await?;
    match tls {
        None => exchange(tcp, &head, body).await,
        Some(tls) => {
            let name = rustls::pki_types::ServerName::try_from(host.to_string())
                .map_err(|e| std::io::Error::other(format!("{host}: {e}")))?;
            let stream = tokio_rustls::TlsConnector::from(tls.config.clone())
                .connect(name, tcp)
                .await?;
            exchange(stream, &head, body).await
        }
    }
}

async fn exchange<S>(mut stream: S, head: &str, body: Option<&str>) -> std::io::Result<Answer>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    stream.write_all(head.as_bytes()).await?;
    if let Some(b) = body {
        stream.write_all(b.as_bytes()).await?;
    }
    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    reader.read_line(&mut status_line).await?;
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line `{status_line}`")))?;
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await? == 0 || line == "\r\n" {
            break;
        }
        if let Some((k, v)) = line.trim_end().split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let mut bytes = Vec::new();
    reader.read_to_end(&mut bytes).await?;
    Ok(Answer {
        status,
        body: String::from_utf8_lossy(&bytes).into_owned(),
        headers,
    })
}
