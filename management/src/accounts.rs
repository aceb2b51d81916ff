//! Service accounts and MAuth authentication, over the store: the super
//! service from configuration, the others stored with sealed keys.

use crate::error::ManagementError;
use crate::mauth::{AuthError, Header, ReplayGuard};
use crate::service::ManagementService;
use crate::services::{self, KeyBox, Service, StoredService};
use crate::store::StoreError;

/// OWT's name for the super service.
pub const SUPER_SERVICE_NAME: &str = "superService";

pub struct Accounts {
    /// The super service; its key may be empty (no REST sign-in).
    pub super_service: Service,
    keys: KeyBox,
    replay: Option<ReplayGuard>,
}

impl Accounts {
    pub fn new(
        super_id: String,
        super_key: String,
        cluster_key: &str,
        replay: Option<ReplayGuard>,
    ) -> Accounts {
        Accounts {
            super_service: Service {
                id: super_id,
                name: SUPER_SERVICE_NAME.into(),
                key: super_key,
            },
            keys: KeyBox::new(cluster_key),
            replay,
        }
    }

    pub fn is_super(&self, id: &str) -> bool {
        id == self.super_service.id
    }

    /// How a service's rooms are stored: "" for the super service (the
    /// default service), so that changing its id keeps its rooms.
    pub fn owner_key<'a>(&self, service_id: &'a str) -> &'a str {
        if self.is_super(service_id) {
            ""
        } else {
            service_id
        }
    }

    /// The id of a room's owner as shown.
    pub fn owner_id(&self, stored: &str) -> String {
        if stored.is_empty() {
            self.super_service.id.clone()
        } else {
            stored.to_string()
        }
    }
}

/// A service as listed: id, name and its rooms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSummary {
    pub id: String,
    pub name: String,
    pub is_super: bool,
    pub rooms: Vec<String>,
}

impl ManagementService {
    /// Check an `Authorization` header; the service it signs for.
    pub async fn authenticate(&self, header: Option<&str>) -> Result<Service, AuthError> {
        let header = Header::parse(header.ok_or(AuthError::Missing)?)?;
        let service = if self.accounts.is_super(&header.service_id) {
            let s = &self.accounts.super_service;
            if s.key.is_empty() {
                return Err(AuthError::UnknownService);
            }
            s.clone()
        } else {
            if header.service_id.len() > services::MAX_NAME_LEN {
                return Err(AuthError::UnknownService);
            }
            let id = header.service_id.clone();
            let stored = self
                .store
                .service(&id)
                .await
                .map_err(|e| match e {
                    StoreError::Unavailable(_) => AuthError::Unavailable(e.to_string()),
                    e => {
                        tracing::error!(error = %e, "looking up a service failed");
                        AuthError::UnknownService
                    }
                })?
                .ok_or(AuthError::UnknownService)?;
            self.accounts.keys.open(&stored).map_err(|e| {
                tracing::error!(error = %e, "service key unusable");
                AuthError::UnknownService
            })?
        };
        header.verify(&service.key)?;
        if let Some(guard) = &self.accounts.replay {
            guard.check(
                &service.id,
                &header.cnonce,
                header.timestamp_ms(),
                self.clock.now_ms(),
            )?;
        }
        Ok(service)
    }

    /// Create a service (`key` generated when `None`).
    pub async fn create_service(
        &self,
        name: String,
        key: Option<String>,
    ) -> Result<Service, ManagementError> {
        let key = key.unwrap_or_else(services::new_key);
        services::validate(&name, &key)
            .map_err(|e| ManagementError::InvalidArgument(e.to_string()))?;
        if name == SUPER_SERVICE_NAME {
            return Err(ManagementError::ServiceExists(name));
        }
        let id = crate::room::new_id();
        let stored = StoredService {
            id: id.clone(),
            name: name.clone(),
            sealed_key: self.accounts.keys.seal(&id, &key),
        };
        if !self
            .store
            .insert_service(&stored)
            .await
            .map_err(ManagementError::from)?
        {
            return Err(ManagementError::ServiceExists(name));
        }
        tracing::info!(service = %id, %name, "service created");
        Ok(Service { id, name, key })
    }

    /// Every service, the super service first, with its rooms.
    pub async fn list_services(&self) -> Result<Vec<ServiceSummary>, ManagementError> {
        let stored = self.store.services().await?;
        let rooms = self.store.rooms(None, 0, None).await?;
        let rooms_of = |owner: &str| {
            rooms
                .iter()
                .filter(|r| r.service == owner)
                .map(|r| r.id.clone())
                .collect()
        };
        let s = &self.accounts.super_service;
        let mut list = vec![ServiceSummary {
            id: s.id.clone(),
            name: s.name.clone(),
            is_super: true,
            rooms: rooms_of(""),
        }];
        list.extend(stored.into_iter().map(|s| ServiceSummary {
            rooms: rooms_of(&s.id),
            id: s.id,
            name: s.name,
            is_super: false,
        }));
        Ok(list)
    }

    pub async fn service_summary(&self, id: &str) -> Result<ServiceSummary, ManagementError> {
        self.list_services()
            .await?
            .into_iter()
            .find(|s| s.id == id)
            .ok_or(ManagementError::ServiceNotFound)
    }

    /// Delete a service and its rooms, destroying the live ones.
    pub async fn delete_service(&self, id: &str) -> Result<Vec<String>, ManagementError> {
        if self.accounts.is_super(id) {
            return Err(ManagementError::SuperService);
        }
        if id.is_empty() || id.len() > services::MAX_NAME_LEN {
            return Err(ManagementError::ServiceNotFound);
        }
        let key = id.to_string();
        let rooms = self
            .store
            .delete_service(&key)
            .await
            .map_err(ManagementError::from)?
            .ok_or(ManagementError::ServiceNotFound)?;
        tracing::info!(service = %id, rooms = rooms.len(), "service deleted");
        self.count_rooms().await;
        for room in &rooms {
            self.nodes.destroy(room).await;
        }
        Ok(rooms)
    }
}
