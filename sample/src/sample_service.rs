//! The sample service (OWT's initdb makes one too): made over management's
//! gRPC on the first start, its id and key kept in a file so that later
//! starts use the same ones (a key is shown only when it is made).

use anyhow::Context;
use conclave_proto::management::v1 as mgmt;
use conclave_proto::management::v1::management_client::ManagementClient;
use std::path::Path;
use std::time::Duration;

/// Where the credentials are kept inside the data directory.
pub const FILE: &str = "sample-service.json";

/// The service named `name`: the one in `data_dir/FILE` while management
/// still has it, else a new one (an older service of that name whose key
/// was lost is deleted first). Returns (id, key).
pub async fn find_or_create(
    management: &str,
    data_dir: &Path,
    name: &str,
) -> anyhow::Result<(String, String)> {
    let mut m = ManagementClient::new(conclave_common::grpc::channel(
        management,
        Duration::from_secs(5),
    )?);
    let path = data_dir.join(FILE);
    let known: Option<(String, String)> = std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| {
            Some((
                v["id"].as_str()?.to_string(),
                v["key"].as_str()?.to_string(),
            ))
        });
    let listed = m
        .list_services(mgmt::ListServicesRequest {})
        .await
        .context("listing services")?
        .into_inner()
        .services;
    if let Some((id, key)) = known
        && listed.iter().any(|s| s.id == id)
    {
        return Ok((id, key));
    }
    if let Some(old) = listed.iter().find(|s| s.name == name && !s.is_super) {
        m.delete_service(mgmt::DeleteServiceRequest { id: old.id.clone() })
            .await
            .context("deleting the old sample service")?;
    }
    let made = m
        .create_service(mgmt::CreateServiceRequest {
            name: name.into(),
            key: None,
        })
        .await
        .context("creating the sample service")?
        .into_inner();
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let text = serde_json::json!({"id": made.id, "key": made.key}).to_string();
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    tracing::info!(service = %made.id, %name, "sample service created");
    Ok((made.id, made.key))
}
