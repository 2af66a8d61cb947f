//! Queries per second with `dnsperf` against Skerry's cluster DNS, unbound and dnsmasq, each
//! serving the same 1,000 service A records as local data on a loopback port, side by side.
//!
//! Run (Debian's dnsperf, unbound and dnsmasq-base installed by scripts/install-deps.sh):
//!
//! ```text
//! cargo run -p skerry-dns --release --example dnsperf_compare -- [seconds per run] [rounds]
//! ```
//!
//! Each server gets the same query file (every name once, in order, looped) and the same
//! dnsperf settings; unbound gets as many threads as Skerry has UDP readers. The servers take
//! turns for `rounds` rounds (default 10 s x 3) so that load from elsewhere on the machine hits
//! them alike; the median of each is printed with Skerry's ratio to each peer, and the server
//! CPU time per query, which depends far less on that load than queries per second do.

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hickory_proto::op::Message;
use hickory_proto::op::Query;
use hickory_proto::rr::{Name, RecordType};
use serde_json::json;
use skerry_dns::{ClusterDns, DnsConfig, Snapshot};

const SERVICES: usize = 1000;
const NAMESPACE: &str = "bench";

/// The i-th service's name and cluster IP.
fn record(i: usize) -> (String, String) {
    (format!("svc-{i}.{NAMESPACE}.svc.cluster.local"), format!("10.43.{}.{}", i / 250, 1 + i % 250))
}

/// Kills a child process on drop.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until `addr` answers a query for the first service.
fn wait_ready(addr: SocketAddr) -> bool {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let mut query = Message::query();
    query.metadata.recursion_desired = true;
    query.add_query(Query::query(
        Name::from_ascii(format!("{}.", record(0).0)).unwrap(),
        RecordType::A,
    ));
    let bytes = query.to_vec().unwrap();
    let mut buf = [0u8; 512];
    for _ in 0..100 {
        let _ = socket.send_to(&bytes, addr);
        if let Ok(len) = socket.recv(&mut buf) {
            if let Ok(answer) = Message::from_vec(&buf[..len]) {
                if !answer.answers.is_empty() {
                    return true;
                }
            }
        }
    }
    false
}

/// CPU seconds (user + system) used so far by process `pid` (`self` for this one).
fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz
}

/// One server's result: queries per second and server CPU microseconds per answered query.
struct Run {
    qps: f64,
    cpu_us: f64,
}

/// Runs dnsperf against `addr` (served by process `pid`) and measures it.
fn dnsperf(addr: SocketAddr, pid: &str, queries: &Path, seconds: u64) -> Run {
    let cpu_before = cpu_seconds(pid);
    let output = Command::new("dnsperf")
        .args(["-s", &addr.ip().to_string(), "-p", &addr.port().to_string()])
        .arg("-d")
        .arg(queries)
        .args(["-l", &seconds.to_string(), "-c", "4", "-q", "200", "-t", "2"])
        .output()
        .expect("running dnsperf");
    let cpu = cpu_seconds(pid) - cpu_before;
    let text = String::from_utf8_lossy(&output.stdout);
    let lost = text.lines().find(|l| l.contains("Queries lost:")).unwrap_or("").trim().to_string();
    let qps = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Queries per second:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no qps in dnsperf output:\n{text}"));
    let cpu_us = cpu * 1e6 / (qps * seconds as f64);
    eprintln!("  {addr}: {qps:.0} q/s, {cpu_us:.1} us CPU/query ({lost})");
    Run { qps, cpu_us }
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn main() {
    let seconds: u64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(10);
    let rounds: usize = std::env::args().nth(2).and_then(|s| s.parse().ok()).unwrap_or(3);
    let dir = tempfile::tempdir().unwrap();
    let records: Vec<(String, String)> = (0..SERVICES).map(record).collect();
    let queries = dir.path().join("queries.txt");
    let lines: String = records.iter().map(|(name, _)| format!("{name} A\n")).collect();
    std::fs::write(&queries, lines).unwrap();

    // Skerry: the same names as Services, through the public API.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let services = records
        .iter()
        .enumerate()
        .map(|(i, (_, ip))| {
            serde_json::from_value(json!({
                "metadata": {"namespace": NAMESPACE, "name": format!("svc-{i}")},
                "spec": {"clusterIP": ip},
            }))
            .unwrap()
        })
        .collect();
    let config = DnsConfig { listen: vec!["127.0.0.1:0".parse().unwrap()], ..DnsConfig::default() };
    let skerry = runtime.block_on(ClusterDns::start(config)).unwrap();
    skerry.replace_all(Snapshot { services, ..Snapshot::default() });
    let skerry_addr = skerry.local_addrs()[0];
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(4);

    // unbound: local-data in a static zone, no recursion needed, same thread count.
    let unbound_port = free_udp_port();
    let mut conf = format!(
        "server:\n  interface: 127.0.0.1\n  port: {unbound_port}\n  do-daemonize: no\n  \
         use-syslog: no\n  logfile: \"\"\n  username: \"\"\n  chroot: \"\"\n  pidfile: \"\"\n  \
         directory: \"{}\"\n  num-threads: {threads}\n  do-ip6: no\n  verbosity: 0\n  \
         access-control: 127.0.0.0/8 allow\n  module-config: \"iterator\"\n  \
         local-zone: \"cluster.local.\" static\n",
        dir.path().display()
    );
    for (name, ip) in &records {
        conf.push_str(&format!("  local-data: \"{name}. 5 IN A {ip}\"\n"));
    }
    conf.push_str("remote-control:\n  control-enable: no\n");
    let unbound_conf = dir.path().join("unbound.conf");
    std::fs::write(&unbound_conf, conf).unwrap();
    let unbound = Reaped(
        Command::new("unbound")
            .arg("-d")
            .arg("-c")
            .arg(&unbound_conf)
            .stderr(Stdio::null())
            .spawn()
            .expect("starting unbound"),
    );
    let unbound_addr = SocketAddr::from(([127, 0, 0, 1], unbound_port));

    // dnsmasq: the names in a hosts file, authoritative for the domain, single-threaded by design.
    let hosts = dir.path().join("hosts");
    let lines: String = records.iter().map(|(name, ip)| format!("{ip} {name}\n")).collect();
    std::fs::write(&hosts, lines).unwrap();
    let dnsmasq_port = free_udp_port();
    let dnsmasq = Reaped(
        Command::new("dnsmasq")
            .args([
                "--no-daemon",
                "--conf-file=/dev/null",
                "--pid-file",
                "--no-resolv",
                "--no-hosts",
            ])
            .args(["--listen-address=127.0.0.1", "--bind-interfaces", "--local=/cluster.local/"])
            .args(["--local-ttl=5", "--cache-size=10000"])
            .arg(format!("--port={dnsmasq_port}"))
            .arg(format!("--addn-hosts={}", hosts.display()))
            .stderr(Stdio::null())
            .spawn()
            .expect("starting dnsmasq"),
    );
    let dnsmasq_addr = SocketAddr::from(([127, 0, 0, 1], dnsmasq_port));

    for (name, addr) in
        [("skerry", skerry_addr), ("unbound", unbound_addr), ("dnsmasq", dnsmasq_addr)]
    {
        assert!(wait_ready(addr), "{name} did not answer");
    }
    eprintln!(
        "dnsperf, {SERVICES} service A records, {seconds} s per server, -c 4 -q 200, \
         {threads} server thread(s) for skerry and unbound:"
    );
    let servers = [
        ("skerry", skerry_addr, "self".to_string()),
        ("unbound", unbound_addr, unbound.0.id().to_string()),
        ("dnsmasq", dnsmasq_addr, dnsmasq.0.id().to_string()),
    ];
    let mut runs: Vec<Vec<Run>> = servers.iter().map(|_| Vec::new()).collect();
    for round in 1..=rounds {
        eprintln!("round {round}/{rounds}");
        for (i, (_, addr, pid)) in servers.iter().enumerate() {
            runs[i].push(dnsperf(*addr, pid, &queries, seconds));
        }
    }
    let median = |values: Vec<f64>| -> f64 {
        let mut values = values;
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    let medians: Vec<(f64, f64)> = runs
        .iter()
        .map(|r| {
            (
                median(r.iter().map(|x| x.qps).collect()),
                median(r.iter().map(|x| x.cpu_us).collect()),
            )
        })
        .collect();
    println!(
        "median of {rounds} x {seconds} s   queries/s   server CPU us/query   skerry q/s ratio"
    );
    for ((name, _, _), (qps, cpu_us)) in servers.iter().zip(&medians) {
        let ratio = medians[0].0 / qps;
        println!("{name:<20} {qps:>12.0}   {cpu_us:>19.1}   {ratio:>16.2}");
    }
    drop((unbound, dnsmasq, skerry));
}
