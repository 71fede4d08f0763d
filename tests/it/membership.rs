//! Conductors sharing PostgreSQL: registration at start, heartbeats, a clean stop that
//! unregisters, dead conductors, the hash ring's split of the nodes, `GET /v1/conductors`
//! (paged) and `ironboot conductor list`.

use ironboot::clock::Clock;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::ironboot_bin;
use crate::support::server::{TestServer, drop_postgres_db, fresh_postgres_db, random_mac};

async fn conductors(s: &TestServer) -> Vec<Value> {
    let (st, body) = s.call(Method::GET, "/v1/conductors", None).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    body["conductors"].as_array().unwrap().clone()
}

fn named<'a>(list: &'a [Value], host: &str) -> Option<&'a Value> {
    list.iter().find(|c| c["hostname"] == host)
}

#[tokio::test]
async fn conductors_register_split_the_nodes_and_a_clean_stop_hands_them_over() {
    let url = fresh_postgres_db().await;
    let a = TestServer::start_on(&url, "[DEFAULT]\nhost = cond-a\n").await;
    let b = TestServer::start_on(&url, "[DEFAULT]\nhost = cond-b\n").await;
    for _ in 0..40 {
        let (st, n) = a
            .call(
                Method::POST,
                "/v1/nodes",
                Some(json!({"macs": [random_mac()]})),
            )
            .await;
        assert_eq!(st, StatusCode::CREATED, "{n}");
    }

    // both registered at start; the ring splits the 40 nodes between them
    let list = conductors(&a).await;
    assert_eq!(list.len(), 2, "{list:?}");
    let (ca, cb) = (
        named(&list, "cond-a").unwrap(),
        named(&list, "cond-b").unwrap(),
    );
    assert!(ca["alive"] == true && cb["alive"] == true, "{list:?}");
    let (na, nb) = (ca["nodes"].as_u64().unwrap(), cb["nodes"].as_u64().unwrap());
    assert_eq!(na + nb, 40);
    assert!(na > 5 && nb > 5, "a split, not all on one: {na}/{nb}");
    assert_eq!(conductors(&b).await, list, "any conductor answers the same");

    // paged like nodes
    let (st, page) = a.call(Method::GET, "/v1/conductors?limit=1", None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(page["conductors"].as_array().unwrap().len(), 1);
    let next = page["next"].as_str().unwrap().to_string();
    assert!(next.contains("marker=cond%2Da"), "{next}");
    let (_, rest) = a.call(Method::GET, &next, None).await;
    assert_eq!(rest["conductors"][0]["hostname"], "cond-b");
    assert!(rest.get("next").is_none());
    let (st, bad) = a
        .call(Method::GET, "/v1/conductors?marker=nobody", None)
        .await;
    assert_eq!(
        (st, bad["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_query"))
    );

    // a clean stop unregisters: a owns every node at once
    b.stop().await;
    let list = conductors(&a).await;
    assert_eq!(list.len(), 1);
    assert_eq!(named(&list, "cond-a").unwrap()["nodes"], 40);

    // a conductor silent for longer than heartbeat_timeout (60 s) is dead and owns nothing
    let now = a.clock.now_ms();
    a.service
        .store()
        .register_conductor("cond-dead", "http://10.0.0.9:8080", now - 61_000)
        .await
        .unwrap();
    let list = conductors(&a).await;
    let dead = named(&list, "cond-dead").unwrap();
    assert_eq!(
        (dead["alive"].as_bool(), dead["nodes"].as_u64()),
        (Some(false), Some(0))
    );
    // while a heartbeats, time passing does not make it dead
    a.clock.advance_secs(120);
    a.service.heartbeat().await.unwrap();
    let list = conductors(&a).await;
    assert_eq!(named(&list, "cond-a").unwrap()["alive"], true);
    assert_eq!(
        a.metric("ironboot_conductors{state=\"alive\"}").await,
        Some(1.0)
    );
    assert_eq!(
        a.metric("ironboot_conductors{state=\"dead\"}").await,
        Some(1.0)
    );
    assert_eq!(
        a.metric("ironboot_nodes_owned{conductor=\"cond-a\"}").await,
        Some(40.0)
    );

    // the CLI shows the same
    // (a child process: the in-process server must keep answering while it runs)
    let out = tokio::process::Command::new(ironboot_bin())
        .args(["conductor", "list", "--url", &a.api])
        .env_remove("IRONBOOT_URL")
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8(out.stdout).unwrap();
    let row = |host: &str| {
        table
            .lines()
            .find(|l| l.starts_with(host))
            .unwrap_or_else(|| panic!("{host} in {table}"))
            .split_whitespace()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(row("cond-a")[3..], ["yes".to_string(), "40".into()]);
    assert_eq!(row("cond-dead")[3..], ["no".to_string(), "0".into()]);

    a.stop().await;
    drop_postgres_db(&url).await;
}

/// A conductor died in the middle of a preparation, holding the node's reservation: a live
/// conductor cannot take the node while the dead one counts as alive; once it is dead, the
/// next ring refresh frees the reservation and the new owner finishes the stored request
/// (fetching the images into its own cache, then naming its own http_url).
#[tokio::test]
async fn a_dead_conductors_reservation_is_freed_and_its_preparation_finished() {
    use ironboot::node::{Pending, State, Target};
    let origin = crate::support::origin::Origin::start().await;
    origin.put("k", b"kernel bytes");
    origin.put("r", b"ramdisk bytes");
    let url = fresh_postgres_db().await;
    let a = TestServer::start_on(
        &url,
        "[DEFAULT]\nhost = cond-a\n[pxe]\nhttp_passthrough = false\n",
    )
    .await;
    let store = a.service.store().clone();
    let now = a.clock.now_ms();
    store
        .register_conductor("cond-gone", "http://10.0.0.9:8080", now)
        .await
        .unwrap();
    a.service.rebalance().await.unwrap();
    let (st, n) = a
        .call(
            Method::POST,
            "/v1/nodes",
            Some(json!({"macs": [random_mac()], "driver_info": {
                "deploy_kernel": origin.url_of("k"), "deploy_ramdisk": origin.url_of("r")}})),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{n}");
    let uuid = n["uuid"].as_str().unwrap().to_string();
    // the answer to a create names the node's conductor, as a read does
    let (_, read) = a
        .call(Method::GET, &format!("/v1/nodes/{uuid}"), None)
        .await;
    assert!(n["conductor"].is_string(), "{n}");
    assert_eq!(n["conductor"], read["conductor"]);
    let (_, patched) = a
        .call(
            Method::PATCH,
            &format!("/v1/nodes/{uuid}"),
            Some(json!({"name": "gone-node"})),
        )
        .await;
    assert_eq!(patched["conductor"], read["conductor"], "{patched}");

    // what cond-gone left: a stored request it was working on, under its reservation
    let mut node = store.get_node(&uuid).await.unwrap();
    let prepared = a
        .service
        .boot()
        .prepare(&node, Target::Deploy, a.clock.now())
        .await
        .unwrap()
        .unwrap();
    node.state = State::Preparing;
    node.pending = Some(Pending {
        id: uuid::Uuid::new_v4(),
        target: Target::Deploy,
        prepared,
    });
    store.update_node(&node).await.unwrap();
    let alive = ["cond-a".to_string(), "cond-gone".to_string()];
    assert!(
        store
            .reserve(node.uuid, "cond-gone", &alive, now)
            .await
            .unwrap()
    );
    assert!(
        !store
            .reserve(node.uuid, "cond-a", &alive, now)
            .await
            .unwrap(),
        "a reservation of a live conductor is not taken"
    );
    assert_eq!(
        store.get_node(&uuid).await.unwrap().reservation.as_deref(),
        Some("cond-gone")
    );

    // cond-gone falls silent for longer than heartbeat_timeout (60 s)
    a.clock.advance_secs(61);
    a.service.heartbeat().await.unwrap();
    let pass = a.service.rebalance().await.unwrap();
    assert_eq!(pass.alive, ["cond-a"]);
    assert!(pass.freed >= 1, "{pass:?}");
    crate::support::wait_for("the new owner to finish the preparation", || async {
        let (_, n) = a
            .call(Method::GET, &format!("/v1/nodes/{uuid}"), None)
            .await;
        n["state"] == "ready" && n.get("reservation").is_none()
    })
    .await;
    let (_, n) = a
        .call(Method::GET, &format!("/v1/nodes/{uuid}"), None)
        .await;
    assert_eq!(
        (n["target"].as_str(), n["conductor"].as_str()),
        (Some("deploy"), Some("cond-a")),
        "{n}"
    );
    let text = a
        .request(Method::GET, &format!("/v1/nodes/{uuid}/ipxe"), None, None)
        .await
        .text()
        .await
        .unwrap();
    let http_url = a.service.boot().http_url().to_string();
    assert!(
        text.contains(&format!("{http_url}/{uuid}/deploy_kernel")),
        "{text}"
    );
    let on_disk = a.http_root().join(&uuid).join("deploy_kernel");
    assert_eq!(std::fs::read(on_disk).unwrap(), b"kernel bytes");
    a.stop().await;
    drop_postgres_db(&url).await;
}
