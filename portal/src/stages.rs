//! How long each stage of a login took, for the `portal_login_stage_seconds`
//! histogram and the one outcome line every login logs.

use std::time::{Duration, Instant};

/// The stages a login reached, with their durations.
#[derive(Debug, Default, Clone)]
pub struct Stages {
    pub token_check: Option<Duration>,
    pub token_consumption: Option<Duration>,
    pub schedule: Option<Duration>,
    pub get_node: Option<Duration>,
    pub join: Option<Duration>,
}

impl Stages {
    /// A stage that began at `since` is done.
    pub fn done(slot: &mut Option<Duration>, stage: &'static str, since: Instant) {
        Self::took(slot, stage, since.elapsed())
    }

    /// A stage that took `d` is done.
    pub fn took(slot: &mut Option<Duration>, stage: &'static str, d: Duration) {
        conclave_common::metrics::histogram!("portal_login_stage_seconds", "stage" => stage)
            .record(d.as_secs_f64());
        *slot = Some(d);
    }

    /// Milliseconds, -1 for a stage not reached.
    pub fn ms(d: Option<Duration>) -> f64 {
        d.map(|d| (d.as_secs_f64() * 1_000_000.0).round() / 1000.0)
            .unwrap_or(-1.0)
    }

    /// The login outcome line and counter.
    pub fn log(&self, participant: &str, class: &'static str, total: Duration) {
        conclave_common::metrics::counter!("portal_logins_total", "outcome" => class).increment(1);
        tracing::info!(
            %participant,
            outcome = class,
            total_ms = Self::ms(Some(total)),
            token_check_ms = Self::ms(self.token_check),
            token_consumption_ms = Self::ms(self.token_consumption),
            schedule_ms = Self::ms(self.schedule),
            get_node_ms = Self::ms(self.get_node),
            join_ms = Self::ms(self.join),
            "login outcome"
        );
    }
}
