//! Pod sandboxes: shared network (localhost) and IPC between the containers of one pod,
//! hostname, and the isolation between pods.

mod common;

use common::Fixture;

#[test]
fn containers_of_one_pod_share_localhost_ipc_and_hostname() {
    if !common::privileged() {
        return;
    }
    let fx = Fixture::new("pod-share");
    let pod = fx.sandbox("pod-share");
    let server = fx.run(
        &pod,
        fx.shell(
            "server",
            "readlink /proc/self/ns/ipc; echo shared-memory > /dev/shm/token; \
             echo hello-from-server | nc -l -p 8080",
        ),
    );
    let client = fx.run(
        &pod,
        fx.shell(
            "client",
            "readlink /proc/self/ns/ipc; hostname; \
             for i in $(seq 100); do [ -f /dev/shm/token ] && break; sleep 0.1; done; cat /dev/shm/token; \
             for i in $(seq 100); do nc 127.0.0.1 8080 </dev/null && exit 0; sleep 0.1; done; exit 1",
        ),
    );
    let client_status = fx.wait(&client);
    let server_status = fx.wait(&server);
    let client_log = fx.logs(&client);
    assert_eq!(client_status.exit_code, Some(0), "client: {client_log}");
    assert_eq!(server_status.exit_code, Some(0));
    assert!(client_log.contains("hello-from-server"), "{client_log}");
    assert!(client_log.contains("shared-memory"), "{client_log}");
    assert!(client_log.contains("pod-share\n"), "hostname: {client_log}");
    let ipc = |log: &str| log.lines().find(|l| l.starts_with("ipc:")).map(str::to_string);
    assert_eq!(ipc(&client_log), ipc(&fx.logs(&server)));
    assert!(ipc(&client_log).is_some());
}

#[test]
fn separate_pods_have_separate_network_namespaces() {
    if !common::privileged() {
        return;
    }
    let fx = Fixture::new("pod-isolation");
    let a = fx.sandbox("pod-a");
    let b = fx.sandbox("pod-b");
    let ns = |pod: &str, name: &str| {
        let id = fx.run(pod, fx.shell(name, "readlink /proc/self/ns/net"));
        fx.wait(&id);
        fx.logs(&id)
    };
    let (na, nb) = (ns(&a, "a"), ns(&b, "b"));
    assert!(na.starts_with("net:"), "{na}");
    assert_ne!(na, nb);
    let host = std::fs::read_link("/proc/self/ns/net").unwrap();
    assert_ne!(na.trim(), host.display().to_string());
}

/// The namespace link (`net:[4026531840]`) of this test process.
fn host_ns(kind: &str) -> String {
    std::fs::read_link(format!("/proc/self/ns/{kind}")).unwrap().to_string_lossy().into_owned()
}

// hostNetwork/hostPID/hostIPC pods join the host's namespaces instead of the sandbox's own.
#[test]
fn host_namespaces_are_shared_when_the_pod_asks() {
    if !common::privileged() {
        return;
    }
    let fx = Fixture::new("pod-host-ns");
    let spec = skerry_runtime::spec::SandboxSpec {
        name: "pod-host-ns".into(),
        hostname: "ignored".into(),
        host_network: true,
        host_pid: true,
        host_ipc: true,
        ..Default::default()
    };
    let pod = fx.runtime.create_sandbox(spec).unwrap();
    let id =
        fx.run(&pod, fx.shell("c", "for n in net pid ipc; do readlink /proc/self/ns/$n; done"));
    assert_eq!(fx.wait(&id).exit_code, Some(0));
    let log = fx.logs(&id);
    for kind in ["net", "pid", "ipc"] {
        assert!(log.contains(&host_ns(kind)), "{kind} of the host expected in {log}");
    }

    // A default pod has its own three.
    let own = fx.sandbox("pod-own-ns");
    let id =
        fx.run(&own, fx.shell("c2", "for n in net pid ipc; do readlink /proc/self/ns/$n; done"));
    fx.wait(&id);
    let log = fx.logs(&id);
    for kind in ["net", "pid", "ipc"] {
        assert!(!log.contains(&host_ns(kind)), "{kind} must not be the host's: {log}");
    }
}

// shareProcessNamespace: the containers of one pod see each other's processes.
#[test]
fn share_process_namespace_lets_containers_see_each_other() {
    if !common::privileged() {
        return;
    }
    let fx = Fixture::new("pod-share-pid");
    let spec = skerry_runtime::spec::SandboxSpec {
        name: "pod-share-pid".into(),
        hostname: "pod-share-pid".into(),
        share_process_namespace: true,
        ..Default::default()
    };
    let pod = fx.runtime.create_sandbox(spec).unwrap();
    let first = fx.run(&pod, fx.shell("sleeper", "exec sleep 30"));
    let second = fx.run(
        &pod,
        fx.shell(
            "looker",
            "for i in $(seq 100); do ps -o args | grep -q '^sleep 30' && exit 0; sleep 0.1; done; \
             ps -o args; exit 1",
        ),
    );
    let status = fx.wait(&second);
    assert_eq!(status.exit_code, Some(0), "{}", fx.logs(&second));
    fx.runtime.remove_container(&first, true).unwrap();
}
