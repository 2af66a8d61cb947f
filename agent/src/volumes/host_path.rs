//! hostPath volumes: kubelet's type checks (`pkg/volume/hostpath`), with its error messages.
//! `DirectoryOrCreate` makes the directory (0755, parents too), `FileOrCreate` the file (0644,
//! the parent must exist); an empty type checks nothing (the runtime creates a missing path).

use std::fs::{self, OpenOptions};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Checks (and for the `…OrCreate` types, creates) `path` per `path_type`.
pub(crate) fn check_type(path: &Path, path_type: &str) -> Result<(), String> {
    let shown = path.display();
    let file_type = || fs::metadata(path).ok().map(|m| m.file_type());
    let exists = || fs::symlink_metadata(path).is_ok();
    match path_type {
        "" => Ok(()),
        "DirectoryOrCreate" if !exists() => fs::DirBuilder::new()
            .recursive(true)
            .create(path)
            .and_then(|()| fs::set_permissions(path, fs::Permissions::from_mode(0o755)))
            .map_err(|e| format!("mkdir {shown}: {e}")),
        "DirectoryOrCreate" | "Directory" => match file_type() {
            Some(t) if t.is_dir() => Ok(()),
            _ => Err(format!("hostPath type check failed: {shown} is not a directory")),
        },
        "FileOrCreate" if !exists() => OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o644)
            .open(path)
            .map(drop)
            .map_err(|e| format!("open {shown}: {e}")),
        "FileOrCreate" | "File" => match file_type() {
            Some(t) if t.is_file() => Ok(()),
            _ => Err(format!("hostPath type check failed: {shown} is not a file")),
        },
        "Socket" => match file_type() {
            Some(t) if t.is_socket() => Ok(()),
            _ => Err(format!("hostPath type check failed: {shown} is not a socket file")),
        },
        "CharDevice" => match file_type() {
            Some(t) if t.is_char_device() => Ok(()),
            _ => Err(format!("hostPath type check failed: {shown} is not a character device")),
        },
        "BlockDevice" => match file_type() {
            Some(t) if t.is_block_device() => Ok(()),
            _ => Err(format!("hostPath type check failed: {shown} is not a block device")),
        },
        other => Err(format!("{other} is an invalid volume type")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn or_create_types_create_and_plain_types_check() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("a/b");
        check_type(&dir, "DirectoryOrCreate").expect("creates the directory with its parents");
        assert!(dir.is_dir());
        assert_eq!(fs::metadata(&dir).expect("stat").permissions().mode() & 0o777, 0o755);
        check_type(&dir, "Directory").expect("is a directory");

        let file = dir.join("f");
        check_type(&file, "FileOrCreate").expect("creates the file");
        assert!(file.is_file());
        check_type(&file, "File").expect("is a file");
        // FileOrCreate does not make parents, as kubelet's does not.
        assert!(check_type(&tmp.path().join("x/y"), "FileOrCreate").is_err());
        assert_eq!(check_type(&tmp.path().join("none"), ""), Ok(()));
    }

    #[test]
    fn mismatches_fail_with_kubelets_messages() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path();
        let file = dir.join("f");
        fs::write(&file, "x").expect("write");
        let missing = dir.join("missing");
        let socket_path = dir.join("s.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&socket_path).expect("bind");
        let cases = [
            (
                file.clone(),
                "Directory",
                format!("hostPath type check failed: {} is not a directory", file.display()),
            ),
            (
                file.clone(),
                "DirectoryOrCreate",
                format!("hostPath type check failed: {} is not a directory", file.display()),
            ),
            (
                missing.clone(),
                "Directory",
                format!("hostPath type check failed: {} is not a directory", missing.display()),
            ),
            (
                dir.to_owned(),
                "File",
                format!("hostPath type check failed: {} is not a file", dir.display()),
            ),
            (
                dir.to_owned(),
                "FileOrCreate",
                format!("hostPath type check failed: {} is not a file", dir.display()),
            ),
            (
                file.clone(),
                "Socket",
                format!("hostPath type check failed: {} is not a socket file", file.display()),
            ),
            (
                file.clone(),
                "CharDevice",
                format!("hostPath type check failed: {} is not a character device", file.display()),
            ),
            (
                file.clone(),
                "BlockDevice",
                format!("hostPath type check failed: {} is not a block device", file.display()),
            ),
            (file.clone(), "Weird", "Weird is an invalid volume type".to_owned()),
        ];
        for (path, kind, message) in cases {
            assert_eq!(check_type(&path, kind), Err(message), "{kind} on {}", path.display());
        }
        check_type(&socket_path, "Socket").expect("a socket");
        check_type(Path::new("/dev/null"), "CharDevice").expect("/dev/null is a character device");
    }
}
