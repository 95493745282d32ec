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
//! Each barrier is a file of its own, `barrier-<generation>`, so an event
//! that comes back late (after its barrier timed out and the next one was
//! written) is never taken for the next barrier's: only the event of the
//! barrier out now confirms anything.
//!
//! The files live in a folder of their own, made with mode 0700 under the
//! temporary folder (never in a certificate folder), removed when the
//! watcher stops.

use std::fs::DirBuilder;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

pub struct Barrier {
    dir: PathBuf,
    /// The generation of the file written last (its file is removed when
    /// the next one is written).
    last: u64,
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
        let mut barrier = Barrier { dir, last: 0 };
        barrier.touch(0)?;
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

    /// The generation of a barrier file's event path, if it is one.
    pub fn generation(&self, path: &Path) -> Option<u64> {
        if path.parent() != Some(self.dir.as_path()) {
            return None;
        }
        path.file_name()?
            .to_str()?
            .strip_prefix("barrier-")?
            .parse()
            .ok()
    }

    fn file(&self, generation: u64) -> PathBuf {
        self.dir.join(format!("barrier-{generation}"))
    }

    /// Writes the empty file of `generation` (its close event is the
    /// barrier) and removes the previous one.
    pub fn touch(&mut self, generation: u64) -> std::io::Result<()> {
        std::fs::write(self.file(generation), b"")?;
        if self.last != generation {
            let _ = std::fs::remove_file(self.file(self.last));
        }
        self.last = generation;
        Ok(())
    }
}

impl Drop for Barrier {
    fn drop(&mut self) {
        // Best effort: a folder left behind holds one empty file.
        let _ = std::fs::remove_file(self.file(self.last));
        let _ = std::fs::remove_dir(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_private_and_removed_on_drop() {
        use std::os::unix::fs::PermissionsExt;
        let mut b = Barrier::create().expect("barrier");
        let dir = b.dir().to_path_buf();
        let mode = std::fs::metadata(&dir).expect("dir").permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        assert!(b.owns(&dir.join("barrier-0")));
        assert!(!b.owns(Path::new("/etc/passwd")));
        b.touch(7).expect("touch");
        assert_eq!(b.generation(&dir.join("barrier-7")), Some(7));
        assert_eq!(b.generation(&dir.join("barrier")), None);
        assert_eq!(b.generation(Path::new("/tmp/barrier-7")), None);
        // Only the last generation's file is left.
        assert!(dir.join("barrier-7").exists());
        assert!(!dir.join("barrier-0").exists());
        drop(b);
        assert!(!dir.exists());
    }
}
