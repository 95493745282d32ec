//! Static file routes: map a request path below a route's folder to a file
//! and serve it with `actix_files::NamedFile`.
//!
//! # What a request can reach
//!
//! The path is split on raw `/` *before* it is percent-decoded, and every
//! decoded segment must be an ordinary file name: a segment that decodes to
//! `.` or `..`, or that contains `/`, `\` or NUL, a malformed `%` escape, a
//! name that is not UTF-8 and a name longer than `NAME_MAX` all get 400
//! without touching the disk (module `path`). The path is then opened beneath
//! the root with one `openat2(RESOLVE_BENEATH)`, where the kernel refuses
//! any step out of the root, symbolic links included; where `openat2` is
//! missing, or for an absolute link, the joined path is canonicalized and
//! must still lie inside the canonicalized root (module `lookup`). A path that
//! leads out is 404. Only regular files are served (a FIFO, socket or
//! device is 404, so a request can never block on one). Hidden files
//! (`.well-known/...`, `.env`) are served like any other file, as nginx and
//! Caddy do by default.
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
//! # What `NamedFile` gives, and what is patched around it (module `response`)
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
//! The lookup (an `openat2` and an `fstat`, all opens non-blocking) runs on
//! the worker thread, as nginx does its `open`/`stat`: on local files it
//! costs a few microseconds, less than a round trip through the blocking
//! pool. Files up to 64 KiB are read on the worker too; larger ones stream
//! in 128 KiB chunks taken from the page cache on the worker
//! (`preadv2(RWF_NOWAIT)`, module `body`), and a chunk that would wait for
//! the disk is read on actix's blocking pool, so a cold download never
//! stalls a worker.

mod body;
mod cache;
mod lookup;
mod path;
mod response;
#[cfg(test)]
mod testing;

use std::path::Path;

use actix_web::{
    http::{Method, StatusCode},
    HttpRequest, HttpResponse,
};

/// Serves `rest` from the folder `root`.
///
/// `root` is the route's folder; it is opened again on every request, so a
/// root that is itself a symbolic link may be swapped (a `current ->
/// releases/v2` deployment) without a restart. `rest` is the request path
/// with the route prefix stripped, still percent-encoded as it came on the
/// wire (`/a%20b/c.txt`, or empty for the route's own path). See the module
/// documentation for what is refused and how folders are handled.
pub async fn serve(req: &HttpRequest, root: &Path, rest: &str) -> HttpResponse {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return response::method_not_allowed();
    }

    let slash = req.uri().path().ends_with('/');
    // A plain GET of a small file read less than a second ago is answered
    // from the worker's cache, without touching the disk (module `cache`).
    let key = cache::is_plain(req).then(|| cache::Key::new(root, rest, slash));
    if let Some(res) = key.as_ref().and_then(cache::get) {
        return res;
    }

    let relative = match path::decode_path(rest) {
        Ok(relative) => relative,
        Err(why) => {
            log::debug!("refused static path {rest:?}: {why}");
            return response::plain(StatusCode::BAD_REQUEST, "bad request: invalid path");
        }
    };

    // The lookup (a few system calls, every open non-blocking) runs on the
    // worker itself, as nginx does: on local files it takes microseconds,
    // far less than a hop to the blocking pool and back, which would cost
    // more CPU than the whole rest of a small response.
    let found = lookup::lookup(root, &relative, slash);
    response::respond(req, found, key)
}

#[cfg(test)]
mod tests {
    // Tests may unwrap: a failure is a test failure.
    #![allow(clippy::unwrap_used)]

    use actix_web::{http::header, test};

    use super::testing::{app, header_of, site};
    use super::*;

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
}
