//! The gRPC adapter: `management.v1.Management` over the store, with message
//! conversion at the edge.

use crate::accounts::Accounts;
use crate::clock::Clock;
use crate::config::TokenConfig;
use crate::error::ManagementError;
use crate::node::RoomNodes;
use crate::portal;
use crate::room::{self, MediaPermission, Notifying, Role, Room, View};
use crate::store::{Origin, Store, Taken, TokenRecord};
use conclave_common::grpc::Channel;
use conclave_common::token::JoinToken;
use conclave_proto::cluster::v1 as cluster;
use conclave_proto::cluster::v1::cluster_manager_client::ClusterManagerClient;
use conclave_proto::management::v1 as pb;
use std::sync::Arc;
use std::time::Duration;
use tonic::{Request, Response, Status};

/// Longest id or user name accepted.
const MAX_ID_LEN: usize = 256;
/// Token ids in one `ConsumeTokens` call.
const MAX_TOKENS_PER_CALL: usize = 1024;
/// Most rooms one ListRooms page returns.
const MAX_PAGE: u32 = 1000;

#[derive(Clone)]
pub struct ManagementService {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) clock: Arc<dyn Clock>,
    key: Arc<str>,
    cluster: ClusterManagerClient<Channel>,
    pub(crate) nodes: RoomNodes,
    tokens: TokenConfig,
    pub(crate) accounts: Arc<Accounts>,
}

impl ManagementService {
    /// `ConsumeToken` of one token: its grant, or the status the call fails with.
    async fn consume_one(&self, id: String) -> Result<pb::TokenGrant, Status> {
        if id.is_empty() {
            return Err(
                ManagementError::InvalidArgument("tokenId must not be empty".into()).into(),
            );
        }
        if id.len() > MAX_ID_LEN {
            return Err(ManagementError::UnknownToken.into());
        }
        let now = self.clock.now_ms();
        let lifetime = self.tokens.lifetime.min(i64::MAX as u64) as i64;
        let taken = self
            .store
            .take_token(&id, now, lifetime)
            .await
            .map_err(ManagementError::from)?;
        let event = match &taken {
            Taken::Token(_) => "consumed",
            Taken::Expired => "expired",
            Taken::Unknown => "unknown",
        };
        conclave_common::metrics::counter!("management_tokens_total", "event" => event)
            .increment(1);
        match taken {
            Taken::Token(t) => {
                conclave_common::trace::record(&[("room", &t.room_id)]);
                tracing::info!(token = %t.id, "token consumed");
                Ok(pb::TokenGrant {
                    code: t.code,
                    user: t.user,
                    role: t.role,
                    room_id: t.room_id,
                    origin: Some(pb::Preference {
                        isp: t.origin.isp,
                        region: t.origin.region,
                    }),
                })
            }
            Taken::Expired => Err(ManagementError::Expired.into()),
            Taken::Unknown => Err(ManagementError::UnknownToken.into()),
        }
    }

    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        key: String,
        cluster: ClusterManagerClient<Channel>,
        tokens: TokenConfig,
        accounts: Accounts,
    ) -> Self {
        ManagementService {
            store,
            clock,
            key: key.into(),
            nodes: RoomNodes::new(cluster.clone(), conclave_common::grpc::DEFAULT_DEADLINE),
            cluster,
            tokens,
            accounts: Arc::new(accounts),
        }
    }

    /// Keep the rooms gauge right after a change.
    pub(crate) async fn count_rooms(&self) {
        if let Ok(n) = self.store.room_count().await.map_err(ManagementError::from) {
            conclave_common::metrics::gauge!("management_rooms").set(n as f64);
        }
    }

    /// A room as gRPC shows it, with its owner's id.
    fn shown(&self, room: Room) -> pb::Room {
        let service = self.accounts.owner_id(&room.service);
        pb::Room {
            service,
            ..room.into()
        }
    }

    pub(crate) async fn room(&self, id: &str) -> Result<Room, ManagementError> {
        check_id("id", id)?;
        let id = id.to_string();
        self.store
            .room(&id)
            .await
            .map_err(ManagementError::from)?
            .ok_or(ManagementError::RoomNotFound)
    }

    /// A one-time token for `user` as `role` in `room`, on a portal
    /// scheduled for it (OWT §14.2); the origin defaults to OWT's
    /// `{isp: "isp", region: "region"}`.
    pub(crate) async fn make_token(
        &self,
        room: &Room,
        user: String,
        role: String,
        origin: Option<Origin>,
    ) -> Result<String, ManagementError> {
        if user.trim().is_empty() || user.len() > MAX_ID_LEN || !room.has_role(&role) {
            return Err(ManagementError::NameOrRole);
        }
        let origin = origin.unwrap_or_else(|| Origin {
            isp: "isp".into(),
            region: "region".into(),
        });
        if origin.isp.len() > MAX_ID_LEN || origin.region.len() > MAX_ID_LEN {
            return Err(ManagementError::InvalidArgument(format!(
                "preference fields must be at most {MAX_ID_LEN} bytes"
            )));
        }
        let code = token_code();
        let mut cluster = self.cluster.clone();
        let info = portal::schedule_portal(
            &mut cluster,
            &code,
            cluster::Preference {
                isp: origin.isp.clone(),
                region: origin.region.clone(),
                ..Default::default()
            },
            self.tokens.portal_reserve_time,
            self.tokens.portal_schedule_budget,
            Duration::from_millis(self.tokens.portal_schedule_retry_interval),
        )
        .await
        .ok_or(ManagementError::NoPortal)?;
        let (host, secure) = portal::portal_host(&info);
        let record = TokenRecord {
            id: room::new_id(),
            code,
            user,
            role,
            room_id: room.id.clone(),
            origin,
            host: host.clone(),
            secure,
            created_ms: self.clock.now_ms(),
        };
        let mut token = JoinToken::new(&self.key, &record.id, &host, secure);
        if self.tokens.sign_claims {
            let claims = conclave_common::token::Claims {
                room: record.room_id.clone(),
                user: record.user.clone(),
                role: record.role.clone(),
                code: record.code.clone(),
                isp: record.origin.isp.clone(),
                region: record.origin.region.clone(),
                signature: String::new(),
            };
            token = token.with_claims(&self.key, claims);
        }
        let token = token.encode();
        let (id, room_id) = (record.id.clone(), record.room_id.clone());
        self.store
            .insert_token(&record)
            .await
            .map_err(ManagementError::from)?;
        tracing::info!(token = %id, room = %room_id, portal = %host, "token created");
        conclave_common::metrics::counter!("management_tokens_total", "event" => "created")
            .increment(1);
        Ok(token)
    }
}

fn check_id(field: &str, value: &str) -> Result<(), ManagementError> {
    if value.is_empty() {
        return Err(ManagementError::InvalidArgument(format!(
            "{field} must not be empty"
        )));
    }
    if value.len() > MAX_ID_LEN {
        return Err(ManagementError::InvalidArgument(format!(
            "{field} is longer than {MAX_ID_LEN} bytes"
        )));
    }
    Ok(())
}

fn permission(p: Option<pb::MediaPermission>) -> MediaPermission {
    p.map(|p| MediaPermission {
        audio: p.audio,
        video: p.video,
    })
    .unwrap_or_default()
}

fn roles(list: Vec<pb::Role>) -> Vec<Role> {
    list.into_iter()
        .map(|r| Role {
            role: r.role,
            publish: permission(r.publish),
            subscribe: permission(r.subscribe),
        })
        .collect()
}

fn views(list: Vec<pb::View>) -> Vec<View> {
    list.into_iter()
        .map(|v| View {
            label: v.label,
            audio: v.audio.unwrap_or(true),
            video: v.video.unwrap_or(true),
            owt: None,
        })
        .collect()
}

fn notifying(n: pb::Notifying) -> Notifying {
    Notifying {
        participant_activities: n.participant_activities,
        stream_change: n.stream_change,
    }
}

/// The optional fields of CreateRoom and UpdateRoom: what is given replaces
/// the room's value (empty lists leave roles and views as they are).
struct RoomChanges {
    participant_limit: Option<i32>,
    input_limit: Option<i32>,
    roles: Vec<pb::Role>,
    views: Vec<pb::View>,
    notifying: Option<pb::Notifying>,
    select_active_audio: Option<bool>,
}

impl RoomChanges {
    fn apply(self, room: &mut Room) {
        if let Some(limit) = self.participant_limit {
            room.participant_limit = limit;
        }
        if let Some(limit) = self.input_limit {
            room.input_limit = limit;
        }
        if !self.roles.is_empty() {
            room.roles = roles(self.roles);
        }
        if !self.views.is_empty() {
            room.views = views(self.views);
        }
        if let Some(n) = self.notifying {
            room.notifying = notifying(n);
        }
        if let Some(s) = self.select_active_audio {
            room.select_active_audio = s;
        }
    }
}

fn to_pb_permission(p: &MediaPermission) -> Option<pb::MediaPermission> {
    Some(pb::MediaPermission {
        audio: p.audio,
        video: p.video,
    })
}

impl From<Room> for pb::Room {
    fn from(r: Room) -> Self {
        pb::Room {
            id: r.id,
            name: r.name,
            participant_limit: r.participant_limit,
            input_limit: r.input_limit,
            roles: r
                .roles
                .iter()
                .map(|role| pb::Role {
                    role: role.role.clone(),
                    publish: to_pb_permission(&role.publish),
                    subscribe: to_pb_permission(&role.subscribe),
                })
                .collect(),
            views: r
                .views
                .into_iter()
                .map(|v| pb::View {
                    label: v.label,
                    audio: Some(v.audio),
                    video: Some(v.video),
                })
                .collect(),
            notifying: Some(pb::Notifying {
                participant_activities: r.notifying.participant_activities,
                stream_change: r.notifying.stream_change,
            }),
            select_active_audio: r.select_active_audio,
            service: r.service,
        }
    }
}

/// A token code as OWT makes it: `String(Math.floor(Math.random() * 1e11))`.
fn token_code() -> String {
    use rand::Rng;
    rand::rng().random_range(0..100_000_000_000u64).to_string()
}

#[tonic::async_trait]
impl pb::management_server::Management for ManagementService {
    async fn create_room(
        &self,
        req: Request<pb::CreateRoomRequest>,
    ) -> Result<Response<pb::Room>, Status> {
        let r = req.into_inner();
        let mut room = Room::with_defaults(r.name);
        RoomChanges {
            participant_limit: r.participant_limit,
            input_limit: r.input_limit,
            roles: r.roles,
            views: r.views,
            notifying: r.notifying,
            select_active_audio: r.select_active_audio,
        }
        .apply(&mut room);
        room.validate()
            .map_err(|e| ManagementError::InvalidRoom(e.0))?;
        let stored = room.clone();
        self.store
            .insert_room(&stored)
            .await
            .map_err(ManagementError::from)?;
        tracing::info!(room = %room.id, name = %room.name, "room created");
        self.count_rooms().await;
        Ok(Response::new(self.shown(room)))
    }

    async fn get_room(
        &self,
        req: Request<pb::GetRoomRequest>,
    ) -> Result<Response<pb::Room>, Status> {
        Ok(Response::new(
            self.shown(self.room(&req.get_ref().id).await?),
        ))
    }

    async fn list_rooms(
        &self,
        req: Request<pb::ListRoomsRequest>,
    ) -> Result<Response<pb::ListRoomsReply>, Status> {
        let r = req.into_inner();
        if r.per_page > MAX_PAGE {
            return Err(ManagementError::InvalidArgument(format!(
                "perPage must be at most {MAX_PAGE}"
            ))
            .into());
        }
        let (offset, limit) = if r.page == 0 {
            (0, None)
        } else {
            let per_page = if r.per_page == 0 { 50 } else { r.per_page };
            (
                u64::from(r.page - 1) * u64::from(per_page),
                Some(u64::from(per_page)),
            )
        };
        let rooms = self
            .store
            .rooms(None, offset, limit)
            .await
            .map_err(ManagementError::from)?;
        Ok(Response::new(pb::ListRoomsReply {
            rooms: rooms.into_iter().map(|r| self.shown(r)).collect(),
        }))
    }

    async fn update_room(
        &self,
        req: Request<pb::UpdateRoomRequest>,
    ) -> Result<Response<pb::Room>, Status> {
        let r = req.into_inner();
        let mut room = self.room(&r.id).await?;
        if let Some(name) = r.name {
            room.name = name;
        }
        RoomChanges {
            participant_limit: r.participant_limit,
            input_limit: r.input_limit,
            roles: r.roles,
            views: r.views,
            notifying: r.notifying,
            select_active_audio: r.select_active_audio,
        }
        .apply(&mut room);
        room.validate()
            .map_err(|e| ManagementError::InvalidRoom(e.0))?;
        let stored = room.clone();
        if !self
            .store
            .update_room(&stored)
            .await
            .map_err(ManagementError::from)?
        {
            return Err(ManagementError::RoomNotFound.into());
        }
        tracing::info!(room = %room.id, "room updated");
        Ok(Response::new(self.shown(room)))
    }

    async fn delete_room(
        &self,
        req: Request<pb::DeleteRoomRequest>,
    ) -> Result<Response<pb::DeleteRoomReply>, Status> {
        let id = req.into_inner().id;
        check_id("id", &id)?;
        let room = id.clone();
        if !self
            .store
            .delete_room(&room)
            .await
            .map_err(ManagementError::from)?
        {
            return Err(ManagementError::RoomNotFound.into());
        }
        tracing::info!(room = %id, "room deleted");
        self.count_rooms().await;
        self.nodes.destroy(&id).await;
        Ok(Response::new(pb::DeleteRoomReply {}))
    }

    async fn create_token(
        &self,
        req: Request<pb::CreateTokenRequest>,
    ) -> Result<Response<pb::CreateTokenReply>, Status> {
        let r = req.into_inner();
        if r.room_id.is_empty() || r.room_id.len() > MAX_ID_LEN {
            return Err(ManagementError::RoomNotFound.into());
        }
        let room = self.room(&r.room_id).await?;
        let origin = r.preference.map(|p| Origin {
            isp: p.isp,
            region: p.region,
        });
        let token = self.make_token(&room, r.user, r.role, origin).await?;
        Ok(Response::new(pb::CreateTokenReply { token }))
    }

    async fn create_service(
        &self,
        req: Request<pb::CreateServiceRequest>,
    ) -> Result<Response<pb::Service>, Status> {
        let r = req.into_inner();
        let service = ManagementService::create_service(self, r.name, r.key).await?;
        Ok(Response::new(pb::Service {
            id: service.id,
            name: service.name,
            key: service.key,
            is_super: false,
            rooms: Vec::new(),
        }))
    }

    async fn list_services(
        &self,
        _req: Request<pb::ListServicesRequest>,
    ) -> Result<Response<pb::ListServicesReply>, Status> {
        let services = ManagementService::list_services(self).await?;
        Ok(Response::new(pb::ListServicesReply {
            services: services
                .into_iter()
                .map(|s| pb::Service {
                    id: s.id,
                    name: s.name,
                    key: String::new(),
                    is_super: s.is_super,
                    rooms: s.rooms,
                })
                .collect(),
        }))
    }

    async fn delete_service(
        &self,
        req: Request<pb::DeleteServiceRequest>,
    ) -> Result<Response<pb::DeleteServiceReply>, Status> {
        let rooms = ManagementService::delete_service(self, &req.into_inner().id).await?;
        Ok(Response::new(pb::DeleteServiceReply { rooms }))
    }

    async fn consume_token(
        &self,
        req: Request<pb::ConsumeTokenRequest>,
    ) -> Result<Response<pb::TokenGrant>, Status> {
        self.consume_one(req.into_inner().token_id)
            .await
            .map(Response::new)
    }

    async fn consume_tokens(
        &self,
        req: Request<pb::ConsumeTokensRequest>,
    ) -> Result<Response<pb::ConsumeTokensReply>, Status> {
        let ids = req.into_inner().token_ids;
        if ids.len() > MAX_TOKENS_PER_CALL {
            return Err(ManagementError::InvalidArgument(format!(
                "at most {MAX_TOKENS_PER_CALL} tokens per call"
            ))
            .into());
        }
        // together: the embedded store takes them in one transaction
        let outcomes =
            futures_util::future::join_all(ids.into_iter().map(|id| self.consume_one(id))).await;
        Ok(Response::new(pb::ConsumeTokensReply {
            tokens: outcomes
                .into_iter()
                .map(|outcome| match outcome {
                    Ok(grant) => pb::ConsumedToken {
                        grant: Some(grant),
                        code: 0,
                        message: String::new(),
                    },
                    Err(status) => pb::ConsumedToken {
                        grant: None,
                        code: status.code() as i32,
                        message: status.message().to_string(),
                    },
                })
                .collect(),
        }))
    }
}
