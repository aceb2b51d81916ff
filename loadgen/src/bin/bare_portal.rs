//! The baseline: a Socket.IO server on the same library and settings as the
//! portal (socketioxide, both protocol versions, TCP_NODELAY, handlers set in
//! the connect middleware) that acks `login` at once with no backend. The
//! load generator measures it beside the real stack, so the report shows what
//! the login path's RPCs cost on top of the protocol itself.

use axum::serve::ListenerExt;
use socketioxide::SocketIo;
use socketioxide::extract::{AckSender, SocketRef};
use socketioxide::handler::ConnectHandler;

async fn middleware(s: SocketRef) -> Result<(), std::convert::Infallible> {
    s.on("login", async |s: SocketRef, ack: AckSender| {
        let result = serde_json::json!({
            "id": s.id.to_string(), "user": "bare", "role": "presenter",
            "permission": {"publish": {"audio": true, "video": true}, "subscribe": {"audio": true, "video": true}},
            "room": {"id": "bare", "views": ["common"], "participants": [], "streams": []},
        });
        let _ = ack.send(&("ok", result));
    });
    s.on("logout", async |ack: AckSender| {
        let _ = ack.send(&("ok",));
    });
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let listen = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".into());
    let (layer, io) = SocketIo::builder().build_layer();
    io.ns("/", (async || {}).with(middleware));
    let app = axum::Router::new().layer(layer);
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!(
        "bare portal listening local_addr={}",
        listener.local_addr()?
    );
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(conclave_common::shutdown::signal())
        .await?;
    Ok(())
}
