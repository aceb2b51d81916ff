//! `conclave-stack`: the five services as processes on this machine, with the
//! embedded store and a development key; waits until all are healthy, prints
//! the addresses and a ready token for a demo room, and stops everything on
//! Ctrl-C. The binaries are taken from the directory this one lives in.
//! Each service's standard input is a pipe from this launcher, so the
//! services stop even when the launcher is killed outright.

use anyhow::Context;
use clap::Parser;
use conclave_proto::management::v1 as mgmt;
use conclave_proto::management::v1::management_client::ManagementClient;
use conclave_stack::devcerts::DevCerts;
use conclave_stack::trace_collector::{TraceCollector, render_tree};
use conclave_stack::{Options, Topology};
use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Run the whole Conclave stack locally (cluster manager, management, a
/// conference agent with its conference nodes, portal).
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Directory of the management database.
    #[arg(long, default_value = "data/local")]
    data_dir: PathBuf,
    /// Bind every gRPC service to a free port instead of the default ones
    /// (7000 management, 7001 cluster manager, 7002 portal gRPC, 7003
    /// agent). Socket.IO listens where --socket-listen says.
    #[arg(long)]
    any_ports: bool,
    /// Address the portal's Socket.IO server listens on (port 0: a free one).
    #[arg(long, default_value = "0.0.0.0:8080")]
    socket_listen: String,
    /// Address the sample page and application server listen on (with
    /// --any-ports: a free loopback port).
    #[arg(long, default_value = "0.0.0.0:3001")]
    sample_listen: String,
    /// Everything over TLS: development certificates (a CA, a server and a
    /// client certificate) made under `<data-dir>/tls`; the portal serves
    /// wss, the REST API and the sample page https, and every gRPC call is
    /// mutual TLS.
    #[arg(long)]
    tls: bool,
    /// Host name clients are sent to (it goes into tokens).
    #[arg(long, default_value = "localhost")]
    hostname: String,
    /// Collect the services' spans over OTLP in this launcher and print each
    /// trace (every login, every grpcurl call) as a tree once it is complete,
    /// for a machine without Jaeger or an OpenTelemetry Collector.
    #[arg(long)]
    print_traces: bool,
}

/// A trace is printed once no span of it has arrived for this long.
const TRACE_QUIET: Duration = Duration::from_millis(1000);

/// Print each trace the collector receives as a tree, once it is quiet.
async fn print_traces(collector: TraceCollector) {
    let mut arrivals = collector.subscribe();
    let mut pending: HashMap<String, Instant> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            received = arrivals.recv() => match received {
                Ok(spans) => {
                    for span in spans {
                        pending.insert(span.trace_id, Instant::now());
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            },
            _ = tick.tick() => {
                let quiet: Vec<String> = pending
                    .iter()
                    .filter(|(_, last)| last.elapsed() >= TRACE_QUIET)
                    .map(|(id, _)| id.clone())
                    .collect();
                for id in quiet {
                    pending.remove(&id);
                    let tree = render_tree(&collector.trace(&id));
                    let _ = write!(std::io::stdout().lock(), "trace {id}\n{tree}");
                }
            }
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Ctrl-C, SIGTERM, or (when a parent asks) the end of standard input.
    let stop = conclave_common::shutdown::on_signal();
    if conclave_common::shutdown::exit_with_stdin_requested() {
        conclave_common::shutdown::watch_stdin(
            stop.clone(),
            "the parent process is gone, stopping",
        );
    }
    let mut options = Options::beside_this_executable();
    options.data_dir = args.data_dir.clone();
    options.any_ports = args.any_ports;
    options.socket_listen = args.socket_listen.clone();
    options.hostname = args.hostname.clone();
    if let Ok(key) = std::env::var("CONCLAVE_SERVICE_KEY") {
        options.service_key = key;
    }
    let certs = if args.tls {
        let certs =
            conclave_stack::devcerts::ensure(&args.data_dir.join("tls"), &[&args.hostname])?;
        let (ca, cert, key) = (
            certs.ca.display().to_string(),
            certs.server.display().to_string(),
            certs.server_key.display().to_string(),
        );
        // this launcher calls the services' gRPC too
        conclave_common::grpc::configure_tls(&conclave_common::tls::ServiceTls {
            ca: ca.clone(),
            cert: cert.clone(),
            key: key.clone(),
            ..Default::default()
        })?;
        options.env.extend([
            ("CONCLAVE_TLS__CA".to_string(), ca),
            ("CONCLAVE_TLS__CERT".to_string(), cert.clone()),
            ("CONCLAVE_TLS__KEY".to_string(), key.clone()),
        ]);
        options.portal.extend([
            format!("portal.tls.cert={cert}"),
            format!("portal.tls.key={key}"),
        ]);
        options.management.extend([
            format!("rest.tls.cert={cert}"),
            format!("rest.tls.key={key}"),
        ]);
        Some(certs)
    } else {
        None
    };
    if args.print_traces {
        let collector = TraceCollector::start("127.0.0.1:0")
            .await
            .context("the trace collector")?;
        options.env.extend([
            (
                "CONCLAVE_TRACE__OTLP_ENDPOINT".to_string(),
                collector.endpoint(),
            ),
            (
                "CONCLAVE_TRACE__EXPORT_DELAY".to_string(),
                "200".to_string(),
            ),
        ]);
        println!("collecting traces at {}", collector.endpoint());
        tokio::spawn(print_traces(collector));
    }
    let stack = match Topology::launch(options).await {
        Ok(stack) => stack,
        Err(e) => {
            eprintln!("the stack did not become ready: {e}");
            return Err(e.into());
        }
    };
    let ready = async {
        let demo = demo(&stack.management).await?;
        let sample = conclave_sample::sample_service::find_or_create(
            &stack.management,
            &args.data_dir,
            "sampleService",
        )
        .await?;
        let listen = if args.any_ports {
            "127.0.0.1:0".to_string()
        } else {
            args.sample_listen.clone()
        };
        let page = start_sample(&stack, &listen, &sample, certs.as_ref()).await?;
        anyhow::Ok((demo, sample, page))
    };
    match ready.await {
        Ok(((room, token), sample, (page_process, page))) => {
            print_ready(
                &stack,
                &args.hostname,
                &room,
                &token,
                &sample,
                &page,
                certs.as_ref(),
            );
            stop.cancelled().await;
            drop(page_process);
        }
        Err(e) => eprintln!("the stack did not become ready: {e:#}"),
    }
    // Stop in reverse order: the portal and agent (and its nodes) first.
    tokio::task::spawn_blocking(move || drop(stack)).await?;
    let _ = writeln!(std::io::stdout(), "conclave-stack stopped");
    Ok(())
}

/// The sample page and application server, signing as the sample service;
/// the process and its address.
async fn start_sample(
    stack: &Topology,
    listen: &str,
    (id, key): &(String, String),
    certs: Option<&DevCerts>,
) -> anyhow::Result<(conclave_stack::process::ServiceProcess, String)> {
    let program = stack.options.bin_dir.join("conclave-sample");
    let scheme = if certs.is_some() { "https" } else { "http" };
    let mut sets = vec![
        format!("listen={listen}"),
        format!("rest_url={scheme}://{}/", stack.management_rest),
        format!("service_id={id}"),
        format!("service_key={key}"),
    ];
    if let Some(c) = certs {
        sets.push(format!("rest_ca={}", c.ca.display()));
    }
    let args: Vec<String> = sets
        .iter()
        .flat_map(|s| ["--set".to_string(), s.clone()])
        .collect();
    let env = stack.options.env.clone();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        conclave_stack::process::ServiceProcess::start_named(
            "sample",
            &program.display().to_string(),
            &args,
            &env,
            "sample serving",
            "local_addr",
        )
    })
    .await?
    .map_err(|e| anyhow::anyhow!("the sample page: {e}"))
}

/// A shell line that signs one MAuth request with openssl and sends it with curl.
fn rest_example(rest: &str, id: &str, key: &str, ca: Option<&std::path::Path>) -> String {
    let (scheme, trust) = match ca {
        Some(ca) => ("https", format!("--cacert {} ", ca.display())),
        None => ("http", String::new()),
    };
    format!(
        "ID={id} KEY='{key}'; ts=$(date +%s%3N); n=$(openssl rand -hex 8); sig=$(printf %s \"$ts,$n\" | openssl dgst -sha256 -hmac \"$KEY\" | sed 's/^.*= //' | tr -d '\\n' | base64 -w0); curl -s {trust}-H \"Authorization: MAuth realm=http://marte3.dit.upm.es,mauth_signature_method=HMAC_SHA256,mauth_serviceid=$ID,mauth_cnonce=$n,mauth_timestamp=$ts,mauth_signature=$sig\" {scheme}://{rest}/v1/rooms"
    )
}

/// The addresses, a demo token, commands to try, and one machine-readable line.
fn print_ready(
    stack: &Topology,
    hostname: &str,
    room: &str,
    token: &str,
    (service_id, service_key): &(String, String),
    page: &str,
    certs: Option<&DevCerts>,
) {
    let http = if certs.is_some() { "https" } else { "http" };
    let ca = certs.map_or("none".to_string(), |c| c.ca.display().to_string());
    let grpc = match certs {
        Some(c) => format!(
            "-cacert {} -cert {} -key {}",
            c.ca.display(),
            c.client.display(),
            c.client_key.display()
        ),
        None => "-plaintext".to_string(),
    };
    let (manager, management, agent) = (&stack.manager, &stack.management, &stack.agent);
    let portal_grpc = &stack.portal_grpc;
    let portal_pid = stack.processes[3].child.id();
    let port = stack.portal_socket.rsplit(':').next().unwrap_or("8080");
    let page_port = page.rsplit(':').next().unwrap_or("3001");
    println!();
    println!("Open the sample conference page: {http}://{hostname}:{page_port}/");
    if let Some(c) = certs {
        println!("CA certificate: {}", c.ca.display());
        println!(
            "  (trust it in your browser; grpcurl's client certificate: {} and {})",
            c.client.display(),
            c.client_key.display()
        );
    }
    println!();
    println!("Conclave is running (Ctrl-C stops it):");
    println!("  Socket.IO     {http}://{hostname}:{port}/socket.io/");
    let rest = &stack.management_rest;
    let rest_port = rest.rsplit(':').next().unwrap_or("3000");
    println!("  management    {management}   (gRPC)");
    println!("  REST API      {http}://{hostname}:{rest_port}/   (OWT's, with MAuth)");
    println!("  cluster       {manager}");
    println!("  portal        {portal_grpc}");
    println!("  agent         {agent}");
    println!();
    println!("A demo room {room} and a token for user `demo` (presenter), valid 3 minutes:");
    println!("  {token}");
    println!();
    println!("Try:");
    println!("  grpcurl {grpc} {management} list");
    println!(
        "  grpcurl {grpc} -d '{{\"roomId\":\"{room}\",\"user\":\"bob\",\"role\":\"viewer\"}}' {management} management.v1.Management/CreateToken"
    );
    println!(
        "  grpcurl {grpc} -d '{{\"purpose\":\"all\"}}' {manager} cluster.v1.ClusterManager/GetWorkers"
    );
    println!("  grpcurl {grpc} -d '{{}}' {agent} agent.v1.NodeManager/ListNodes");
    println!("  grpcurl {grpc} -d '{{}}' {portal_grpc} portal.v1.Portal/ListClients");
    println!();
    println!("The REST API's sample service, for your OWT application server:");
    println!("  id   {service_id}");
    println!("  key  {service_key}");
    println!("  API.init('{service_id}', '{service_key}', '{http}://{hostname}:{rest_port}/')");
    println!("List its rooms from a shell (openssl signs the MAuth header):");
    println!(
        "  {}",
        rest_example(
            &format!("{hostname}:{rest_port}"),
            service_id,
            service_key,
            certs.map(|c| c.ca.as_path())
        )
    );
    println!();
    println!(
        "conclave-stack ready page={http}://{hostname}:{page_port}/ portal={http}://{hostname}:{port} ca={ca} management={management} rest={rest} cluster={manager} agent={agent} portal_grpc={portal_grpc} portal_pid={portal_pid} service_id={service_id} service_key={service_key} room={room} token={token}"
    );
}

/// A demo room and a token for it.
async fn demo(management: &str) -> anyhow::Result<(String, String)> {
    let mut m = ManagementClient::new(conclave_common::grpc::channel(
        management,
        Duration::from_secs(5),
    )?);
    let room = m
        .create_room(mgmt::CreateRoomRequest {
            name: "demo".into(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .id;
    let token = m
        .create_token(mgmt::CreateTokenRequest {
            room_id: room.clone(),
            user: "demo".into(),
            role: "presenter".into(),
            preference: None,
        })
        .await?
        .into_inner()
        .token;
    Ok((room, token))
}
