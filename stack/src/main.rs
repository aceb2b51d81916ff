//! `conclave-stack`: the five services as processes on this machine, with the
//! embedded store and a development key; waits until all are healthy, prints
//! the addresses and a ready token for a demo room, and stops everything on
//! Ctrl-C. The binaries are taken from the directory this one lives in.
//! Each service's standard input is a pipe from this launcher, so the
//! services stop even when the launcher is killed outright.

use anyhow::{Context, bail};
use clap::Parser;
use conclave_common::process::ServiceProcess;
use conclave_common::trace_collector::{TraceCollector, render_tree};
use conclave_proto::cluster::v1 as cluster;
use conclave_proto::cluster::v1::cluster_manager_client::ClusterManagerClient;
use conclave_proto::management::v1 as mgmt;
use conclave_proto::management::v1::management_client::ManagementClient;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Run the whole Conclave stack locally (cluster manager, management, a
/// conference agent with its conference nodes, portal).
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Directory of the management database.
    #[arg(long, default_value = "data/local")]
    data_dir: PathBuf,
    /// Bind every service to a free port instead of the default ones
    /// (7000 management, 7001 cluster manager, 7002 portal gRPC,
    /// 7003 agent, 8080 Socket.IO).
    #[arg(long)]
    any_ports: bool,
    /// Address the portal's Socket.IO server listens on.
    #[arg(long, default_value = "0.0.0.0:8080")]
    socket_listen: String,
    /// Host name clients are sent to (it goes into tokens).
    #[arg(long, default_value = "localhost")]
    hostname: String,
    /// Collect the services' spans over OTLP in this launcher and print each
    /// trace (every login, every grpcurl call) as a tree once it is complete,
    /// for a machine without Jaeger or an OpenTelemetry Collector.
    #[arg(long)]
    print_traces: bool,
}

fn ports(any: bool, default: u16) -> String {
    format!("127.0.0.1:{}", if any { 0 } else { default })
}

fn start(
    dir: &Path,
    name: &str,
    sets: &[String],
    marker: &str,
    key: &str,
) -> anyhow::Result<(ServiceProcess, String)> {
    let program = dir.join(name);
    if !program.is_file() {
        bail!(
            "{} not found: build the services first (cargo build --release --bins)",
            program.display()
        );
    }
    let args: Vec<String> = sets
        .iter()
        .flat_map(|s| ["--set".to_string(), s.clone()])
        .collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let key_env = std::env::var("CONCLAVE_SERVICE_KEY")
        .unwrap_or_else(|_| conclave_common::token::DEV_SERVICE_KEY.to_string());
    let mut env = vec![("CONCLAVE_SERVICE_KEY", key_env.as_str())];
    if ANY_PORTS.load(std::sync::atomic::Ordering::Relaxed) {
        env.push(("CONCLAVE_METRICS__LISTEN", "127.0.0.1:0"));
    }
    let collector = COLLECTOR.get();
    if let Some(endpoint) = collector {
        env.push(("CONCLAVE_TRACE__OTLP_ENDPOINT", endpoint.as_str()));
        env.push(("CONCLAVE_TRACE__EXPORT_DELAY", "200"));
    }
    ServiceProcess::start_named(
        name,
        program.to_str().unwrap_or(name),
        &args,
        &env,
        marker,
        key,
    )
    .map_err(|e| anyhow::anyhow!(e))
}

/// `--any-ports`: metrics too on ports the OS picks.
static ANY_PORTS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
/// `--print-traces`: the launcher's own collector, where every service sends its spans.
static COLLECTOR: std::sync::OnceLock<String> = std::sync::OnceLock::new();

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
    ANY_PORTS.store(args.any_ports, std::sync::atomic::Ordering::Relaxed);
    if args.print_traces {
        let collector = TraceCollector::start("127.0.0.1:0")
            .await
            .context("the trace collector")?;
        let _ = COLLECTOR.set(collector.endpoint());
        println!("collecting traces at {}", collector.endpoint());
        tokio::spawn(print_traces(collector));
    }
    let dir = std::env::current_exe()?
        .parent()
        .context("the launcher's directory")?
        .to_path_buf();
    let any = args.any_ports;
    let socket_listen = if any {
        "0.0.0.0:0".to_string()
    } else {
        args.socket_listen.clone()
    };
    let data_dir = args.data_dir.display().to_string();
    let hostname = args.hostname.clone();
    // Service start-up reads logs synchronously: off the async runtime.
    let (processes, addrs) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let (m, manager) = start(
            &dir,
            "cluster-manager",
            &[
                format!("listen={}", ports(any, 7001)),
                "manager.initial_time=0".into(),
            ],
            "gRPC server listening",
            "local_addr",
        )?;
        let (g, management) = start(
            &dir,
            "management",
            &[
                format!("listen={}", ports(any, 7000)),
                format!("data_dir={data_dir}"),
                format!("cluster.manager={manager}"),
            ],
            "gRPC server listening",
            "local_addr",
        )?;
        let (a, agent) = start(
            &dir,
            "conference-agent",
            &[
                format!("listen={}", ports(any, 7003)),
                "advertised_host=127.0.0.1".into(),
                format!("cluster.manager={manager}"),
                format!("node.management={management}"),
                // count nodes, not CPU, as the load: predictable on a busy machine
                "agent.maxProcesses=512".into(),
            ],
            "conference agent serving",
            "endpoint",
        )?;
        let (p, socket) = start(
            &dir,
            "portal",
            &[
                format!("portal.listen={socket_listen}"),
                format!("portal.grpc_listen={}", ports(any, 7002)),
                format!("portal.hostname={hostname}"),
                "portal.ip_address=127.0.0.1".into(),
                format!("cluster.manager={manager}"),
                format!("management={management}"),
                "portal.load=clients".into(),
                "portal.max_clients=100000".into(),
            ],
            "portal serving",
            "socket_addr",
        )?;
        Ok((vec![m, g, a, p], (manager, management, agent, socket)))
    })
    .await??;
    let mut processes = processes;
    let portal_pid = processes.last().map(|p| p.child.id()).unwrap_or_default();
    let (manager, management, agent, socket) = addrs;

    let outcome = demo(&manager, &management).await;
    match outcome {
        Ok((portal_grpc, room, token)) => {
            let port = socket.rsplit(':').next().unwrap_or("8080");
            println!();
            println!("Conclave is running (Ctrl-C stops it):");
            println!("  Socket.IO     http://{}:{port}/socket.io/", args.hostname);
            println!("  management    {management}   (gRPC)");
            println!("  cluster       {manager}");
            println!("  portal        {portal_grpc}");
            println!("  agent         {agent}");
            println!();
            println!(
                "A demo room {room} and a token for user `demo` (presenter), valid 3 minutes:"
            );
            println!("  {token}");
            println!();
            println!("Try:");
            println!("  grpcurl -plaintext {management} list");
            println!(
                "  grpcurl -plaintext -d '{{\"roomId\":\"{room}\",\"user\":\"bob\",\"role\":\"viewer\"}}' {management} management.v1.Management/CreateToken"
            );
            println!(
                "  grpcurl -plaintext -d '{{\"purpose\":\"all\"}}' {manager} cluster.v1.ClusterManager/GetWorkers"
            );
            println!("  grpcurl -plaintext -d '{{}}' {agent} agent.v1.NodeManager/ListNodes");
            println!("  grpcurl -plaintext -d '{{}}' {portal_grpc} portal.v1.Portal/ListClients");
            println!();
            println!(
                "conclave-stack ready portal=http://{}:{port} management={management} cluster={manager} agent={agent} portal_grpc={portal_grpc} portal_pid={portal_pid} room={room} token={token}",
                args.hostname
            );
            stop.cancelled().await;
        }
        Err(e) => eprintln!("the stack did not become ready: {e:#}"),
    }
    // Stop in reverse order: the portal and agent (and its nodes) first.
    while let Some(mut p) = processes.pop() {
        p.signal("TERM");
        if p.wait_exit(Duration::from_secs(15)).is_none() {
            let _ = p.child.kill();
        }
    }
    let _ = writeln!(std::io::stdout(), "conclave-stack stopped");
    Ok(())
}

/// Wait for every service to be healthy and schedulable, then create a demo
/// room and a token for it.
async fn demo(manager: &str, management: &str) -> anyhow::Result<(String, String, String)> {
    let mut cluster = ClusterManagerClient::new(conclave_common::grpc::channel(
        manager,
        Duration::from_secs(2),
    )?);
    let mut portal_grpc = String::new();
    for _ in 0..200 {
        let mut ready = 0;
        for purpose in ["portal", "conference"] {
            let workers = cluster
                .get_workers(cluster::GetWorkersRequest {
                    purpose: purpose.into(),
                })
                .await
                .map(|r| r.into_inner().workers)
                .unwrap_or_default();
            for w in workers {
                if let Ok(attr) = cluster
                    .get_worker_attr(cluster::GetWorkerAttrRequest { worker_id: w })
                    .await
                {
                    let attr = attr.into_inner();
                    let info = attr.info.unwrap_or_default();
                    if attr.load < info.max_load {
                        ready += 1;
                        if purpose == "portal" {
                            portal_grpc = info.grpc_endpoint;
                        }
                        break;
                    }
                }
            }
        }
        if ready == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if portal_grpc.is_empty() {
        bail!("no schedulable portal and conference agent");
    }
    for endpoint in [manager, management, portal_grpc.as_str()] {
        if !conclave_common::grpc::health_check(endpoint, "")
            .await
            .unwrap_or(false)
        {
            bail!("{endpoint} is not healthy");
        }
    }
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
    Ok((portal_grpc, room, token))
}
