//! A small run of every scenario against the real stack: the tool works and
//! nothing is lost (timings are for BENCHMARKS.md, not asserted here).

use conclave_stack::testing::workspace_bin;
use std::process::Command;

#[test]
fn every_scenario_runs_and_loses_nothing() {
    let json =
        std::env::temp_dir().join(format!("conclave-bench-smoke-{}.json", std::process::id()));
    let out = Command::new(workspace_bin("conclave-loadgen"))
        .args([
            "--logins",
            "40",
            "--concurrency",
            "8",
            "--room-size",
            "20",
            "--sequential-logins",
            "10",
            "--relogins",
            "5",
            "--fanout-sizes",
            "5,20",
            "--fanout-rounds",
            "2",
            "--idle",
            "30",
            "--churn",
            "40",
            "--rooms",
            "3",
            "--scheduler-seconds",
            "0.3",
            "--rest-seconds",
            "0.3",
            "--store-seconds",
            "0.3",
            "--curve-portals",
            "1,2",
            "--curve-logins",
            "40",
            "--curve-rate",
            "100",
            "--json",
            json.to_str().unwrap(),
        ])
        .output()
        .expect("loadgen runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stderr}\n{stdout}");
    assert!(
        stdout.contains("stack / bare p50, at once"),
        "the table: {stdout}"
    );
    assert_eq!(report_count(&json, "login_sequential"), 10);
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    for key in ["login", "baseline_login"] {
        assert_eq!(report[key]["logins"], 40, "{report}");
        assert_eq!(report[key]["failed"], 0, "{key}: {report}");
        assert_eq!(report[key]["latency"]["count"], 40);
    }
    assert_eq!(report["relogin"]["failed"], 0, "{report}");
    assert_eq!(report["relogin"]["messages_lost"], 0, "{report}");
    let fanout = report["fanout"].as_array().unwrap();
    assert_eq!(fanout.len(), 2);
    for f in fanout {
        assert_eq!(f["messages_lost"], 0, "{report}");
        assert_eq!(f["last_receiver"]["count"], 2);
    }
    assert_eq!(report["idle"]["connections"], 30, "{report}");
    assert!(report["idle"]["rss_after_kib"].as_u64().unwrap() > 0);
    let rooms = &report["rooms"];
    assert_eq!(rooms["rooms"], 3, "{report}");
    assert_eq!(rooms["failed"], 0, "{report}");
    assert_eq!(rooms["first_login"]["count"], 3, "{report}");
    assert!(
        rooms["nodes_after"].as_u64().unwrap() >= rooms["nodes_before"].as_u64().unwrap() + 3,
        "a node for each room, the warm pool refilled: {report}"
    );
    assert!(
        rooms["pss_kib_per_room"].as_f64().unwrap() > 0.0,
        "{report}"
    );
    for key in ["churn", "baseline_churn"] {
        assert_eq!(report[key]["cycles"], 40, "{key}: {report}");
        assert_eq!(report[key]["logged_in"], 20, "{key}: {report}");
        assert_eq!(report[key]["failed"], 0, "{key}: {report}");
    }
    assert!(
        report["scheduler"]["new_rooms_per_second"]
            .as_f64()
            .unwrap()
            > 0.0,
        "{report}"
    );
    assert!(
        report["scheduler"]["existing_rooms_per_second"]
            .as_f64()
            .unwrap()
            > 0.0,
        "{report}"
    );
    let rest = &report["rest"];
    assert_eq!(rest["rest_failed"], 0, "{report}");
    assert_eq!(rest["grpc_failed"], 0, "{report}");
    assert!(
        rest["rest_tokens_per_second"].as_f64().unwrap() > 0.0,
        "{report}"
    );
    assert!(
        rest["grpc_tokens_per_second"].as_f64().unwrap() > 0.0,
        "{report}"
    );
    assert!(rest["replay_check_ns"].as_f64().unwrap() > 0.0, "{report}");
    // the same logins and idle connections over TLS
    for key in ["tls_login", "tls_login_sequential"] {
        assert_eq!(report[key]["failed"], 0, "{key}: {report}");
    }
    assert_eq!(report["tls_login"]["logins"], 40, "{report}");
    assert_eq!(report["tls_idle"]["connections"], 30, "{report}");
    // tokens on each store: SQLite, and PostgreSQL where it is installed
    let stores = report["stores"].as_array().unwrap();
    assert_eq!(stores[0]["store"], "sqlite", "{report}");
    if conclave_stack::postgres::bin_dir().is_some() {
        assert_eq!(stores.len(), 2, "{report}");
        assert_eq!(stores[1]["store"], "postgres", "{report}");
    }
    for s in stores {
        assert_eq!(s["create_failed"], 0, "{report}");
        assert_eq!(s["consume_failed"], 0, "{report}");
        assert!(s["consumed"].as_u64().unwrap() > 0, "{report}");
    }
    // the load curve: each portal count, both loads, every service costed
    let curve = report["curve"].as_array().unwrap();
    assert_eq!(curve.len(), 2, "{report}");
    for (point, portals) in curve.iter().zip([1, 2]) {
        assert_eq!(point["portals"], portals, "{report}");
        for key in ["paced", "saturated"] {
            assert_eq!(point[key]["logins"], 40, "{key}: {report}");
            assert_eq!(point[key]["failed"], 0, "{key}: {report}");
        }
        let services = point["services"].as_array().unwrap();
        let portal = services.iter().find(|s| s["service"] == "portal").unwrap();
        assert_eq!(portal["processes"], portals, "{report}");
        assert!(
            services
                .iter()
                .all(|s| s["cpu_ms_per_1000"].as_f64().unwrap() >= 0.0),
            "{report}"
        );
    }
    // the pictures beside the JSON
    for suffix in ["logins", "curve"] {
        let svg = json.with_file_name(format!(
            "{}-{suffix}.svg",
            json.file_stem().unwrap().to_str().unwrap()
        ));
        let text = std::fs::read_to_string(&svg).unwrap_or_default();
        assert!(text.starts_with("<svg"), "{}: {text:.80}", svg.display());
        let _ = std::fs::remove_file(svg);
    }
    let _ = std::fs::remove_file(json);
}

fn report_count(json: &std::path::Path, key: &str) -> u64 {
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(json).unwrap()).unwrap();
    assert_eq!(report[key]["failed"], 0, "{report}");
    report[key]["latency"]["count"].as_u64().unwrap()
}
