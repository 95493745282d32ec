//! The folder back end: one file per key under `storage_location`, written
//! atomically (temporary dot-name, fsync, rename), private modes (files
//! 0600, folders 0700), and certmagic's lock files for [`Folder::try_lock`].

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::backend::KeyInfo;
use super::lockfile::{self, Attempt, HeldLock};
use crate::certs::atomic::{create_private_dir, sync_dir, write_atomic};

#[derive(Debug, Clone)]
pub struct Folder {
    root: PathBuf,
}

/// A lock file held, refreshed by a task until released or dropped.
#[derive(Debug)]
pub struct FolderLease {
    held: Arc<HeldLock>,
    lost: Arc<AtomicBool>,
    refresher: tokio::task::JoinHandle<()>,
}

impl Folder {
    pub fn new(root: &Path) -> Folder {
        Folder {
            root: root.to_path_buf(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file of a key; keys are `/`-separated relative paths made of
    /// [`super::safe_key`] components, so they never leave the root.
    pub fn path(&self, key: &str) -> PathBuf {
        key.split('/')
            .filter(|c| !c.is_empty() && *c != "." && *c != "..")
            .fold(self.root.clone(), |p, c| p.join(c))
    }

    pub fn load(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
        let path = self.path(key);
        match std::fs::read(&path) {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        }
    }

    /// Writes `value` atomically; `durable` adds the folder's fsync (not
    /// worth it for a heartbeat that the next one rewrites).
    pub fn store(&self, key: &str, value: &[u8], durable: bool) -> Result<(), String> {
        let path = self.path(key);
        let dir = path.parent().unwrap_or(&self.root).to_path_buf();
        create_private_dir(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        write_atomic(&path, value, 0o600)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        if durable {
            sync_dir(&dir);
        }
        Ok(())
    }

    pub fn delete(&self, key: &str) -> Result<(), String> {
        let path = self.path(key);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(format!("cannot remove {}: {e}", path.display())),
        }
    }

    /// Every key of a file under `prefix` (recursively), dot-files
    /// (temporaries) left out, sorted.
    pub fn list(&self, prefix: &str) -> Result<Vec<String>, String> {
        let mut out = Vec::new();
        let mut todo = vec![(self.path(prefix), prefix.trim_end_matches('/').to_string())];
        while let Some((dir, key)) = todo.pop() {
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(format!("cannot list {}: {e}", dir.display())),
            };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') {
                    continue;
                }
                let child = if key.is_empty() {
                    name
                } else {
                    format!("{key}/{name}")
                };
                match entry.file_type() {
                    Ok(t) if t.is_dir() => todo.push((entry.path(), child)),
                    Ok(_) => out.push(child),
                    Err(_) => {}
                }
            }
        }
        out.sort();
        Ok(out)
    }

    pub fn stat(&self, key: &str) -> Result<Option<KeyInfo>, String> {
        let path = self.path(key);
        match std::fs::metadata(&path) {
            Ok(m) => Ok(Some(KeyInfo {
                modified: m
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
                size: m.len(),
            })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("cannot stat {}: {e}", path.display())),
        }
    }

    /// One attempt at `locks/<key>.lock`. `Ok(None)`: someone holds it.
    /// The second value says a stale lock was taken over.
    pub fn try_lock(&self, key: &str) -> Result<Option<(FolderLease, bool)>, String> {
        let path = self
            .root
            .join("locks")
            .join(format!("{}.lock", super::safe_key(key)));
        let (attempt, took_over) = lockfile::try_take(&path)
            .map_err(|e| format!("cannot take the lock {}: {e}", path.display()))?;
        let Attempt::Taken(held) = attempt else {
            return Ok(None);
        };
        let held = Arc::new(held);
        let lost = Arc::new(AtomicBool::new(false));
        let refresher = {
            let (held, lost) = (held.clone(), lost.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(lockfile::REFRESH);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    let h = held.clone();
                    let ok = tokio::task::spawn_blocking(move || h.refresh())
                        .await
                        .unwrap_or(false);
                    if !ok {
                        lost.store(true, Ordering::Relaxed);
                        log::warn!(target: super::super::TARGET, "the lock {} is no longer ours (another instance took it over)", held.path.display());
                        return;
                    }
                }
            })
        };
        Ok(Some((
            FolderLease {
                held,
                lost,
                refresher,
            },
            took_over,
        )))
    }
}

impl FolderLease {
    pub fn lost(&self) -> bool {
        self.lost.load(Ordering::Relaxed)
    }

    pub fn release(self) {
        // Drop does it.
    }
}

impl Drop for FolderLease {
    fn drop(&mut self) {
        self.refresher.abort();
        self.held.release();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_to_files_beneath_the_root() {
        let f = Folder::new(Path::new("/st"));
        assert_eq!(
            f.path("certificates/x/a.test/a.test.crt"),
            Path::new("/st/certificates/x/a.test/a.test.crt")
        );
        assert_eq!(f.path("../../etc/passwd"), Path::new("/st/etc/passwd"));
    }

    #[test]
    fn store_load_list_stat_delete() {
        let dir = tempfile::tempdir().unwrap();
        let f = Folder::new(dir.path());
        f.store("a/b/c.json", b"1", true).unwrap();
        f.store("a/d.json", b"22", false).unwrap();
        assert_eq!(f.load("a/b/c.json").unwrap().unwrap(), b"1");
        assert_eq!(f.load("a/x").unwrap(), None);
        assert_eq!(f.list("a").unwrap(), vec!["a/b/c.json", "a/d.json"]);
        assert_eq!(f.list("nothing").unwrap(), Vec::<String>::new());
        assert_eq!(f.stat("a/d.json").unwrap().unwrap().size, 2);
        f.delete("a/d.json").unwrap();
        f.delete("a/d.json").unwrap();
        assert_eq!(f.list("a").unwrap(), vec!["a/b/c.json"]);
    }
}
