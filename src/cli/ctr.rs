//! `skerry ctr`: the node's containers and images, for operators.
//!
//! Containers made here live in the same runtime state as the agent's
//! (`<data-dir>/runtime`), each in a sandbox of its own named like the container. The hidden
//! `monitor` subcommand is the per-container monitor process that the runtime re-executes.

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Subcommand;
use skerry_runtime::{
    ContainerSpec, ContainerStatus, ExecSpec, ImageConfig, LogReadOptions, LoopbackOnly,
    MonitorCommand, Resources, Runtime, RuntimeConfig, SandboxSpec, Stream,
};

use super::images;

#[derive(Debug, clap::Args)]
pub struct CtrArgs {
    /// The agent's data directory (containers and images live below it).
    #[arg(long, global = true, default_value = "/var/lib/skerry/agent")]
    pub data_dir: PathBuf,
    /// The top cgroup of this runtime's pods (one per data dir: each runtime collects orphans
    /// below its own).
    #[arg(long, global = true, env = "SKERRY_CGROUP_ROOT", default_value = "kubepods")]
    pub cgroup_root: String,
    #[command(subcommand)]
    pub command: CtrCommand,
}

#[derive(Debug, Subcommand)]
pub enum CtrCommand {
    /// Pull, list, remove, import, export and inspect images.
    Images(images::ImagesArgs),
    /// Run a command in a new container (exits with its exit code unless detached).
    Run(Box<RunArgs>),
    /// List containers.
    Ps,
    /// Print a container's logs.
    Logs {
        /// Keep printing until the container exits.
        #[arg(short, long)]
        follow: bool,
        /// Only the last N lines.
        #[arg(long)]
        tail: Option<usize>,
        /// Only lines at or after this time (RFC 3339).
        #[arg(long)]
        since: Option<String>,
        /// Prefix lines with their timestamps.
        #[arg(short, long)]
        timestamps: bool,
        /// Container name or id.
        name: String,
    },
    /// Run a command in a running container (exits with its exit code).
    Exec {
        /// Pass stdin to the command.
        #[arg(short, long)]
        interactive: bool,
        /// Run on a terminal.
        #[arg(short, long)]
        tty: bool,
        /// Container name or id.
        name: String,
        /// The command and its arguments.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Stop a container: its stop signal, then SIGKILL after the grace period.
    Stop {
        /// Grace period in seconds.
        #[arg(short, long, default_value_t = 10)]
        time: u64,
        /// Container name or id.
        name: String,
    },
    /// Remove a container (and its sandbox).
    Rm {
        /// Kill it first if it runs.
        #[arg(short, long)]
        force: bool,
        /// Container name or id.
        name: String,
    },
    /// Show everything known about a container, as JSON.
    Inspect {
        /// Container name or id.
        name: String,
    },
    /// The per-container monitor process (started by the runtime, not by people).
    #[command(hide = true)]
    Monitor {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Remove the container when it exits.
    #[arg(long)]
    rm: bool,
    /// Print the container id and return at once.
    #[arg(short, long)]
    detach: bool,
    /// Container name (default: generated).
    #[arg(long)]
    name: Option<String>,
    /// Memory limit in bytes.
    #[arg(long)]
    memory: Option<i64>,
    /// CPU limit in CPUs (e.g. 0.5).
    #[arg(long)]
    cpus: Option<f64>,
    /// Maximum number of processes.
    #[arg(long)]
    pids_limit: Option<i64>,
    /// Environment variables (`KEY=VALUE`).
    #[arg(short, long = "env")]
    env: Vec<String>,
    /// Working directory inside the container.
    #[arg(short, long)]
    workdir: Option<String>,
    /// Run from this unpacked root filesystem instead of an image.
    #[arg(long, conflicts_with = "image")]
    rootfs: Option<PathBuf>,
    /// The image to run (from `skerry ctr images`).
    #[arg(required_unless_present = "rootfs")]
    image: Option<String>,
    /// The command and its arguments (default: the image's).
    #[arg(last = true)]
    command: Vec<String>,
}

pub fn run(args: CtrArgs) -> anyhow::Result<ExitCode> {
    let CtrArgs { data_dir, cgroup_root, command } = args;
    match command {
        CtrCommand::Images(images_args) => images::run(&data_dir, images_args),
        CtrCommand::Monitor { args } => {
            Ok(ExitCode::from(exit_byte(skerry_runtime::monitor_main(&args))))
        }
        command => {
            if !skerry_runtime::terminal::running_as_root() {
                bail!("skerry ctr needs root (it creates namespaces, cgroups and mounts)");
            }
            let runtime = open_runtime(&data_dir, &cgroup_root)?;
            containers(&runtime, &data_dir, command)
        }
    }
}

/// The container subcommands.
fn containers(runtime: &Runtime, data_dir: &Path, command: CtrCommand) -> anyhow::Result<ExitCode> {
    match command {
        CtrCommand::Run(args) => run_container(runtime, data_dir, *args),
        CtrCommand::Ps => {
            println!(
                "{:<16}  {:<24}  {:<8}  {:>4}  {:>8}  CREATED",
                "ID", "NAME", "STATE", "EXIT", "PID"
            );
            for c in runtime.list_containers() {
                let exit = c.exit_code.map(|e| e.to_string()).unwrap_or_default();
                let pid = c.pid.map(|p| p.to_string()).unwrap_or_default();
                println!(
                    "{:<16}  {:<24}  {:<8}  {:>4}  {:>8}  {}",
                    c.id, c.name, c.state, exit, pid, c.created_at
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        CtrCommand::Logs { follow, tail, since, timestamps, name } => {
            let c = runtime.find_container(&name)?;
            let since = since
                .map(|s| {
                    s.parse().with_context(|| format!("--since {s:?} is not an RFC 3339 time"))
                })
                .transpose()?;
            let options = LogReadOptions { tail, since, timestamps, follow };
            print_logs(runtime, &c.id, &options)?;
            Ok(ExitCode::SUCCESS)
        }
        CtrCommand::Exec { interactive, tty, name, command } => {
            let c = runtime.find_container(&name)?;
            exec(runtime, &c, interactive, tty, command)
        }
        CtrCommand::Stop { time, name } => {
            let c = runtime.find_container(&name)?;
            let status = runtime.stop_container(&c.id, Duration::from_secs(time))?;
            println!("{}", status.name);
            Ok(ExitCode::SUCCESS)
        }
        CtrCommand::Rm { force, name } => {
            let c = runtime.find_container(&name)?;
            remove(runtime, data_dir, &c, force)?;
            println!("{}", c.name);
            Ok(ExitCode::SUCCESS)
        }
        CtrCommand::Inspect { name } => {
            let c = runtime.find_container(&name)?;
            let sandbox = runtime.sandbox(&c.sandbox_id).ok();
            let doc = serde_json::json!({ "container": c, "sandbox": sandbox.map(|s| serde_json::json!({
                "id": s.id, "name": s.spec.name, "cgroup_path": s.cgroup_path, "network": s.network,
            })) });
            println!("{}", serde_json::to_string_pretty(&doc)?);
            Ok(ExitCode::SUCCESS)
        }
        CtrCommand::Images(_) | CtrCommand::Monitor { .. } => unreachable!("dispatched in run"),
    }
}

/// The runtime over `<data-dir>/runtime`, with this binary as the monitor.
fn open_runtime(data_dir: &Path, cgroup_root: &str) -> anyhow::Result<Runtime> {
    let exe = std::env::current_exe().context("finding the skerry binary")?;
    let config = RuntimeConfig {
        state_dir: data_dir.join("runtime"),
        monitor: MonitorCommand { exe, args: vec!["ctr".into(), "monitor".into()] },
        cgroup_root: cgroup_root.to_string(),
        network: Arc::new(LoopbackOnly),
    };
    Runtime::open(config).with_context(|| format!("opening the runtime in {}", data_dir.display()))
}

/// `ctr run`.
fn run_container(runtime: &Runtime, data_dir: &Path, args: RunArgs) -> anyhow::Result<ExitCode> {
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| format!("ctr-{}", &skerry_runtime::state::new_id()[..8]));
    if let Ok(existing) = runtime.find_container(&name) {
        bail!("container name {name:?} is already in use by {}", existing.id);
    }
    let (rootfs, image) = match (&args.rootfs, &args.image) {
        (Some(dir), _) => {
            if !dir.is_dir() {
                bail!("rootfs {} does not exist or is not a directory", dir.display());
            }
            (dir.clone(), ImageConfig::default())
        }
        (None, Some(reference)) => prepare_image(data_dir, reference, &name)?,
        (None, None) => bail!("give an IMAGE or --rootfs DIR"),
    };
    let mut resources =
        Resources { memory_limit: args.memory, pids_limit: args.pids_limit, ..Default::default() };
    if let Some(cpus) = args.cpus {
        if cpus.is_nan() || cpus <= 0.0 {
            bail!("--cpus must be positive");
        }
        resources = resources.with_cpus(cpus);
    }
    let env = args
        .env
        .iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (kv.clone(), std::env::var(kv).unwrap_or_default()),
        })
        .collect();
    let spec = ContainerSpec {
        name: name.clone(),
        rootfs,
        image,
        command: (!args.command.is_empty()).then(|| args.command.clone()),
        args: (!args.command.is_empty()).then(Vec::new),
        env,
        working_dir: args.workdir.clone(),
        resources,
        ..Default::default()
    };
    let sandbox = SandboxSpec { name: name.clone(), hostname: name.clone(), ..Default::default() };
    let sandbox_id = runtime.create_sandbox(sandbox)?;
    let created = runtime.create_container(&sandbox_id, spec).and_then(|id| {
        runtime.start_container(&id)?;
        Ok(id)
    });
    let id = match created {
        Ok(id) => id,
        Err(err) => {
            let _ = runtime.remove_sandbox(&sandbox_id);
            release_image_rootfs(data_dir, &name);
            return Err(err.into());
        }
    };
    if args.detach {
        println!("{id}");
        return Ok(ExitCode::SUCCESS);
    }
    print_logs(runtime, &id, &LogReadOptions { follow: true, ..Default::default() })?;
    let status = runtime.wait_container(&id, None)?;
    let code = status.exit_code.unwrap_or(255);
    if args.rm {
        remove(runtime, data_dir, &status, true)?;
    }
    Ok(ExitCode::from(exit_byte(code)))
}

/// Mounts the image's root filesystem for container `name` (the images crate's overlay).
fn prepare_image(
    data_dir: &Path,
    reference: &str,
    name: &str,
) -> anyhow::Result<(PathBuf, ImageConfig)> {
    let store =
        skerry_images::ImageStore::open(data_dir.join("images"), skerry_images::Platform::host())
            .with_context(|| format!("opening the image store in {}", data_dir.display()))?;
    let target = data_dir.join("rootfs").join(name);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let rootfs = rt
        .block_on(store.prepare_rootfs(reference, name, &target))
        .with_context(|| format!("preparing the root filesystem of image {reference}"))?;
    let c = rootfs.config;
    let some = |s: String| (!s.is_empty()).then_some(s);
    let config = ImageConfig {
        entrypoint: c.entrypoint,
        cmd: c.cmd,
        env: c.env,
        working_dir: some(c.working_dir),
        user: some(c.user),
        stop_signal: some(c.stop_signal),
    };
    Ok((rootfs.path, config))
}

/// Releases an image root filesystem made by `prepare_image` (none for `--rootfs`).
fn release_image_rootfs(data_dir: &Path, name: &str) {
    let lease = data_dir.join("images/containers").join(name);
    if !lease.exists() {
        return;
    }
    let Ok(store) =
        skerry_images::ImageStore::open(data_dir.join("images"), skerry_images::Platform::host())
    else {
        return;
    };
    if let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
        if let Err(err) = rt.block_on(store.release_rootfs(name)) {
            eprintln!("skerry: releasing the root filesystem of {name}: {err}");
        }
    }
    let _ = std::fs::remove_dir(data_dir.join("rootfs").join(name));
}

/// Removes a container, its sandbox when it was the sandbox's only container, and its rootfs.
fn remove(
    runtime: &Runtime,
    data_dir: &Path,
    c: &ContainerStatus,
    force: bool,
) -> anyhow::Result<()> {
    runtime.remove_container(&c.id, force)?;
    let alone = runtime.list_containers().iter().all(|o| o.sandbox_id != c.sandbox_id);
    if alone && runtime.sandbox(&c.sandbox_id).is_ok_and(|s| s.spec.name == c.name) {
        runtime.remove_sandbox(&c.sandbox_id)?;
    }
    release_image_rootfs(data_dir, &c.name);
    Ok(())
}

/// Prints log entries to stdout/stderr by stream.
fn print_logs(runtime: &Runtime, id: &str, options: &LogReadOptions) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    let mut stderr = std::io::stderr();
    runtime.read_logs(id, options, |entry| {
        let bytes = entry.render(options.timestamps);
        match entry.stream {
            Stream::Stdout => stdout.write_all(&bytes).and_then(|()| stdout.flush()),
            Stream::Stderr => stderr.write_all(&bytes),
        }
    })?;
    Ok(())
}

/// `ctr exec`.
fn exec(
    runtime: &Runtime,
    c: &ContainerStatus,
    interactive: bool,
    tty: bool,
    args: Vec<String>,
) -> anyhow::Result<ExitCode> {
    let stdin = std::io::stdin();
    let size = if tty { skerry_runtime::terminal::size(stdin.as_fd()) } else { None };
    let spec = ExecSpec { args, tty, size, ..Default::default() };
    let mut process = runtime.exec(&c.id, spec)?;
    let raw = if tty && interactive {
        skerry_runtime::terminal::RawMode::enable(stdin.as_fd())
    } else {
        None
    };
    let input = process.stdin.take();
    if let (true, Some(mut input)) = (interactive, input) {
        // Detached: a blocked read of our stdin must not keep the command from finishing.
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            let mut stdin = std::io::stdin();
            while let Ok(n) = stdin.read(&mut buf) {
                if n == 0 || input.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        });
    }
    let out = process
        .stdout
        .take()
        .map(|mut o| std::thread::spawn(move || std::io::copy(&mut o, &mut std::io::stdout())));
    let err = process
        .stderr
        .take()
        .map(|mut e| std::thread::spawn(move || std::io::copy(&mut e, &mut std::io::stderr())));
    for t in [out, err].into_iter().flatten() {
        let _ = t.join();
    }
    let code = process.wait();
    drop(raw);
    Ok(ExitCode::from(exit_byte(code?)))
}

/// An exit status as the byte a process exit code can carry.
fn exit_byte(code: i32) -> u8 {
    u8::try_from(code).unwrap_or(255)
}
