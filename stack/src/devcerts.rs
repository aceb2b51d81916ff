//! Development certificates: a CA, a server certificate for the given
//! hosts, and a client certificate (for grpcurl and mutual TLS), written as
//! PEM files. For the local stack and the tests, never for production.

use std::path::{Path, PathBuf};

/// The files, all PEM.
#[derive(Debug, Clone)]
pub struct DevCerts {
    pub ca: PathBuf,
    pub ca_key: PathBuf,
    pub server: PathBuf,
    pub server_key: PathBuf,
    pub client: PathBuf,
    pub client_key: PathBuf,
}

const CA_NAME: &str = "Conclave development CA";

impl DevCerts {
    pub fn paths(dir: &Path) -> DevCerts {
        DevCerts {
            ca: dir.join("ca.pem"),
            ca_key: dir.join("ca-key.pem"),
            server: dir.join("server.pem"),
            server_key: dir.join("server-key.pem"),
            client: dir.join("client.pem"),
            client_key: dir.join("client-key.pem"),
        }
    }
}

fn ca_params() -> Result<rcgen::CertificateParams, rcgen::Error> {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, CA_NAME);
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

fn write(path: &Path, text: &str) -> std::io::Result<()> {
    std::fs::write(path, text)
}

/// A private key: readable by its owner only.
fn write_key(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())
}

fn err(e: rcgen::Error) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

/// Make a CA, a server certificate for `hosts` (names or IP addresses;
/// `localhost` and `127.0.0.1` always) and a client certificate in `dir`.
pub fn generate(dir: &Path, hosts: &[&str]) -> std::io::Result<DevCerts> {
    std::fs::create_dir_all(dir)?;
    let files = DevCerts::paths(dir);
    let ca_key = rcgen::KeyPair::generate().map_err(err)?;
    let ca_cert = ca_params()
        .map_err(err)?
        .self_signed(&ca_key)
        .map_err(err)?;
    write(&files.ca, &ca_cert.pem())?;
    write_key(&files.ca_key, &ca_key.serialize_pem())?;
    issue_server(dir, hosts)?;
    // the client certificate (mutual TLS, grpcurl -cert)
    let issuer = rcgen::Issuer::new(ca_params().map_err(err)?, ca_key);
    let key = rcgen::KeyPair::generate().map_err(err)?;
    let mut params =
        rcgen::CertificateParams::new(vec!["conclave-client".to_string()]).map_err(err)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "conclave-client");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, &issuer).map_err(err)?;
    write(&files.client, &cert.pem())?;
    write_key(&files.client_key, &key.serialize_pem())?;
    Ok(files)
}

/// A new server certificate and key from the CA in `dir`, replacing the
/// old ones (a rotation, as an automatic CA does every few weeks).
pub fn issue_server(dir: &Path, hosts: &[&str]) -> std::io::Result<DevCerts> {
    let files = DevCerts::paths(dir);
    let ca_key = rcgen::KeyPair::from_pem(&std::fs::read_to_string(&files.ca_key)?).map_err(err)?;
    let issuer = rcgen::Issuer::new(ca_params().map_err(err)?, ca_key);
    let mut names: Vec<String> = vec!["localhost".into(), "127.0.0.1".into()];
    names.extend(hosts.iter().map(|h| h.to_string()));
    names.dedup();
    let key = rcgen::KeyPair::generate().map_err(err)?;
    let mut params = rcgen::CertificateParams::new(names).map_err(err)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "conclave");
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let cert = params.signed_by(&key, &issuer).map_err(err)?;
    // the key first, then the certificate: a reload between the two writes
    // sees a mismatch and keeps the old pair
    let tmp_key = files.server_key.with_extension("pem.new");
    let tmp_cert = files.server.with_extension("pem.new");
    write_key(&tmp_key, &key.serialize_pem())?;
    write(&tmp_cert, &cert.pem())?;
    std::fs::rename(&tmp_key, &files.server_key)?;
    std::fs::rename(&tmp_cert, &files.server)?;
    Ok(files)
}

/// The certificates in `dir` for `hosts`: the CA and client certificate
/// kept from an earlier run, a fresh server certificate (so a new host name
/// is covered); everything made when there is no CA yet.
pub fn ensure(dir: &Path, hosts: &[&str]) -> std::io::Result<DevCerts> {
    let known = DevCerts::paths(dir);
    if known.ca.is_file() && known.ca_key.is_file() && known.client.is_file() {
        issue_server(dir, hosts)
    } else {
        generate(dir, hosts)
    }
}

/// A client certificate from the CA in `dir`, valid for 60 days up to
/// `days_ago` days ago (negative: still valid for that many days), written
/// as `<name>.pem` and `<name>-key.pem` (for tests: an expired certificate
/// must be refused at the handshake, an otherwise equal one accepted).
pub fn issue_client_ending(
    dir: &Path,
    name: &str,
    days_ago: i64,
) -> std::io::Result<(PathBuf, PathBuf)> {
    let files = DevCerts::paths(dir);
    let ca_key = rcgen::KeyPair::from_pem(&std::fs::read_to_string(&files.ca_key)?).map_err(err)?;
    let issuer = rcgen::Issuer::new(ca_params().map_err(err)?, ca_key);
    let key = rcgen::KeyPair::generate().map_err(err)?;
    let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).map_err(err)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let now = time::OffsetDateTime::now_utc();
    params.not_after = now - time::Duration::days(days_ago);
    params.not_before = params.not_after - time::Duration::days(60);
    let cert = params.signed_by(&key, &issuer).map_err(err)?;
    let (cert_path, key_path) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}-key.pem")),
    );
    write(&cert_path, &cert.pem())?;
    write_key(&key_path, &key.serialize_pem())?;
    Ok((cert_path, key_path))
}
