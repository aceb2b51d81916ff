//! `conclave-certs`: development certificates in one directory, for
//! `docker compose -f docker-compose.yml -f docker-compose.tls.yml up` and
//! for trying TLS by hand. Makes a CA (`ca.pem`, `ca-key.pem`), a server
//! certificate for the given host names (`server.pem`, `server-key.pem`,
//! also usable as a client certificate between services) and a client
//! certificate for grpcurl (`client.pem`, `client-key.pem`).
//!
//! Run again on the same directory, it keeps the CA and the client
//! certificate and issues a fresh server certificate, so clients that trust
//! the CA keep working. Never for production: the CA key sits next to the
//! certificates.

use clap::Parser;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    version,
    about = "Development certificates: a CA, a server and a client certificate"
)]
struct Args {
    /// Directory to write the PEM files into (made when missing).
    #[arg(long, default_value = "certs")]
    dir: PathBuf,
    /// A host name or IP address the server certificate must cover (repeat
    /// it, or separate with commas); `localhost` and `127.0.0.1` always are.
    #[arg(long = "host", value_delimiter = ',')]
    hosts: Vec<String>,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let hosts: Vec<&str> = args.hosts.iter().map(String::as_str).collect();
    let certs = match conclave_stack::devcerts::ensure(&args.dir, &hosts) {
        Ok(certs) => certs,
        Err(e) => {
            eprintln!(
                "conclave-certs: cannot write certificates in {}: {e}",
                args.dir.display()
            );
            return std::process::ExitCode::FAILURE;
        }
    };
    println!("CA certificate: {}", certs.ca.display());
    println!(
        "server certificate: {} (key {})",
        certs.server.display(),
        certs.server_key.display()
    );
    println!(
        "client certificate: {} (key {})",
        certs.client.display(),
        certs.client_key.display()
    );
    std::process::ExitCode::SUCCESS
}
