//! Tests of the cache's pages and event window against a real store.

use super::*;
use crate::store::sqlite::{SqliteOptions, SqliteStore};
use crate::store::PutRequest;
use serde_json::json;

const PREFIX: &str = "/registry/configmaps/";

async fn put(store: &Arc<dyn Store>, name: &str) -> Revision {
    let value = json!({"metadata": {"name": name, "namespace": "a"}});
    let req = PutRequest {
        key: format!("{PREFIX}a/{name}").into_bytes(),
        value: serde_json::to_vec(&value).unwrap(),
        ..Default::default()
    };
    store.put(req).await.unwrap().revision
}

fn names(page: &CachePage) -> Vec<&str> {
    page.objects.iter().filter_map(|o| meta::meta_str(o, "name")).collect()
}

#[tokio::test]
async fn pages_show_one_revision_until_the_objects_change() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("state.db"), SqliteOptions::default()).unwrap();
    let store: Arc<dyn Store> = Arc::new(store);
    let mut rev = 0;
    for name in ["c0", "c1", "c2", "c3", "c4"] {
        rev = put(&store, name).await;
    }
    let cache = WatchCache::start(store.clone(), PREFIX.to_string());
    assert!(cache.wait_for(rev, Duration::from_secs(10)).await);
    let ns = format!("{PREFIX}a/");
    let first = cache.page(None, &ns, &ns, 2, |_| true).unwrap();
    assert_eq!((names(&first), first.revision, first.remaining), (vec!["c0", "c1"], rev, 3));
    let next = format!("{}\0", first.next.clone().unwrap());
    let second = cache.page(Some(rev), &ns, &next, 2, |_| true).unwrap();
    assert_eq!(names(&second), ["c2", "c3"]);
    let odd = |o: &Value| meta::meta_str(o, "name").is_some_and(|n| n.ends_with(['1', '3']));
    let filtered = cache.page(Some(rev), &ns, &ns, 0, odd).unwrap();
    assert_eq!((names(&filtered), filtered.next.as_deref()), (vec!["c1", "c3"], None));
    // The last page has no continuation.
    let last = cache.page(Some(rev), &ns, &format!("{ns}c3\0"), 2, |_| true).unwrap();
    assert_eq!((names(&last), last.next.as_deref()), (vec!["c4"], None));
    // A revision the cache has not reached, or whose objects changed since, is the store's.
    assert!(cache.page(Some(rev + 1), &ns, &ns, 2, |_| true).is_none());
    let later = put(&store, "c5").await;
    assert!(cache.wait_for(later, Duration::from_secs(10)).await);
    assert!(cache.page(Some(rev), &ns, &next, 2, |_| true).is_none());
    assert_eq!(cache.page(Some(later), &ns, &ns, 0, |_| true).unwrap().objects.len(), 6);
    // The window has the event since `rev`.
    let (at, events) = cache.events_since(rev).unwrap();
    assert_eq!((at, events.len(), events[0].key.as_str()), (later, 1, "/registry/configmaps/a/c5"));
    assert!(cache.events_since(rev - 1).is_none(), "before the initial list");
}
