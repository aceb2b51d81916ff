//! A small Socket.IO client (protocol 5 over Engine.IO 4, WebSocket only, as
//! the OWT C++ SDK connects) written for measuring: TCP_NODELAY on, one task
//! reading frames, acks matched by id, events queued. An address
//! `wss://host:port` connects over TLS, trusting the CA given to
//! [`trust_ca`].

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

/// What `wss://` connections trust: set once by [`trust_ca`].
static TLS: std::sync::OnceLock<tokio_rustls::TlsConnector> = std::sync::OnceLock::new();

/// Trust the PEM CA certificate(s) in `path` for `wss://` addresses (this
/// process, once).
pub fn trust_ca(path: &std::path::Path) -> anyhow::Result<()> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path)? {
        roots.add(cert?)?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let _ = TLS.set(tokio_rustls::TlsConnector::from(Arc::new(config)));
    Ok(())
}

/// Pending acks by id; `None` once the connection is gone, so that a call
/// in flight fails at once, as a real client's does on disconnect.
/// Each ack's arguments as the server wrote them (a JSON array): a caller
/// that only checks the first does not pay for a tree of the rest.
type Acks = Arc<std::sync::Mutex<Option<HashMap<u64, oneshot::Sender<String>>>>>;

/// A received event.
#[derive(Debug, Clone)]
pub struct Event {
    pub name: String,
    pub data: Value,
    pub at: tokio::time::Instant,
}

pub struct Client {
    /// The Socket.IO socket id (the participant id after login).
    pub sid: String,
    out: mpsc::UnboundedSender<Message>,
    acks: Acks,
    next_ack: AtomicU64,
    pub events: Mutex<mpsc::UnboundedReceiver<Event>>,
    reader: tokio::task::JoinHandle<()>,
    writer: tokio::task::JoinHandle<()>,
}

/// tungstenite's default read buffer is 128 KiB, and each read zeroes the
/// part of it not yet filled: per client that was 128 KiB of memory and a
/// 128 KiB `memset` per frame read, the load generator's largest cost (with
/// thousands of clients it took as much CPU as the portal, on the same two
/// cores). 4 KiB, as the portal's side reads.
fn ws_config() -> tokio_tungstenite::tungstenite::protocol::WebSocketConfig {
    tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default().read_buffer_size(4096)
}

fn err(msg: impl Into<String>) -> anyhow::Error {
    anyhow::anyhow!(msg.into())
}

impl Client {
    /// Connect to `addr` (host:port, or wss://host:port for TLS) and join
    /// the default namespace.
    pub async fn connect(addr: &str) -> anyhow::Result<Client> {
        let (secure, host_port) = match addr.strip_prefix("wss://") {
            Some(rest) => (true, rest),
            None => (false, addr),
        };
        let tcp = TcpStream::connect(host_port).await?;
        tcp.set_nodelay(true)?;
        if !secure {
            let url = format!("ws://{host_port}/socket.io/?EIO=4&transport=websocket");
            let (ws, _) =
                tokio_tungstenite::client_async_with_config(url, tcp, Some(ws_config())).await?;
            return Self::open(ws).await;
        }
        let tls = TLS
            .get()
            .ok_or_else(|| err("wss:// needs a CA to trust (sio::trust_ca)"))?;
        let host = host_port.rsplit_once(':').map_or(host_port, |(h, _)| h);
        let name = rustls::pki_types::ServerName::try_from(host.to_string())?;
        let stream = tls.connect(name, tcp).await?;
        let url = format!("wss://{host_port}/socket.io/?EIO=4&transport=websocket");
        let (ws, _) =
            tokio_tungstenite::client_async_with_config(url, stream, Some(ws_config())).await?;
        Self::open(ws).await
    }

    /// The Socket.IO handshake on an open WebSocket, then the reader and
    /// writer tasks.
    async fn open<S>(ws: WebSocketStream<S>) -> anyhow::Result<Client>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (mut sink, mut stream) = ws.split();
        // open packet
        let open = match stream.next().await {
            Some(Ok(Message::Text(t))) => t.to_string(),
            other => return Err(err(format!("no open packet: {other:?}"))),
        };
        if !open.starts_with('0') {
            return Err(err(format!("unexpected first packet {open}")));
        }
        sink.send(Message::Text("40".into())).await?;
        let sid = loop {
            match stream.next().await {
                Some(Ok(Message::Text(t))) if t.starts_with("40") => {
                    let v: Value = serde_json::from_str(&t[2..]).unwrap_or(Value::Null);
                    break v["sid"].as_str().unwrap_or_default().to_string();
                }
                Some(Ok(Message::Text(t))) if t.as_str() == "2" => {
                    sink.send(Message::Text("3".into())).await?
                }
                Some(Ok(_)) => {}
                other => return Err(err(format!("no CONNECT reply: {other:?}"))),
            }
        };
        let (out, mut out_rx) = mpsc::unbounded_channel::<Message>();
        let acks: Acks = Arc::new(std::sync::Mutex::new(Some(HashMap::new())));
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        let reader_acks = acks.clone();
        let pong = out.clone();
        let writer = tokio::spawn(async move {
            while let Some(m) = out_rx.recv().await {
                if sink.send(m).await.is_err() {
                    break;
                }
            }
            let _ = sink.close().await;
        });
        let reader = tokio::spawn(async move {
            while let Some(Ok(msg)) = stream.next().await {
                let Message::Text(text) = msg else { continue };
                let t = text.as_str();
                if t == "2" {
                    let _ = pong.send(Message::Text("3".into()));
                } else if let Some(rest) = t.strip_prefix("43") {
                    let split = rest.find('[').unwrap_or(rest.len());
                    let id: u64 = rest[..split].parse().unwrap_or(u64::MAX);
                    let args = rest[split..].to_string();
                    let tx = reader_acks
                        .lock()
                        .unwrap()
                        .as_mut()
                        .and_then(|a| a.remove(&id));
                    if let Some(tx) = tx {
                        let _ = tx.send(args);
                    }
                } else if let Some(rest) = t.strip_prefix("42") {
                    let split = rest.find('[').unwrap_or(rest.len());
                    let mut args: Vec<Value> =
                        serde_json::from_str(&rest[split..]).unwrap_or_default();
                    if args.is_empty() {
                        continue;
                    }
                    let name = args.remove(0).as_str().unwrap_or_default().to_string();
                    let data = args.into_iter().next().unwrap_or(Value::Null);
                    let _ = ev_tx.send(Event {
                        name,
                        data,
                        at: tokio::time::Instant::now(),
                    });
                } else if t.starts_with("41") || t == "1" {
                    break;
                }
            }
            // the connection is gone: calls in flight fail now
            reader_acks.lock().unwrap().take();
        });
        Ok(Client {
            sid,
            out,
            acks,
            next_ack: AtomicU64::new(0),
            events: Mutex::new(ev_rx),
            reader,
            writer,
        })
    }

    /// Emit `event` with `args` and wait for the ack (up to `timeout`).
    pub async fn call(
        &self,
        event: &str,
        args: &[Value],
        timeout: Duration,
    ) -> anyhow::Result<Vec<Value>> {
        let raw = self.call_raw(event, args, timeout).await?;
        Ok(serde_json::from_str(&raw).unwrap_or_default())
    }

    /// Whether the ack of `event` says "ok", its arguments checked to be
    /// JSON but not built into values: a load generator reading every
    /// login answer's room (a participant list) as a tree spent a third of
    /// its CPU on it, CPU the stack it measures then did not have.
    pub async fn call_ok(
        &self,
        event: &str,
        args: &[Value],
        timeout: Duration,
    ) -> anyhow::Result<Result<(), String>> {
        let raw = self.call_raw(event, args, timeout).await?;
        let json = serde_json::from_str::<serde::de::IgnoredAny>(&raw).is_ok();
        Ok(if json && raw.starts_with("[\"ok\"") {
            Ok(())
        } else {
            Err(raw)
        })
    }

    /// Emit `event` with `args`; the ack's arguments as the server wrote them.
    async fn call_raw(
        &self,
        event: &str,
        args: &[Value],
        timeout: Duration,
    ) -> anyhow::Result<String> {
        let id = self.next_ack.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        match self.acks.lock().unwrap().as_mut() {
            Some(acks) => acks.insert(id, tx),
            None => return Err(err("socket closed")),
        };
        let mut payload = vec![Value::String(event.to_string())];
        payload.extend_from_slice(args);
        let frame = format!("42{id}{}", Value::Array(payload));
        self.out
            .send(Message::Text(frame.into()))
            .map_err(|_| err("socket closed"))?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(args)) => Ok(args),
            Ok(Err(_)) => Err(err(format!("{event}: socket closed before the ack"))),
            Err(_) => {
                if let Some(acks) = self.acks.lock().unwrap().as_mut() {
                    acks.remove(&id);
                }
                Err(err(format!("{event}: no ack in {timeout:?}")))
            }
        }
    }

    /// The next event named `name` within `timeout` (others are skipped).
    pub async fn wait_event(&self, name: &str, timeout: Duration) -> Option<Event> {
        let mut events = self.events.lock().await;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, events.recv()).await {
                Ok(Some(e)) if e.name == name => return Some(e),
                Ok(Some(_)) => {}
                _ => return None,
            }
        }
    }

    /// Send a raw Engine.IO text frame (for hostile-input tests).
    pub fn send_raw(&self, frame: &str) {
        let _ = self.out.send(Message::Text(frame.to_string().into()));
    }

    /// Send a raw binary frame.
    pub fn send_binary(&self, bytes: Vec<u8>) {
        let _ = self.out.send(Message::Binary(bytes.into()));
    }

    /// Whether the server has closed the connection.
    pub fn closed(&self) -> bool {
        self.reader.is_finished()
    }

    /// Close with a Socket.IO disconnect.
    pub fn disconnect(&self) {
        let _ = self.out.send(Message::Text("41".into()));
        let _ = self.out.send(Message::Close(None));
    }

    /// Drop the transport without a Socket.IO disconnect (a network cut).
    pub fn cut(&self) {
        self.reader.abort();
        self.writer.abort();
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.cut();
    }
}
