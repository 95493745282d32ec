//! A small per-worker cache of whole small-file answers, for plain GETs.
//!
//! A keep-alive request for a small file cost ten system calls, eight of
//! them for the file (`open` of the root, `openat2`, two `statx`, `lseek`,
//! `read`, two `close`), and those were most of the server's CPU per
//! request (README, "Performance work of 2026-12-03"). Like nginx's
//! `open_file_cache`, this keeps what was found, for a stated time:
//!
//! - **Bound**: an entry is used for at most [`TTL`] (1 s) after the file was
//!   read. A file changed, replaced, removed or made unreadable on disk is
//!   served as it now is at most 1 s later (and at once by the other
//!   worker threads whose entry is older, or that have none).
//! - Only a plain `GET` is answered from it: no `Range`, no `If-Match`,
//!   `If-None-Match`, `If-Modified-Since`, `If-Unmodified-Since` or
//!   `If-Range`. Every other request takes the full path, so 304, 412, 206,
//!   416 and `If-Range` are decided on the file as it is on disk now.
//! - What is kept is the answer `NamedFile` gave for that version (status
//!   200, `Content-Type`, `ETag`, `Last-Modified`, `Accept-Ranges`) and the
//!   bytes read with it; a file whose size or times changed while it was
//!   read is not kept.
//! - Files up to [`MAX_FILE`] only, at most [`MAX_BYTES`] per worker thread
//!   and [`MAX_ENTRIES`] entries (the cache is emptied when it would grow
//!   past either), so memory stays bounded whatever the site holds and
//!   whatever paths clients ask for: each entry counts its key and headers
//!   too, so many spellings of one empty file (`/a`, `//a`, `/%61`) cannot
//!   pile up.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fs::{File, Metadata};
use std::os::unix::fs::{FileExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use actix_web::{
    http::{header, header::HeaderMap, Method, StatusCode},
    HttpRequest, HttpResponse,
};
use bytes::Bytes;

/// How long an entry may answer after the file was read: the bound on
/// serving an older version of a file changed on disk.
pub(super) const TTL: Duration = Duration::from_secs(1);
/// Larger files are never kept.
pub(super) const MAX_FILE: u64 = 64 * 1024;
/// Bytes kept per worker thread at most: file content, keys and headers.
const MAX_BYTES: usize = 2 * 1024 * 1024;
/// Entries kept per worker thread at most.
const MAX_ENTRIES: usize = 4096;
/// What an entry costs besides its body, key and header bytes (the map's
/// slot, the header map's tables), counted so that empty files cost too.
const ENTRY_OVERHEAD: usize = 256;

/// What identifies an answer: the route's folder, the request path below
/// it as it came on the wire, and whether it ended with `/`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct Key {
    root: PathBuf,
    rest: String,
    slash: bool,
}

impl Key {
    pub(super) fn new(root: &Path, rest: &str, slash: bool) -> Key {
        Key {
            root: root.to_path_buf(),
            rest: rest.to_owned(),
            slash,
        }
    }
}

struct Entry {
    at: Instant,
    headers: HeaderMap,
    body: Bytes,
    /// What this entry counts against [`MAX_BYTES`].
    cost: usize,
}

#[derive(Default)]
struct Cache {
    entries: HashMap<Key, Entry>,
    bytes: usize,
}

thread_local! {
    static CACHE: RefCell<Cache> = RefCell::new(Cache::default());
}

/// Whether `req` may be answered from the cache (and its answer kept).
pub(super) fn is_plain(req: &HttpRequest) -> bool {
    if req.method() != Method::GET {
        return false;
    }
    let h = req.headers();
    ![
        header::RANGE,
        header::IF_MATCH,
        header::IF_NONE_MATCH,
        header::IF_MODIFIED_SINCE,
        header::IF_UNMODIFIED_SINCE,
        header::IF_RANGE,
    ]
    .iter()
    .any(|name| h.contains_key(name))
}

/// The kept answer for `key`, if it is younger than [`TTL`].
pub(super) fn get(key: &Key) -> Option<HttpResponse> {
    CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        let entry = cache.entries.get(key)?;
        if entry.at.elapsed() < TTL {
            let mut res = HttpResponse::with_body(StatusCode::OK, entry.body.clone());
            *res.headers_mut() = entry.headers.clone();
            return Some(res.map_into_boxed_body());
        }
        if let Some(old) = cache.entries.remove(key) {
            cache.bytes -= old.cost;
        }
        None
    })
}

/// The content of a small regular file and the metadata it was read
/// with; `None` for a larger file or a failed read. Read with `pread`, so
/// the file's offset stays at 0 for `NamedFile`.
pub(super) fn read_small(file: &File) -> Option<(Metadata, Bytes)> {
    let meta = file.metadata().ok()?;
    if !meta.is_file() || meta.len() > MAX_FILE {
        return None;
    }
    let len = usize::try_from(meta.len()).ok()?;
    let mut buf = vec![0; len];
    let mut filled = 0;
    while filled < len {
        match file.read_at(&mut buf[filled..], filled as u64) {
            Ok(0) => return None,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    Some((meta, Bytes::from(buf)))
}

/// Whether two metadata of one open file describe the same version.
pub(super) fn same_version(a: &Metadata, b: &Metadata) -> bool {
    (
        a.dev(),
        a.ino(),
        a.len(),
        a.mtime(),
        a.mtime_nsec(),
        a.ctime(),
        a.ctime_nsec(),
    ) == (
        b.dev(),
        b.ino(),
        b.len(),
        b.mtime(),
        b.mtime_nsec(),
        b.ctime(),
        b.ctime_nsec(),
    )
}

/// Keeps `res` (a 200 for the whole file) with `body`, read at `at`.
pub(super) fn put(key: Key, res: &HttpResponse, body: Bytes, at: Instant) {
    if res.status() != StatusCode::OK {
        return;
    }
    let headers = res.headers().clone();
    let cost = ENTRY_OVERHEAD
        + key.root.as_os_str().len()
        + key.rest.len()
        + body.len()
        + headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len())
            .sum::<usize>();
    CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        if let Some(old) = cache.entries.remove(&key) {
            cache.bytes -= old.cost;
        }
        if cache.bytes + cost > MAX_BYTES || cache.entries.len() >= MAX_ENTRIES {
            cache.entries.clear();
            cache.bytes = 0;
        }
        if cost > MAX_BYTES {
            return;
        }
        cache.bytes += cost;
        let entry = Entry {
            at,
            headers,
            body,
            cost,
        };
        cache.entries.insert(key, entry);
    });
}

#[cfg(test)]
mod tests {
    // Tests may unwrap: a failure is a test failure.
    #![allow(clippy::unwrap_used)]

    use actix_web::{http::header, test};

    use super::super::testing::{app, body_text, get, get_response, header_of, site};
    use super::*;

    #[actix_web::test]
    async fn a_changed_file_is_served_as_it_is_within_the_bound() {
        let (_base, root) = site();
        let app = app!(root);
        let file = root.join("hello.txt");
        assert_eq!(get!(app, "/s/hello.txt").1, "hello world");
        let first = get_response!(app, "/s/hello.txt");
        let etag = header_of(&first, header::ETAG);
        std::fs::write(&file, "hello again, longer").unwrap();
        // Within the bound either version may be served; after it, only
        // the new one, with its own validators.
        std::thread::sleep(TTL + Duration::from_millis(50));
        let res = get_response!(app, "/s/hello.txt");
        assert_ne!(header_of(&res, header::ETAG), etag);
        assert_eq!(
            body_text(res).await,
            (StatusCode::OK, "hello again, longer".into())
        );
        std::fs::remove_file(&file).unwrap();
        std::thread::sleep(TTL + Duration::from_millis(50));
        assert_eq!(get!(app, "/s/hello.txt").0, StatusCode::NOT_FOUND);
    }

    #[actix_web::test]
    async fn a_kept_answer_has_the_headers_of_the_file() {
        let (_base, root) = site();
        let app = app!(root);
        let first = get_response!(app, "/s/hello.txt");
        let second = get_response!(app, "/s/hello.txt");
        for name in [
            header::CONTENT_TYPE,
            header::ETAG,
            header::LAST_MODIFIED,
            header::ACCEPT_RANGES,
        ] {
            assert_eq!(
                header_of(&first, name.clone()),
                header_of(&second, name.clone()),
                "{name}"
            );
        }
        assert_eq!(
            body_text(second).await,
            (StatusCode::OK, "hello world".into())
        );
    }

    #[actix_web::test]
    async fn conditional_and_range_requests_look_at_the_disk() {
        let (_base, root) = site();
        let app = app!(root);
        let file = root.join("hello.txt");
        let _ = get_response!(app, "/s/hello.txt");
        let _ = get_response!(app, "/s/hello.txt");
        std::fs::write(&file, "changed!").unwrap();
        // Kept answers may still be plain GET's, but a Range is cut from
        // the file as it is now, and the old ETag no longer gives 304.
        let req = test::TestRequest::get()
            .uri("/s/hello.txt")
            .insert_header((header::RANGE, "bytes=0-3"))
            .to_request();
        let res = test::call_service(&app, req).await;
        assert_eq!(
            body_text(res).await,
            (StatusCode::PARTIAL_CONTENT, "chan".into())
        );
        let now = get_response!(app, "/s/sub/index.html");
        let etag = header_of(&now, header::ETAG);
        let req = test::TestRequest::get()
            .uri("/s/sub/index.html")
            .insert_header((header::IF_NONE_MATCH, etag))
            .to_request();
        assert_eq!(
            test::call_service(&app, req).await.status(),
            StatusCode::NOT_MODIFIED
        );
    }

    #[actix_web::test]
    async fn many_spellings_of_an_empty_file_stay_within_the_bounds() {
        let (_base, root) = site();
        std::fs::write(root.join("empty.txt"), "").unwrap();
        let app = app!(root);
        for i in 0..(MAX_ENTRIES + 100) {
            // Distinct keys for one file: 1..=64 slashes, and letters
            // percent-encoded or not.
            let name: String = "empty.txt"
                .chars()
                .enumerate()
                .map(|(bit, c)| {
                    if (i / 64) >> bit & 1 == 1 {
                        format!("%{:02X}", c as u8)
                    } else {
                        c.to_string()
                    }
                })
                .collect();
            let uri = format!("/s/{}{name}", "/".repeat(1 + i % 64));
            assert_eq!(get_response!(app, uri.as_str()).status(), StatusCode::OK);
            CACHE.with(|cache| {
                let cache = cache.borrow();
                assert!(cache.entries.len() <= MAX_ENTRIES);
                assert!(cache.bytes <= MAX_BYTES);
                let counted: usize = cache.entries.values().map(|e| e.cost).sum();
                assert_eq!(counted, cache.bytes);
            });
        }
        CACHE.with(|cache| {
            let cache = cache.borrow();
            assert!(cache.bytes > 0, "empty files cost too");
            assert!(cache.entries.len() < MAX_ENTRIES, "the cache was emptied");
        });
    }

    #[actix_web::test]
    async fn only_plain_gets_are_kept() {
        let plain = test::TestRequest::get().to_http_request();
        assert!(is_plain(&plain));
        let head = test::TestRequest::default()
            .method(Method::HEAD)
            .to_http_request();
        assert!(!is_plain(&head));
        for name in [
            header::RANGE,
            header::IF_NONE_MATCH,
            header::IF_MODIFIED_SINCE,
            header::IF_RANGE,
        ] {
            let req = test::TestRequest::get()
                .insert_header((name.clone(), "x"))
                .to_http_request();
            assert!(!is_plain(&req), "{name}");
        }
    }
}
