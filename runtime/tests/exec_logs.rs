//! Exec (stdin, exit codes, TTY with resize), attach, and CRI logs with rotation, tail and follow.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::Fixture;
use skerry_runtime::{ExecSpec, LogReadOptions, LogRotation};

#[test]
fn exec_feeds_stdin_and_returns_a_nonzero_exit_code() {
    if !common::privileged() {
        return;
    }
    let fx = Fixture::new("exec");
    let pod = fx.sandbox("exec");
    let id = fx.run(&pod, fx.shell("main", "sleep 600"));
    let spec = ExecSpec {
        args: vec!["sh".into(), "-c".into(), "cat; echo to-stderr >&2; exit 5".into()],
        env: vec!["EXTRA=1".into()],
        ..Default::default()
    };
    let mut process = fx.runtime.exec(&id, spec).unwrap();
    process.stdin.take().unwrap().write_all(b"hello through stdin\n").unwrap();
    let mut stdout = String::new();
    process.stdout.take().unwrap().read_to_string(&mut stdout).unwrap();
    let mut stderr = String::new();
    process.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert_eq!(process.wait().unwrap(), 5);
    assert_eq!(stdout, "hello through stdin\n");
    assert!(stderr.contains("to-stderr"), "{stderr}");
    // The exec ran inside the container: it sees the container's PID 1.
    let mut ps = fx
        .runtime
        .exec(
            &id,
            ExecSpec { args: vec!["cat".into(), "/proc/1/cmdline".into()], ..Default::default() },
        )
        .unwrap();
    let mut out = String::new();
    ps.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    assert_eq!(ps.wait().unwrap(), 0);
    assert!(out.contains("sleep"), "{out:?}");
    let err = fx.runtime.exec(&id, ExecSpec::default()).unwrap().wait().unwrap_err();
    assert!(err.to_string().contains("no command"), "{err}");
}

#[test]
fn tty_exec_runs_on_a_terminal_that_can_be_resized() {
    if !common::privileged() {
        return;
    }
    let fx = Fixture::new("tty");
    let pod = fx.sandbox("tty");
    let id = fx.run(&pod, fx.shell("main", "sleep 600"));
    let spec = ExecSpec {
        args: vec![
            "sh".into(),
            "-c".into(),
            "tty; stty size; read -t 30 line; stty size; exit 7".into(),
        ],
        tty: true,
        size: Some((30, 100)),
        ..Default::default()
    };
    let mut process = fx.runtime.exec(&id, spec).unwrap();
    let mut stdout = process.stdout.take().unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 256];
    while !seen.contains("30 100") {
        let n = stdout.read(&mut buf).unwrap();
        assert!(n > 0, "terminal closed early: {seen:?}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    process.resize(40, 120).unwrap();
    let mut stdin = process.stdin.take().unwrap();
    stdin.write_all(b"go\n").unwrap();
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    drop(stdin);
    assert_eq!(process.wait().unwrap(), 7);
    assert!(seen.contains("/dev/pts/"), "{seen:?}");
    assert!(rest.contains("40 120"), "resized: {rest:?}");
}

#[test]
fn attach_streams_output_and_feeds_stdin_of_the_main_process() {
    if !common::privileged() {
        return;
    }
    let fx = Fixture::new("attach");
    let pod = fx.sandbox("attach");
    let mut spec = fx.shell("main", "read line; echo got:$line; exit 0");
    spec.stdin = true;
    let id = fx.runtime.create_container(&pod, spec).unwrap();
    let mut conn = fx.runtime.attach(&id).unwrap();
    fx.runtime.start_container(&id).unwrap();
    conn.write_all(b"ping\n").unwrap();
    let mut out = String::new();
    conn.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    conn.read_to_string(&mut out).unwrap();
    assert_eq!(out, "got:ping\n");
    assert_eq!(fx.wait(&id).exit_code, Some(0));
    assert!(fx.logs(&id).contains("got:ping"));
}

#[test]
fn logs_rotate_and_read_with_tail_since_and_follow() {
    if !common::privileged() {
        return;
    }
    let fx = Fixture::new("logs");
    let pod = fx.sandbox("logs");
    let mut spec = fx.shell("chatty", "for i in $(seq 1 300); do echo line-$i; done");
    spec.log_rotation = LogRotation { max_size: 4096, max_files: 3 };
    let id = fx.run(&pod, spec);
    let status = fx.wait(&id);
    let rotated = |n: u32| format!("{}.{n}", status.log_path.display());
    assert!(
        std::path::Path::new(&rotated(1)).exists() && std::path::Path::new(&rotated(2)).exists()
    );
    assert!(!std::path::Path::new(&rotated(3)).exists(), "at most 3 files");
    let read = |options: LogReadOptions| {
        let mut out = Vec::new();
        fx.runtime
            .read_logs(&id, &options, |e| {
                out.extend(e.render(options.timestamps));
                Ok(())
            })
            .unwrap();
        String::from_utf8(out).unwrap()
    };
    let all = read(LogReadOptions::default());
    assert!(all.ends_with("line-300\n") && !all.contains("line-1\n"), "oldest rotated away");
    assert_eq!(
        read(LogReadOptions { tail: Some(2), ..Default::default() }),
        "line-299\nline-300\n"
    );
    let stamped = read(LogReadOptions { tail: Some(1), timestamps: true, ..Default::default() });
    assert!(stamped.ends_with("Z line-300\n") && stamped.starts_with("20"), "{stamped}");
    let future = chrono::Utc::now() + chrono::Duration::hours(1);
    assert_eq!(read(LogReadOptions { since: Some(future), ..Default::default() }), "");

    // Follow a running container until it exits.
    let slow =
        fx.run(&pod, fx.shell("slow", "for i in 1 2 3 4 5; do echo tick-$i; sleep 0.1; done"));
    let mut followed = Vec::new();
    fx.runtime
        .read_logs(&slow, &LogReadOptions { follow: true, ..Default::default() }, |e| {
            followed.push(String::from_utf8_lossy(&e.content).into_owned());
            Ok(())
        })
        .unwrap();
    assert_eq!(followed, ["tick-1", "tick-2", "tick-3", "tick-4", "tick-5"]);
}
