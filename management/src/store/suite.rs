//! The suite every [`Store`] passes: SQLite in this crate's unit tests,
//! PostgreSQL in the end-to-end tests against a real server. Each check
//! gets a fresh, empty store from the caller and panics on a failure.

use super::{Origin, Store, Taken, TokenRecord};
use crate::room::Room;
use crate::services::StoredService;
use std::future::Future;
use std::sync::Arc;

const LIFE: i64 = 180_000;

fn room(name: &str) -> Room {
    Room::with_defaults(name.into())
}

fn token(id: &str, room: &str, created_ms: i64) -> TokenRecord {
    TokenRecord {
        id: id.into(),
        code: "123".into(),
        user: "alice".into(),
        role: "presenter".into(),
        room_id: room.into(),
        origin: Origin {
            isp: "isp".into(),
            region: "region".into(),
        },
        host: "localhost:8080".into(),
        secure: false,
        created_ms,
    }
}

fn service(id: &str, name: &str) -> StoredService {
    StoredService {
        id: id.into(),
        name: name.into(),
        sealed_key: format!("sealed-{id}"),
    }
}

/// Run every check, each on a store `fresh` makes.
pub async fn run<F, Fut>(fresh: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
    rooms_crud_in_creation_order(fresh().await.as_ref()).await;
    services_own_rooms_and_take_them_along(fresh().await.as_ref()).await;
    a_token_is_taken_once(fresh().await.as_ref()).await;
    an_old_token_is_expired_and_gone_and_others_are_purged(fresh().await.as_ref()).await;
    deleting_a_room_deletes_its_tokens(fresh().await.as_ref()).await;
    tokens_are_listed_oldest_first(fresh().await.as_ref()).await;
    concurrent_takers_get_a_token_once(fresh().await).await;
    copying_moves_everything_once(fresh().await.as_ref(), fresh().await.as_ref()).await;
}

async fn rooms_crud_in_creation_order(s: &dyn Store) {
    let a = room("a");
    let mut b = room("b");
    s.insert_room(&a).await.unwrap();
    s.insert_room(&b).await.unwrap();
    assert!(s.insert_room(&a).await.is_err(), "room ids are unique");
    assert_eq!(s.room_count().await.unwrap(), 2);
    assert_eq!(s.room(&a.id).await.unwrap().unwrap(), a);
    assert_eq!(s.room("nope").await.unwrap(), None);
    assert_eq!(
        s.rooms(None, 0, None).await.unwrap(),
        [a.clone(), b.clone()]
    );
    assert_eq!(s.rooms(None, 1, Some(1)).await.unwrap(), [b.clone()]);
    assert_eq!(s.rooms(None, 5, Some(1)).await.unwrap(), []);
    b.name = "bee".into();
    assert!(s.update_room(&b).await.unwrap());
    assert_eq!(s.room(&b.id).await.unwrap().unwrap().name, "bee");
    assert!(s.delete_room(&a.id).await.unwrap());
    assert!(!s.delete_room(&a.id).await.unwrap());
    assert!(!s.update_room(&a).await.unwrap());
    assert_eq!(s.rooms(None, 0, None).await.unwrap(), [b]);
    assert_eq!(s.room_count().await.unwrap(), 1);
}

async fn services_own_rooms_and_take_them_along(s: &dyn Store) {
    assert!(s.insert_service(&service("s1", "one")).await.unwrap());
    assert!(s.insert_service(&service("s2", "two")).await.unwrap());
    assert!(
        !s.insert_service(&service("s3", "one")).await.unwrap(),
        "names are unique"
    );
    assert!(
        !s.insert_service(&service("s1", "uno")).await.unwrap(),
        "ids are unique"
    );
    assert_eq!(s.service("s1").await.unwrap(), Some(service("s1", "one")));
    assert_eq!(s.service("nope").await.unwrap(), None);
    assert_eq!(
        s.services().await.unwrap(),
        [service("s1", "one"), service("s2", "two")]
    );
    let mut mine = room("mine");
    mine.service = "s1".into();
    let mut theirs = room("theirs");
    theirs.service = "s2".into();
    let default = room("default");
    for r in [&mine, &theirs, &default] {
        s.insert_room(r).await.unwrap();
    }
    s.insert_token(&token("t", &mine.id, 0)).await.unwrap();
    assert_eq!(s.rooms(Some("s1"), 0, None).await.unwrap(), [mine.clone()]);
    assert_eq!(
        s.rooms(Some(""), 0, None).await.unwrap(),
        std::slice::from_ref(&default)
    );
    assert_eq!(s.rooms(None, 0, None).await.unwrap().len(), 3);
    assert_eq!(
        s.delete_service("s1").await.unwrap(),
        Some(vec![mine.id.clone()])
    );
    assert_eq!(s.delete_service("s1").await.unwrap(), None);
    assert_eq!(s.room(&mine.id).await.unwrap(), None);
    assert_eq!(s.take_token("t", 1, LIFE).await.unwrap(), Taken::Unknown);
    assert_eq!(s.rooms(None, 0, None).await.unwrap(), [theirs, default]);
}

async fn a_token_is_taken_once(s: &dyn Store) {
    s.insert_token(&token("t1", "r", 1000)).await.unwrap();
    assert!(
        s.insert_token(&token("t1", "r", 1000)).await.is_err(),
        "token ids are unique"
    );
    assert_eq!(
        s.take_token("t1", 2000, LIFE).await.unwrap(),
        Taken::Token(Box::new(token("t1", "r", 1000)))
    );
    assert_eq!(
        s.take_token("t1", 2000, LIFE).await.unwrap(),
        Taken::Unknown
    );
    assert_eq!(
        s.take_token("garbage'; DROP TABLE tokens;--", 2000, LIFE)
            .await
            .unwrap(),
        Taken::Unknown
    );
}

async fn an_old_token_is_expired_and_gone_and_others_are_purged(s: &dyn Store) {
    s.insert_token(&token("old", "r", 0)).await.unwrap();
    s.insert_token(&token("older", "r", 0)).await.unwrap();
    s.insert_token(&token("fresh", "r", 100_000)).await.unwrap();
    // exactly at the lifetime: still valid
    assert!(matches!(
        s.take_token("old", LIFE, LIFE).await.unwrap(),
        Taken::Token(_)
    ));
    assert_eq!(
        s.take_token("older", LIFE + 1, LIFE).await.unwrap(),
        Taken::Expired
    );
    assert_eq!(
        s.take_token("older", LIFE + 1, LIFE).await.unwrap(),
        Taken::Unknown,
        "an expired token is gone once refused"
    );
    s.insert_token(&token("stale", "r", 0)).await.unwrap();
    // consuming another token purges the stale one
    assert!(matches!(
        s.take_token("fresh", LIFE + 1, LIFE).await.unwrap(),
        Taken::Token(_)
    ));
    assert_eq!(
        s.take_token("stale", LIFE + 1, LIFE).await.unwrap(),
        Taken::Unknown
    );
}

async fn deleting_a_room_deletes_its_tokens(s: &dyn Store) {
    let r = room("r");
    let other = room("other");
    s.insert_room(&r).await.unwrap();
    s.insert_room(&other).await.unwrap();
    s.insert_token(&token("t", &r.id, 0)).await.unwrap();
    s.insert_token(&token("kept", &other.id, 0)).await.unwrap();
    assert!(s.delete_room(&r.id).await.unwrap());
    assert_eq!(s.take_token("t", 1, LIFE).await.unwrap(), Taken::Unknown);
    assert!(matches!(
        s.take_token("kept", 1, LIFE).await.unwrap(),
        Taken::Token(_)
    ));
}

async fn tokens_are_listed_oldest_first(s: &dyn Store) {
    assert_eq!(s.tokens().await.unwrap(), []);
    s.insert_token(&token("b", "r", 20)).await.unwrap();
    s.insert_token(&token("a", "r", 10)).await.unwrap();
    assert_eq!(
        s.tokens().await.unwrap(),
        [token("a", "r", 10), token("b", "r", 20)]
    );
    s.take_token("a", 30, LIFE).await.unwrap();
    assert_eq!(s.tokens().await.unwrap(), [token("b", "r", 20)]);
}

async fn concurrent_takers_get_a_token_once(s: Arc<dyn Store>) {
    for i in 0..20 {
        s.insert_token(&token(&format!("race{i}"), "r", 1000))
            .await
            .unwrap();
    }
    let mut takers = Vec::new();
    for t in 0..8 {
        let s = s.clone();
        takers.push(tokio::spawn(async move {
            let mut won = Vec::new();
            for i in 0..20 {
                let id = format!("race{}", (i + t) % 20);
                if let Taken::Token(tok) = s.take_token(&id, 2000, LIFE).await.unwrap() {
                    won.push(tok.id);
                }
            }
            won
        }));
    }
    let mut all = Vec::new();
    for t in takers {
        all.extend(t.await.unwrap());
    }
    all.sort();
    let mut expected: Vec<String> = (0..20).map(|i| format!("race{i}")).collect();
    expected.sort();
    assert_eq!(all, expected, "each token exactly once");
}

async fn copying_moves_everything_once(from: &dyn Store, to: &dyn Store) {
    from.insert_service(&service("s1", "one")).await.unwrap();
    let mut owned = room("owned");
    owned.service = "s1".into();
    let plain = room("plain");
    from.insert_room(&owned).await.unwrap();
    from.insert_room(&plain).await.unwrap();
    from.insert_token(&token("t1", &plain.id, 5)).await.unwrap();
    from.insert_token(&token("t2", &owned.id, 6)).await.unwrap();
    from.take_token("t1", 7, LIFE).await.unwrap();
    let report = super::copy(from, to).await.unwrap();
    assert_eq!(
        (report.services, report.rooms, report.tokens, report.skipped),
        (1, 2, 1, 0)
    );
    assert_eq!(to.services().await.unwrap(), [service("s1", "one")]);
    assert_eq!(
        to.rooms(None, 0, None).await.unwrap(),
        [owned.clone(), plain]
    );
    assert_eq!(to.tokens().await.unwrap(), [token("t2", &owned.id, 6)]);
    assert_eq!(to.rooms(Some("s1"), 0, None).await.unwrap(), [owned]);
    // again: nothing new, nothing doubled
    let again = super::copy(from, to).await.unwrap();
    assert_eq!(
        (again.services, again.rooms, again.tokens, again.skipped),
        (0, 0, 0, 4)
    );
    assert!(matches!(
        to.take_token("t2", 8, LIFE).await.unwrap(),
        Taken::Token(_)
    ));
}
