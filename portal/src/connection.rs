//! One Socket.IO connection's state machine (OWT §10.2–10.5): `initialized →
//! connecting → connected`, logout back to `initialized`, and what a
//! disconnect means in each state. Plain data: the socket adapter asks it
//! what to do and does it.

use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Initialized,
    Connecting,
    Connected,
    WaitingForReconnecting,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Initialized => "initialized",
            State::Connecting => "connecting",
            State::Connected => "connected",
            State::WaitingForReconnecting => "waiting_for_reconnecting",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnError {
    #[error("Connection is in service")]
    InService,
    #[error("Illegal request")]
    IllegalRequest,
}

/// How a finished login lands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completion {
    /// The connection is now `connected` with this participant.
    Registered,
    /// The socket closed or logged out meanwhile: leave the conference again
    /// (OWT's "Participant early left"; fixes the leak of OWT §17.5).
    EarlyLeft,
}

/// What a disconnect asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disconnect {
    Nothing,
    /// The participant leaves now.
    Leave(String),
    /// Keep the participant for a relogin within the grace period.
    Wait(String),
}

#[derive(Debug)]
pub struct Connection {
    state: State,
    participant: Option<String>,
    login_epoch: u64,
    socket_closed: bool,
    idle_timeout: Duration,
    idle_deadline: Instant,
    /// While waiting for a relogin: when the participant is forced to leave.
    grace_deadline: Option<Instant>,
}

impl Connection {
    pub fn new(now: Instant, idle_timeout: Duration) -> Self {
        Connection {
            state: State::Initialized,
            participant: None,
            login_epoch: 0,
            socket_closed: false,
            idle_timeout,
            idle_deadline: now + idle_timeout,
            grace_deadline: None,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn participant(&self) -> Option<&str> {
        self.participant.as_deref()
    }

    /// `login` (or `relogin`) starts; returns the attempt's epoch.
    pub fn begin_login(&mut self) -> Result<u64, ConnError> {
        if self.state != State::Initialized || self.socket_closed {
            return Err(ConnError::InService);
        }
        self.state = State::Connecting;
        self.login_epoch += 1;
        Ok(self.login_epoch)
    }

    /// The login attempt `epoch` joined the conference as `participant`.
    pub fn login_done(&mut self, epoch: u64, participant: &str) -> Completion {
        if self.state == State::Connecting && self.login_epoch == epoch && !self.socket_closed {
            self.state = State::Connected;
            self.participant = Some(participant.to_string());
            Completion::Registered
        } else {
            if self.state == State::Connecting && self.login_epoch == epoch {
                self.state = State::Initialized;
            }
            Completion::EarlyLeft
        }
    }

    /// The login attempt `epoch` failed.
    pub fn login_failed(&mut self, epoch: u64, now: Instant) {
        if self.state == State::Connecting && self.login_epoch == epoch {
            self.state = State::Initialized;
            self.idle_deadline = now + self.idle_timeout;
        }
    }

    /// `logout`: the participant to make leave (none while a login is still
    /// in flight: that login ends as early-left). The idle timer restarts, so
    /// a logged-out connection is closed like a fresh one (fixes OWT §17.7).
    pub fn logout(&mut self, now: Instant) -> Result<Option<String>, ConnError> {
        match self.state {
            State::Connected => {
                self.state = State::Initialized;
                self.idle_deadline = now + self.idle_timeout;
                Ok(self.participant.take())
            }
            State::Connecting => {
                self.state = State::Initialized;
                self.idle_deadline = now + self.idle_timeout;
                Ok(None)
            }
            // A client's goodbye is `logout` then the close, in that order;
            // the portal may handle the close first (each is a task of its
            // own). The participant said it is leaving: it does not wait
            // for a relogin.
            State::WaitingForReconnecting => {
                self.state = State::Initialized;
                self.grace_deadline = None;
                Ok(self.participant.take())
            }
            State::Initialized => Err(ConnError::IllegalRequest),
        }
    }

    /// Its socket is gone (the connection is kept only while its
    /// participant waits for a relogin).
    pub fn socket_closed(&self) -> bool {
        self.socket_closed
    }

    /// Requests (text, media) need a logged-in connection.
    pub fn logged_in(&self) -> Result<&str, ConnError> {
        match (self.state, &self.participant) {
            (State::Connected, Some(p)) => Ok(p),
            _ => Err(ConnError::IllegalRequest),
        }
    }

    /// The socket is gone. With a `grace` period a connected participant is
    /// kept for a relogin until `now + grace`; otherwise it leaves at once.
    pub fn disconnected(&mut self, grace: Option<Duration>, now: Instant) -> Disconnect {
        self.socket_closed = true;
        match self.state {
            State::Connected => match self.participant.clone() {
                Some(p) if grace.is_some() => {
                    self.state = State::WaitingForReconnecting;
                    self.grace_deadline = grace.map(|g| now + g);
                    Disconnect::Wait(p)
                }
                Some(p) => {
                    self.state = State::Initialized;
                    self.participant = None;
                    Disconnect::Leave(p)
                }
                None => Disconnect::Nothing,
            },
            State::Connecting | State::Initialized | State::WaitingForReconnecting => {
                Disconnect::Nothing
            }
        }
    }

    /// The connection is being closed by the server (drop, shutdown) or its
    /// participant moved to another connection (relogin): it forgets the
    /// participant without leaving, and its grace period ends.
    pub fn close(&mut self) -> Option<String> {
        self.socket_closed = true;
        self.state = State::Initialized;
        self.grace_deadline = None;
        self.participant.take()
    }

    /// The participant waited for its relogin in vain: it must leave now.
    /// Returns it once.
    pub fn grace_expired(&mut self, now: Instant) -> Option<String> {
        match self.grace_deadline {
            Some(deadline) if self.state == State::WaitingForReconnecting && now >= deadline => {
                self.grace_deadline = None;
                self.state = State::Initialized;
                self.participant.take()
            }
            _ => None,
        }
    }

    pub fn grace_deadline(&self) -> Option<Instant> {
        self.grace_deadline
    }

    /// Not logged in by its idle deadline: close it.
    pub fn idle_expired(&self, now: Instant) -> bool {
        self.state == State::Initialized && !self.socket_closed && now >= self.idle_deadline
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDLE: Duration = Duration::from_secs(180);
    const GRACE: Duration = Duration::from_secs(60);

    fn conn() -> (Connection, Instant) {
        let now = Instant::now();
        (Connection::new(now, IDLE), now)
    }

    #[test]
    fn login_then_logout_then_login_again() {
        let (mut c, now) = conn();
        assert_eq!(c.state(), State::Initialized);
        let e = c.begin_login().unwrap();
        assert_eq!(c.state(), State::Connecting);
        assert_eq!(c.begin_login(), Err(ConnError::InService));
        assert_eq!(c.logged_in(), Err(ConnError::IllegalRequest));
        assert_eq!(c.login_done(e, "p1"), Completion::Registered);
        assert_eq!((c.state(), c.participant()), (State::Connected, Some("p1")));
        assert_eq!(c.logged_in(), Ok("p1"));
        assert_eq!(c.begin_login(), Err(ConnError::InService));
        assert_eq!(c.logout(now), Ok(Some("p1".into())));
        assert_eq!(c.state(), State::Initialized);
        assert_eq!(c.logout(now), Err(ConnError::IllegalRequest));
        let e2 = c.begin_login().unwrap();
        assert_eq!(c.login_done(e2, "p1"), Completion::Registered);
    }

    #[test]
    fn a_failed_login_returns_to_initialized() {
        let (mut c, now) = conn();
        let e = c.begin_login().unwrap();
        c.login_failed(e, now);
        assert_eq!(c.state(), State::Initialized);
        assert!(c.begin_login().is_ok());
    }

    #[test]
    fn a_disconnect_during_login_makes_the_login_leave_again() {
        let (mut c, _) = conn();
        let e = c.begin_login().unwrap();
        assert_eq!(
            c.disconnected(Some(GRACE), Instant::now()),
            Disconnect::Nothing
        );
        assert_eq!(c.login_done(e, "p1"), Completion::EarlyLeft);
        assert_eq!(c.participant(), None);
        assert_eq!(
            c.begin_login(),
            Err(ConnError::InService),
            "a closed socket takes no login"
        );
    }

    #[test]
    fn a_logout_during_login_makes_the_login_leave_again() {
        let (mut c, now) = conn();
        let e = c.begin_login().unwrap();
        assert_eq!(c.logout(now), Ok(None));
        // a second login starts before the first finishes
        let e2 = c.begin_login().unwrap();
        assert_eq!(c.login_done(e, "p1"), Completion::EarlyLeft);
        assert_eq!(
            c.state(),
            State::Connecting,
            "the newer attempt is untouched"
        );
        assert_eq!(c.login_done(e2, "p1"), Completion::Registered);
    }

    #[test]
    fn disconnect_when_connected() {
        let (mut c, _) = conn();
        let e = c.begin_login().unwrap();
        c.login_done(e, "p1");
        assert_eq!(
            c.disconnected(None, Instant::now()),
            Disconnect::Leave("p1".into())
        );
        assert_eq!(c.state(), State::Initialized);
        let (mut c, _) = conn();
        let e = c.begin_login().unwrap();
        c.login_done(e, "p1");
        assert_eq!(
            c.disconnected(Some(GRACE), Instant::now()),
            Disconnect::Wait("p1".into())
        );
        assert_eq!(c.state(), State::WaitingForReconnecting);
        assert_eq!(c.logged_in(), Err(ConnError::IllegalRequest));
        assert_eq!(c.begin_login(), Err(ConnError::InService));
        // its logout, handled after the close it came before: it leaves
        // now instead of waiting for a relogin, once
        assert_eq!(c.logout(Instant::now()), Ok(Some("p1".into())));
        assert_eq!(c.grace_deadline(), None);
        assert_eq!(c.grace_expired(Instant::now() + GRACE), None);
        assert_eq!(c.logout(Instant::now()), Err(ConnError::IllegalRequest));
        assert!(c.socket_closed());
        let (mut c, _) = conn();
        assert_eq!(c.disconnected(None, Instant::now()), Disconnect::Nothing);
    }

    #[test]
    fn server_close_forgets_the_participant() {
        let (mut c, _) = conn();
        let e = c.begin_login().unwrap();
        c.login_done(e, "p1");
        assert_eq!(c.close(), Some("p1".into()));
        assert_eq!(
            c.disconnected(Some(GRACE), Instant::now()),
            Disconnect::Nothing
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_grace_period_ends_in_a_forced_leave() {
        let (mut c, _) = conn();
        let e = c.begin_login().unwrap();
        c.login_done(e, "p1");
        c.disconnected(Some(GRACE), Instant::now());
        tokio::time::advance(GRACE - Duration::from_millis(1)).await;
        assert_eq!(c.grace_expired(Instant::now()), None);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(c.grace_expired(Instant::now()), Some("p1".into()));
        assert_eq!(c.grace_expired(Instant::now()), None, "once");
        assert_eq!(c.state(), State::Initialized);
    }

    #[tokio::test(start_paused = true)]
    async fn a_relogin_elsewhere_ends_the_grace_period_without_a_leave() {
        let (mut old, _) = conn();
        let e = old.begin_login().unwrap();
        old.login_done(e, "p1");
        old.disconnected(Some(GRACE), Instant::now());
        // the participant moves to a new connection
        let (mut new, _) = conn();
        let e = new.begin_login().unwrap();
        assert_eq!(new.login_done(e, "p1"), Completion::Registered);
        assert_eq!(old.close(), Some("p1".into()));
        tokio::time::advance(GRACE * 2).await;
        assert_eq!(
            old.grace_expired(Instant::now()),
            None,
            "nothing to force out"
        );
        assert_eq!(new.logged_in(), Ok("p1"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_relogin_before_the_old_socket_is_noticed_dead() {
        let (mut old, _) = conn();
        let e = old.begin_login().unwrap();
        old.login_done(e, "p1");
        // still `connected` when the new connection takes the participant
        assert_eq!(old.close(), Some("p1".into()));
        assert_eq!(
            old.disconnected(Some(GRACE), Instant::now()),
            Disconnect::Nothing,
            "its disconnect is harmless"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn idle_deadline_applies_before_login_and_again_after_logout() {
        let (mut c, _) = conn();
        tokio::time::advance(IDLE - Duration::from_millis(1)).await;
        assert!(!c.idle_expired(Instant::now()));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(c.idle_expired(Instant::now()));
        let e = c.begin_login().unwrap();
        c.login_done(e, "p");
        tokio::time::advance(IDLE * 2).await;
        assert!(!c.idle_expired(Instant::now()), "logged in");
        c.logout(Instant::now()).unwrap();
        assert!(!c.idle_expired(Instant::now()));
        tokio::time::advance(IDLE).await;
        assert!(c.idle_expired(Instant::now()), "closed again after logout");
    }
}
