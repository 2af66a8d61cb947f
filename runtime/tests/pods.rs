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
