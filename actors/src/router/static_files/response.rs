//! The answer to a static request: the file through actix-files'
//! `NamedFile` (with the gaps described in the parent module closed), the
//! folder redirect, and the short plain-text errors.

use std::{
    fs::File,
    path::Path,
    time::{SystemTime, UNIX_EPOCH},
};

use actix_files::NamedFile;
use actix_web::{
    body::{BodySize, MessageBody as _, SizedStream},
    http::{
        header::{self, HeaderValue},
        Method, StatusCode,
    },
    HttpRequest, HttpResponse,
};

use super::body;
use super::cache;
use super::lookup::{io_failure, Lookup};

/// Files at most this large are read on the worker thread.
const SYNC_READ_LIMIT: u64 = 64 * 1024;

/// The response for the outcome of a lookup.
/// With `keep`, a plain GET: a small file's answer is kept in the cache.
pub(super) fn respond(req: &HttpRequest, found: Lookup, keep: Option<cache::Key>) -> HttpResponse {
    match found {
        Lookup::File { file, name } => respond_with_file(req, file, &name, keep),
        Lookup::RedirectToFolder => redirect_to_folder(req),
        Lookup::NotFound => not_found(),
        Lookup::Forbidden => plain(StatusCode::FORBIDDEN, "forbidden"),
        Lookup::Failed => plain(StatusCode::INTERNAL_SERVER_ERROR, "internal server error"),
    }
}

/// 405 for anything but GET and HEAD.
pub(super) fn method_not_allowed() -> HttpResponse {
    let mut res = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    res.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    res
}

/// 308 to the request path with a trailing slash, the query kept.
fn redirect_to_folder(req: &HttpRequest) -> HttpResponse {
    // Leading slashes are collapsed so that a path like `//host/x` can never
    // become a protocol-relative `Location`.
    let mut location = format!("/{}/", req.uri().path().trim_start_matches('/'));
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
        // The location is built from a path that already parsed as a URI,
        // so this is unreachable in practice; 404 is safe.
        Err(_) => not_found(),
    }
}

/// Builds the response for an opened file through `NamedFile`.
fn respond_with_file(
    req: &HttpRequest,
    file: File,
    name: &Path,
    keep: Option<cache::Key>,
) -> HttpResponse {
    let read_at = std::time::Instant::now();
    let kept = keep.and_then(|key| cache::read_small(&file).map(|(meta, body)| (key, meta, body)));

    let named = match NamedFile::from_file(file, name) {
        Ok(named) => named,
        Err(err) => return respond(req, io_failure(name, &err), None),
    };
    let named_meta = named.metadata().clone();
    let length = named.metadata().len();
    // Files up to 64 KiB are read in one go on the worker (a page-cache
    // copy) by actix-files. A larger GET's body, and the whole file of the
    // `If-Range` fallback below, are read by [`body::file_body`] instead
    // (on the worker while the page cache has it), from a second handle
    // (`try_clone` duplicates the descriptor, no disk I/O): actix-files'
    // reader would send every 64 KiB to the blocking pool.
    let large = length > SYNC_READ_LIMIT;
    let if_range_check =
        req.headers().contains_key(header::RANGE) && req.headers().contains_key(header::IF_RANGE);
    let spare = (req.method() == Method::GET && (large || if_range_check))
        .then(|| named.file().try_clone().ok())
        .flatten();
    let mut named = named
        .disable_content_disposition()
        .read_mode_threshold(SYNC_READ_LIMIT);
    if !named.modified().is_some_and(formattable) {
        // actix-files would panic formatting these validators.
        named = named.use_etag(false).use_last_modified(false);
    }

    let res = named.into_response(req);
    if let Some((key, meta, body)) = kept {
        // Only a version read whole: same size and times before and after.
        if cache::same_version(&meta, &named_meta) {
            cache::put(key, &res, body, read_at);
        }
    }
    if res.status() == StatusCode::PARTIAL_CONTENT && !if_range_matches(req, &res) {
        if let Some(spare) = spare {
            return whole_file(&res, spare, length);
        }
        return res;
    }
    match spare {
        Some(file) if large => with_file_body(res, file),
        _ => res,
    }
}

/// `res` (NamedFile's 200 or 206) with its body read by
/// [`body::file_body`]: the same bytes, the same length, the same headers.
/// Any other answer (304, 412, 416, an empty range) is left as it is.
fn with_file_body(res: HttpResponse, file: File) -> HttpResponse {
    let BodySize::Sized(length) = res.body().size() else {
        return res;
    };
    let offset = match res.status() {
        StatusCode::OK => 0,
        StatusCode::PARTIAL_CONTENT => match range_start(&res) {
            Some(start) => start,
            None => return res,
        },
        _ => return res,
    };
    if length == 0 {
        return res;
    }
    res.set_body(SizedStream::new(
        length,
        Box::pin(body::file_body(file, offset, length)),
    ))
    .map_into_boxed_body()
}

/// The first byte of a single-range 206 (`Content-Range: bytes A-B/N`).
fn range_start(res: &HttpResponse) -> Option<u64> {
    let value = res.headers().get(header::CONTENT_RANGE)?.to_str().ok()?;
    let (start, _) = value.strip_prefix("bytes ")?.split_once('-')?;
    start.trim().parse().ok()
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
    res.body(SizedStream::new(
        length,
        Box::pin(body::file_body(file, 0, length)),
    ))
}

fn not_found() -> HttpResponse {
    plain(StatusCode::NOT_FOUND, "not found")
}

/// A short plain text answer.
pub(super) fn plain(status: StatusCode, message: &str) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/plain; charset=utf-8")
        .body(format!("{message}\n"))
}

#[cfg(test)]
mod tests {
    // Tests may unwrap: a failure is a test failure.
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use actix_web::{
        body::{to_bytes, MessageBody as _},
        test, web, App,
    };

    use super::super::testing::{app, get, get_response, handler, header_of, site, HELLO};
    use super::*;

    #[actix_web::test]
    async fn serves_files_with_content_type() {
        let (_base, root) = site();
        let app = app!(root);

        let res = get_response!(app, "/s/hello.txt");
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(
            header_of(&res, header::CONTENT_TYPE),
            "text/plain; charset=utf-8"
        );
        assert!(res.headers().get(header::CONTENT_DISPOSITION).is_none());
        assert_eq!(to_bytes(res.into_body()).await.unwrap(), HELLO);

        let res = get_response!(app, "/s/page.html");
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

        let res = get_response!(app, "/s/hello.txt");
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

        // `Range: bytes=6-` with `If-Range: validator`.
        let if_range = |validator: &str| {
            test::TestRequest::get()
                .uri("/s/hello.txt")
                .insert_header((header::RANGE, "bytes=6-"))
                .insert_header((header::IF_RANGE, validator.to_owned()))
                .to_request()
        };

        // If-Range with the current validators: still a range.
        for validator in [etag.as_str(), last_modified.as_str()] {
            let res = test::call_service(&app, if_range(validator)).await;
            assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT, "{validator}");
            assert_eq!(to_bytes(res.into_body()).await.unwrap(), "world");
        }

        // If-Range with a stale validator: the whole file, 200.
        for validator in ["\"stale\"", "W/\"weak\"", "Thu, 01 Jan 2004 00:00:00 GMT"] {
            let res = test::call_service(&app, if_range(validator)).await;
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
        let res = get_response!(app, "/s/old.txt");
        assert_eq!(res.status(), StatusCode::OK);
        assert!(res.headers().get(header::ETAG).is_none());
        assert!(res.headers().get(header::LAST_MODIFIED).is_none());
        assert_eq!(to_bytes(res.into_body()).await.unwrap(), "old");
    }

    /// Bodies over 64 KiB are read by `body::file_body`: the same bytes,
    /// length and headers as actix-files gives, whole or in a range.
    #[actix_web::test]
    async fn large_files_whole_and_in_ranges() {
        let (_base, root) = site();
        let data: Vec<u8> = (0..300_000_u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(root.join("big.bin"), &data).unwrap();
        let app = app!(root);

        let res = get_response!(app, "/s/big.bin");
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(header_of(&res, header::ACCEPT_RANGES), "bytes");
        let etag = header_of(&res, header::ETAG);
        assert!(!etag.is_empty());
        assert_eq!(to_bytes(res.into_body()).await.unwrap(), data);

        for (range, from, to) in [
            ("bytes=1000-199999", 1000, 200_000),
            ("bytes=-70000", 230_000, 300_000),
            ("bytes=299990-", 299_990, 300_000),
        ] {
            let req = test::TestRequest::get()
                .uri("/s/big.bin")
                .insert_header((header::RANGE, range))
                .to_request();
            let res = test::call_service(&app, req).await;
            assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT, "{range}");
            assert_eq!(
                header_of(&res, header::CONTENT_RANGE),
                format!("bytes {}-{}/300000", from, to - 1)
            );
            assert_eq!(
                to_bytes(res.into_body()).await.unwrap(),
                data[from..to],
                "{range}"
            );
        }

        // If-Range with another validator: the whole file, not the range.
        let req = test::TestRequest::get()
            .uri("/s/big.bin")
            .insert_header((header::RANGE, "bytes=0-9"))
            .insert_header((header::IF_RANGE, "\"other\""))
            .to_request();
        let res = test::call_service(&app, req).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(to_bytes(res.into_body()).await.unwrap(), data);

        // A matching If-None-Match: 304, no body.
        let req = test::TestRequest::get()
            .uri("/s/big.bin")
            .insert_header((header::IF_NONE_MATCH, etag.as_str()))
            .to_request();
        let res = test::call_service(&app, req).await;
        assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
        assert!(to_bytes(res.into_body()).await.unwrap().is_empty());
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
