//! Lists and watches of the real `skerry server`: selectors, paging with continue tokens,
//! resourceVersion semantics, and the watch stream (start points, selector transitions,
//! bookmarks, watch-list, timeouts).

mod common;

use std::time::Duration;

use common::server::SkerryServer;
use serde_json::{json, Value};

const CMS: &str = "/api/v1/namespaces/default/configmaps";
const WAIT: Duration = Duration::from_secs(10);

fn configmap(name: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": labels}})
}

fn names(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn label_and_field_selectors_and_paging() {
    // The test counts every ConfigMap in its namespace: no `kube-root-ca.crt` publisher.
    let server = SkerryServer::start_with(&["--disable-controllers", "root-ca-cert-publisher"]);
    let api = server.admin();
    for i in 0..7 {
        let labels = json!({"app": if i % 2 == 0 { "even" } else { "odd" }, "idx": i.to_string()});
        let (code, _) = api.json("POST", CMS, Some(&configmap(&format!("cm{i}"), labels))).await;
        assert_eq!(code, 201);
    }
    let q = |s: &str| {
        format!(
            "{CMS}?labelSelector={}",
            s.replace(' ', "%20").replace('=', "%3D").replace('!', "%21")
        )
    };
    let (_, list) = api.json("GET", &q("app=even"), None).await;
    assert_eq!(names(&list), ["cm0", "cm2", "cm4", "cm6"]);
    let (_, list) = api.json("GET", &q("app!=even,idx notin (1,3)"), None).await;
    assert_eq!(names(&list), ["cm5"]);
    let (_, list) = api.json("GET", &q("idx in (0,6),app==even"), None).await;
    assert_eq!(names(&list), ["cm0", "cm6"]);
    let (_, list) = api.json("GET", &q("!idx"), None).await;
    assert_eq!(names(&list), Vec::<String>::new());
    let (_, list) =
        api.json("GET", &format!("{CMS}?fieldSelector=metadata.name%3Dcm3"), None).await;
    assert_eq!(names(&list), ["cm3"]);
    let (_, list) = api
        .json("GET", "/api/v1/configmaps?fieldSelector=metadata.namespace%21%3Ddefault", None)
        .await;
    assert!(names(&list).iter().all(|n| !n.starts_with("cm")));

    // Paging: limit + continue walk every item exactly once, at one revision.
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut revision = None;
    loop {
        let path = if token.is_empty() {
            format!("{CMS}?limit=3")
        } else {
            format!("{CMS}?limit=3&continue={token}")
        };
        let (code, page) = api.json("GET", &path, None).await;
        assert_eq!(code, 200, "{page}");
        assert!(names(&page).len() <= 3);
        seen.extend(names(&page));
        let rv = page["metadata"]["resourceVersion"].as_str().unwrap().to_string();
        assert_eq!(
            revision.get_or_insert(rv.clone()),
            &rv,
            "every page is served at the first page's revision"
        );
        if seen.len() == 3 {
            // Writes between pages do not show up in the remaining pages.
            api.json("POST", CMS, Some(&configmap("cm99", json!({})))).await;
            assert_eq!(page["metadata"]["remainingItemCount"], 4);
        }
        match page["metadata"]["continue"].as_str() {
            Some(next) if !next.is_empty() => {
                token = next.replace('=', "%3D").replace('+', "%2B").replace('/', "%2F")
            }
            _ => break,
        }
    }
    assert_eq!(seen, ["cm0", "cm1", "cm2", "cm3", "cm4", "cm5", "cm6"]);
    // Paging with a selector fills pages with matches only.
    let (_, page) = api.json("GET", &format!("{}&limit=2", q("app=odd")), None).await;
    assert_eq!(names(&page), ["cm1", "cm3"]);
    assert!(page["metadata"]["continue"].is_string());
    // A malformed continue token is a 400.
    let (code, body) = api.json("GET", &format!("{CMS}?limit=2&continue=garbage"), None).await;
    assert_eq!(code, 400, "{body}");
    // resourceVersion=0 serves from the cache, and ignores limit as the reference does.
    let (code, list) = api.json("GET", &format!("{CMS}?resourceVersion=0&limit=2"), None).await;
    assert_eq!(code, 200);
    assert_eq!(names(&list).len(), 8);
    // Exact reads an older revision.
    let rv = revision.unwrap();
    let (code, list) = api
        .json("GET", &format!("{CMS}?resourceVersion={rv}&resourceVersionMatch=Exact"), None)
        .await;
    assert_eq!(code, 200, "{list}");
    assert_eq!(names(&list).len(), 7);
    let (code, _) = api.json("GET", &format!("{CMS}?resourceVersionMatch=Exact"), None).await;
    assert_eq!(code, 400);
}

#[tokio::test]
async fn watch_from_resource_version_with_selector_transitions() {
    // The test counts every ConfigMap in its namespace: no `kube-root-ca.crt` publisher.
    let server = SkerryServer::start_with(&["--disable-controllers", "root-ca-cert-publisher"]);
    let api = server.admin();
    let (_, list) = api.json("GET", CMS, None).await;
    let rv = list["metadata"]["resourceVersion"].as_str().unwrap().to_string();

    let (code, created) = api.json("POST", CMS, Some(&configmap("w", json!({"app": "a"})))).await;
    assert_eq!(code, 201);
    let mut obj = created.clone();
    obj["metadata"]["labels"]["app"] = json!("b");
    let (_, moved) = api.json("PUT", &format!("{CMS}/w"), Some(&obj)).await;

    // From the list's resourceVersion: the creation and the modification are replayed.
    let (code, mut all) = api.watch(&format!("{CMS}?watch=1&resourceVersion={rv}")).await;
    assert_eq!(code, 200);
    let e = all.next_event(WAIT).await.unwrap();
    assert_eq!(
        (e["type"].as_str(), e["object"]["metadata"]["name"].as_str()),
        (Some("ADDED"), Some("w"))
    );
    assert_eq!(e["object"]["kind"], "ConfigMap");
    assert_eq!(e["object"]["metadata"]["resourceVersion"], created["metadata"]["resourceVersion"]);
    let e = all.next_event(WAIT).await.unwrap();
    assert_eq!(e["type"], "MODIFIED");
    assert_eq!(e["object"]["metadata"]["resourceVersion"], moved["metadata"]["resourceVersion"]);

    // A selector watch sees an object leave (DELETED) and enter (ADDED) its selection.
    let (_, mut only_b) = api.watch(&format!("{CMS}?watch=1&labelSelector=app%3Db")).await;
    let e = only_b.next_event(WAIT).await.unwrap();
    assert_eq!(e["type"], "ADDED", "initial state of a watch without resourceVersion");
    let mut obj = moved.clone();
    obj["metadata"]["labels"]["app"] = json!("c");
    let (_, left) = api.json("PUT", &format!("{CMS}/w"), Some(&obj)).await;
    let e = only_b.next_event(WAIT).await.unwrap();
    assert_eq!(e["type"], "DELETED");
    assert_eq!(e["object"]["metadata"]["labels"]["app"], "c");
    let mut obj = left.clone();
    obj["metadata"]["labels"]["app"] = json!("b");
    api.json("PUT", &format!("{CMS}/w"), Some(&obj)).await;
    let e = only_b.next_event(WAIT).await.unwrap();
    assert_eq!(e["type"], "ADDED");

    // Deletion reaches the unfiltered watch with the last state.
    api.json("DELETE", &format!("{CMS}/w"), None).await;
    let mut kinds = Vec::new();
    while let Some(e) = all.next_event(WAIT).await {
        kinds.push(e["type"].as_str().unwrap().to_string());
        if e["type"] == "DELETED" {
            assert_eq!(e["object"]["metadata"]["name"], "w");
            break;
        }
    }
    assert_eq!(kinds, ["MODIFIED", "MODIFIED", "DELETED"]);
}

#[tokio::test]
async fn watch_list_bookmarks_and_timeout() {
    // The test counts every ConfigMap in its namespace: no `kube-root-ca.crt` publisher.
    let server = SkerryServer::start_with(&["--disable-controllers", "root-ca-cert-publisher"]);
    let api = server.admin();
    for name in ["x1", "x2"] {
        api.json("POST", CMS, Some(&configmap(name, json!({})))).await;
    }
    // sendInitialEvents: the state, then a bookmark marking its end, then live events.
    let (code, mut stream) = api
        .watch(&format!("{CMS}?watch=1&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true"))
        .await;
    assert_eq!(code, 200);
    let mut initial = Vec::new();
    let end = loop {
        let e = stream.next(WAIT).await.expect("events");
        if e["type"] == "BOOKMARK" {
            break e;
        }
        assert_eq!(e["type"], "ADDED");
        initial.push(e["object"]["metadata"]["name"].as_str().unwrap().to_string());
    };
    assert_eq!(initial, ["x1", "x2"]);
    assert_eq!(end["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"], "true");
    api.json("POST", CMS, Some(&configmap("x3", json!({})))).await;
    let e = stream.next_event(WAIT).await.unwrap();
    assert_eq!(
        (e["type"].as_str(), e["object"]["metadata"]["name"].as_str()),
        (Some("ADDED"), Some("x3"))
    );
    // Watch-list needs NotOlderThan.
    let (code, body) =
        api.json("GET", &format!("{CMS}?watch=1&sendInitialEvents=true"), None).await;
    assert_eq!(code, 400, "{body}");

    // timeoutSeconds ends the stream.
    let (_, mut short) =
        api.watch(&format!("{CMS}?watch=1&resourceVersion=0&timeoutSeconds=1")).await;
    let mut events = 0;
    while short.next(WAIT).await.is_some() {
        events += 1;
    }
    assert_eq!(events, 3, "the three ADDED events, then the end of the stream");

    // Table output inside watch events.
    let resp = api
        .request_with(
            "GET",
            &format!("{CMS}?watch=1&resourceVersion=0&timeoutSeconds=1"),
            &[("accept", "application/json;as=Table;v=v1;g=meta.k8s.io")],
            b"",
        )
        .await
        .unwrap();
    let first: Value =
        serde_json::from_slice(resp.body.split(|b| *b == b'\n').next().unwrap()).unwrap();
    assert_eq!(first["object"]["kind"], "Table");
    assert_eq!(first["object"]["rows"][0]["cells"][0], "x1");
}
