//! The deployment files (issue 22), checked offline: the Helm chart rendered
//! with helm-python-sdk (Helm's Go SDK; no helm binary, no cluster) for the
//! default and the HA values, every manifest validated with
//! kubernetes-validate --strict against two Kubernetes versions, and every
//! CONCLAVE_* setting it makes checked against the service's
//! `--print-config` (`deploy/helm/check.py`). scripts/test.sh installs both
//! into .venv-k8s and names its python in CONCLAVE_PY_K8S.

use conclave_stack::topology::Options;
use std::process::Command;

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

#[test]
fn the_helm_chart_renders_validates_and_sets_only_real_keys() {
    let python = std::env::var("CONCLAVE_PY_K8S").unwrap_or_default();
    let found = !python.is_empty()
        && Command::new(&python)
            .args(["-c", "import helm_python, kubernetes_validate"])
            .status()
            .is_ok_and(|s| s.success());
    if !conclave_stack::testing::required(
        found,
        "helm-python-sdk and kubernetes-validate",
        "scripts/test.sh installs them into .venv-k8s",
    ) {
        return;
    }
    let bin_dir = Options::beside_this_executable().bin_dir;
    assert!(
        bin_dir.join("portal").is_file(),
        "the service binaries are built (cargo build --workspace --bins)"
    );
    let out = Command::new(&python)
        .arg(format!("{ROOT}/deploy/helm/check.py"))
        .arg(format!("{ROOT}/deploy/helm/conclave"))
        .arg(&bin_dir)
        .args(["1.29.0", "1.35.0"])
        .output()
        .expect("python runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{text}");
    assert!(out.status.success(), "{text}");
    for line in [
        "default: kubernetes-validate --strict -k 1.29.0: ok",
        "values-ha.yaml: kubernetes-validate --strict -k 1.35.0: ok",
    ] {
        assert!(text.contains(line), "{line}");
    }
}

/// The metric names the services record (`counter!`, `gauge!`,
/// `histogram!` in their sources), with the series a histogram adds.
fn exported_metrics() -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    let mut dirs: Vec<std::path::PathBuf> = [
        "common",
        "portal",
        "conference",
        "conference-agent",
        "cluster-manager",
        "management",
    ]
    .iter()
    .map(|c| std::path::Path::new(ROOT).join(c).join("src"))
    .collect();
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for kind in ["counter!(", "gauge!(", "histogram!("] {
                for piece in text.split(kind).skip(1) {
                    let piece = piece.trim_start();
                    let Some(rest) = piece.strip_prefix('"') else {
                        continue;
                    };
                    let name: String = rest.chars().take_while(|c| *c != '"').collect();
                    if kind == "histogram!(" {
                        for suffix in ["_bucket", "_sum", "_count"] {
                            names.insert(format!("{name}{suffix}"));
                        }
                    }
                    names.insert(name);
                }
            }
        }
    }
    names
}

/// The metric names a PromQL expression reads: identifiers outside label
/// matchers, `by (...)` lists and range selectors that are not PromQL's own
/// words.
fn metrics_in(expr: &str) -> Vec<String> {
    const PROMQL: &[&str] = &[
        "sum",
        "rate",
        "irate",
        "increase",
        "histogram_quantile",
        "by",
        "without",
        "avg",
        "max",
        "min",
        "count",
        "topk",
        "bottomk",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "and",
        "or",
        "unless",
        "offset",
        "le",
    ];
    let mut out = String::new();
    let mut depth_brace = 0;
    let mut depth_bracket = 0;
    for c in expr.chars() {
        match c {
            '{' => depth_brace += 1,
            '}' => depth_brace -= 1,
            '[' => depth_bracket += 1,
            ']' => depth_bracket -= 1,
            _ if depth_brace > 0 || depth_bracket > 0 => {}
            _ => out.push(c),
        }
    }
    // drop the label lists of `by (...)` / `without (...)`
    let mut cleaned = String::new();
    let mut rest = out.as_str();
    while let Some(at) = rest.find(|c: char| c.is_ascii_alphabetic() || c == '_') {
        cleaned.push_str(&rest[..at]);
        rest = &rest[at..];
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(rest.len());
        let word = &rest[..end];
        rest = &rest[end..];
        if word == "by" || word == "without" {
            let open = rest.find('(').unwrap_or(0);
            let close = rest.find(')').map_or(rest.len(), |i| i + 1);
            rest = if open < close { &rest[close..] } else { rest };
            continue;
        }
        cleaned.push(' ');
        cleaned.push_str(word);
        cleaned.push(' ');
    }
    cleaned
        .split_whitespace()
        .filter(|w| w.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_'))
        .filter(|w| !PROMQL.contains(w))
        .map(String::from)
        .collect()
}

#[test]
fn promql_metric_names_are_found() {
    assert_eq!(
        metrics_in(
            r#"sum by (method) (rate(grpc_server_requests_total{code!="0"}[1m])) / sum(x_total)"#
        ),
        ["grpc_server_requests_total", "x_total"]
    );
    assert_eq!(
        metrics_in("histogram_quantile(0.5, sum by (le, stage) (rate(a_bucket[5m])))"),
        ["a_bucket"]
    );
}

/// deploy/grafana/conclave.json reads only metrics the services export, and
/// has a panel for each thing operators watch.
#[test]
fn the_dashboard_reads_only_exported_metrics() {
    let text = std::fs::read_to_string(format!("{ROOT}/deploy/grafana/conclave.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
    let exported = exported_metrics();
    assert!(exported.contains("portal_logins_total"), "{exported:?}");
    let mut read = std::collections::BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            let names = metrics_in(expr);
            assert!(!names.is_empty(), "{expr}");
            for name in names {
                assert!(
                    exported.contains(&name),
                    "panel {:?} reads {name}, which no service exports",
                    panel["title"]
                );
                read.insert(name);
            }
        }
    }
    for needed in [
        "portal_logins_total",
        "portal_login_stage_seconds_bucket",
        "portal_participants",
        "conference_rooms",
        "portal_relogins_total",
        "portal_drops_total",
        "cluster_workers",
        "grpc_server_requests_total",
    ] {
        assert!(read.contains(needed), "no panel reads {needed}");
    }
}
