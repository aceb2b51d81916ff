//! OWT's REST API with MAuth (issue 17), against the real binaries, with a
//! client that behaves on the wire as OWT's official one
//! (`conclave_stack::owt_rest`), a signature computed independently by
//! Python's `hmac`, and python-socketio clients logging in with REST tokens.

use base64::Engine;
use conclave_e2e::*;
use conclave_proto::management::v1 as pb;
use conclave_stack::owt_rest::{Answer, OwtRest, raw};
use serde_json::{Value, json};

const SUPER_KEY: &str = "e2e-super-service-key";
const SUPER_ID: &str = "5e0000000000000000000001";
const OWT_401: &str = "WWW-Authenticate: MAuth realm=\"http://marte3.dit.upm.es\"";

async fn rest_stack() -> Stack {
    stack_with_management(&[
        &format!("rest.super_service_key={SUPER_KEY}"),
        &format!("rest.super_service_id={SUPER_ID}"),
    ])
    .await
}

/// A new service made over gRPC, and a REST client signing as it.
async fn service(stack: &Stack, name: &str) -> OwtRest {
    let s = stack
        .management_client()
        .create_service(pb::CreateServiceRequest {
            name: name.into(),
            key: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(s.id.len(), 24);
    assert!(s.key.len() >= 32);
    OwtRest::new(&s.id, &s.key, &stack.management_rest)
}

fn assert_error(a: &Answer, status: u16, code: u64) {
    assert_eq!(a.status, status, "{a:?}");
    assert_eq!(a.json()["error"]["code"], code, "{a:?}");
    assert!(a.json()["error"]["message"].is_string(), "{a:?}");
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// The signature as Python's `hmac` computes it, from OWT's description.
fn python_signature(key: &str, message: &str) -> String {
    let python = std::env::var("CONCLAVE_PY_EIO4")
        .ok()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "python3".into());
    let script = "import base64,hmac,hashlib,sys\n\
                  h=hmac.new(sys.argv[1].encode(),sys.argv[2].encode(),hashlib.sha256).hexdigest()\n\
                  print(base64.b64encode(h.encode()).decode())";
    let out = std::process::Command::new(python)
        .args(["-c", script, key, message])
        .output()
        .expect("python runs");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[tokio::test]
async fn mauth_is_checked_as_owt_does_with_replays_refused() {
    let stack = rest_stack().await;
    let sample = service(&stack, "sample").await;
    // a header built by hand, signed by Python's hmac
    let (ts, cnonce) = (now_ms().to_string(), "0123456789abcdef");
    let signature = python_signature(&sample.key, &format!("{ts},{cnonce}"));
    assert_eq!(signature.len(), 88);
    let header = format!(
        "MAuth realm=http://marte3.dit.upm.es,mauth_signature_method=HMAC_SHA256,mauth_serviceid={},mauth_cnonce={cnonce},mauth_timestamp={ts},mauth_signature={signature}",
        sample.service_id
    );
    assert_eq!(header, sample.authorization(ts.parse().unwrap(), cnonce));
    let ok = sample
        .send_with("GET", "rooms?page=1&per_page=50", None, Some(&header))
        .await
        .unwrap();
    assert_eq!(ok.status, 200, "{ok:?}");
    assert_eq!(ok.json(), json!([]));
    // the same header again: a replay
    let replay = sample
        .send_with("GET", "rooms?page=1&per_page=50", None, Some(&header))
        .await
        .unwrap();
    assert_error(&replay, 401, 1101);
    assert_eq!(replay.json()["error"]["message"], OWT_401);
    assert_eq!(replay.header("www-authenticate"), None, "OWT sets none");
    // a wrong key, no header, another method, an old timestamp, an unknown service
    let wrong = OwtRest::new(&sample.service_id, "not-the-key", &sample.addr);
    assert_error(&wrong.get_rooms(1, 50).await.unwrap(), 401, 1101);
    let none = sample.send_with("GET", "rooms", None, None).await.unwrap();
    assert_error(&none, 401, 1101);
    let sha1 = sample
        .authorization(now_ms(), "c2")
        .replace("HMAC_SHA256", "HMAC_SHA1");
    assert_error(
        &sample
            .send_with("GET", "rooms", None, Some(&sha1))
            .await
            .unwrap(),
        401,
        1101,
    );
    let old = sample.authorization(now_ms() - 3_600_000, "c3");
    assert_error(
        &sample
            .send_with("GET", "rooms", None, Some(&old))
            .await
            .unwrap(),
        401,
        1101,
    );
    let stranger = OwtRest::new("5e00000000000000000000ff", &sample.key, &sample.addr);
    assert_error(&stranger.get_rooms(1, 50).await.unwrap(), 401, 1101);
    let garbage = sample
        .send_with("GET", "rooms", None, Some("MAuth ,,,=,=="))
        .await
        .unwrap();
    assert_error(&garbage, 401, 1101);
    // a header with the spaces OWT's parser would choke on is tolerated
    let spaced = sample
        .authorization(now_ms(), "c4")
        .replace(",mauth_", ", mauth_");
    assert_eq!(
        sample
            .send_with("GET", "rooms", None, Some(&spaced))
            .await
            .unwrap()
            .status,
        200
    );
    // the failures are counted by reason
    let metrics = raw(&stack.metrics_addr(1), "GET", "/metrics", None, "", None)
        .await
        .unwrap()
        .body;
    for reason in [
        "replayed",
        "signature",
        "missing",
        "method",
        "stale",
        "unknown_service",
    ] {
        assert!(
            metrics.contains(&format!(
                "management_rest_auth_failures_total{{reason=\"{reason}\"}}"
            )),
            "{reason} in {metrics}"
        );
    }
    assert!(metrics.contains("http_server_requests_total{route=\"GET /v1/rooms\",status=\"401\"}"));
}

#[tokio::test]
async fn rooms_tokens_and_media_routes_as_owt_serves_them() {
    let stack = rest_stack().await;
    let api = service(&stack, "sample").await;
    let other = service(&stack, "other").await;

    // create with OWT's defaults
    let created = api.create_room("sampleRoom", json!({})).await.unwrap();
    assert_eq!(created.status, 200, "{created:?}");
    assert!(
        created
            .header("content-type")
            .unwrap()
            .starts_with("application/json")
    );
    let room = created.json();
    let id = room["_id"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 24);
    assert_eq!(room["name"], "sampleRoom");
    assert_eq!(room["participantLimit"], -1);
    assert_eq!(room["inputLimit"], -1);
    assert_eq!(room["roles"].as_array().unwrap().len(), 5);
    assert_eq!(room["views"][0]["label"], "common");
    assert_eq!(room["mediaOut"]["video"]["format"][0]["codec"], "vp8");
    assert_eq!(room["notifying"]["participantActivities"], true);
    // get, by /v1 and /v1.1, with and without a trailing slash
    for path in [
        format!("/v1/rooms/{id}"),
        format!("/v1/rooms/{id}/"),
        format!("/v1.1/rooms/{id}"),
    ] {
        let a = api.send("GET", &path, None).await.unwrap();
        assert_eq!(a.json(), room, "{path}");
    }
    // list with pages
    for name in ["b", "c"] {
        assert_eq!(
            api.create_room(name, json!({"participantLimit": 2}))
                .await
                .unwrap()
                .status,
            200
        );
    }
    let names = |a: Answer| -> Vec<String> {
        a.json()
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        names(api.get_rooms(1, 50).await.unwrap()),
        ["sampleRoom", "b", "c"]
    );
    assert_eq!(names(api.get_rooms(2, 2).await.unwrap()), ["c"]);
    assert_eq!(
        names(api.send("GET", "rooms", None).await.unwrap()).len(),
        3
    );
    // update (PUT replaces the fields named)
    let updated = api
        .update_room(&id, &json!({"participantLimit": 10, "name": "renamed"}))
        .await
        .unwrap();
    assert_eq!(updated.json()["participantLimit"], 10);
    assert_eq!(updated.json()["name"], "renamed");
    assert_eq!(updated.json()["roles"], room["roles"]);

    // scope: another service sees none of it, nor gRPC's rooms
    assert_error(&other.get_room(&id).await.unwrap(), 404, 1003);
    assert_error(
        &other.create_token(&id, "eve", "presenter").await.unwrap(),
        404,
        1003,
    );
    assert_error(&other.get_participants(&id).await.unwrap(), 404, 1003);
    assert_error(&other.delete_room(&id).await.unwrap(), 404, 1003);
    assert_eq!(other.get_rooms(1, 50).await.unwrap().json(), json!([]));
    let grpc_room = stack.room(-1).await;
    assert_error(&api.get_room(&grpc_room).await.unwrap(), 404, 1003);

    // a token is raw text: base64 of OWT's JSON
    let t = api.create_token(&id, "alice", "presenter").await.unwrap();
    assert_eq!(t.status, 200, "{t:?}");
    assert!(!t.header("content-type").unwrap().contains("json"));
    let token: Value = serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(&t.body)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(token["host"], stack.portal_socket.as_str());
    assert!(token["tokenId"].is_string() && token["signature"].is_string());

    // bad input: 400/1201, and nothing happens
    let bad_json = raw(
        &api.addr,
        "POST",
        "/v1/rooms",
        Some("{\"name\": "),
        "application/json",
        Some(&api.authorization(now_ms(), "bad1")),
    )
    .await
    .unwrap();
    assert_error(&bad_json, 400, 1201);
    assert_eq!(
        bad_json.json()["error"]["message"],
        "Failed to parse JSON body"
    );
    for body in [
        json!({"name": 5}),
        json!({"name": "x", "options": "big"}),
        json!({"name": "x", "options": {"participantLimit": "ten"}}),
        json!({"name": "x", "options": {"roles": [{"role": 1}]}}),
        json!(["name"]),
    ] {
        assert_error(
            &api.send("POST", "rooms", Some(&body)).await.unwrap(),
            400,
            1201,
        );
    }
    let huge = json!({"name": "x".repeat(200 * 1024)});
    assert_error(
        &api.send("POST", "rooms", Some(&huge)).await.unwrap(),
        400,
        1201,
    );
    assert_error(&api.get_rooms(1, 1_000_000).await.unwrap(), 400, 1201);
    assert_error(
        &api.send("GET", "rooms?per_page=lots", None).await.unwrap(),
        400,
        1201,
    );
    let no_role = api.create_token(&id, "alice", "emperor").await.unwrap();
    assert_error(&no_role, 400, 1201);
    assert_eq!(no_role.json()["error"]["message"], "Name or role not valid");
    assert_error(
        &api.create_token(&id, "", "presenter").await.unwrap(),
        400,
        1201,
    );
    assert_error(
        &api.update_room(&id, &json!({"views": "none"}))
            .await
            .unwrap(),
        400,
        1201,
    );
    assert_eq!(
        names(api.get_rooms(1, 50).await.unwrap()).len(),
        3,
        "nothing was created"
    );
    assert_eq!(api.get_room(&id).await.unwrap().json()["name"], "renamed");

    // streams: none; other media routes: no media plane
    assert_eq!(api.get_streams(&id).await.unwrap().json(), json!([]));
    assert_error(
        &api.send("GET", &format!("rooms/{id}/streams/s1"), None)
            .await
            .unwrap(),
        404,
        1004,
    );
    for (method, path) in [
        ("PATCH", format!("rooms/{id}/streams/s1")),
        ("DELETE", format!("rooms/{id}/streams/s1")),
        ("POST", format!("rooms/{id}/streaming-ins/")),
        ("GET", format!("rooms/{id}/streaming-outs/")),
        ("POST", format!("rooms/{id}/recordings/")),
        ("DELETE", format!("rooms/{id}/sipcalls/c1")),
        ("GET", format!("rooms/{id}/analytics/")),
    ] {
        let a = api.send(method, &path, Some(&json!({}))).await.unwrap();
        assert_error(&a, 501, 1301);
        assert!(
            a.json()["error"]["message"]
                .as_str()
                .unwrap()
                .contains("No media plane"),
            "{a:?}"
        );
    }
    // unknown resources; a participant of a room nobody is in
    assert_error(
        &api.send("GET", &format!("rooms/{id}/nothing/"), None)
            .await
            .unwrap(),
        404,
        1001,
    );
    assert_error(
        &api.send("PATCH", &format!("rooms/{id}"), Some(&json!({})))
            .await
            .unwrap(),
        404,
        1001,
    );
    assert_error(
        &api.get_participant(&id, "nobody").await.unwrap(),
        404,
        1005,
    );
    assert_error(
        &api.drop_participant(&id, "nobody").await.unwrap(),
        404,
        1005,
    );
    assert_eq!(api.get_participants(&id).await.unwrap().json(), json!([]));
    let unknown = raw(&api.addr, "GET", "/v2/anything", None, "", None)
        .await
        .unwrap();
    assert_error(&unknown, 404, 1001);

    // CORS: OWT's headers, PUT allowed too; OPTIONS needs no MAuth
    let options = raw(&api.addr, "OPTIONS", "/v1/rooms", None, "", None)
        .await
        .unwrap();
    assert_eq!((options.status, options.body.as_str()), (200, "OK"));
    assert_eq!(options.header("access-control-allow-origin"), Some("*"));
    assert!(
        options
            .header("access-control-allow-methods")
            .unwrap()
            .contains("PUT")
    );
    assert_eq!(
        options.header("access-control-allow-headers"),
        Some("origin, authorization, content-type")
    );

    // delete
    let deleted = api.delete_room(&id).await.unwrap();
    assert_eq!(
        (deleted.status, deleted.body.as_str()),
        (200, "Room deleted")
    );
    assert_error(&api.get_room(&id).await.unwrap(), 404, 1003);
}

#[tokio::test]
async fn services_are_managed_by_the_super_service_only() {
    let stack = rest_stack().await;
    let root = OwtRest::new(SUPER_ID, SUPER_KEY, &stack.management_rest);
    let sample = service(&stack, "sample").await;
    // the super service creates one over REST, with its own key
    let made = root
        .send(
            "POST",
            "/services",
            Some(&json!({"name": "app2", "key": "app2-key"})),
        )
        .await
        .unwrap();
    assert_eq!(made.status, 200, "{made:?}");
    let app2 = OwtRest::new(made.json()["_id"].as_str().unwrap(), "app2-key", &root.addr);
    let room = app2.create_room("r", json!({})).await.unwrap().json();
    let list = root.send("GET", "/services/", None).await.unwrap().json();
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["superService", "sample", "app2"]);
    assert_eq!(list[2]["rooms"], json!([room["_id"]]));
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .all(|s| s.get("key").is_none())
    );
    // a service may see itself, not the others, and manage none
    let me = app2
        .send("GET", &format!("/services/{}", app2.service_id), None)
        .await
        .unwrap();
    assert_eq!(me.json()["name"], "app2");
    assert_error(
        &app2
            .send("GET", &format!("/services/{}", sample.service_id), None)
            .await
            .unwrap(),
        403,
        1102,
    );
    assert_error(
        &app2.send("GET", "/services", None).await.unwrap(),
        403,
        1102,
    );
    assert_error(
        &sample
            .send("POST", "/services", Some(&json!({"name": "x", "key": "y"})))
            .await
            .unwrap(),
        403,
        1102,
    );
    assert_error(
        &sample
            .send("DELETE", &format!("/services/{}", app2.service_id), None)
            .await
            .unwrap(),
        403,
        1102,
    );
    // bad bodies, duplicates, the super service itself
    assert_error(
        &root
            .send("POST", "/services", Some(&json!({"name": "x"})))
            .await
            .unwrap(),
        400,
        1201,
    );
    assert_error(
        &root
            .send(
                "POST",
                "/services",
                Some(&json!({"name": "app2", "key": "k"})),
            )
            .await
            .unwrap(),
        400,
        1201,
    );
    assert_error(
        &root
            .send("DELETE", &format!("/services/{SUPER_ID}"), None)
            .await
            .unwrap(),
        403,
        1102,
    );
    assert_error(
        &root
            .send("GET", "/services/5e00000000000000000000aa", None)
            .await
            .unwrap(),
        404,
        1002,
    );
    // deleting a service takes its rooms along, and its key stops working
    let gone = root
        .send("DELETE", &format!("/services/{}", app2.service_id), None)
        .await
        .unwrap();
    assert_eq!((gone.status, gone.body.as_str()), (200, "Service deleted"));
    assert_error(&app2.get_rooms(1, 50).await.unwrap(), 401, 1101);
    let grpc_list = stack
        .management_client()
        .list_rooms(pb::ListRoomsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .rooms;
    assert!(
        grpc_list
            .iter()
            .all(|r| r.id != room["_id"].as_str().unwrap())
    );
    // gRPC rooms belong to the super service, which sees them over REST
    let grpc_room = stack.room(-1).await;
    assert_eq!(root.get_room(&grpc_room).await.unwrap().status, 200);
    let listed = stack
        .management_client()
        .list_services(pb::ListServicesRequest {})
        .await
        .unwrap()
        .into_inner()
        .services;
    assert!(listed[0].is_super && listed[0].id == SUPER_ID);
    assert!(listed[0].rooms.contains(&grpc_room));
    assert!(listed.iter().all(|s| s.key.is_empty()));
}

#[tokio::test]
async fn a_rest_token_logs_in_and_rest_controls_and_drops_the_participant() {
    if !have_clients() {
        return;
    }
    let stack = rest_stack().await;
    let api = service(&stack, "sample").await;
    let room = api.create_room("live", json!({})).await.unwrap().json()["_id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut clients = Vec::new();
    for user in ["alice", "bob"] {
        let token = api.create_token(&room, user, "viewer").await.unwrap().body;
        let mut c = PyClient::connect(&stack, Flavor::Eio4Websocket).await;
        let ack = c.login_as(&token, "1.2", "JavaScript").await;
        assert_eq!(ack[0], "ok", "{ack:?}");
        assert_eq!(ack[1]["user"], user);
        clients.push(c);
    }
    let (alice, bob) = (clients[0].sid.clone(), clients[1].sid.clone());
    let list = api.get_participants(&room).await.unwrap().json();
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");
    let one = api.get_participant(&room, &alice).await.unwrap().json();
    assert_eq!(
        one,
        json!({"id": alice, "user": "alice", "role": "viewer",
               "permission": {"publish": {"audio": false, "video": false}, "subscribe": {"audio": true, "video": true}}})
    );
    // permissions change by OWT's patch
    let patched = api
        .update_participant(
            &room,
            &alice,
            &json!([
                {"op": "replace", "path": "/permission/publish", "value": {"audio": true, "video": true}},
                {"op": "replace", "path": "/permission/subscribe/video", "value": false}
            ]),
        )
        .await
        .unwrap();
    assert_eq!(patched.status, 200, "{patched:?}");
    assert_eq!(
        patched.json()["permission"],
        json!({"publish": {"audio": true, "video": true}, "subscribe": {"audio": true, "video": false}})
    );
    assert_eq!(
        api.get_participant(&room, &alice).await.unwrap().json()["permission"],
        patched.json()["permission"]
    );
    let bad = api
        .update_participant(
            &room,
            &alice,
            &json!([{"op": "remove", "path": "/permission/publish"}]),
        )
        .await
        .unwrap();
    assert_error(&bad, 400, 1201);
    assert_error(
        &api.update_participant(
            &room,
            "nobody",
            &json!([{"op": "replace", "path": "/permission/publish/audio", "value": true}]),
        )
        .await
        .unwrap(),
        404,
        1005,
    );
    // delete drops alice: she gets drop, bob sees her leave
    let dropped = api.drop_participant(&room, &alice).await.unwrap();
    assert_eq!((dropped.status, dropped.body.as_str()), (200, ""));
    assert!(
        clients[0].wait_event("drop", 5.0).await.is_some(),
        "alice gets drop"
    );
    let left = clients[1].wait_event("participant", 5.0).await.unwrap();
    assert_eq!(left, json!({"action": "leave", "data": alice}));
    let list = api.get_participants(&room).await.unwrap().json();
    assert_eq!(
        list,
        json!([api.get_participant(&room, &bob).await.unwrap().json()])
    );
    // deleting the live room destroys it: bob is dropped too
    assert_eq!(api.delete_room(&room).await.unwrap().body, "Room deleted");
    assert!(
        clients[1].wait_event("drop", 10.0).await.is_some(),
        "bob gets drop"
    );
    for c in clients {
        c.quit().await;
    }
}
