//! `conclave-loadgen`: start the local stack (and the bare baseline server),
//! run the scenarios, print a table, write JSON.

use clap::Parser;
use conclave_stack::process::ServiceProcess;
use conclave_stack::{Options, Topology};
use loadgen::{Report, Target};
use std::path::PathBuf;
use std::time::Duration;

/// Benchmarks of the Conclave stack: login, relogin, fan-out, idle memory, scheduler.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Scenarios to run, comma-separated: login, baseline, relogin, fanout,
    /// idle, churn (connections that come and go: what stays of them),
    /// rooms (first logins into new rooms, and what each room's node costs),
    /// scheduler, rest, tls (login, and idle when asked, again on a
    /// second stack with everything over TLS, after the first has stopped),
    /// store (token creations and consumptions on the embedded SQLite, then
    /// on a stack whose management uses a PostgreSQL server started here),
    /// curve (the same load on stacks of 1, 2 and 4 portals, and what each
    /// service costs per 1 000 participants).
    #[arg(
        long,
        default_value = "baseline,login,relogin,fanout,idle,churn,rooms,scheduler,rest,tls,store,curve",
        value_delimiter = ','
    )]
    scenarios: Vec<String>,
    /// Logins in the login scenario (and the baseline).
    #[arg(long, default_value_t = 2000)]
    logins: usize,
    /// Logins in flight at once.
    #[arg(long, default_value_t = 100)]
    concurrency: usize,
    /// Logins measured one at a time (latency without queueing).
    #[arg(long, default_value_t = 300)]
    sequential_logins: usize,
    /// Participants per room in the login scenario.
    #[arg(long, default_value_t = 100)]
    room_size: usize,
    /// Relogins (cut, reconnect, relogin), one after another.
    #[arg(long, default_value_t = 200)]
    relogins: usize,
    /// Room sizes for fan-out.
    #[arg(long, default_value = "10,100,1000", value_delimiter = ',')]
    fanout_sizes: Vec<usize>,
    /// Messages sent per fan-out room size.
    #[arg(long, default_value_t = 5)]
    fanout_rounds: usize,
    /// Idle logged-in connections held to measure the portal's memory.
    #[arg(long, default_value_t = 10000)]
    idle: usize,
    /// Participants per room in the idle scenario: each login's reply lists
    /// the room's participants, and the largest message a connection was
    /// sent stays allocated in its WebSocket write buffer.
    #[arg(long, default_value_t = 500)]
    idle_room_size: usize,
    /// Connect/disconnect cycles in the churn scenario (and as many before
    /// them to warm up); every other one logs in and out in between.
    #[arg(long, default_value_t = 10000)]
    churn: usize,
    /// New rooms in the rooms scenario, one login each.
    #[arg(long, default_value_t = 50)]
    rooms: usize,
    /// The SDK type every scenario logs in as: an official one (C++,
    /// JavaScript, Objective-C, Android) gets a reconnection ticket and its
    /// seat is kept for a relogin, as real clients' are.
    #[arg(long, default_value = "C++")]
    sdk: String,
    /// Seconds of Schedule calls, each for new rooms and an existing one.
    #[arg(long, default_value_t = 3.0)]
    scheduler_seconds: f64,
    /// Seconds of token creations, over REST and then over gRPC.
    #[arg(long, default_value_t = 3.0)]
    rest_seconds: f64,
    /// Seconds of token creations on each store.
    #[arg(long, default_value_t = 3.0)]
    store_seconds: f64,
    /// Portal counts of the load curve.
    #[arg(long, default_value = "1,2,4", value_delimiter = ',')]
    curve_portals: Vec<usize>,
    /// Logins per point of the load curve (each run twice: at the fixed
    /// rate, then with `--concurrency` in flight).
    #[arg(long, default_value_t = 3000)]
    curve_logins: usize,
    /// The load curve's fixed offered load, logins per second.
    #[arg(long, default_value_t = 1000.0)]
    curve_rate: f64,
    /// Where to write the JSON report (the SVG pictures go beside it).
    #[arg(long, default_value = "bench.json")]
    json: PathBuf,
}

impl Args {
    /// Whether `scenario` was asked for (`--scenarios`).
    fn wants(&self, scenario: &str) -> bool {
        self.scenarios.iter().any(|x| x == scenario)
    }
}

fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let p = std::env::current_exe()?
        .parent()
        .map(|d| d.join(name))
        .unwrap_or_default();
    if !p.is_file() {
        anyhow::bail!(
            "{} not found: build every binary first (cargo build --release --bins)",
            p.display()
        );
    }
    Ok(p)
}

/// Token creations and consumptions on a stack whose management keeps its
/// state in a PostgreSQL server started here (Debian's postgresql).
async fn postgres_scenario(
    args: &Args,
    data: &std::path::Path,
    report: &mut Report,
) -> anyhow::Result<()> {
    if conclave_stack::postgres::bin_dir().is_none() {
        eprintln!(
            "store: no PostgreSQL server binaries (apt-get install postgresql), PostgreSQL skipped"
        );
        return Ok(());
    }
    let pg = tokio::task::spawn_blocking(conclave_stack::postgres::Postgres::start).await??;
    let url = pg.create_database("bench")?;
    let mut options = Options::on_free_ports(data.join("pg-stack"));
    options.env = vec![("RUST_LOG".into(), QUIET.into())];
    options.management.push(format!("store.url={url}"));
    let stack = Topology::launch(options).await?;
    eprintln!("store: {} s of tokens on PostgreSQL", args.store_seconds);
    let result =
        loadgen::store::store_tokens(&stack.management, "postgres", args.store_seconds, 8).await;
    tokio::task::spawn_blocking(move || drop(stack)).await?;
    drop(pg);
    report.stores.push(result?);
    Ok(())
}

/// The login (and idle) scenarios on a second stack where everything is
/// TLS: development certificates, the portal over wss, mutual TLS between
/// services and from this process to management.
async fn tls_scenarios(
    args: &Args,
    data: &std::path::Path,
    report: &mut Report,
) -> anyhow::Result<()> {
    let certs = conclave_stack::devcerts::generate(&data.join("tls"), &[])?;
    let (ca, cert, key) = (
        certs.ca.display().to_string(),
        certs.server.display().to_string(),
        certs.server_key.display().to_string(),
    );
    conclave_common::grpc::configure_tls(&conclave_common::tls::ServiceTls {
        ca: ca.clone(),
        cert: cert.clone(),
        key: key.clone(),
        ..Default::default()
    })?;
    loadgen::sio::trust_ca(&certs.ca)?;
    let mut options = Options::on_free_ports(data.join("tls-stack"));
    options.env = vec![
        ("RUST_LOG".into(), QUIET.into()),
        ("CONCLAVE_TLS__CA".into(), ca),
        ("CONCLAVE_TLS__CERT".into(), cert.clone()),
        ("CONCLAVE_TLS__KEY".into(), key.clone()),
    ];
    options.portal.extend([
        format!("portal.tls.cert={cert}"),
        format!("portal.tls.key={key}"),
    ]);
    let stack = Topology::launch(options).await?;
    let port = stack
        .portal_socket
        .rsplit_once(':')
        .map(|(_, p)| p.to_string())
        .unwrap_or_default();
    let target = Target {
        // the certificate names localhost
        portal: format!("wss://localhost:{port}"),
        management: stack.management.clone(),
        cluster: stack.manager.clone(),
        portal_pid: Some(stack.processes[3].child.id()),
        agent_pid: Some(stack.processes[2].child.id()),
    };
    eprintln!("TLS stack ready: portal {}", target.portal);
    let result: anyhow::Result<()> = async {
        eprintln!("login over TLS");
        report.tls_login_sequential = Some(
            loadgen::login_scenario(
                &target,
                args.sequential_logins,
                1,
                args.room_size,
                &args.sdk,
            )
            .await?,
        );
        report.tls_login = Some(
            loadgen::login_scenario(
                &target,
                args.logins,
                args.concurrency,
                args.room_size,
                &args.sdk,
            )
            .await?,
        );
        if args.wants("idle") {
            eprintln!("idle over TLS: {} connections", args.idle);
            report.tls_idle = Some(
                loadgen::idle(
                    &target,
                    args.idle,
                    args.idle_room_size,
                    args.concurrency,
                    &args.sdk,
                )
                .await?,
            );
        }
        Ok(())
    }
    .await;
    tokio::task::spawn_blocking(move || drop(stack)).await?;
    result
}

/// Logs the stack must still print (its addresses) while staying quiet per login.
const QUIET: &str = "warn,conclave_common::grpc=info,management::rest=info,conference_agent=info,portal=info,portal::login=warn,portal::stages=warn,portal::requests=warn";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // A run killed by a signal would leave its stacks running: each
    // stack's processes are killed when it is dropped, which the end of
    // `run` does, also when the signal cuts it short.
    tokio::select! {
        result = run(args) => result,
        _ = conclave_common::shutdown::signal() => {
            anyhow::bail!("interrupted; the stacks of this run are stopped")
        }
    }
}

/// The most connections any requested scenario holds at once, on the load
/// generator and on a portal.
fn connections_needed(args: &Args) -> usize {
    let mut most = 0;
    if args.wants("login") || args.wants("baseline") || args.wants("tls") {
        most = most.max(args.logins + args.logins.div_ceil(args.room_size.max(1)));
    }
    if args.wants("idle") || args.wants("tls") {
        most = most.max(args.idle + args.idle.div_ceil(args.idle_room_size.max(1)));
    }
    if args.wants("curve") {
        most = most.max(2 * args.curve_logins);
    }
    most
}

/// Fail before a run whose connections a process may not open: past its
/// limit on open files a portal stops accepting connections and the run
/// would wait for logins that never come.
fn check_open_files(args: &Args, who: &str, limit: Option<u64>) -> anyhow::Result<()> {
    // gRPC channels, listeners, the runtime, a node's pipes
    const SPARE: u64 = 256;
    let needed = connections_needed(args) as u64;
    match limit {
        Some(limit) if needed + SPARE > limit => anyhow::bail!(
            "these scenarios hold up to {needed} connections at once, but the {who} may open only {limit} files (ulimit -n); lower --logins, --idle or --curve-logins, or raise the limit"
        ),
        _ => Ok(()),
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let own = conclave_common::limits::raise_open_files();
    check_open_files(&args, "load generator", own)?;
    let data = std::env::temp_dir().join(format!("conclave-bench-{}", std::process::id()));
    let mut options = Options::on_free_ports(data.clone());
    options.env = vec![("RUST_LOG".into(), QUIET.into())];
    let stack = Topology::launch(options).await?;
    let rest_addr = stack.management_rest.clone();
    let target = Target {
        portal: stack.portal_socket.clone(),
        management: stack.management.clone(),
        cluster: stack.manager.clone(),
        portal_pid: Some(stack.processes[3].child.id()),
        agent_pid: Some(stack.processes[2].child.id()),
    };
    eprintln!(
        "stack ready: portal {} (pid {:?})",
        target.portal, target.portal_pid
    );
    if let Err(e) = check_open_files(
        &args,
        "portal",
        target
            .portal_pid
            .and_then(conclave_common::limits::open_files_of),
    ) {
        tokio::task::spawn_blocking(move || drop(stack)).await?;
        return Err(e);
    }

    let mut report = Report::default();
    let result: anyhow::Result<()> = async {
        if args.wants("baseline") {
            eprintln!(
                "baseline: {} bare logins, {} at once",
                args.logins, args.concurrency
            );
            let bare = sibling("conclave-bare-portal")?;
            let (mut server, addr) = tokio::task::spawn_blocking(move || {
                ServiceProcess::start_named(
                    "bare",
                    bare.to_str().unwrap_or_default(),
                    &["127.0.0.1:0"],
                    &[],
                    "bare portal listening",
                    "local_addr",
                )
            })
            .await?
            .map_err(|e| anyhow::anyhow!(e))?;
            let tokens = (0..args.sequential_logins)
                .map(|i| format!("bare-{i}"))
                .collect();
            let (clients, r) = loadgen::logins(&addr, tokens, 1, &args.sdk, false).await;
            loadgen::close_all(clients).await;
            report.baseline_sequential = Some(r);
            let tokens = (0..args.logins).map(|i| format!("bare-{i}")).collect();
            let (clients, r) =
                loadgen::logins(&addr, tokens, args.concurrency, &args.sdk, false).await;
            loadgen::close_all(clients).await;
            report.baseline_login = Some(r);
            if args.wants("idle") {
                report.baseline_idle = Some(
                    loadgen::idle_bare(
                        &addr,
                        server.child.id(),
                        args.idle,
                        args.concurrency,
                        &args.sdk,
                    )
                    .await,
                );
            }
            if args.wants("churn") {
                eprintln!("churn, bare server: {} cycles", args.churn);
                report.baseline_churn = Some(
                    loadgen::churn_bare(&addr, server.child.id(), args.churn, args.concurrency)
                        .await,
                );
            }
            server.signal("TERM");
            server.wait_exit(Duration::from_secs(5));
        }
        if args.wants("login") {
            eprintln!(
                "login: {} logins, {} at once, rooms of {}",
                args.logins, args.concurrency, args.room_size
            );
            report.login_sequential = Some(
                loadgen::login_scenario(
                    &target,
                    args.sequential_logins,
                    1,
                    args.room_size,
                    &args.sdk,
                )
                .await?,
            );
            report.login = Some(
                loadgen::login_scenario(
                    &target,
                    args.logins,
                    args.concurrency,
                    args.room_size,
                    &args.sdk,
                )
                .await?,
            );
        }
        if args.wants("relogin") {
            eprintln!("relogin: {}", args.relogins);
            report.relogin = Some(loadgen::relogin(&target, args.relogins, &args.sdk).await?);
        }
        if args.wants("fanout") {
            for &size in &args.fanout_sizes {
                eprintln!("fan-out: room of {size}");
                report.fanout.push(
                    loadgen::fanout(
                        &target,
                        size,
                        args.fanout_rounds,
                        args.concurrency,
                        &args.sdk,
                    )
                    .await?,
                );
            }
        }
        if args.wants("idle") {
            eprintln!("idle: {} connections", args.idle);
            report.idle = Some(
                loadgen::idle(
                    &target,
                    args.idle,
                    args.idle_room_size,
                    args.concurrency,
                    &args.sdk,
                )
                .await?,
            );
        }
        if args.wants("churn") {
            eprintln!("churn: {} cycles as {}", args.churn, args.sdk);
            report.churn =
                Some(loadgen::churn(&target, args.churn, args.concurrency, &args.sdk).await?);
        }
        if args.wants("rooms") {
            eprintln!("rooms: {} new rooms", args.rooms);
            report.rooms = Some(loadgen::rooms(&target, args.rooms, &args.sdk).await?);
        }
        if args.wants("rest") {
            eprintln!("rest: {} s of tokens each way", args.rest_seconds);
            report.rest = Some(
                loadgen::rest::rest_tokens(&target.management, &rest_addr, args.rest_seconds, 8)
                    .await?,
            );
        }
        if args.wants("store") {
            eprintln!("store: {} s of tokens on SQLite", args.store_seconds);
            report.stores.push(
                loadgen::store::store_tokens(&target.management, "sqlite", args.store_seconds, 8)
                    .await?,
            );
        }
        if args.wants("scheduler") {
            eprintln!("scheduler: {} s each", args.scheduler_seconds);
            report.scheduler = Some(loadgen::scheduler(&target, args.scheduler_seconds, 8).await?);
        }
        Ok(())
    }
    .await;

    tokio::task::spawn_blocking(move || drop(stack)).await?;
    let result = match result {
        Ok(()) if args.wants("store") => postgres_scenario(&args, &data, &mut report).await,
        other => other,
    };
    // before TLS: that makes every gRPC client of this process TLS
    let result = match result {
        Ok(()) if args.wants("curve") => loadgen::curve::curve(
            &data,
            vec![("RUST_LOG".into(), QUIET.into())],
            &args.curve_portals,
            &loadgen::curve::Load {
                logins: args.curve_logins,
                rate: args.curve_rate,
                concurrency: args.concurrency,
                room_size: args.room_size,
                sdk: args.sdk.clone(),
            },
        )
        .await
        .map(|points| report.curve = points),
        other => other,
    };
    let result = match result {
        Ok(()) if args.wants("tls") => tls_scenarios(&args, &data, &mut report).await,
        other => other,
    };
    let _ = std::fs::remove_dir_all(&data);
    println!("{}", loadgen::table(&report));
    // a directory named in --json that does not exist yet is made, rather
    // than the whole run's figures lost at the end
    if let Some(dir) = args.json.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.json, serde_json::to_string_pretty(&report)?)?;
    eprintln!("JSON written to {}", args.json.display());
    for svg in loadgen::plot::write_svgs(&report, &args.json)? {
        eprintln!("picture written to {}", svg.display());
    }
    result
}
