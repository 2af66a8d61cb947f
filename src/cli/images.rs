//! `skerry ctr images`: the node's image store (`<data-dir>/images`) for operators — pull with
//! the node's registries.yaml and a progress bar, list, remove, import/export archives, inspect.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Subcommand;
use skerry_images::{
    Credentials, DockerConfig, ImageStore, Platform, PullOptions, PullProgress, RegistryConfig,
};

/// Arguments of `skerry ctr images`.
#[derive(Debug, clap::Args)]
pub struct ImagesArgs {
    #[command(subcommand)]
    pub command: ImagesCommand,
}

/// The `skerry ctr images` subcommands.
#[derive(Debug, Subcommand)]
pub enum ImagesCommand {
    /// Pull an image from a registry (mirrors, auth and TLS from the registry config).
    Pull {
        /// Image reference, e.g. `busybox`, `registry.local:5000/app:1.2`, `app@sha256:...`.
        reference: String,
        /// k3s-style registries.yaml (a missing file means no mirrors and HTTPS only).
        #[arg(long, default_value = "/etc/skerry/registries.yaml")]
        registry_config: PathBuf,
        /// Platform to pull instead of the node's, e.g. `linux/arm/v7`.
        #[arg(long)]
        platform: Option<String>,
        /// Credentials as USER:PASSWORD for the image's registry.
        #[arg(long)]
        user: Option<String>,
        /// A Docker config JSON (`.dockerconfigjson`) with credentials.
        #[arg(long)]
        docker_config: Option<PathBuf>,
        /// Print only the digest (no progress bar).
        #[arg(short, long)]
        quiet: bool,
    },
    /// List images.
    #[command(alias = "list")]
    Ls {
        /// Print only names.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Remove images (refused while a container uses one).
    #[command(alias = "remove")]
    Rm {
        /// Image names or digests.
        #[arg(required = true)]
        references: Vec<String>,
    },
    /// Import OCI archives or `docker save` archives (plain, gzip or zstd).
    Import {
        /// Archive files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Export an image as an OCI archive.
    Export {
        /// Image name or digest.
        reference: String,
        /// Output file.
        output: PathBuf,
    },
    /// Show an image's record and configuration as JSON.
    Inspect {
        /// Image name or digest.
        reference: String,
    },
    /// Delete content no image references (and partial downloads).
    Prune,
}

/// Runs one subcommand against the store in `<data_dir>/images`.
pub fn run(data_dir: &Path, args: ImagesArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(run_async(data_dir, args))
}

async fn run_async(data_dir: &Path, args: ImagesArgs) -> anyhow::Result<ExitCode> {
    let root = data_dir.join("images");
    let store = ImageStore::open(&root, Platform::host())
        .with_context(|| format!("opening the image store in {}", root.display()))?;
    match args.command {
        ImagesCommand::Pull {
            reference,
            registry_config,
            platform,
            user,
            docker_config,
            quiet,
        } => {
            let config = RegistryConfig::load(&registry_config)?;
            let mut credentials = match docker_config {
                Some(p) => {
                    let data =
                        std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
                    Some(DockerConfig::parse(&data)?)
                }
                None => None,
            };
            if let Some(u) = user {
                let (username, password) =
                    u.split_once(':').context("--user must be USER:PASSWORD")?;
                let registry = skerry_images::Reference::parse(&reference)?.registry;
                credentials.get_or_insert_with(DockerConfig::default).insert(
                    &registry,
                    Credentials::Basic { username: username.into(), password: password.into() },
                );
            }
            let platform = platform.as_deref().map(Platform::parse).transpose()?;
            let (tx, rx) = tokio::sync::watch::channel(PullProgress::default());
            let bar =
                (!quiet && std::io::stderr().is_terminal()).then(|| tokio::spawn(progress_bar(rx)));
            let options = PullOptions {
                credentials,
                registry_config: Some(Arc::new(config)),
                platform,
                progress: Some(tx),
                ..Default::default()
            };
            let result = store.pull(&reference, options).await;
            if let Some(bar) = bar {
                bar.abort();
                eprintln!();
            }
            let image = result.with_context(|| format!("pulling {reference}"))?;
            if quiet {
                println!("{}", image.digest);
            } else {
                println!(
                    "{} {} ({}, {})",
                    image.name,
                    image.digest,
                    image.platform,
                    human(image.size)
                );
            }
        }
        ImagesCommand::Ls { quiet } => {
            let images = store.list()?;
            if quiet {
                for i in images {
                    println!("{}", i.name);
                }
            } else {
                let w = images.iter().map(|i| i.name.len()).max().unwrap_or(4).max(4);
                println!("{:w$}  {:19}  {:14}  SIZE", "NAME", "DIGEST", "PLATFORM");
                for i in images {
                    let short = &i.digest[..i.digest.len().min(19)];
                    println!(
                        "{:w$}  {short:19}  {:14}  {}",
                        i.name,
                        i.platform.to_string(),
                        human(i.size)
                    );
                }
            }
        }
        ImagesCommand::Rm { references } => {
            let mut failed = false;
            for r in references {
                match store.remove(&r).await {
                    Ok(()) => println!("{r}"),
                    Err(e) => {
                        eprintln!("skerry: removing {r}: {e}");
                        failed = true;
                    }
                }
            }
            if failed {
                return Ok(ExitCode::FAILURE);
            }
        }
        ImagesCommand::Import { files } => {
            for f in files {
                let images =
                    store.import(&f).await.with_context(|| format!("importing {}", f.display()))?;
                for i in images {
                    println!("{} {}", i.name, i.digest);
                }
            }
        }
        ImagesCommand::Export { reference, output } => {
            store
                .export(&reference, &output)
                .await
                .with_context(|| format!("exporting {reference} to {}", output.display()))?;
        }
        ImagesCommand::Inspect { reference } => {
            println!("{}", store.inspect(&reference)?.to_json_pretty());
        }
        ImagesCommand::Prune => {
            let r = store.prune().await?;
            println!(
                "removed {} blobs, {} snapshots, {} partial downloads ({})",
                r.blobs,
                r.snapshots,
                r.partial,
                human(r.freed_bytes)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Redraws one line on stderr as bytes arrive.
async fn progress_bar(mut rx: tokio::sync::watch::Receiver<PullProgress>) {
    while rx.changed().await.is_ok() {
        let p = rx.borrow_and_update().clone();
        let width = 30usize;
        let filled = if p.total_bytes == 0 {
            0
        } else {
            ((p.done_bytes as f64 / p.total_bytes as f64) * width as f64) as usize
        };
        let bar: String = (0..width).map(|i| if i < filled { '=' } else { ' ' }).collect();
        eprint!(
            "\r[{bar}] {} / {}  layers {}/{}   ",
            human(p.done_bytes),
            human(p.total_bytes),
            p.layers_done,
            p.layers_total
        );
        let _ = std::io::stderr().flush();
    }
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
