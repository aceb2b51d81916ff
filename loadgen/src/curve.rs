//! The sustained-load curve: the same load on stacks with 1, 2 and 4
//! portals (clients spread over them in turn, as a load balancer would),
//! to show how the cost grows on this machine.
//!
//! For each portal count, on a fresh stack with warm rooms:
//! 1. a fixed offered load: `logins` logins started at `rate` per second
//!    whatever the stack does (an open loop); latency counts from when each
//!    was due. What every service spent (CPU time) and holds (proportional
//!    set size, PSS) for them, per 1 000 participants, is read from `/proc`
//!    before and after, with the participants still logged in.
//! 2. the most it takes: the same number of logins, `concurrency` in
//!    flight (a closed loop): logins per second.

use crate::{LoginReport, Target, close_all, logins_over, paced_logins, prepare, smaps_kib};
use serde::Serialize;
use std::path::Path;
use std::time::Duration;

#[derive(Debug, Clone, Serialize)]
pub struct ServiceCost {
    /// `portal` (every portal together), `conference nodes` (every node),
    /// `conference-agent`, `cluster-manager`, `management`.
    pub service: String,
    pub processes: usize,
    /// PSS added while the participants are logged in, per 1 000 of them.
    pub kib_per_1000: f64,
    /// CPU time (user + system) spent during the fixed load, per 1 000 logins.
    pub cpu_ms_per_1000: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct CurvePoint {
    pub portals: usize,
    /// The fixed offered load (open loop).
    pub paced: LoginReport,
    /// Offered logins per second in `paced`.
    pub rate: f64,
    /// The same logins with a fixed number in flight (closed loop).
    pub saturated: LoginReport,
    pub services: Vec<ServiceCost>,
}

/// The load of each point of the curve.
#[derive(Debug, Clone)]
pub struct Load {
    /// Logins per run (each point runs twice).
    pub logins: usize,
    /// The fixed offered load, logins per second.
    pub rate: f64,
    /// Logins in flight in the closed-loop run.
    pub concurrency: usize,
    pub room_size: usize,
    pub sdk: String,
}

/// CPU time (user + system, every thread) of a process so far, ms.
/// `/proc/<pid>/stat` counts in USER_HZ, 100 on Linux.
pub fn cpu_ms(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ...": comm may hold anything; utime and stime
    // are fields 14 and 15, the 12th and 13th after the comm
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: f64 = fields.next()?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    Some((utime + stime) * 10.0)
}

/// One reading of a service's processes: (processes, PSS KiB, CPU ms).
fn read(pids: &[u32]) -> (usize, u64, f64) {
    let mut n = 0;
    let (mut pss, mut cpu) = (0, 0.0);
    for pid in pids {
        if let (Some(m), Some(c)) = (smaps_kib(*pid), cpu_ms(*pid)) {
            n += 1;
            pss += m.1;
            cpu += c;
        }
    }
    (n, pss, cpu)
}

/// The processes of each service of a stack.
pub struct Services {
    pub portals: Vec<u32>,
    pub agent: u32,
    pub manager: u32,
    pub management: u32,
}

impl Services {
    fn groups(&self) -> Vec<(&'static str, Vec<u32>)> {
        vec![
            ("portal", self.portals.clone()),
            ("conference nodes", crate::children(self.agent)),
            ("conference-agent", vec![self.agent]),
            ("cluster-manager", vec![self.manager]),
            ("management", vec![self.management]),
        ]
    }
}

/// What each service's processes cost per 1 000 participants between two
/// readings.
fn costs(
    before: &[(&'static str, (usize, u64, f64))],
    after: &[(&'static str, (usize, u64, f64))],
    participants: usize,
    logins: usize,
) -> Vec<ServiceCost> {
    let round = |x: f64| (x * 10.0).round() / 10.0;
    before
        .iter()
        .zip(after)
        .map(|((service, b), (_, a))| ServiceCost {
            service: service.to_string(),
            processes: a.0,
            kib_per_1000: round((a.1 as f64 - b.1 as f64) * 1000.0 / participants.max(1) as f64),
            cpu_ms_per_1000: round((a.2 - b.2) * 1000.0 / logins.max(1) as f64),
        })
        .collect()
}

fn reading(services: &Services) -> Vec<(&'static str, (usize, u64, f64))> {
    services
        .groups()
        .into_iter()
        .map(|(name, pids)| (name, read(&pids)))
        .collect()
}

/// One point of the curve on a running stack whose portals are `portals`
/// (Socket.IO addresses) and whose processes are `services`.
pub async fn point(
    target: &Target,
    portals: &[String],
    services: &Services,
    load: &Load,
) -> anyhow::Result<CurvePoint> {
    let Load {
        logins,
        rate,
        concurrency,
        room_size,
        ref sdk,
    } = *load;
    let rooms = logins.div_ceil(room_size.max(1));
    let (warm, tokens) = prepare(target, rooms, logins).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = reading(services);
    let (clients, paced) = paced_logins(portals, tokens, rate, sdk).await;
    // the tasks announced after each answer, the notices settled
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = reading(services);
    let services_cost = costs(&before, &after, clients.len(), paced.logins);
    close_all(clients).await;
    close_all(warm).await;

    let (warm, tokens) = prepare(target, rooms, logins).await?;
    let (clients, saturated) = logins_over(portals, tokens, concurrency, sdk, false).await;
    close_all(clients).await;
    close_all(warm).await;
    Ok(CurvePoint {
        portals: portals.len(),
        paced,
        rate,
        saturated,
        services: services_cost,
    })
}

/// The curve: a fresh stack (quiet logs, `data` for its files) per portal
/// count in `counts`.
pub async fn curve(
    data: &Path,
    env: Vec<(String, String)>,
    counts: &[usize],
    load: &Load,
) -> anyhow::Result<Vec<CurvePoint>> {
    let mut points = Vec::new();
    for &n in counts {
        let mut options = conclave_stack::Options::on_free_ports(data.join(format!("curve-{n}")));
        options.env = env.clone();
        let stack = conclave_stack::Topology::launch(options).await?;
        let (stack, portals) = tokio::task::spawn_blocking(move || {
            let mut stack = stack;
            let mut portals = vec![stack.portal_socket.clone()];
            for _ in 1..n.max(1) {
                portals.push(stack.add_portal(&[])?);
            }
            Ok::<_, conclave_stack::TopologyError>((stack, portals))
        })
        .await??;
        let pid = |i: usize| stack.processes[i].child.id();
        let services = Services {
            manager: pid(0),
            management: pid(1),
            agent: pid(2),
            portals: std::iter::once(pid(3))
                .chain((4..stack.processes.len()).map(pid))
                .collect(),
        };
        let target = Target {
            portal: portals[0].clone(),
            management: stack.management.clone(),
            cluster: stack.manager.clone(),
            portal_pid: Some(pid(3)),
            agent_pid: Some(pid(2)),
        };
        eprintln!(
            "curve: {n} portal(s), {} logins at {}/s, then {} in flight",
            load.logins, load.rate, load.concurrency
        );
        let point = point(&target, &portals, &services, load).await;
        tokio::task::spawn_blocking(move || drop(stack)).await?;
        points.push(point?);
    }
    Ok(points)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_spent_cpu_time() {
        let spin = std::time::Instant::now();
        let mut x = 0u64;
        while spin.elapsed() < Duration::from_millis(50) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        assert!(x > 0);
        let ms = cpu_ms(std::process::id()).expect("own /proc stat");
        assert!(ms >= 30.0, "{ms} ms after spinning 50 ms");
    }

    #[test]
    fn costs_are_per_thousand() {
        let before = [("portal", (2, 10_000, 1_000.0))];
        let after = [("portal", (2, 30_000, 3_000.0))];
        let c = costs(&before, &after, 4_000, 2_000);
        assert_eq!(c[0].service, "portal");
        assert_eq!(
            (c[0].processes, c[0].kib_per_1000, c[0].cpu_ms_per_1000),
            (2, 5_000.0, 1_000.0)
        );
    }
}
