//! certmagic's lock files, so that instances sharing a storage folder (one
//! host, or NFS) and the Go Clace or Caddy on the same folder order each
//! name once: `locks/<key>.lock` holds `{"created": ..., "updated": ...}`
//! (RFC 3339), is created with `O_EXCL`, refreshed every
//! [`REFRESH`] by its holder, and taken over by anyone once it has not been
//! refreshed for [`STALE_AFTER`]. The rules assume the instances' clocks
//! agree within a few seconds (NTP).
//!
//! Of several instances that find the same stale lock, exactly one takes it
//! over: the one that creates `<lock>.takeover` first (see [`try_take`]).

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::certs::atomic::create_private_dir;

/// How often a holder rewrites `updated` (certmagic's lockFreshnessInterval).
pub const REFRESH: Duration = Duration::from_secs(5);

/// A lock not refreshed for this long is abandoned (certmagic: twice the
/// refresh interval).
pub const STALE_AFTER: Duration = Duration::from_secs(10);

/// What a lock file holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockMeta {
    /// RFC 3339 with nanoseconds, UTC.
    pub created: String,
    pub updated: String,
}

impl LockMeta {
    fn now() -> LockMeta {
        let t = rfc3339_nanos(time::OffsetDateTime::now_utc());
        LockMeta {
            created: t.clone(),
            updated: t,
        }
    }
}

fn rfc3339_nanos(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Whether a lock file's content says it is abandoned at `now`: not
/// refreshed for [`STALE_AFTER`]. `None` when the content is no lock at
/// all (empty while its creator writes it, or damaged).
pub fn is_stale(content: &[u8], now: time::OffsetDateTime) -> Option<bool> {
    let meta = serde_json::from_slice::<LockMeta>(content).ok()?;
    let updated = time::OffsetDateTime::parse(
        &meta.updated,
        &time::format_description::well_known::Rfc3339,
    )
    .ok()?;
    Some(now - updated > STALE_AFTER)
}

/// Whether the lock file at `path` (read as `content`) is abandoned: by
/// its `updated` stamp, or, when it holds no lock (being written, or
/// damaged), by its age on disk, so that a file just created is never
/// taken for stale and a damaged one does not block the name for ever.
fn file_is_stale(path: &Path, content: &[u8]) -> bool {
    is_stale(content, time::OffsetDateTime::now_utc()).unwrap_or_else(|| {
        fs::metadata(path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > STALE_AFTER)
    })
}

/// A lock file held by this process.
#[derive(Debug)]
pub struct HeldLock {
    pub path: PathBuf,
    /// The `created` stamp we wrote: how we recognise our own file.
    pub created: String,
}

/// What one attempt found.
#[derive(Debug)]
pub enum Attempt {
    Taken(HeldLock),
    /// Someone else holds it.
    Busy,
}

/// One attempt at `path`: create it, or take it over when stale. Returns
/// `Ok((Taken, took_over))`.
pub fn try_take(path: &Path) -> io::Result<(Attempt, bool)> {
    if let Some(dir) = path.parent() {
        create_private_dir(dir)?;
    }
    match create(path) {
        Ok(held) => return Ok((Attempt::Taken(held), false)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let content = match fs::read(path) {
        Ok(c) => c,
        // Released between our create and our read: try once more.
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return match create(path) {
                Ok(held) => Ok((Attempt::Taken(held), false)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok((Attempt::Busy, false)),
                Err(e) => Err(e),
            };
        }
        Err(e) => return Err(e),
    };
    if !file_is_stale(path, &content) {
        return Ok((Attempt::Busy, false));
    }
    // Stale: whoever takes `<lock>.takeover` (O_EXCL) may replace it; the
    // others are busy. Under it, the lock is read again: still stale, it is
    // removed and made anew (O_EXCL again, so a plain creator that came in
    // between wins instead, never both).
    let guard = takeover_name(path);
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&guard)
    {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            // A taker that died holding it: its guard goes stale too.
            let abandoned = fs::metadata(&guard)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > STALE_AFTER);
            if abandoned {
                let _ = fs::remove_file(&guard);
            }
            return Ok((Attempt::Busy, false));
        }
        Err(e) => return Err(e),
    }
    let result = (|| {
        match fs::read(path) {
            Ok(again) if !file_is_stale(path, &again) => return Ok((Attempt::Busy, false)),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        match fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        match create(path) {
            Ok(held) => Ok((Attempt::Taken(held), true)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok((Attempt::Busy, false)),
            Err(e) => Err(e),
        }
    })();
    let _ = fs::remove_file(&guard);
    result
}

fn takeover_name(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(".takeover");
    PathBuf::from(s)
}

fn create(path: &Path) -> io::Result<HeldLock> {
    let meta = LockMeta::now();
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    let json = serde_json::to_vec(&meta).map_err(io::Error::other)?;
    file.write_all(&json)?;
    Ok(HeldLock {
        path: path.to_path_buf(),
        created: meta.created,
    })
}

impl HeldLock {
    /// Whether the file at our path is still ours.
    fn still_ours(&self) -> bool {
        fs::read(&self.path)
            .ok()
            .and_then(|c| serde_json::from_slice::<LockMeta>(&c).ok())
            .is_some_and(|m| m.created == self.created)
    }

    /// Rewrites `updated`; `false` when the lock is no longer ours (taken
    /// over after we failed to refresh it in time, or removed).
    pub fn refresh(&self) -> bool {
        if !self.still_ours() {
            return false;
        }
        let meta = LockMeta {
            created: self.created.clone(),
            updated: rfc3339_nanos(time::OffsetDateTime::now_utc()),
        };
        let Ok(json) = serde_json::to_vec(&meta) else {
            return false;
        };
        // In place, as certmagic does: a reader sees either the old or the
        // new JSON (both fit in one small write).
        OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&self.path)
            .and_then(|mut f| f.write_all(&json))
            .is_ok()
    }

    /// Removes the file if it is still ours.
    pub fn release(&self) {
        if self.still_ours() {
            let _ = fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::{Arc, Barrier};

    fn stale_meta() -> Vec<u8> {
        let old = time::OffsetDateTime::now_utc() - Duration::from_secs(60);
        let t = rfc3339_nanos(old);
        serde_json::to_vec(&LockMeta {
            created: t.clone(),
            updated: t,
        })
        .unwrap()
    }

    #[test]
    fn fresh_and_stale_by_the_updated_stamp() {
        let now = time::OffsetDateTime::now_utc();
        let fresh = serde_json::to_vec(&LockMeta::now()).unwrap();
        assert_eq!(is_stale(&fresh, now), Some(false));
        assert_eq!(is_stale(&fresh, now + Duration::from_secs(11)), Some(true));
        assert_eq!(is_stale(&stale_meta(), now), Some(true));
        // certmagic's own format (Go's RFC3339Nano, local offset).
        let go = br#"{"created":"2026-12-03T10:00:00.123456789+01:00","updated":"2026-12-03T10:00:04.5+01:00"}"#;
        let at = time::OffsetDateTime::parse(
            "2026-12-03T09:00:10Z",
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
        assert_eq!(is_stale(go, at), Some(false));
        assert_eq!(is_stale(go, at + Duration::from_secs(5)), Some(true));
        assert_eq!(is_stale(b"", now), None);
    }

    #[test]
    fn a_lock_being_written_is_not_stale_and_an_old_damaged_one_is() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("issue_cert_a.test.lock");
        fs::write(&path, b"").unwrap();
        assert!(matches!(try_take(&path).unwrap().0, Attempt::Busy));
        let old = std::time::SystemTime::now() - Duration::from_secs(60);
        fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(old)
            .unwrap();
        assert!(matches!(try_take(&path).unwrap().0, Attempt::Taken(_)));
    }

    #[test]
    fn a_fresh_lock_is_busy_and_released_locks_are_taken_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("locks/issue_cert_a.test.lock");
        let (first, over) = try_take(&path).unwrap();
        assert!(!over);
        let Attempt::Taken(held) = first else {
            panic!("not taken")
        };
        assert!(matches!(try_take(&path).unwrap().0, Attempt::Busy));
        assert!(held.refresh());
        held.release();
        assert!(!path.exists());
        assert!(matches!(try_take(&path).unwrap().0, Attempt::Taken(_)));
    }

    #[test]
    fn a_stale_lock_is_taken_over_and_its_old_holder_learns_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("issue_cert_a.test.lock");
        let Attempt::Taken(old) = try_take(&path).unwrap().0 else {
            panic!("not taken")
        };
        fs::write(&path, stale_meta()).unwrap();
        let (attempt, over) = try_take(&path).unwrap();
        assert!(over, "taken over");
        assert!(matches!(attempt, Attempt::Taken(_)));
        assert!(!old.refresh(), "the old holder finds the lock gone");
        old.release();
        assert!(path.exists(), "the old holder does not remove the new lock");
    }

    #[test]
    fn of_many_takers_of_one_stale_lock_exactly_one_wins() {
        for _ in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let path = Arc::new(dir.path().join("issue_cert_a.test.lock"));
            fs::write(&*path, stale_meta()).unwrap();
            let barrier = Arc::new(Barrier::new(8));
            let takers: Vec<_> = (0..8)
                .map(|_| {
                    let (path, barrier) = (path.clone(), barrier.clone());
                    std::thread::spawn(move || {
                        barrier.wait();
                        matches!(try_take(&path).unwrap().0, Attempt::Taken(_))
                    })
                })
                .collect();
            let winners = takers
                .into_iter()
                .map(|t| t.join().unwrap())
                .filter(|won| *won)
                .count();
            assert_eq!(winners, 1, "exactly one taker holds the lock");
            let left: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
            assert_eq!(left.len(), 1, "no takeover file is left behind");
        }
    }
}
