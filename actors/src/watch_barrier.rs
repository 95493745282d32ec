//! The watcher's barrier: a private file whose own close event, once it
//! comes back through the file watcher, proves that every event queued
//! before it has been delivered.
//!
//! inotify keeps one ordered queue per instance, and a write queues its
//! event before the `write` call returns. So when the cert store has read
//! a pair and then the barrier file is written, any write to the pair that
//! the read may have caught half-way has its event ahead of the barrier's:
//! once the barrier's event is delivered, the watcher knows for certain
//! whether the pair was being written. This replaces a guess (waiting a
//! few milliseconds for such events) with a proof, at the cost of one
//! empty write and one event.
//!
//! The file lives in a folder of its own, made with mode 0700 under the
//! temporary folder (never in a certificate folder), removed when the
//! watcher stops.

use std::fs::DirBuilder;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

pub struct Barrier {
    dir: PathBuf,
    file: PathBuf,
}

impl Barrier {
    /// Makes the private folder and its file. A folder of that name that
    /// exists already is never reused (`mkdir` refuses it, links included).
    pub fn create() -> std::io::Result<Barrier> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!("clace-watch-{}-{nanos:09}", std::process::id());
        let dir = std::env::temp_dir().join(name);
        DirBuilder::new().mode(0o700).create(&dir)?;
        // Events name the folder as watched; its real path is what comes back.
        let dir = std::fs::canonicalize(&dir)?;
        let file = dir.join("barrier");
        let barrier = Barrier { dir, file };
        barrier.touch()?;
        Ok(barrier)
    }

    /// The folder to watch.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether an event path is in the barrier's folder (the watcher's own
    /// business, never the cert store's).
    pub fn owns(&self, path: &Path) -> bool {
        path.starts_with(&self.dir)
    }

    /// Whether an event path is the barrier file itself.
    pub fn is_file(&self, path: &Path) -> bool {
        path == self.file
    }

    /// Writes the file empty: its close event is the barrier.
    pub fn touch(&self) -> std::io::Result<()> {
        std::fs::write(&self.file, b"")
    }
}

impl Drop for Barrier {
    fn drop(&mut self) {
        // Best effort: a folder left behind holds one empty file.
        let _ = std::fs::remove_file(&self.file);
        let _ = std::fs::remove_dir(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_private_and_removed_on_drop() {
        use std::os::unix::fs::PermissionsExt;
        let b = Barrier::create().expect("barrier");
        let dir = b.dir().to_path_buf();
        let mode = std::fs::metadata(&dir).expect("dir").permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        assert!(b.owns(&dir.join("barrier")));
        assert!(b.is_file(&dir.join("barrier")));
        assert!(!b.owns(Path::new("/etc/passwd")));
        b.touch().expect("touch");
        drop(b);
        assert!(!dir.exists());
    }
}
