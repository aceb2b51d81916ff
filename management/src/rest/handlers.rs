//! What each REST route does, over the service core (reference §1.2–1.5).

use super::routes::{Resource, Sub};
use super::{Call, Reply, RestError};
use crate::error::ManagementError;
use crate::node::NodeError;
use crate::owt;
use crate::room::Room;
use crate::service::ManagementService;
use crate::store::Origin;
use conclave_proto::conference::v1 as conf;
use http::Method;
use serde_json::{Value, json};

/// Most rooms one page may ask for.
pub const MAX_PER_PAGE: u64 = 1000;

pub async fn dispatch(
    api: &ManagementService,
    resource: Resource<'_>,
    call: Call,
) -> Result<Reply, RestError> {
    let method = call.method.clone();
    match (resource, method) {
        (Resource::Services, Method::POST) => create_service(api, call).await,
        (Resource::Services, Method::GET) => list_services(api, &call).await,
        (Resource::Service(id), Method::GET) => get_service(api, &call, id).await,
        (Resource::Service(id), Method::DELETE) => delete_service(api, &call, id).await,
        (Resource::Rooms, Method::POST) => create_room(api, &call).await,
        (Resource::Rooms, Method::GET) => list_rooms(api, &call).await,
        (Resource::Room(id), Method::GET) => Ok(Reply::Json(owt::room_json(
            &own_room(api, &call, id).await?,
        ))),
        (Resource::Room(id), Method::PUT) => update_room(api, &call, id).await,
        (Resource::Room(id), Method::DELETE) => delete_room(api, &call, id).await,
        (Resource::Sub { room, sub, id }, method) => {
            // OWT validates the room before any sub-resource route
            let room = own_room(api, &call, room).await?;
            sub_resource(api, call, &room, sub, id, method).await
        }
        _ => Err(RestError::not_found()),
    }
}

fn service_json(s: &crate::accounts::ServiceSummary) -> Value {
    json!({"_id": s.id, "name": s.name, "rooms": s.rooms})
}

fn require_super(api: &ManagementService, call: &Call) -> Result<(), RestError> {
    if api.accounts.is_super(&call.caller.id) {
        Ok(())
    } else {
        Err(RestError::forbidden("Permission denied"))
    }
}

async fn create_service(api: &ManagementService, call: Call) -> Result<Reply, RestError> {
    require_super(api, &call)?;
    let (Some(name), Some(key)) = (
        call.body.get("name").and_then(Value::as_str),
        call.body.get("key").and_then(Value::as_str),
    ) else {
        return Err(RestError::bad_request("Invalid request body"));
    };
    let service = api
        .create_service(name.to_string(), Some(key.to_string()))
        .await?;
    Ok(Reply::Json(
        json!({"_id": service.id, "name": service.name, "rooms": []}),
    ))
}

async fn list_services(api: &ManagementService, call: &Call) -> Result<Reply, RestError> {
    require_super(api, call)?;
    let list = api.list_services().await?;
    Ok(Reply::Json(Value::Array(
        list.iter().map(service_json).collect(),
    )))
}

async fn get_service(api: &ManagementService, call: &Call, id: &str) -> Result<Reply, RestError> {
    if call.caller.id != id {
        require_super(api, call)?;
    }
    Ok(Reply::Json(service_json(&api.service_summary(id).await?)))
}

async fn delete_service(
    api: &ManagementService,
    call: &Call,
    id: &str,
) -> Result<Reply, RestError> {
    require_super(api, call)?;
    api.delete_service(id).await?;
    Ok(Reply::Text("Service deleted".into()))
}

/// The caller's room `id`; another service's room is not found.
async fn own_room(api: &ManagementService, call: &Call, id: &str) -> Result<Room, RestError> {
    let room = api
        .room(id)
        .await
        .map_err(|_| RestError::room_not_found())?;
    if room.service != api.accounts.owner_key(&call.caller.id) {
        return Err(RestError::room_not_found());
    }
    conclave_common::trace::record(&[("room", &room.id)]);
    Ok(room)
}

async fn create_room(api: &ManagementService, call: &Call) -> Result<Reply, RestError> {
    let owner = api.accounts.owner_key(&call.caller.id).to_string();
    let room = owt::create(&call.body, &owner).map_err(|e| RestError::bad_request(e.0))?;
    let stored = room.clone();
    api.store
        .insert_room(&stored)
        .await
        .map_err(ManagementError::from)?;
    tracing::info!(room = %room.id, name = %room.name, service = %call.caller.id, "room created");
    api.count_rooms().await;
    Ok(Reply::Json(owt::room_json(&room)))
}

/// `page` and `per_page` as non-negative integers.
fn query_number(query: &str, name: &str) -> Result<Option<u64>, RestError> {
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k == name {
            return v.parse::<u64>().map(Some).map_err(|_| {
                RestError::bad_request(format!("{name} must be a non-negative integer"))
            });
        }
    }
    Ok(None)
}

async fn list_rooms(api: &ManagementService, call: &Call) -> Result<Reply, RestError> {
    let per_page = query_number(&call.query, "per_page")?;
    let page = query_number(&call.query, "page")?.unwrap_or(1).max(1);
    if per_page.is_some_and(|n| n > MAX_PER_PAGE) {
        return Err(RestError::bad_request(format!(
            "per_page must be at most {MAX_PER_PAGE}"
        )));
    }
    let (offset, limit) = match per_page {
        Some(n) if n > 0 => ((page - 1).saturating_mul(n), Some(n)),
        _ => (0, None),
    };
    let owner = api.accounts.owner_key(&call.caller.id).to_string();
    let rooms = api
        .store
        .rooms(Some(&owner), offset, limit)
        .await
        .map_err(ManagementError::from)?;
    Ok(Reply::Json(Value::Array(
        rooms.iter().map(owt::room_json).collect(),
    )))
}

async fn update_room(api: &ManagementService, call: &Call, id: &str) -> Result<Reply, RestError> {
    let room = own_room(api, call, id).await?;
    let updated = owt::update(&room, &call.body).map_err(|e| RestError::bad_request(e.0))?;
    let stored = updated.clone();
    if !api
        .store
        .update_room(&stored)
        .await
        .map_err(ManagementError::from)?
    {
        return Err(RestError::room_not_found());
    }
    tracing::info!(room = %id, "room updated");
    Ok(Reply::Json(owt::room_json(&updated)))
}

async fn delete_room(api: &ManagementService, call: &Call, id: &str) -> Result<Reply, RestError> {
    let room = own_room(api, call, id).await?;
    let key = room.id.clone();
    if !api
        .store
        .delete_room(&key)
        .await
        .map_err(ManagementError::from)?
    {
        return Err(RestError::room_not_found());
    }
    tracing::info!(room = %id, "room deleted");
    api.count_rooms().await;
    api.nodes.destroy(&room.id).await;
    Ok(Reply::Text("Room deleted".into()))
}

async fn sub_resource(
    api: &ManagementService,
    call: Call,
    room: &Room,
    sub: Sub,
    id: Option<&str>,
    method: Method,
) -> Result<Reply, RestError> {
    match (sub, id, method) {
        (Sub::Tokens, None, Method::POST) => create_token(api, call, room).await,
        (Sub::Participants, None, Method::GET) => {
            let list = api.nodes.participants(&room.id).await.map_err(node_error)?;
            Ok(Reply::Json(Value::Array(
                list.iter().map(participant_json).collect(),
            )))
        }
        (Sub::Participants, Some(p), Method::GET) => {
            let list = api.nodes.participants(&room.id).await.map_err(node_error)?;
            list.iter()
                .find(|d| d.id == p)
                .map(|d| Reply::Json(participant_json(d)))
                .ok_or_else(RestError::participant_not_found)
        }
        (Sub::Participants, Some(p), Method::PATCH) => {
            let changes = permission_patch(&call.body)?;
            let detail = api
                .nodes
                .control(&room.id, p, changes)
                .await
                .map_err(node_error)?;
            tracing::info!(room = %room.id, participant = %p, "permissions changed");
            Ok(Reply::Json(participant_json(&detail)))
        }
        (Sub::Participants, Some(p), Method::DELETE) => {
            api.nodes
                .drop_participant(&room.id, p)
                .await
                .map_err(node_error)?;
            tracing::info!(room = %room.id, participant = %p, "participant dropped over REST");
            Ok(Reply::Empty)
        }
        (Sub::Streams, None, Method::GET) => Ok(Reply::Json(json!([]))),
        (Sub::Streams, Some(_), Method::GET) => Err(RestError::stream_not_found()),
        (Sub::Streams, Some(_), Method::PATCH | Method::DELETE) => {
            Err(RestError::no_media_plane("streams"))
        }
        (Sub::StreamingIns, None, Method::POST) | (Sub::StreamingIns, Some(_), Method::DELETE) => {
            Err(RestError::no_media_plane("streaming-ins"))
        }
        (Sub::Cascading, None, Method::POST) | (Sub::Bridges, None, Method::GET) => {
            Err(RestError::no_media_plane("cascading bridges"))
        }
        (
            Sub::StreamingOuts | Sub::Recordings | Sub::SipCalls,
            None,
            Method::GET | Method::POST,
        )
        | (
            Sub::StreamingOuts | Sub::Recordings | Sub::SipCalls,
            Some(_),
            Method::PATCH | Method::DELETE,
        )
        | (Sub::Analytics, None, Method::GET | Method::POST)
        | (Sub::Analytics, Some(_), Method::DELETE) => Err(RestError::no_media_plane(sub.name())),
        _ => Err(RestError::not_found()),
    }
}

/// `{user, role, preference?}`, with the MAuth header's user and role first.
async fn create_token(
    api: &ManagementService,
    call: Call,
    room: &Room,
) -> Result<Reply, RestError> {
    let body = call
        .body
        .as_object()
        .ok_or_else(|| RestError::bad_request("Invalid request body"))?;
    let text = |k: &str| body.get(k).and_then(Value::as_str).map(str::to_string);
    let (user, role) = match call.header_user {
        Some((u, r)) => (Some(u), Some(r)),
        None => (text("user"), text("role")),
    };
    let (Some(user), Some(role)) = (user, role) else {
        return Err(RestError::bad_request("Name or role not valid"));
    };
    let origin = match body.get("preference") {
        None | Some(Value::Null) => None,
        Some(Value::Object(p)) => {
            let field = |k: &str| match p.get(k) {
                None => Ok(k.to_string()),
                Some(Value::String(s)) => Ok(s.clone()),
                Some(_) => Err(RestError::bad_request(format!(
                    "preference.{k} must be a string"
                ))),
            };
            Some(Origin {
                isp: field("isp")?,
                region: field("region")?,
            })
        }
        Some(_) => return Err(RestError::bad_request("preference must be an object")),
    };
    let token = api.make_token(room, user, role, origin).await?;
    Ok(Reply::Text(token))
}

fn participant_json(d: &conf::ParticipantDetail) -> Value {
    let p = d.permission.unwrap_or_default();
    let media = |m: Option<conf::MediaPermission>| {
        let m = m.unwrap_or_default();
        json!({"audio": m.audio, "video": m.video})
    };
    json!({
        "id": d.id,
        "user": d.user,
        "role": d.role,
        "permission": {"publish": media(p.publish), "subscribe": media(p.subscribe)},
    })
}

fn node_error(e: NodeError) -> RestError {
    match e {
        NodeError::Inactive => RestError::participant_not_found(),
        NodeError::Rpc(s) if s.code() == tonic::Code::NotFound => {
            RestError::participant_not_found()
        }
        NodeError::Rpc(s) if s.code() == tonic::Code::InvalidArgument => {
            RestError::bad_request(s.message())
        }
        NodeError::Rpc(s) => {
            tracing::warn!(error = %s.message(), "conference node call failed");
            RestError::operation_failed()
        }
    }
}

/// OWT's participant patch: `[{op: "replace", path, value}]` on the
/// permission (reference §12.9).
fn permission_patch(body: &Value) -> Result<Vec<conf::PermissionChange>, RestError> {
    let ops = body
        .as_array()
        .ok_or_else(|| RestError::bad_request("Invalid json op"))?;
    if ops.is_empty() || ops.len() > 16 {
        return Err(RestError::bad_request("Invalid json op"));
    }
    ops.iter()
        .map(|op| {
            if op.get("op").and_then(Value::as_str) != Some("replace") {
                return Err(RestError::bad_request("Invalid json op"));
            }
            let path = op.get("path").and_then(Value::as_str).unwrap_or("");
            let value = op.get("value").unwrap_or(&Value::Null);
            let object_path = matches!(path, "/permission/publish" | "/permission/subscribe");
            let leaf_path = matches!(
                path,
                "/permission/publish/audio"
                    | "/permission/publish/video"
                    | "/permission/subscribe/audio"
                    | "/permission/subscribe/video"
            );
            if object_path {
                let flag = |k: &str| value.get(k).and_then(Value::as_bool);
                let (Some(audio), Some(video)) = (flag("audio"), flag("video")) else {
                    return Err(RestError::bad_request("Invalid json value"));
                };
                Ok(conf::PermissionChange {
                    path: path.to_string(),
                    media: Some(conf::MediaPermission { audio, video }),
                    flag: false,
                })
            } else if leaf_path {
                let flag = value
                    .as_bool()
                    .ok_or_else(|| RestError::bad_request("Invalid json value"))?;
                Ok(conf::PermissionChange {
                    path: path.to_string(),
                    media: None,
                    flag,
                })
            } else {
                Err(RestError::bad_request("Invalid json path"))
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permission_patches_as_owt_validates_them() {
        let ok = permission_patch(&json!([
            {"op": "replace", "path": "/permission/publish", "value": {"audio": true, "video": false}},
            {"op": "replace", "path": "/permission/subscribe/video", "value": false}
        ]))
        .unwrap();
        assert_eq!(ok.len(), 2);
        assert_eq!(
            ok[0].media,
            Some(conf::MediaPermission {
                audio: true,
                video: false
            })
        );
        assert!(!ok[1].flag);
        let err = |v: Value| permission_patch(&v).unwrap_err().message;
        assert_eq!(err(json!({"op": "replace"})), "Invalid json op");
        assert_eq!(err(json!([])), "Invalid json op");
        assert_eq!(
            err(json!([{"op": "add", "path": "/permission/publish/audio", "value": true}])),
            "Invalid json op"
        );
        assert_eq!(
            err(json!([{"op": "replace", "path": "/role", "value": "x"}])),
            "Invalid json path"
        );
        assert_eq!(
            err(json!([{"op": "replace", "path": "/permission/publish/audio", "value": "yes"}])),
            "Invalid json value"
        );
        assert_eq!(
            err(
                json!([{"op": "replace", "path": "/permission/publish", "value": {"audio": true}}])
            ),
            "Invalid json value"
        );
    }

    #[test]
    fn page_numbers_must_be_numbers() {
        assert_eq!(
            query_number("page=2&per_page=50", "per_page").unwrap(),
            Some(50)
        );
        assert_eq!(query_number("page=2", "per_page").unwrap(), None);
        assert!(query_number("per_page=-1", "per_page").is_err());
        assert!(query_number("per_page=lots", "per_page").is_err());
    }
}
