//! The purposes Conclave's own workers have (OWT's `purpose`): what a worker
//! does, which scheduler places its tasks and which events a watcher wants.
//! The cluster manager itself accepts any purpose string, as OWT's does
//! (`webrtc`, `streaming`, ...); these are the ones Conclave runs.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Purpose {
    /// A conference agent: its tasks are rooms.
    Conference,
    /// A portal: its tasks are token codes.
    Portal,
}

impl Purpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Conference => "conference",
            Purpose::Portal => "portal",
        }
    }
}

impl std::str::FromStr for Purpose {
    type Err = String;

    fn from_str(s: &str) -> Result<Purpose, String> {
        match s {
            "conference" => Ok(Purpose::Conference),
            "portal" => Ok(Purpose::Portal),
            other => Err(format!("`{other}` is not a Conclave worker purpose")),
        }
    }
}

impl fmt::Display for Purpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_owts() {
        assert_eq!(Purpose::Conference.to_string(), "conference");
        assert_eq!(Purpose::Portal.as_str(), "portal");
        assert_eq!("conference".parse(), Ok(Purpose::Conference));
        assert!("webrtc".parse::<Purpose>().is_err());
    }
}
