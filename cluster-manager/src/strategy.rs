//! Allocation strategies (OWT §6.8): given the workers that are available and
//! match, pick one. Each scheduler owns one strategy instance; the memory of
//! `last-used`, `round-robin` and `weight-robin` lives in it.

use crate::worker::WorkerRecord;
use indexmap::IndexMap;
use rand::Rng;
use std::collections::HashMap;
use std::str::FromStr;

#[derive(Debug, Clone, PartialEq)]
pub enum Strategy {
    LastUsed { last: Option<String> },
    LeastUsed,
    MostUsed,
    RoundRobin { last: Option<String> },
    RandomlyPick,
    WeightRobin { current: HashMap<String, i64> },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown strategy `{0}` (expected last-used, least-used, most-used, round-robin, randomly-pick or weight-robin)"
)]
pub struct UnknownStrategy(pub String);

impl FromStr for Strategy {
    type Err = UnknownStrategy;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Ok(match name {
            "last-used" => Strategy::LastUsed { last: None },
            "least-used" => Strategy::LeastUsed,
            "most-used" => Strategy::MostUsed,
            "round-robin" => Strategy::RoundRobin { last: None },
            "randomly-pick" => Strategy::RandomlyPick,
            "weight-robin" => Strategy::WeightRobin {
                current: HashMap::new(),
            },
            other => return Err(UnknownStrategy(other.to_string())),
        })
    }
}

impl Strategy {
    pub fn name(&self) -> &'static str {
        match self {
            Strategy::LastUsed { .. } => "last-used",
            Strategy::LeastUsed => "least-used",
            Strategy::MostUsed => "most-used",
            Strategy::RoundRobin { .. } => "round-robin",
            Strategy::RandomlyPick => "randomly-pick",
            Strategy::WeightRobin { .. } => "weight-robin",
        }
    }

    /// Pick one of `candidates` (ids of `workers`, in the workers' order).
    /// `None` only when no candidate qualifies (empty list, or every load at
    /// 1.0 or more for `least-used`).
    pub fn allocate(
        &mut self,
        workers: &IndexMap<String, WorkerRecord>,
        candidates: &[String],
    ) -> Option<String> {
        let load = |id: &String| workers.get(id).map(|w| w.load).unwrap_or(f64::INFINITY);
        match self {
            Strategy::LastUsed { last } => {
                let keep = last
                    .as_ref()
                    .filter(|l| workers.contains_key(*l) && candidates.contains(l));
                let chosen = keep.cloned().or_else(|| candidates.first().cloned())?;
                *last = Some(chosen.clone());
                Some(chosen)
            }
            Strategy::LeastUsed => {
                let mut best = None;
                let mut min = 1.0;
                for id in candidates {
                    if load(id) < min {
                        min = load(id);
                        best = Some(id.clone());
                    }
                }
                best
            }
            Strategy::MostUsed => {
                let mut best = None;
                let mut max = 0.0;
                for id in candidates {
                    if load(id) >= max {
                        max = load(id);
                        best = Some(id.clone());
                    }
                }
                best
            }
            Strategy::RoundRobin { last } => {
                let next = match last
                    .as_ref()
                    .and_then(|l| candidates.iter().position(|c| c == l))
                {
                    Some(pos) => candidates.get((pos + 1) % candidates.len()),
                    None => candidates.first(),
                }?
                .clone();
                *last = Some(next.clone());
                Some(next)
            }
            Strategy::RandomlyPick => {
                if candidates.is_empty() {
                    return None;
                }
                let i = rand::rng().random_range(0..candidates.len());
                Some(candidates[i].clone())
            }
            Strategy::WeightRobin { current } => {
                current.retain(|id, _| candidates.contains(id));
                let mut total = 0i64;
                let mut best: Option<(&String, i64)> = None;
                for id in candidates {
                    let weight = ((1.0 - load(id)) * 100.0).floor().max(0.0) as i64;
                    total += weight;
                    let cur = current.entry(id.clone()).or_insert(0);
                    *cur += weight;
                    if best.is_none_or(|(_, b)| *cur > b) {
                        best = Some((id, *cur));
                    }
                }
                let (id, _) = best?;
                let id = id.clone();
                if let Some(cur) = current.get_mut(&id) {
                    *cur -= total;
                }
                Some(id)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worker::WorkerInfo;

    fn workers(loads: &[(&str, f64)]) -> IndexMap<String, WorkerRecord> {
        loads
            .iter()
            .map(|(id, load)| {
                let mut r = WorkerRecord::new(WorkerInfo {
                    max_load: 1.0,
                    ..Default::default()
                });
                r.load = *load;
                (id.to_string(), r)
            })
            .collect()
    }

    fn ids(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn pick(s: &mut Strategy, w: &IndexMap<String, WorkerRecord>, c: &[&str]) -> Option<String> {
        s.allocate(w, &ids(c))
    }

    #[test]
    fn names_round_trip_and_unknown_is_refused() {
        for name in [
            "last-used",
            "least-used",
            "most-used",
            "round-robin",
            "randomly-pick",
            "weight-robin",
        ] {
            assert_eq!(name.parse::<Strategy>().unwrap().name(), name);
        }
        assert_eq!(
            "fastest".parse::<Strategy>(),
            Err(UnknownStrategy("fastest".into()))
        );
    }

    #[test]
    fn last_used_sticks_while_registered_and_candidate() {
        let w = workers(&[("a", 0.1), ("b", 0.2), ("c", 0.3)]);
        let mut s: Strategy = "last-used".parse().unwrap();
        assert_eq!(pick(&mut s, &w, &["b", "c"]).unwrap(), "b");
        assert_eq!(pick(&mut s, &w, &["a", "b", "c"]).unwrap(), "b");
        // b no longer a candidate (full): first candidate, remembered
        assert_eq!(pick(&mut s, &w, &["a", "c"]).unwrap(), "a");
        assert_eq!(pick(&mut s, &w, &["c", "a"]).unwrap(), "a");
        // a gone from the registry
        let w2 = workers(&[("c", 0.3)]);
        assert_eq!(pick(&mut s, &w2, &["c"]).unwrap(), "c");
        assert_eq!(pick(&mut s, &w2, &[]), None);
    }

    #[test]
    fn least_used_picks_first_strict_minimum_below_one() {
        let w = workers(&[("a", 0.5), ("b", 0.2), ("c", 0.2), ("d", 1.0)]);
        let mut s = Strategy::LeastUsed;
        assert_eq!(pick(&mut s, &w, &["a", "b", "c"]).unwrap(), "b");
        assert_eq!(pick(&mut s, &w, &["c", "b"]).unwrap(), "c");
        assert_eq!(
            pick(&mut s, &w, &["d"]),
            None,
            "a load of 1.0 is never picked"
        );
    }

    #[test]
    fn most_used_picks_largest_with_last_winning_ties() {
        let w = workers(&[("a", 0.5), ("b", 0.7), ("c", 0.7), ("z", 0.0)]);
        let mut s = Strategy::MostUsed;
        assert_eq!(pick(&mut s, &w, &["a", "b", "c"]).unwrap(), "c");
        assert_eq!(pick(&mut s, &w, &["a"]).unwrap(), "a");
        assert_eq!(pick(&mut s, &w, &["z"]).unwrap(), "z");
        assert_eq!(pick(&mut s, &w, &[]), None);
    }

    #[test]
    fn round_robin_cycles_and_restarts_when_last_is_gone() {
        let w = workers(&[("a", 0.1), ("b", 0.1), ("c", 0.1)]);
        let mut s: Strategy = "round-robin".parse().unwrap();
        let got: Vec<_> = (0..4)
            .map(|_| pick(&mut s, &w, &["a", "b", "c"]).unwrap())
            .collect();
        assert_eq!(got, ["a", "b", "c", "a"]);
        // last chosen "a" is not a candidate: first candidate
        assert_eq!(pick(&mut s, &w, &["b", "c"]).unwrap(), "b");
        assert_eq!(pick(&mut s, &w, &["b", "c"]).unwrap(), "c");
        assert_eq!(pick(&mut s, &w, &["b", "c"]).unwrap(), "b");
    }

    #[test]
    fn randomly_pick_stays_among_candidates_and_reaches_each() {
        let w = workers(&[("a", 0.1), ("b", 0.1), ("c", 0.1)]);
        let mut s = Strategy::RandomlyPick;
        let mut seen = std::collections::HashSet::new();
        for _ in 0..300 {
            let id = pick(&mut s, &w, &["a", "c"]).unwrap();
            assert!(id == "a" || id == "c");
            seen.insert(id);
        }
        assert_eq!(seen.len(), 2);
        assert_eq!(pick(&mut s, &w, &[]), None);
    }

    #[test]
    fn weight_robin_is_smooth_and_proportional() {
        // weights 75, 25 → a, a, b, a over 4 calls (nginx smooth WRR)
        let w = workers(&[("a", 0.25), ("b", 0.75)]);
        let mut s: Strategy = "weight-robin".parse().unwrap();
        let got: Vec<_> = (0..4)
            .map(|_| pick(&mut s, &w, &["a", "b"]).unwrap())
            .collect();
        assert_eq!(got, ["a", "a", "b", "a"]);
        let mut counts = HashMap::new();
        for _ in 0..400 {
            *counts
                .entry(pick(&mut s, &w, &["a", "b"]).unwrap())
                .or_insert(0) += 1;
        }
        assert_eq!(counts["a"], 300);
        assert_eq!(counts["b"], 100);
    }

    #[test]
    fn weight_robin_prunes_departed_servers() {
        let w = workers(&[("a", 0.5), ("b", 0.5)]);
        let mut s: Strategy = "weight-robin".parse().unwrap();
        pick(&mut s, &w, &["a", "b"]);
        pick(&mut s, &w, &["b"]);
        let Strategy::WeightRobin { current } = &s else {
            unreachable!()
        };
        assert!(!current.contains_key("a"));
    }
}
