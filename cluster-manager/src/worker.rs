//! What the manager knows of a worker: the domain form of `WorkerInfo`, and
//! the scheduling preference a task comes with.

use indexmap::IndexSet;

/// What a worker told the manager when it joined.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WorkerInfo {
    pub ip: String,
    pub hostname: String,
    pub port: u32,
    pub grpc_endpoint: String,
    /// Load at or above which the worker takes no new task (0 at join = 1.0).
    pub max_load: f64,
    pub capacity: Capacity,
    pub via_host: String,
    pub ssl: bool,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Capacity {
    pub isps: Vec<String>,
    pub regions: Vec<String>,
    pub video_encode: Vec<String>,
    pub video_decode: Vec<String>,
    pub algorithms: Vec<String>,
}

/// Where a task would like to run. Empty fields express no preference.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Preference {
    pub isp: String,
    pub region: String,
    pub video_encode: Vec<String>,
    pub video_decode: Vec<String>,
    pub algorithm: String,
}

/// A worker as one scheduler sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerRecord {
    /// Last reported state; `None` (never reported) and 2 are schedulable.
    pub state: Option<i32>,
    pub load: f64,
    pub info: WorkerInfo,
    /// Tasks in execution on this worker: a set, since a portal executes
    /// one task per participant (tens of thousands), each picked up and
    /// laid down by name.
    pub tasks: IndexSet<String>,
}

impl WorkerRecord {
    /// A new worker starts at its max load, so it takes tasks only after its
    /// first load report (OWT §6.2).
    pub fn new(info: WorkerInfo) -> Self {
        WorkerRecord {
            state: None,
            load: info.max_load,
            info,
            tasks: IndexSet::new(),
        }
    }

    /// `load < maxLoad` and state unset or 2 (in service).
    pub fn is_available(&self) -> bool {
        self.load < self.info.max_load && matches!(self.state, None | Some(2))
    }
}
