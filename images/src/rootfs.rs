//! Container root filesystems: an overlayfs mount whose lower dirs are the image's layer
//! snapshots (top layer first) and whose upper/work dirs live in `containers/<id>/`. A lease
//! file written before the mount keeps the image from being removed or collected. When the
//! `lowerdir=` option string would not fit the one page `mount(2)` accepts, layers are named by
//! short `/proc/self/fd/N` paths, and beyond ~200 layers they are passed one by one through
//! the new mount API (`fsconfig` `lowerdir+`, Linux 6.8+).

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::OFlags;
use rustix::mount::{
    FsMountFlags, FsOpenFlags, MountAttrFlags, MountFlags, MoveMountFlags, UnmountFlags,
};
use serde::{Deserialize, Serialize};

use crate::content::write_atomic;
use crate::error::{ImageError, IoContext, Result};
use crate::manifest::ImageConfig;
use crate::store::{now_unix, Image, ImageStore};

/// Longest option string handed to `mount(2)` (the kernel copies one page; leave slack).
const MAX_MOUNT_OPTIONS: usize = 4000;

/// A container's claim on an image, stored as `containers/<id>/lease.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Lease {
    pub container_id: String,
    pub image_name: String,
    pub image_digest: String,
    pub target: PathBuf,
}

/// A prepared root filesystem.
#[derive(Debug, Clone)]
pub struct Rootfs {
    /// Where the merged filesystem is mounted.
    pub path: PathBuf,
    /// The image's runtime configuration.
    pub config: ImageConfig,
    /// The image it was made from.
    pub image: Image,
}

fn check_container_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id != "."
        && id != ".."
        && id.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(ImageError::InvalidContent {
            what: "container id".into(),
            detail: format!("{id:?} must be 1-128 of [A-Za-z0-9_.-]"),
        })
    }
}

fn is_mountpoint(path: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else { return false };
    let want = path.to_string_lossy();
    info.lines().any(|l| l.split(' ').nth(4).is_some_and(|m| unescape_mountinfo(m) == want))
}

fn unescape_mountinfo(s: &str) -> String {
    s.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")
}

impl ImageStore {
    /// Mounts a writable root filesystem of `reference` for `container_id` at `target`.
    /// Idempotent: a container whose rootfs is already mounted there gets it back.
    pub async fn prepare_rootfs(
        &self,
        reference: &str,
        container_id: &str,
        target: &Path,
    ) -> Result<Rootfs> {
        check_container_id(container_id)?;
        let image = self.get(reference)?;
        let config = self.image_config(&image)?;
        let _shared = self.lock_store(false).await?;
        for (layer, diff_id) in image.layers.iter().zip(&image.diff_ids) {
            let _lock = self.lock_blob(&layer.digest).await?;
            self.ensure_snapshot(layer, diff_id).await?;
        }
        let dir = self.root().join("containers").join(container_id);
        let target = std::path::absolute(target).ctx("resolving", target)?;
        let lease = Lease {
            container_id: container_id.into(),
            image_name: image.name.clone(),
            image_digest: image.digest.clone(),
            target: target.clone(),
        };
        let lowers: Vec<PathBuf> = image
            .layers
            .iter()
            .rev()
            .map(|l| self.content().snapshot_path(&l.digest))
            .collect::<Result<_>>()?;
        let store = self.clone();
        let image_for_touch = image.clone();
        let path = target.clone();
        tokio::task::spawn_blocking(move || -> Result<()> {
            let upper = dir.join("upper");
            let work = dir.join("work");
            let empty = dir.join("empty");
            for d in [&upper, &work, &empty, &target] {
                std::fs::create_dir_all(d).ctx("creating", d)?;
            }
            let data = serde_json::to_vec(&lease).map_err(|e| ImageError::InvalidContent {
                what: "lease".into(),
                detail: e.to_string(),
            })?;
            write_atomic(&dir.join("lease.json"), &data)?;
            if is_mountpoint(&target) {
                return Ok(());
            }
            // overlayfs needs at least one lower dir; an image without layers gets an empty one.
            let lowers = if lowers.is_empty() { vec![empty] } else { lowers };
            mount_overlay(&lowers, &upper, &work, &target)?;
            let mut touched = image_for_touch;
            touched.last_used_unix = now_unix();
            store.register(&touched)
        })
        .await
        .map_err(|e| ImageError::Io {
            context: "mount thread".into(),
            source: std::io::Error::other(e.to_string()),
        })??;
        Ok(Rootfs { path, config, image })
    }

    /// Unmounts a container's root filesystem and deletes its writable layer and lease.
    pub async fn release_rootfs(&self, container_id: &str) -> Result<()> {
        check_container_id(container_id)?;
        let dir = self.root().join("containers").join(container_id);
        tokio::task::spawn_blocking(move || -> Result<()> {
            let lease_path = dir.join("lease.json");
            let lease: Option<Lease> =
                std::fs::read(&lease_path).ok().and_then(|b| serde_json::from_slice(&b).ok());
            if let Some(lease) = &lease {
                if is_mountpoint(&lease.target) {
                    match rustix::mount::unmount(&lease.target, UnmountFlags::empty()) {
                        Ok(()) => {}
                        Err(rustix::io::Errno::BUSY) => {
                            rustix::mount::unmount(&lease.target, UnmountFlags::DETACH).map_err(
                                |e| ImageError::Mount {
                                    action: "unmounting",
                                    path: lease.target.clone(),
                                    source: e.into(),
                                },
                            )?
                        }
                        Err(e) => {
                            return Err(ImageError::Mount {
                                action: "unmounting",
                                path: lease.target.clone(),
                                source: e.into(),
                            })
                        }
                    }
                }
            }
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(ImageError::io("removing", &dir, e)),
            }
        })
        .await
        .map_err(|e| ImageError::Io {
            context: "unmount thread".into(),
            source: std::io::Error::other(e.to_string()),
        })?
    }
}

fn mount_overlay(lowers: &[PathBuf], upper: &Path, work: &Path, target: &Path) -> Result<()> {
    let mount_err = |e: rustix::io::Errno| ImageError::Mount {
        action: "mounting overlay at",
        path: target.to_path_buf(),
        source: e.into(),
    };
    for p in lowers.iter().map(PathBuf::as_path).chain([upper, work]) {
        if p.to_string_lossy().contains([',', ':']) {
            return Err(ImageError::Mount {
                action: "preparing overlay for",
                path: p.to_path_buf(),
                source: std::io::Error::other("path contains ',' or ':'"),
            });
        }
    }
    let options = |lowers: &[String]| {
        format!(
            "lowerdir={},upperdir={},workdir={}",
            lowers.join(":"),
            upper.to_string_lossy(),
            work.to_string_lossy()
        )
    };
    let full: Vec<String> = lowers.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let opts = options(&full);
    if opts.len() <= MAX_MOUNT_OPTIONS {
        return legacy_mount(target, opts).map_err(mount_err);
    }
    // Long paths or many layers: name each layer by a short /proc/self/fd/N path instead
    // (overlayfs resolves them at mount time); the fds stay open until the mount is made.
    let fds: Vec<OwnedFd> = lowers
        .iter()
        .map(|l| {
            rustix::fs::open(
                l,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            )
        })
        .collect::<std::result::Result<_, _>>()
        .map_err(mount_err)?;
    let short: Vec<String> =
        fds.iter().map(|fd| format!("/proc/self/fd/{}", fd.as_raw_fd())).collect();
    let opts = options(&short);
    if opts.len() <= MAX_MOUNT_OPTIONS {
        return legacy_mount(target, opts).map_err(mount_err);
    }
    // Still too long for one page: hand the layers over one at a time (Linux 6.8+).
    let dir_fd = |p: &Path| {
        rustix::fs::open(
            p,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
    };
    let (upper_fd, work_fd) = (dir_fd(upper).map_err(mount_err)?, dir_fd(work).map_err(mount_err)?);
    let fs = rustix::mount::fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC).map_err(mount_err)?;
    for l in &short {
        rustix::mount::fsconfig_set_string(fs.as_fd(), "lowerdir+", l.as_str())
            .map_err(mount_err)?;
    }
    let fd_path = |fd: &OwnedFd| format!("/proc/self/fd/{}", fd.as_raw_fd());
    rustix::mount::fsconfig_set_string(fs.as_fd(), "upperdir", fd_path(&upper_fd).as_str())
        .map_err(mount_err)?;
    rustix::mount::fsconfig_set_string(fs.as_fd(), "workdir", fd_path(&work_fd).as_str())
        .map_err(mount_err)?;
    rustix::mount::fsconfig_create(fs.as_fd()).map_err(mount_err)?;
    let mnt =
        rustix::mount::fsmount(fs.as_fd(), FsMountFlags::FSMOUNT_CLOEXEC, MountAttrFlags::empty())
            .map_err(mount_err)?;
    rustix::mount::move_mount(
        mnt.as_fd(),
        "",
        rustix::fs::CWD,
        target,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .map_err(mount_err)
}

fn legacy_mount(target: &Path, options: String) -> std::result::Result<(), rustix::io::Errno> {
    let options = std::ffi::CString::new(options).map_err(|_| rustix::io::Errno::INVAL)?;
    rustix::mount::mount(
        "overlay",
        target,
        "overlay",
        MountFlags::empty(),
        Some(options.as_c_str()),
    )
}
