//! Guard of the rustls patch (`patches/rustls`, workspace
//! `[patch.crates-io]`): a TLS connection whose peer sends nothing does not
//! keep a read buffer. The published crate keeps 4 KiB per connection from
//! its first read to its last, so a portal holding 10 000 idle clients over
//! TLS paid 40 MB for buffers with nothing in them. If an upgrade drops the
//! patch, or rustls changes the buffer, this test fails.

use conclave_common::counting_alloc::{Counting, live};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use std::io::{Read, Write};
use std::sync::Arc;

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// A socket with nothing to read yet.
struct Idle;

impl Read for Idle {
    fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
        Err(std::io::ErrorKind::WouldBlock.into())
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A server and a client connection past their handshake.
fn connected() -> (rustls::ServerConnection, rustls::ClientConnection) {
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
    let cert: CertificateDer<'static> = params.self_signed(&key).unwrap().der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let server = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut s = rustls::ServerConnection::new(Arc::new(server)).unwrap();
    let mut c =
        rustls::ClientConnection::new(Arc::new(client), ServerName::try_from("localhost").unwrap())
            .unwrap();
    let mut wire = Vec::new();
    for _ in 0..10 {
        wire.clear();
        c.write_tls(&mut wire).unwrap();
        s.read_tls(&mut &wire[..]).unwrap();
        s.process_new_packets().unwrap();
        wire.clear();
        s.write_tls(&mut wire).unwrap();
        c.read_tls(&mut &wire[..]).unwrap();
        c.process_new_packets().unwrap();
        if !s.is_handshaking() && !c.is_handshaking() {
            break;
        }
    }
    assert!(!s.is_handshaking() && !c.is_handshaking(), "handshake done");
    // some application data both ways, as a login would
    c.writer().write_all(&[b'x'; 3000]).unwrap();
    wire.clear();
    c.write_tls(&mut wire).unwrap();
    s.read_tls(&mut &wire[..]).unwrap();
    s.process_new_packets().unwrap();
    let mut got = vec![0; 3000];
    s.reader().read_exact(&mut got).unwrap();
    (s, c)
}

#[test]
fn an_idle_tls_connection_keeps_no_read_buffer() {
    let (mut server, _client) = connected();
    // the server's socket has nothing more: the connection waits
    let err = server.read_tls(&mut Idle).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock);
    // what the waiting connection holds, all told
    let before = live();
    drop(server);
    let held = before - live();
    eprintln!("an idle server connection holds {held} bytes");
    assert!(
        held < 4096,
        "an idle TLS server connection holds {held} bytes: is the rustls patch applied (its read buffer is 4 KiB)?"
    );
}
