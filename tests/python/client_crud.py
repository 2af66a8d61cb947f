"""The official Kubernetes Python client against a running skerry server.

Usage: python3 client_crud.py KUBECONFIG NAMESPACE
Exercises CRUD, list with selectors and paging, watch from a resourceVersion, 409 on a stale
update, and patches; prints one line per check and exits non-zero on the first failure.
"""

import sys

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException


def check(cond, what):
    if not cond:
        print(f"FAIL: {what}")
        sys.exit(1)
    print(f"ok: {what}")


def main():
    kubeconfig, ns = sys.argv[1], sys.argv[2]
    config.load_kube_config(config_file=kubeconfig)
    v1 = client.CoreV1Api()

    v1.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    created = []
    for i in range(5):
        cm = client.V1ConfigMap(
            metadata=client.V1ObjectMeta(name=f"cm{i}", labels={"parity": "even" if i % 2 == 0 else "odd"}),
            data={"i": str(i)},
        )
        created.append(v1.create_namespaced_config_map(ns, cm))
    check(all(c.metadata.uid for c in created), "create sets uid")

    got = v1.read_namespaced_config_map("cm1", ns)
    check(got.data == {"i": "1"}, "read")

    evens = v1.list_namespaced_config_map(ns, label_selector="parity=even")
    check(sorted(c.metadata.name for c in evens.items) == ["cm0", "cm2", "cm4"], "label selector")
    named = v1.list_namespaced_config_map(ns, field_selector="metadata.name=cm3")
    check([c.metadata.name for c in named.items] == ["cm3"], "field selector")

    names, token, pages = [], None, 0
    while True:
        page = v1.list_namespaced_config_map(ns, limit=2, _continue=token)
        pages += 1
        names += [c.metadata.name for c in page.items]
        token = page.metadata._continue
        if not token:
            break
    check(names == [f"cm{i}" for i in range(5)] and pages == 3, "paging with limit/continue")

    start_rv = v1.list_namespaced_config_map(ns).metadata.resource_version
    stale = v1.read_namespaced_config_map("cm0", ns)
    fresh = v1.read_namespaced_config_map("cm0", ns)
    fresh.data = {"i": "changed"}
    v1.replace_namespaced_config_map("cm0", ns, fresh)
    stale.data = {"i": "stale"}
    try:
        v1.replace_namespaced_config_map("cm0", ns, stale)
        check(False, "stale update is refused")
    except ApiException as e:
        check(e.status == 409 and "Conflict" in e.body, "stale update is a 409 Conflict")

    v1.patch_namespaced_config_map("cm3", ns, {"data": {"smp": "1"}})
    check(v1.read_namespaced_config_map("cm3", ns).data == {"i": "3", "smp": "1"}, "strategic merge patch")
    v1.patch_namespaced_config_map(
        "cm1", ns, {"metadata": {"labels": {"patched": "yes"}}}, _content_type="application/merge-patch+json"
    )
    check(v1.read_namespaced_config_map("cm1", ns).metadata.labels.get("patched") == "yes", "merge patch")
    v1.patch_namespaced_config_map(
        "cm1", ns, [{"op": "replace", "path": "/data/i", "value": "json"}], _content_type="application/json-patch+json"
    )
    check(v1.read_namespaced_config_map("cm1", ns).data == {"i": "json"}, "json patch")
    v1.delete_namespaced_config_map("cm2", ns)
    try:
        v1.read_namespaced_config_map("cm2", ns)
        check(False, "deleted object is gone")
    except ApiException as e:
        check(e.status == 404, "deleted object is a 404")

    events = []
    w = watch.Watch()
    for ev in w.stream(v1.list_namespaced_config_map, ns, resource_version=start_rv, timeout_seconds=5):
        events.append((ev["type"], ev["object"].metadata.name))
        if len(events) == 5:
            w.stop()
    check(events == [("MODIFIED", "cm0"), ("MODIFIED", "cm3"), ("MODIFIED", "cm1"), ("MODIFIED", "cm1"), ("DELETED", "cm2")], f"watch from resourceVersion {events}")
    print("ALL OK")


if __name__ == "__main__":
    main()
