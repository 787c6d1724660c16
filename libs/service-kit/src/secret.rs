//! Reading the secrets that configuration refers to.
//!
//! Only `file:` references are resolved here; `openbao:` references are
//! resolved by `estate-secrets`, which owns the OpenBao client. A file secret
//! must not be readable by group or others (a Kubernetes Secret mounted with
//! `defaultMode: 0400` passes, a key left in a world-readable temp file does not).

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use secrecy::SecretSlice;

use crate::config::SecretRef;

/// Why a secret could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The file is readable or writable by group or others.
    #[error("secret file {path} has mode {mode:o}; it must not be accessible by group or others (chmod 0400)")]
    TooOpen {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file could not be read.
    #[error("cannot read secret file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// This process has no resolver for this kind of reference.
    #[error("secret reference {0} needs the OpenBao resolver (estate-secrets), which this process does not use")]
    Unsupported(SecretRef),
}

/// Read a `file:` secret, refusing files that group or others can access.
pub fn read_file_secret(path: &Path) -> Result<SecretSlice<u8>, SecretError> {
    let io_err = |source| SecretError::Io { path: path.to_path_buf(), source };
    let mode = fs::metadata(path).map_err(io_err)?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(SecretError::TooOpen { path: path.to_path_buf(), mode });
    }
    let bytes = fs::read(path).map_err(io_err)?;
    Ok(SecretSlice::from(bytes))
}

/// Resolve a reference this crate can resolve on its own (`file:`).
pub fn resolve_local(reference: &SecretRef) -> Result<SecretSlice<u8>, SecretError> {
    match reference {
        SecretRef::File(path) => read_file_secret(path),
        other @ SecretRef::OpenBao { .. } => Err(SecretError::Unsupported(other.clone())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn owner_only_file_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        fs::write(&path, b"value").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o400)).unwrap();
        assert_eq!(read_file_secret(&path).unwrap().expose_secret(), b"value");
    }

    #[test]
    fn group_or_world_readable_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        fs::write(&path, b"value").unwrap();
        for mode in [0o440, 0o404, 0o600 | 0o020] {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
            assert!(matches!(read_file_secret(&path), Err(SecretError::TooOpen { .. })), "mode {mode:o} accepted");
        }
    }
}
