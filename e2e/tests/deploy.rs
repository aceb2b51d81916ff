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
