//! Static file routes: map a request path below a route's folder to a file
//! and serve it with `actix_files::NamedFile`.
//!
//! # What a request can reach
//!
//! The path is split on raw `/` *before* it is percent-decoded, and every
//! decoded segment must be an ordinary file name: a segment that decodes to
//! `.` or `..`, or that contains `/`, `\` or NUL, a malformed `%` escape, a
//! name that is not UTF-8 and a name longer than `NAME_MAX` all get 400
//! without touching the disk. The joined
//! path is then canonicalized (which resolves symbolic links) and must still
//! lie inside the canonicalized root, else 404; only regular files are
//! served (a FIFO, socket or device is 404, so a request can never block on
//! one). Hidden files (`.well-known/...`, `.env`) are served like any other
//! file, as nginx and Caddy do by default.
//!
//! # Folders
//!
//! A folder is served through its `index.html`; there is never a listing.
//! A folder requested without a trailing slash is redirected with 308 to the
//! same path with the slash (the query is kept), as Caddy's `file_server`
//! does, so that relative links in the index page resolve against the folder
//! and not its parent. The redirect is only sent when the index exists; a
//! folder without `index.html` is 404 either way. A file requested with a
//! trailing slash is 404 (as nginx answers).
//!
//! # What `NamedFile` gives, and what is patched around it
//!
//! `NamedFile::into_response` (actix-files 0.6) sets `Content-Type` from the
//! extension (`; charset=utf-8` on text types), a strong `ETag`,
//! `Last-Modified`, `Accept-Ranges: bytes`; it answers `If-None-Match`,
//! `If-Modified-Since` (304), `If-Match`/`If-Unmodified-Since` (412) and a
//! single byte `Range` (206, 416 when unsatisfiable; of several ranges only
//! the first is served); HEAD bodies are dropped by actix-http's dispatcher
//! for HTTP/1 and HTTP/2. Three gaps are closed here:
//!
//! - it ignores `If-Range`, which would hand a resumed download a slice of a
//!   file that changed in between; here a `Range` whose `If-Range` does not
//!   match the current `ETag`/`Last-Modified` gets the whole file with 200
//!   (RFC 9110 §13.1.5);
//! - formatting the `ETag` or `Last-Modified` of a file whose mtime is before
//!   1970 or after 9999 panics inside actix-files/httpdate; such files are
//!   served without the two validators;
//! - it adds `Content-Disposition` (`attachment` for PDFs, archives, ...),
//!   which nginx and Caddy do not send and which makes browsers download
//!   what they could show; it is turned off.
//!
//! # Blocking
//!
//! The lookup (canonicalize, stat, a non-blocking open) runs on the worker
//! thread, as nginx does its `open`/`stat`: on local files it costs a few
//! microseconds, less than a round trip through the blocking pool. Files up
//! to 64 KiB are read on the worker too; larger ones stream in chunks read
//! on actix's blocking pool, so a big download never stalls a worker.

use std::{
    fs::File,
    io::{self, Read as _, Seek as _},
    path::{Component, Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use actix_files::NamedFile;
use actix_web::{
    body::SizedStream,
    http::{
        header::{self, HeaderValue},
        Method, StatusCode,
    },
    web, HttpRequest, HttpResponse,
};
use bytes::Bytes;

/// The file served for a folder.
const INDEX_FILE: &str = "index.html";

/// Files at most this large are read on the worker thread.
const SYNC_READ_LIMIT: u64 = 64 * 1024;

/// Serves `rest` from the folder `root`.
///
/// `root` is the route's folder; it is canonicalized on every request, so a
/// root that is itself a symbolic link may be swapped (a `current ->
/// releases/v2` deployment) without a restart. `rest` is the request path
/// with the route prefix stripped, still percent-encoded as it came on the
/// wire (`/a%20b/c.txt`, or empty for the route's own path). See the module
/// documentation for what is refused and how folders are handled.
pub async fn serve(req: &HttpRequest, root: &Path, rest: &str) -> HttpResponse {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut res = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
        res.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return res;
    }

    let relative = match decode_path(rest) {
        Ok(relative) => relative,
        Err(why) => {
            log::debug!("refused static path {rest:?}: {why}");
            return plain(StatusCode::BAD_REQUEST, "bad request: invalid path");
        }
    };

    let path = req.uri().path();
    let slash = path.ends_with('/');
    // The lookup (a few `stat`s and one non-blocking `open`) runs on the
    // worker itself, as nginx does: on local files it takes microseconds,
    // far less than a hop to the blocking pool and back, which would cost
    // more CPU than the whole rest of a small response.
    let lookup = lookup(root, &relative, slash);

    match lookup {
        Lookup::File { file, name } => respond_with_file(req, file, &name),
        Lookup::RedirectToFolder => {
            // Leading slashes are collapsed so that a path like `//host/x`
            // can never become a protocol-relative `Location`.
            let mut location = format!("/{}/", path.trim_start_matches('/'));
            if let Some(query) = req.uri().query() {
                location.push('?');
                location.push_str(query);
            }
            match HeaderValue::try_from(location) {
                Ok(location) => {
                    let mut res = plain(StatusCode::PERMANENT_REDIRECT, "permanent redirect");
                    res.headers_mut().insert(header::LOCATION, location);
                    res
                }
                // The location is built from a path that already parsed as a
                // URI, so this is unreachable in practice; 404 is safe.
                Err(_) => not_found(),
            }
        }
        Lookup::NotFound => not_found(),
        Lookup::Forbidden => plain(StatusCode::FORBIDDEN, "forbidden"),
        Lookup::Failed => plain(StatusCode::INTERNAL_SERVER_ERROR, "internal server error"),
    }
}

/// Why a request path was refused before the disk was consulted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
enum PathError {
    #[error("malformed percent escape")]
    BadEscape,
    #[error("segment is not UTF-8")]
    NotUtf8,
    #[error("dot segment")]
    DotSegment,
    #[error("segment contains '/', '\\' or NUL")]
    ForbiddenByte,
    #[error("name longer than the file system allows")]
    TooLong,
}

/// The longest file name Linux and the BSDs accept (`NAME_MAX`), and the
/// longest path (`PATH_MAX`, with room for the root in front).
const NAME_MAX: usize = 255;
const RELATIVE_PATH_MAX: usize = 3072;

/// Turns the encoded request path into a relative path made only of
/// `Component::Normal` parts.
fn decode_path(rest: &str) -> Result<PathBuf, PathError> {
    let mut relative = PathBuf::new();
    // Splitting before decoding keeps `%2f` inside its segment, where the
    // check below refuses it, instead of letting it create new segments.
    for raw in rest.split('/').filter(|raw| !raw.is_empty()) {
        let decoded = percent_decode(raw.as_bytes())?;
        let segment = String::from_utf8(decoded).map_err(|_| PathError::NotUtf8)?;
        if segment == "." || segment == ".." {
            return Err(PathError::DotSegment);
        }
        if segment.contains(['/', '\\', '\0']) {
            return Err(PathError::ForbiddenByte);
        }
        if segment.len() > NAME_MAX {
            return Err(PathError::TooLong);
        }
        relative.push(segment);
    }
    if relative.as_os_str().len() > RELATIVE_PATH_MAX {
        return Err(PathError::TooLong);
    }
    // Belt and braces: what was pushed can only be plain names, so `join`
    // on the root can neither climb out nor restart at `/`.
    if relative
        .components()
        .all(|component| matches!(component, Component::Normal(_)))
    {
        Ok(relative)
    } else {
        Err(PathError::DotSegment)
    }
}

/// Decodes `%XX` escapes; a `%` not followed by two hex digits is an error
/// (a lenient decoder would pass it through and make `%%2e` ambiguous).
fn percent_decode(raw: &[u8]) -> Result<Vec<u8>, PathError> {
    let mut out = Vec::with_capacity(raw.len());
    let mut bytes = raw.iter();
    while let Some(&byte) = bytes.next() {
        if byte == b'%' {
            let high = bytes.next().and_then(|b| hex_value(*b));
            let low = bytes.next().and_then(|b| hex_value(*b));
            match (high, low) {
                (Some(high), Some(low)) => out.push(high << 4 | low),
                _ => return Err(PathError::BadEscape),
            }
        } else {
            out.push(byte);
        }
    }
    Ok(out)
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// The outcome of looking a path up on disk.
#[derive(Debug)]
enum Lookup {
    /// A regular file, opened; `name` is the path as requested (not
    /// canonical), whose extension decides the content type, as nginx does
    /// for a symbolic link.
    File {
        file: File,
        name: PathBuf,
    },
    /// A folder with an index, asked for without the trailing slash.
    RedirectToFolder,
    NotFound,
    Forbidden,
    Failed,
}

/// Resolves `relative` under `root` and opens the file: with `openat2`
/// where the kernel has it (Linux 5.6+), else by canonicalizing.
fn lookup(root: &Path, relative: &Path, slash: bool) -> Lookup {
    match lookup_beneath(root, relative, slash) {
        Some(found) => found,
        None => lookup_canonical(root, relative, slash),
    }
}

/// The lookup in two or three system calls: `openat2` with
/// `RESOLVE_BENEATH` resolves the path, symbolic links included, and fails
/// with `EXDEV` if any step would leave the root, so the kernel enforces
/// what [`lookup_canonical`] checks by hand. `None` sends the request to
/// [`lookup_canonical`]: `openat2` is not available (old kernel, seccomp
/// filter), or the path left the root or took an absolute link, which the
/// canonical lookup refuses or follows as it should.
fn lookup_beneath(root: &Path, relative: &Path, slash: bool) -> Option<Lookup> {
    use rustix::fs::{openat2, Mode, OFlags, ResolveFlags};
    use rustix::io::Errno;

    let dir_flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let root_fd = match rustix::fs::open(root, dir_flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(err) => {
            log::warn!("static root {} is not usable: {err}", root.display());
            return Some(Lookup::NotFound);
        }
    };
    // Non-blocking: a FIFO must not wait for a writer (see `open_regular`).
    let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS;
    let open = |path: &Path| -> Result<Option<File>, Lookup> {
        let path = if path.as_os_str().is_empty() {
            Path::new(".")
        } else {
            path
        };
        match openat2(&root_fd, path, flags, Mode::empty(), resolve) {
            Ok(fd) => Ok(Some(File::from(fd))),
            // Not available; or EXDEV: a step would leave the root, which
            // includes any absolute link even one pointing back inside:
            // the canonical lookup tells those apart.
            Err(Errno::NOSYS | Errno::PERM | Errno::XDEV) => Ok(None),
            Err(Errno::LOOP) => Err(Lookup::NotFound),
            Err(err) => Err(io_failure(path, &io::Error::from(err))),
        }
    };
    let file = match open(relative) {
        Ok(Some(file)) => file,
        Ok(None) => return None,
        Err(lookup) => return Some(lookup),
    };
    let metadata = match file.metadata() {
        Ok(metadata) => metadata,
        Err(err) => return Some(io_failure(relative, &err)),
    };
    let requested = root.join(relative);
    Some(if metadata.is_dir() {
        let index_path = relative.join(INDEX_FILE);
        match open(&index_path) {
            Ok(Some(index)) => match index.metadata() {
                Ok(meta) if meta.is_file() && !slash => Lookup::RedirectToFolder,
                Ok(meta) if meta.is_file() => Lookup::File {
                    file: index,
                    name: requested.join(INDEX_FILE),
                },
                Ok(_) => Lookup::NotFound,
                Err(err) => io_failure(&index_path, &err),
            },
            Ok(None) => return None,
            Err(lookup) => lookup,
        }
    } else if slash || !metadata.is_file() {
        // `/file.txt/` names a folder that does not exist; a FIFO, socket
        // or device is never served.
        Lookup::NotFound
    } else {
        Lookup::File {
            file,
            name: requested,
        }
    })
}

/// Resolves `relative` under `root` by canonicalizing both and checking the
/// result stays inside the root.
fn lookup_canonical(root: &Path, relative: &Path, slash: bool) -> Lookup {
    let canonical_root = match root.canonicalize() {
        Ok(root) => root,
        Err(err) => {
            log::warn!("static root {} is not usable: {err}", root.display());
            return Lookup::NotFound;
        }
    };
    let requested = canonical_root.join(relative);
    let target = match inside(&canonical_root, &requested) {
        Ok(target) => target,
        Err(lookup) => return lookup,
    };
    let metadata = match std::fs::metadata(&target) {
        Ok(metadata) => metadata,
        Err(err) => return io_failure(&target, &err),
    };

    if metadata.is_dir() {
        let requested_index = requested.join(INDEX_FILE);
        let index = match inside(&canonical_root, &requested_index) {
            Ok(index) => index,
            Err(lookup) => return lookup,
        };
        if !slash {
            // Only redirect when there is something to find at the slash
            // form; otherwise answer 404 straight away.
            return match std::fs::metadata(&index) {
                Ok(meta) if meta.is_file() => Lookup::RedirectToFolder,
                _ => Lookup::NotFound,
            };
        }
        open_regular(&index, requested_index)
    } else if slash {
        // `/file.txt/` names a folder that does not exist.
        Lookup::NotFound
    } else {
        open_regular(&target, requested)
    }
}

/// Canonicalizes `path` and checks that it stays inside `root` (which is
/// canonical). A symbolic link that leads out of the root is reported as
/// not found, so that a probe learns nothing about the outside.
fn inside(root: &Path, path: &Path) -> Result<PathBuf, Lookup> {
    let canonical = path.canonicalize().map_err(|err| io_failure(path, &err))?;
    if canonical.starts_with(root) {
        Ok(canonical)
    } else {
        log::debug!(
            "refused {}: resolves to {} outside {}",
            path.display(),
            canonical.display(),
            root.display()
        );
        Err(Lookup::NotFound)
    }
}

/// Opens `canonical` and checks, on the open handle, that it is a regular
/// file (so a file swapped for something else after the stat is not served).
/// The open does not block: opening a FIFO for reading would otherwise wait
/// for a writer and hold a blocking-pool thread. O_NONBLOCK changes nothing
/// for reads of a regular file.
fn open_regular(canonical: &Path, name: PathBuf) -> Lookup {
    use std::os::unix::fs::OpenOptionsExt;
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(canonical);
    let file = match opened {
        Ok(file) => file,
        Err(err) => return io_failure(canonical, &err),
    };
    match file.metadata() {
        Ok(metadata) if metadata.is_file() => Lookup::File { file, name },
        Ok(_) => Lookup::NotFound,
        Err(err) => io_failure(canonical, &err),
    }
}

fn io_failure(path: &Path, err: &io::Error) -> Lookup {
    match err.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory | io::ErrorKind::InvalidInput => {
            Lookup::NotFound
        }
        io::ErrorKind::PermissionDenied => Lookup::Forbidden,
        // Names too long for the file system are refused in `decode_path`,
        // so what is left (a symbolic link loop, an I/O error) is a fault
        // of the site or the disk that the operator should see.
        _ => {
            log::warn!("static lookup of {} failed: {err}", path.display());
            Lookup::Failed
        }
    }
}

/// Builds the response for an opened file through `NamedFile`.
fn respond_with_file(req: &HttpRequest, file: File, name: &Path) -> HttpResponse {
    // A second handle on the same file, kept only for the `If-Range`
    // fallback below; `try_clone` duplicates the descriptor (no disk I/O).
    let if_range_check = req.method() == Method::GET
        && req.headers().contains_key(header::RANGE)
        && req.headers().contains_key(header::IF_RANGE);
    let spare = if if_range_check {
        file.try_clone().ok()
    } else {
        None
    };

    let named = match NamedFile::from_file(file, name) {
        Ok(named) => named,
        Err(err) => return io_response(name, &err),
    };
    let length = named.metadata().len();
    // Files up to 64 KiB are read in one go on the worker (a page-cache
    // copy); larger ones stream from the blocking pool.
    let mut named = named
        .disable_content_disposition()
        .read_mode_threshold(SYNC_READ_LIMIT);
    if !named.modified().is_some_and(formattable) {
        // actix-files would panic formatting these validators.
        named = named.use_etag(false).use_last_modified(false);
    }

    let res = named.into_response(req);
    if res.status() == StatusCode::PARTIAL_CONTENT && !if_range_matches(req, &res) {
        if let Some(spare) = spare {
            return whole_file(&res, spare, length);
        }
    }
    res
}

/// Whether a file time can be written as an `ETag`/`Last-Modified` by
/// actix-files and httpdate (both `expect` it to be in 1970..=9999).
fn formattable(time: SystemTime) -> bool {
    // 253402300800 is 10000-01-01T00:00:00Z, the first second httpdate refuses.
    time.duration_since(UNIX_EPOCH)
        .is_ok_and(|since| since.as_secs() < 253_402_300_800)
}

/// `If-Range` (RFC 9110 §13.1.5): the range applies only if the validator
/// is the current strong `ETag` or exactly the current `Last-Modified`.
/// Absent `If-Range` counts as a match.
fn if_range_matches(req: &HttpRequest, res: &HttpResponse) -> bool {
    let Some(if_range) = req.headers().get(header::IF_RANGE) else {
        return true;
    };
    let Ok(if_range) = if_range.to_str() else {
        return false;
    };
    let if_range = if_range.trim();
    if if_range.starts_with('"') {
        // A strong comparison: weak tags (`W/"..."`) never match, and the
        // tags actix-files makes are strong.
        res.headers()
            .get(header::ETAG)
            .is_some_and(|etag| etag.as_bytes() == if_range.as_bytes())
    } else if if_range.starts_with("W/") {
        false
    } else {
        let sent: Option<SystemTime> = if_range
            .parse::<header::HttpDate>()
            .ok()
            .map(SystemTime::from);
        let current: Option<SystemTime> = res
            .headers()
            .get(header::LAST_MODIFIED)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse::<header::HttpDate>().ok())
            .map(SystemTime::from);
        matches!((sent, current), (Some(sent), Some(current)) if sent == current)
    }
}

/// A 200 with the whole file, reusing the representation headers that
/// `NamedFile` put on its 206.
fn whole_file(partial: &HttpResponse, file: File, length: u64) -> HttpResponse {
    let mut res = HttpResponse::Ok();
    for name in [
        header::CONTENT_TYPE,
        header::ETAG,
        header::LAST_MODIFIED,
        header::ACCEPT_RANGES,
    ] {
        if let Some(value) = partial.headers().get(&name) {
            res.insert_header((name, value.clone()));
        }
    }
    res.body(SizedStream::new(length, Box::pin(read_file(file, length))))
}

/// Reads `length` bytes of `file` from the start, one chunk at a time on the
/// blocking pool.
fn read_file(
    file: File,
    length: u64,
) -> impl futures_util::Stream<Item = Result<Bytes, io::Error>> {
    const CHUNK: u64 = 64 * 1024;
    futures_util::stream::try_unfold((file, 0_u64), move |(mut file, offset)| async move {
        if offset >= length {
            return Ok(None);
        }
        let want = (length - offset).min(CHUNK);
        let (file, chunk) = web::block(move || -> io::Result<(File, Vec<u8>)> {
            file.seek(io::SeekFrom::Start(offset))?;
            let mut chunk = Vec::new();
            file.by_ref().take(want).read_to_end(&mut chunk)?;
            Ok((file, chunk))
        })
        .await
        .map_err(io::Error::other)??;
        if chunk.is_empty() {
            // The file shrank while being sent; the client must not take a
            // short body for the whole file.
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
        }
        let next = offset + chunk.len() as u64;
        Ok(Some((Bytes::from(chunk), (file, next))))
    })
}

fn io_response(path: &Path, err: &io::Error) -> HttpResponse {
    match io_failure(path, err) {
        Lookup::Forbidden => plain(StatusCode::FORBIDDEN, "forbidden"),
        Lookup::Failed => plain(StatusCode::INTERNAL_SERVER_ERROR, "internal server error"),
        _ => not_found(),
    }
}

fn not_found() -> HttpResponse {
    plain(StatusCode::NOT_FOUND, "not found")
}

/// A short plain text answer.
fn plain(status: StatusCode, message: &str) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/plain; charset=utf-8")
        .body(format!("{message}\n"))
}

#[cfg(test)]
mod tests {
    // Tests may unwrap: a failure is a test failure.
    #![allow(clippy::unwrap_used)]

    use std::{
        sync::atomic::{AtomicUsize, Ordering},
        time::Duration,
    };

    use actix_web::{
        body::{to_bytes, MessageBody as _},
        dev::ServiceResponse,
        http::header,
        test, web, App, HttpRequest, HttpResponse,
    };

    use super::*;

    /// A folder under the system temp folder, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> Self {
            static COUNTER: AtomicUsize = AtomicUsize::new(0);
            let path = std::env::temp_dir().join(format!(
                "clace-static-{}-{}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir_all(&path).unwrap();
            TempDir(path)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const HELLO: &str = "hello world";
    const SECRET: &str = "top secret";

    /// `base/root` is served; `base/outside` must never be reachable.
    fn site() -> (TempDir, PathBuf) {
        use std::os::unix::fs::symlink;

        let base = TempDir::new();
        let root = base.0.join("root");
        let outside = base.0.join("outside");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::create_dir_all(root.join("empty")).unwrap();
        std::fs::create_dir_all(root.join("a b")).unwrap();
        std::fs::create_dir_all(root.join("a")).unwrap();
        std::fs::create_dir_all(root.join("esc")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(root.join("hello.txt"), HELLO).unwrap();
        std::fs::write(root.join("page.html"), "<p>page</p>").unwrap();
        std::fs::write(root.join("a b").join("c.txt"), "spaced").unwrap();
        std::fs::write(root.join("sub").join("index.html"), "<p>sub index</p>").unwrap();
        std::fs::write(outside.join("secret.txt"), SECRET).unwrap();
        std::fs::write(outside.join("index.html"), SECRET).unwrap();
        symlink(root.join("hello.txt"), root.join("link-in.txt")).unwrap();
        symlink(outside.join("secret.txt"), root.join("link-out.txt")).unwrap();
        symlink(&outside, root.join("dir-out")).unwrap();
        symlink(
            outside.join("index.html"),
            root.join("esc").join("index.html"),
        )
        .unwrap();
        (base, root)
    }

    /// The route is mounted at `/s`: the handler strips that prefix from
    /// the raw path, as the router does; other paths are served whole, as
    /// by a route at `/`.
    async fn handler(req: HttpRequest, root: web::Data<PathBuf>) -> HttpResponse {
        let path = req.uri().path();
        let rest = path.strip_prefix("/s").unwrap_or(path);
        serve(&req, &root, rest).await
    }

    /// The test app; a macro because the request type of
    /// `test::init_service` (`actix_http::Request`) cannot be named here.
    macro_rules! app {
        ($root:expr) => {
            test::init_service(
                App::new()
                    .app_data(web::Data::new($root.to_path_buf()))
                    .default_service(web::to(handler)),
            )
            .await
        };
    }

    /// GET `uri`; the status and the body as text.
    macro_rules! get {
        ($app:expr, $uri:expr) => {
            body_text(
                test::call_service(&$app, test::TestRequest::get().uri($uri).to_request()).await,
            )
            .await
        };
    }

    async fn body_text(res: ServiceResponse) -> (StatusCode, String) {
        let status = res.status();
        let body = to_bytes(res.into_body()).await.unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    fn header_of(res: &ServiceResponse, name: header::HeaderName) -> String {
        res.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    }

    #[actix_web::test]
    async fn decoding_refuses_every_traversal_shape() {
        for bad in [
            "/../x",
            "/%2e%2e/x",
            "/%2E%2E/x",
            "/%2E./x",
            "/.%2e/x",
            "/..%2fx",
            "/a/..%2F..%2Fx",
            "/..%5cx",
            "/a%5c..%5c..%5cx",
            "/x%00",
            "/./x",
            "/%zz",
            "/%2",
            "/%ff",
        ] {
            assert!(decode_path(bad).is_err(), "{bad} was accepted");
        }
        assert_eq!(decode_path("").unwrap(), PathBuf::new());
        assert_eq!(
            decode_path("//a%20b///c.txt").unwrap(),
            PathBuf::from("a b/c.txt")
        );
        assert_eq!(decode_path("/..x/x..").unwrap(), PathBuf::from("..x/x.."));
    }

    #[actix_web::test]
    async fn serves_files_with_content_type() {
        let (_base, root) = site();
        let app = app!(root);

        let res = test::call_service(
            &app,
            test::TestRequest::get().uri("/s/hello.txt").to_request(),
        )
        .await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(
            header_of(&res, header::CONTENT_TYPE),
            "text/plain; charset=utf-8"
        );
        assert!(res.headers().get(header::CONTENT_DISPOSITION).is_none());
        assert_eq!(to_bytes(res.into_body()).await.unwrap(), HELLO);

        let res = test::call_service(
            &app,
            test::TestRequest::get().uri("/s/page.html").to_request(),
        )
        .await;
        assert_eq!(
            header_of(&res, header::CONTENT_TYPE),
            "text/html; charset=utf-8"
        );

        assert_eq!(
            get!(app, "/s/a%20b/c.txt"),
            (StatusCode::OK, "spaced".into())
        );
        // A link inside the root is followed, and typed by its own name.
        assert_eq!(get!(app, "/s/link-in.txt"), (StatusCode::OK, HELLO.into()));
    }

    #[actix_web::test]
    async fn conditional_get_gives_304() {
        let (_base, root) = site();
        let app = app!(root);

        let res = test::call_service(
            &app,
            test::TestRequest::get().uri("/s/hello.txt").to_request(),
        )
        .await;
        let etag = header_of(&res, header::ETAG);
        let last_modified = header_of(&res, header::LAST_MODIFIED);
        assert!(!etag.is_empty() && !last_modified.is_empty());

        let req = test::TestRequest::get()
            .uri("/s/hello.txt")
            .insert_header((header::IF_NONE_MATCH, etag.as_str()))
            .to_request();
        let res = test::call_service(&app, req).await;
        assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
        assert!(to_bytes(res.into_body()).await.unwrap().is_empty());

        let req = test::TestRequest::get()
            .uri("/s/hello.txt")
            .insert_header((header::IF_MODIFIED_SINCE, last_modified.as_str()))
            .to_request();
        assert_eq!(
            test::call_service(&app, req).await.status(),
            StatusCode::NOT_MODIFIED
        );

        let req = test::TestRequest::get()
            .uri("/s/hello.txt")
            .insert_header((header::IF_NONE_MATCH, "\"other\""))
            .to_request();
        assert_eq!(test::call_service(&app, req).await.status(), StatusCode::OK);
    }

    #[actix_web::test]
    async fn range_gives_206_and_if_range_is_honoured() {
        let (_base, root) = site();
        let app = app!(root);

        let req = test::TestRequest::get()
            .uri("/s/hello.txt")
            .insert_header((header::RANGE, "bytes=0-4"))
            .to_request();
        let res = test::call_service(&app, req).await;
        assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT);
        assert_eq!(header_of(&res, header::CONTENT_RANGE), "bytes 0-4/11");
        let etag = header_of(&res, header::ETAG);
        let last_modified = header_of(&res, header::LAST_MODIFIED);
        assert_eq!(to_bytes(res.into_body()).await.unwrap(), "hello");

        // If-Range with the current validators: still a range.
        for validator in [etag.as_str(), last_modified.as_str()] {
            let req = test::TestRequest::get()
                .uri("/s/hello.txt")
                .insert_header((header::RANGE, "bytes=6-"))
                .insert_header((header::IF_RANGE, validator))
                .to_request();
            let res = test::call_service(&app, req).await;
            assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT, "{validator}");
            assert_eq!(to_bytes(res.into_body()).await.unwrap(), "world");
        }

        // If-Range with a stale validator: the whole file, 200.
        for validator in ["\"stale\"", "W/\"weak\"", "Thu, 01 Jan 2004 00:00:00 GMT"] {
            let req = test::TestRequest::get()
                .uri("/s/hello.txt")
                .insert_header((header::RANGE, "bytes=6-"))
                .insert_header((header::IF_RANGE, validator))
                .to_request();
            let res = test::call_service(&app, req).await;
            assert_eq!(res.status(), StatusCode::OK, "{validator}");
            assert_eq!(header_of(&res, header::ETAG), etag);
            assert_eq!(
                header_of(&res, header::CONTENT_TYPE),
                "text/plain; charset=utf-8"
            );
            assert!(res.headers().get(header::CONTENT_RANGE).is_none());
            let body = res.into_body();
            assert_eq!(body.size(), actix_web::body::BodySize::Sized(11));
            assert_eq!(to_bytes(body).await.unwrap(), HELLO);
        }

        let req = test::TestRequest::get()
            .uri("/s/hello.txt")
            .insert_header((header::RANGE, "bytes=50-60"))
            .to_request();
        assert_eq!(
            test::call_service(&app, req).await.status(),
            StatusCode::RANGE_NOT_SATISFIABLE
        );
    }

    #[actix_web::test]
    async fn folders_use_index_html_and_never_list() {
        let (_base, root) = site();
        let app = app!(root);

        assert_eq!(
            get!(app, "/s/sub/"),
            (StatusCode::OK, "<p>sub index</p>".into())
        );
        let res = test::call_service(
            &app,
            test::TestRequest::get().uri("/s/sub?x=1").to_request(),
        )
        .await;
        assert_eq!(res.status(), StatusCode::PERMANENT_REDIRECT);
        assert_eq!(header_of(&res, header::LOCATION), "/s/sub/?x=1");

        // The route's own folder without an index, with or without slash.
        assert_eq!(get!(app, "/s").0, StatusCode::NOT_FOUND);
        assert_eq!(get!(app, "/s/").0, StatusCode::NOT_FOUND);
        assert_eq!(get!(app, "/s/empty/").0, StatusCode::NOT_FOUND);
        assert_eq!(get!(app, "/s/empty").0, StatusCode::NOT_FOUND);
        assert_eq!(get!(app, "/s/hello.txt/").0, StatusCode::NOT_FOUND);
        let (status, body) = get!(app, "/s/missing.txt");
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body, "not found\n");

        // A protocol-relative Location is never produced (the handler
        // serves paths outside `/s` as a route at `/` would).
        std::fs::create_dir_all(root.join("evil.com")).unwrap();
        std::fs::write(root.join("evil.com").join("index.html"), "x").unwrap();
        let req = test::TestRequest::get().uri("//evil.com").to_request();
        let res = test::call_service(&app, req).await;
        assert_eq!(res.status(), StatusCode::PERMANENT_REDIRECT);
        assert_eq!(header_of(&res, header::LOCATION), "/evil.com/");
    }

    #[actix_web::test]
    async fn traversal_and_escaping_links_are_refused() {
        let (_base, root) = site();
        let app = app!(root);

        for uri in [
            "/s/../outside/secret.txt",
            "/s/%2e%2e/outside/secret.txt",
            "/s/%2E%2E/outside/secret.txt",
            "/s/%2E./outside/secret.txt",
            "/s/..%2foutside%2fsecret.txt",
            "/s/a/..%2F..%2Foutside%2Fsecret.txt",
            "/s/a/%2e%2e%2f%2e%2e%2foutside%2fsecret.txt",
            "/s/..%5coutside%5csecret.txt",
            "/s/a/..%5c..%5coutside%5csecret.txt",
            "/s/hello.txt%00",
            "/s/hello.txt%00.html",
            "/s/%zz",
            "/s/link-out.txt",
            "/s/dir-out/secret.txt",
            "/s/dir-out/",
            "/s/esc/",
            "/s/esc",
            "/s/esc/index.html",
        ] {
            let (status, body) = get!(app, uri);
            assert!(
                status == StatusCode::BAD_REQUEST || status == StatusCode::NOT_FOUND,
                "{uri} gave {status}"
            );
            assert!(!body.contains(SECRET), "{uri} leaked the secret");
        }
    }

    #[actix_web::test]
    async fn other_methods_get_405() {
        let (_base, root) = site();
        let app = app!(root);
        for method in [Method::POST, Method::PUT, Method::DELETE, Method::OPTIONS] {
            let req = test::TestRequest::default()
                .method(method.clone())
                .uri("/s/hello.txt")
                .to_request();
            let res = test::call_service(&app, req).await;
            assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED, "{method}");
            assert_eq!(header_of(&res, header::ALLOW), "GET, HEAD");
        }
    }

    #[actix_web::test]
    async fn file_times_outside_1970_to_9999_do_not_panic() {
        let (_base, root) = site();
        let old = root.join("old.txt");
        std::fs::write(&old, "old").unwrap();
        let before_epoch = UNIX_EPOCH - Duration::from_secs(86_400);
        File::options()
            .write(true)
            .open(&old)
            .unwrap()
            .set_modified(before_epoch)
            .unwrap();
        let app = app!(root);
        let res = test::call_service(
            &app,
            test::TestRequest::get().uri("/s/old.txt").to_request(),
        )
        .await;
        assert_eq!(res.status(), StatusCode::OK);
        assert!(res.headers().get(header::ETAG).is_none());
        assert!(res.headers().get(header::LAST_MODIFIED).is_none());
        assert_eq!(to_bytes(res.into_body()).await.unwrap(), "old");
    }

    /// HEAD through a real server: the body is dropped by the dispatcher
    /// and the length is announced.
    #[actix_web::test]
    async fn head_over_a_real_connection() {
        let (_base, root) = site();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let data = web::Data::new(root.clone());
        let server = actix_web::HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .default_service(web::to(handler))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .unwrap()
        .run();
        let handle = server.handle();
        actix_web::rt::spawn(server);

        let client = awc::Client::default();
        let mut res = client
            .head(format!("http://{addr}/s/hello.txt"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(
            res.headers().get(header::CONTENT_LENGTH).unwrap(),
            HELLO.len().to_string().as_str()
        );
        assert!(res.body().await.unwrap().is_empty());

        let mut res = client
            .get(format!("http://{addr}/s/hello.txt"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.body().await.unwrap(), HELLO);
        handle.stop(false).await;
    }
}
