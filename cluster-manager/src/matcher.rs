//! Preference matchers (OWT §6.7): which candidates suit a task's preference.
//! Chosen by purpose; run over candidates in order and keep that order.

use crate::worker::{Preference, WorkerRecord};
use indexmap::IndexMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Matcher {
    /// `portal`, `webrtc`, `streaming`, `audio`: ISP filter, then region preference.
    IspRegion,
    /// `video`: codec capabilities, then ISP/region.
    Video,
    /// `analytics`: the algorithm.
    Analytics,
    /// Everything else, `conference` included: no filtering.
    General,
}

impl Matcher {
    pub fn for_purpose(purpose: &str) -> Matcher {
        match purpose {
            "portal" | "webrtc" | "streaming" | "audio" => Matcher::IspRegion,
            "video" => Matcher::Video,
            "analytics" => Matcher::Analytics,
            _ => Matcher::General,
        }
    }

    pub fn matches(
        self,
        preference: &Preference,
        workers: &IndexMap<String, WorkerRecord>,
        candidates: Vec<String>,
    ) -> Vec<String> {
        match self {
            Matcher::General => candidates,
            Matcher::IspRegion => isp_region(preference, workers, candidates),
            Matcher::Video => {
                if preference.video_encode.is_empty() && preference.video_decode.is_empty() {
                    return candidates;
                }
                let capable = candidates
                    .into_iter()
                    .filter(|id| {
                        workers.get(id).is_some_and(|w| {
                            let c = &w.info.capacity;
                            preference
                                .video_encode
                                .iter()
                                .all(|f| c.video_encode.contains(f))
                                && preference
                                    .video_decode
                                    .iter()
                                    .all(|f| c.video_decode.contains(f))
                        })
                    })
                    .collect();
                isp_region(preference, workers, capable)
            }
            Matcher::Analytics => {
                if preference.algorithm.is_empty() {
                    return candidates;
                }
                candidates
                    .into_iter()
                    .filter(|id| {
                        workers.get(id).is_some_and(|w| {
                            w.info.capacity.algorithms.contains(&preference.algorithm)
                        })
                    })
                    .collect()
            }
        }
    }
}

/// Keep workers serving the preferred ISP (or any ISP); among them, prefer
/// those listing the preferred region, else keep all of them.
fn isp_region(
    preference: &Preference,
    workers: &IndexMap<String, WorkerRecord>,
    candidates: Vec<String>,
) -> Vec<String> {
    let mut applicable = Vec::new();
    let mut sweet = Vec::new();
    for id in candidates {
        let Some(w) = workers.get(&id) else { continue };
        let c = &w.info.capacity;
        if c.isps.is_empty() || c.isps.contains(&preference.isp) {
            if c.regions.contains(&preference.region) {
                sweet.push(id.clone());
            }
            applicable.push(id);
        }
    }
    if sweet.is_empty() { applicable } else { sweet }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worker::{Capacity, WorkerInfo};

    fn worker(isps: &[&str], regions: &[&str]) -> WorkerRecord {
        WorkerRecord::new(WorkerInfo {
            max_load: 1.0,
            capacity: Capacity {
                isps: isps.iter().map(|s| s.to_string()).collect(),
                regions: regions.iter().map(|s| s.to_string()).collect(),
                video_encode: vec!["vp8".into(), "h264".into()],
                video_decode: vec!["vp8".into()],
                algorithms: vec!["face".into()],
            },
            ..Default::default()
        })
    }

    fn all(w: &IndexMap<String, WorkerRecord>) -> Vec<String> {
        w.keys().cloned().collect()
    }

    fn pref(isp: &str, region: &str) -> Preference {
        Preference {
            isp: isp.into(),
            region: region.into(),
            ..Default::default()
        }
    }

    #[test]
    fn purposes_map_to_matchers() {
        assert_eq!(Matcher::for_purpose("portal"), Matcher::IspRegion);
        assert_eq!(Matcher::for_purpose("webrtc"), Matcher::IspRegion);
        assert_eq!(Matcher::for_purpose("streaming"), Matcher::IspRegion);
        assert_eq!(Matcher::for_purpose("audio"), Matcher::IspRegion);
        assert_eq!(Matcher::for_purpose("video"), Matcher::Video);
        assert_eq!(Matcher::for_purpose("analytics"), Matcher::Analytics);
        assert_eq!(Matcher::for_purpose("conference"), Matcher::General);
        assert_eq!(Matcher::for_purpose("sip"), Matcher::General);
        assert_eq!(Matcher::for_purpose("whatever"), Matcher::General);
    }

    #[test]
    fn isp_filters_and_region_prefers() {
        let w: IndexMap<_, _> = [
            ("any".to_string(), worker(&[], &[])),
            ("isp1-bj".to_string(), worker(&["isp1"], &["bj"])),
            ("isp2-bj".to_string(), worker(&["isp2"], &["bj"])),
            ("isp1-sh".to_string(), worker(&["isp1"], &["sh"])),
        ]
        .into_iter()
        .collect();
        let m = Matcher::IspRegion;
        assert_eq!(m.matches(&pref("isp1", "bj"), &w, all(&w)), ["isp1-bj"]);
        assert_eq!(
            m.matches(&pref("isp1", "gz"), &w, all(&w)),
            ["any", "isp1-bj", "isp1-sh"]
        );
        assert_eq!(m.matches(&pref("isp3", "bj"), &w, all(&w)), ["any"]);
        // no preference at all: only workers open to any ISP
        assert_eq!(m.matches(&Preference::default(), &w, all(&w)), ["any"]);
    }

    #[test]
    fn empty_regions_are_never_sweet() {
        let w: IndexMap<_, _> = [
            ("a".to_string(), worker(&[], &[])),
            ("b".to_string(), worker(&[], &[])),
        ]
        .into_iter()
        .collect();
        assert_eq!(
            Matcher::IspRegion.matches(&pref("x", ""), &w, all(&w)),
            ["a", "b"]
        );
    }

    #[test]
    fn general_keeps_everything() {
        let w: IndexMap<_, _> = [("a".to_string(), worker(&["isp9"], &[]))]
            .into_iter()
            .collect();
        assert_eq!(
            Matcher::General.matches(&pref("isp1", "bj"), &w, all(&w)),
            ["a"]
        );
    }

    #[test]
    fn video_checks_codecs_then_isp() {
        let mut plain = worker(&[], &[]);
        plain.info.capacity.video_encode.clear();
        let w: IndexMap<_, _> = [
            ("codec".to_string(), worker(&[], &[])),
            ("plain".to_string(), plain),
        ]
        .into_iter()
        .collect();
        let m = Matcher::Video;
        assert_eq!(
            m.matches(&Preference::default(), &w, all(&w)),
            ["codec", "plain"]
        );
        let p = Preference {
            video_encode: vec!["h264".into()],
            ..Default::default()
        };
        assert_eq!(m.matches(&p, &w, all(&w)), ["codec"]);
        let p = Preference {
            video_decode: vec!["vp9".into()],
            ..Default::default()
        };
        assert!(m.matches(&p, &w, all(&w)).is_empty());
    }

    #[test]
    fn analytics_checks_algorithm() {
        let mut none = worker(&[], &[]);
        none.info.capacity.algorithms.clear();
        let w: IndexMap<_, _> = [
            ("face".to_string(), worker(&[], &[])),
            ("none".to_string(), none),
        ]
        .into_iter()
        .collect();
        let m = Matcher::Analytics;
        assert_eq!(
            m.matches(&Preference::default(), &w, all(&w)),
            ["face", "none"]
        );
        let p = Preference {
            algorithm: "face".into(),
            ..Default::default()
        };
        assert_eq!(m.matches(&p, &w, all(&w)), ["face"]);
    }
}
