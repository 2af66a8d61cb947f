"""The official Kubernetes Python client against a running skerry server.

Usage: python3 client_crud.py KUBECONFIG NAMESPACE
Exercises CRUD, list with selectors and paging, watch from a resourceVersion, 409 on a stale
update, patches (a Service's ports by strategic merge), and create_from_yaml of a multi-document
file; prints one line per check and exits non-zero on the first failure.
"""

import sys
import tempfile

from kubernetes import client, config, utils, watch
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

    # A strategic merge patch of a Service's ports merges by `port`: the other port stays.
    ports = [client.V1ServicePort(name="http", port=80), client.V1ServicePort(name="https", port=443)]
    svc = client.V1Service(
        metadata=client.V1ObjectMeta(name="two-ports"),
        spec=client.V1ServiceSpec(selector={"app": "x"}, ports=ports),
    )
    v1.create_namespaced_service(ns, svc)
    v1.patch_namespaced_service("two-ports", ns, {"spec": {"ports": [{"port": 80, "targetPort": 8080}]}})
    got = {p.port: p.target_port for p in v1.read_namespaced_service("two-ports", ns).spec.ports}
    check(got == {80: 8080, 443: 443}, f"strategic merge keeps both Service ports {got}")

    # create_from_yaml on a multi-document file creates every object in it.
    manifest = f"""apiVersion: v1
kind: ConfigMap
metadata: {{name: from-yaml}}
data: {{k: v}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: from-yaml}}
spec:
  replicas: 0
  selector: {{matchLabels: {{app: from-yaml}}}}
  template:
    metadata: {{labels: {{app: from-yaml}}}}
    spec: {{containers: [{{name: c, image: busybox}}]}}
"""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
        f.write(manifest)
        f.flush()
        utils.create_from_yaml(client.ApiClient(), f.name, namespace=ns)
    check(v1.read_namespaced_config_map("from-yaml", ns).data == {"k": "v"}, "create_from_yaml: the ConfigMap")
    deployment = client.AppsV1Api().read_namespaced_deployment("from-yaml", ns)
    check(deployment.spec.replicas == 0, "create_from_yaml: the Deployment")
    print("ALL OK")


if __name__ == "__main__":
    main()
