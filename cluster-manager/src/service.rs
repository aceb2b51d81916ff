//! The gRPC adapter: `cluster.v1.ClusterManager` over the [`Manager`] core.
//! Converts messages at the edge, maps errors to status codes once, and
//! publishes cluster events to `Watch` streams.

use crate::manager::{ClusterEvent, Manager, ManagerError};
use crate::scheduler::ScheduleError;
use crate::worker::{Capacity, Preference, WorkerInfo};
use conclave_common::sync::Locked;
use conclave_proto::cluster::v1 as pb;
use conclave_proto::cluster::v1::cluster_event::Kind;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

/// Events a slow watcher may fall behind by before its stream is ended.
const EVENT_BACKLOG: usize = 1024;

#[derive(Clone)]
pub struct ClusterService {
    core: Arc<Mutex<Manager>>,
    events: broadcast::Sender<ClusterEvent>,
    shutdown: CancellationToken,
    /// With `[election]`: whether this manager leads (it serves only then).
    standing: Option<crate::election::Shared>,
    /// Cancelled when this manager's leadership ends or starts anew:
    /// `Watch` streams of the old term end, so watchers re-subscribe to
    /// the leader and re-read the cluster.
    term: Arc<Mutex<CancellationToken>>,
}

impl ClusterService {
    pub fn new(manager: Manager, shutdown: CancellationToken) -> Self {
        let (events, _) = broadcast::channel(EVENT_BACKLOG);
        ClusterService {
            core: Arc::new(Mutex::new(manager)),
            events,
            shutdown,
            standing: None,
            term: Arc::default(),
        }
    }

    /// Lock the core briefly; never held across an await.
    /// Serve only while leading the election given here.
    pub fn with_election(mut self, standing: crate::election::Shared) -> Self {
        self.standing = Some(standing);
        self
    }

    /// A new term (elected, or stepped down): start from a fresh state, as a
    /// restarted manager does, and end every `Watch` of the old term.
    pub fn new_term(
        &self,
        config: crate::config::Config,
        expected: std::collections::BTreeSet<String>,
    ) {
        let mut manager = Manager::new(config, Instant::now());
        manager.expect(expected);
        *self.core() = manager;
        let old = std::mem::take(&mut *self.term.locked());
        old.cancel();
    }

    /// Every call's first step: a standby manager answers `Unavailable`
    /// naming the leader; a leader whose lease ran out steps down here.
    fn serving(&self) -> Result<(), Status> {
        match &self.standing {
            None => Ok(()),
            Some(s) => s
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .check(Instant::now())
                .map_err(|e| {
                    // the metadata that makes a multi-address channel move on
                    let leader = match &e {
                        crate::election::NotLeader::Leader(l) => l.clone(),
                        crate::election::NotLeader::NoLeader => String::new(),
                    };
                    let mut status = Status::unavailable(e.to_string());
                    if let Ok(value) = leader.parse() {
                        status
                            .metadata_mut()
                            .insert(conclave_common::grpc::STANDBY_HEADER, value);
                    }
                    status
                }),
        }
    }

    pub fn core(&self) -> MutexGuard<'_, Manager> {
        self.core.locked()
    }

    pub fn publish(&self, event: ClusterEvent) {
        match &event {
            ClusterEvent::WorkerJoined { purpose, id, .. } => {
                tracing::info!(worker = %id, %purpose, "worker joined")
            }
            ClusterEvent::WorkerLost {
                purpose,
                id,
                reason,
            } => {
                conclave_common::metrics::counter!("cluster_workers_lost_total", "purpose" => purpose.clone(), "reason" => reason.as_str())
                    .increment(1);
                tracing::warn!(worker = %id, %purpose, reason = reason.as_str(), "worker lost")
            }
            ClusterEvent::NodeExited {
                purpose,
                node_id,
                worker_id,
                reason,
            } => {
                tracing::warn!(node = %node_id, worker = %worker_id, %purpose, %reason, "node exited")
            }
        }
        // No watcher is not an error.
        let _ = self.events.send(event);
    }

    /// One liveness sweep, publishing the workers it removed.
    pub fn sweep(&self) {
        // a standby knows no workers of its own: only the leader counts
        // them out (a leader paused past its lease is a standby now)
        if let Some(s) = &self.standing
            && !s
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .leads(Instant::now())
        {
            return;
        }
        match self.core().sweep(Instant::now()) {
            crate::manager::Sweep::Counted(lost) => {
                for event in lost {
                    self.publish(event);
                }
            }
            crate::manager::Sweep::Renewed { late } => {
                tracing::warn!(
                    late_ms = late.as_millis() as u64,
                    "the liveness sweep ran late: this manager was paused or starved; every worker's deadline renewed, nobody removed"
                );
                conclave_common::metrics::counter!("cluster_manager_late_sweeps_total")
                    .increment(1);
            }
        }
        let stats = self.core().stats();
        for (purpose, available, full, tasks) in stats {
            use conclave_common::metrics::gauge;
            gauge!("cluster_workers", "purpose" => purpose.clone(), "state" => "available")
                .set(available as f64);
            gauge!("cluster_workers", "purpose" => purpose.clone(), "state" => "full")
                .set(full as f64);
            gauge!("cluster_tasks", "purpose" => purpose).set(tasks as f64);
        }
    }
}

fn status(e: ManagerError) -> Status {
    let message = e.to_string();
    match e {
        ManagerError::NotReady | ManagerError::NoScheduler(_) => Status::unavailable(message),
        ManagerError::ScheduleFailed {
            reason: ScheduleError::NoneAvailable,
            ..
        } => Status::resource_exhausted(message),
        ManagerError::ScheduleFailed {
            reason: ScheduleError::NoMatch,
            ..
        } => Status::failed_precondition(message),
        ManagerError::WorkerNotFound(_)
        | ManagerError::NoSuchTask
        | ManagerError::InvalidPurpose => Status::not_found(message),
        ManagerError::InvalidArgument(_) => Status::invalid_argument(message),
    }
}

impl From<pb::WorkerInfo> for WorkerInfo {
    fn from(i: pb::WorkerInfo) -> Self {
        let c = i.capacity.unwrap_or_default();
        WorkerInfo {
            ip: i.ip,
            hostname: i.hostname,
            port: i.port,
            grpc_endpoint: i.grpc_endpoint,
            max_load: i.max_load,
            capacity: Capacity {
                isps: c.isps,
                regions: c.regions,
                video_encode: c.video_encode,
                video_decode: c.video_decode,
                algorithms: c.algorithms,
            },
            via_host: i.via_host,
            ssl: i.ssl,
        }
    }
}

impl From<WorkerInfo> for pb::WorkerInfo {
    fn from(i: WorkerInfo) -> Self {
        let c = i.capacity;
        pb::WorkerInfo {
            ip: i.ip,
            hostname: i.hostname,
            port: i.port,
            grpc_endpoint: i.grpc_endpoint,
            max_load: i.max_load,
            capacity: Some(pb::Capacity {
                isps: c.isps,
                regions: c.regions,
                video_encode: c.video_encode,
                video_decode: c.video_decode,
                algorithms: c.algorithms,
            }),
            via_host: i.via_host,
            ssl: i.ssl,
        }
    }
}

impl From<pb::Preference> for Preference {
    fn from(p: pb::Preference) -> Self {
        Preference {
            isp: p.isp,
            region: p.region,
            video_encode: p.video_encode,
            video_decode: p.video_decode,
            algorithm: p.algorithm,
        }
    }
}

impl From<ClusterEvent> for pb::ClusterEvent {
    fn from(e: ClusterEvent) -> Self {
        match e {
            ClusterEvent::WorkerJoined { purpose, id, info } => pb::ClusterEvent {
                kind: Kind::WorkerJoined as i32,
                purpose,
                id,
                r#type: "worker".into(),
                reason: "join".into(),
                info: Some(info.into()),
                worker_id: String::new(),
            },
            ClusterEvent::WorkerLost {
                purpose,
                id,
                reason,
            } => pb::ClusterEvent {
                kind: Kind::WorkerLost as i32,
                purpose,
                id,
                r#type: "worker".into(),
                reason: reason.as_str().into(),
                info: None,
                worker_id: String::new(),
            },
            ClusterEvent::NodeExited {
                purpose,
                node_id,
                worker_id,
                reason,
            } => pb::ClusterEvent {
                kind: Kind::NodeExited as i32,
                purpose,
                id: node_id,
                r#type: "node".into(),
                reason,
                info: None,
                worker_id,
            },
        }
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::ClusterEvent, Status>> + Send>>;

#[tonic::async_trait]
impl pb::cluster_manager_server::ClusterManager for ClusterService {
    async fn join(&self, req: Request<pb::JoinRequest>) -> Result<Response<pb::JoinReply>, Status> {
        self.serving()?;
        let r = req.into_inner();
        let info = r.info.unwrap_or_default().into();
        let (known, (state, event)) = {
            let mut core = self.core();
            let known = core.knows(&r.worker_id, &r.purpose);
            let joined = core
                .join(&r.purpose, &r.worker_id, info, Instant::now())
                .map_err(status)?;
            (known, joined)
        };
        if let Some(event) = event {
            self.publish(event);
        }
        Ok(Response::new(pb::JoinReply {
            state: state.as_str().into(),
            known,
        }))
    }

    async fn quit(&self, req: Request<pb::QuitRequest>) -> Result<Response<pb::QuitReply>, Status> {
        self.serving()?;
        let event = self.core().quit(&req.get_ref().worker_id).map_err(status)?;
        self.publish(event);
        Ok(Response::new(pb::QuitReply {}))
    }

    async fn keep_alive(
        &self,
        req: Request<pb::KeepAliveRequest>,
    ) -> Result<Response<pb::KeepAliveReply>, Status> {
        self.serving()?;
        let known = self.core().keep_alive(&req.get_ref().worker_id);
        Ok(Response::new(pb::KeepAliveReply {
            message: if known { "ok" } else { "whoareyou" }.into(),
        }))
    }

    async fn report_load(
        &self,
        req: Request<pb::ReportLoadRequest>,
    ) -> Result<Response<pb::ReportLoadReply>, Status> {
        self.serving()?;
        let r = req.get_ref();
        self.core()
            .report_load(&r.worker_id, r.load)
            .map_err(status)?;
        Ok(Response::new(pb::ReportLoadReply {}))
    }

    async fn report_state(
        &self,
        req: Request<pb::ReportStateRequest>,
    ) -> Result<Response<pb::ReportStateReply>, Status> {
        self.serving()?;
        let r = req.get_ref();
        self.core()
            .report_state(&r.worker_id, r.state)
            .map_err(status)?;
        Ok(Response::new(pb::ReportStateReply {}))
    }

    async fn pick_up_tasks(
        &self,
        req: Request<pb::PickUpTasksRequest>,
    ) -> Result<Response<pb::PickUpTasksReply>, Status> {
        self.serving()?;
        let r = req.get_ref();
        let refused = self
            .core()
            .pick_up_tasks(&r.worker_id, &r.tasks, Instant::now())
            .map_err(status)?;
        Ok(Response::new(pb::PickUpTasksReply { refused }))
    }

    async fn lay_down_task(
        &self,
        req: Request<pb::LayDownTaskRequest>,
    ) -> Result<Response<pb::LayDownTaskReply>, Status> {
        self.serving()?;
        let r = req.get_ref();
        self.core()
            .lay_down_task(&r.worker_id, &r.task, Instant::now())
            .map_err(status)?;
        Ok(Response::new(pb::LayDownTaskReply {}))
    }

    async fn schedule(
        &self,
        req: Request<pb::ScheduleRequest>,
    ) -> Result<Response<pb::ScheduleReply>, Status> {
        self.serving()?;
        let r = req.into_inner();
        let preference = r.preference.unwrap_or_default().into();
        let started = std::time::Instant::now();
        let result = self.core().schedule(
            &r.purpose,
            &r.task,
            &preference,
            r.reserve_time_ms,
            Instant::now(),
        );
        let outcome = match &result {
            Ok(_) => "ok",
            Err(ManagerError::NotReady) => "not_ready",
            Err(ManagerError::ScheduleFailed {
                reason: ScheduleError::NoneAvailable,
                ..
            }) => "full",
            Err(ManagerError::ScheduleFailed {
                reason: ScheduleError::NoMatch,
                ..
            }) => "no_match",
            Err(ManagerError::NoScheduler(_)) => "no_worker",
            Err(_) => "invalid",
        };
        conclave_common::metrics::counter!("cluster_schedule_total", "outcome" => outcome)
            .increment(1);
        conclave_common::metrics::histogram!("cluster_schedule_seconds")
            .record(started.elapsed().as_secs_f64());
        let (id, info) = result.map_err(status)?;
        conclave_common::trace::record(&[("worker", &id)]);
        tracing::debug!(purpose = %r.purpose, task = %r.task, "scheduled");
        Ok(Response::new(pb::ScheduleReply {
            id,
            info: Some(info.into()),
        }))
    }

    async fn unschedule(
        &self,
        req: Request<pb::UnscheduleRequest>,
    ) -> Result<Response<pb::UnscheduleReply>, Status> {
        self.serving()?;
        let r = req.get_ref();
        self.core()
            .unschedule(&r.worker_id, &r.task)
            .map_err(status)?;
        Ok(Response::new(pb::UnscheduleReply {}))
    }

    async fn get_workers(
        &self,
        req: Request<pb::GetWorkersRequest>,
    ) -> Result<Response<pb::GetWorkersReply>, Status> {
        self.serving()?;
        let core = self.core();
        let workers = core.get_workers(&req.get_ref().purpose).map_err(status)?;
        let state = core.state(Instant::now()).as_str().into();
        Ok(Response::new(pb::GetWorkersReply { workers, state }))
    }

    async fn get_worker_attr(
        &self,
        req: Request<pb::GetWorkerAttrRequest>,
    ) -> Result<Response<pb::WorkerAttr>, Status> {
        self.serving()?;
        let a = self
            .core()
            .get_worker_attr(&req.get_ref().worker_id)
            .map_err(status)?;
        Ok(Response::new(pb::WorkerAttr {
            id: a.id,
            purpose: a.purpose,
            state: a.state,
            load: a.load,
            info: Some(a.info.into()),
            tasks: a.tasks,
            keep_alive: a.keep_alive,
        }))
    }

    async fn get_tasks(
        &self,
        req: Request<pb::GetTasksRequest>,
    ) -> Result<Response<pb::GetTasksReply>, Status> {
        self.serving()?;
        let tasks = self
            .core()
            .get_tasks(&req.get_ref().worker_id)
            .map_err(status)?;
        Ok(Response::new(pb::GetTasksReply { tasks }))
    }

    async fn get_scheduled(
        &self,
        req: Request<pb::GetScheduledRequest>,
    ) -> Result<Response<pb::GetScheduledReply>, Status> {
        self.serving()?;
        let r = req.get_ref();
        let worker_id = self
            .core()
            .get_scheduled(&r.purpose, &r.task, Instant::now())
            .map_err(status)?;
        Ok(Response::new(pb::GetScheduledReply { worker_id }))
    }

    async fn report_node_exit(
        &self,
        req: Request<pb::ReportNodeExitRequest>,
    ) -> Result<Response<pb::ReportNodeExitReply>, Status> {
        self.serving()?;
        let r = req.get_ref();
        let event = self
            .core()
            .report_node_exit(
                &r.worker_id,
                &r.node_id,
                &r.purpose,
                &r.reason,
                &r.tasks,
                Instant::now(),
            )
            .map_err(status)?;
        self.publish(event);
        Ok(Response::new(pb::ReportNodeExitReply {}))
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        req: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        // The term before the check: a step-down between the two then ends
        // this stream. Taken after the check, it could be the next term's,
        // and the stream would stay open on a standby that never publishes.
        let term = self.term.locked().clone();
        self.serving()?;
        let purposes = req.into_inner().purposes;
        let mut events = self.events.subscribe();
        let shutdown = self.shutdown.clone();
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let event = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = term.cancelled() => {
                        let _ = tx.send(Err(Status::unavailable("this cluster manager no longer leads: watch the leader and re-read the cluster state"))).await;
                        return;
                    }
                    _ = tx.closed() => return,
                    e = events.recv() => e,
                };
                let item = match event {
                    Ok(e) if purposes.is_empty() || purposes.iter().any(|p| p == e.purpose()) => {
                        Ok(e.into())
                    }
                    Ok(_) => continue,
                    Err(broadcast::error::RecvError::Lagged(n)) => Err(Status::data_loss(format!(
                        "watcher fell {n} events behind; watch again and re-read the cluster state"
                    ))),
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                let end = item.is_err();
                if tx.send(item).await.is_err() || end {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
