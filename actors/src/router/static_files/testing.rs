//! The site and the test app that the tests of every static-files module
//! serve requests from.

// Tests may unwrap: a failure is a test failure.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use actix_web::{
    body::to_bytes,
    dev::ServiceResponse,
    http::{header, StatusCode},
    web, HttpRequest, HttpResponse,
};
use tempfile::TempDir;

pub(super) const HELLO: &str = "hello world";
pub(super) const SECRET: &str = "top secret";

/// `base/root` is served; `base/outside` must never be reachable. The
/// folder goes when the returned `TempDir` is dropped.
pub(super) fn site() -> (TempDir, PathBuf) {
    use std::os::unix::fs::symlink;

    let base = tempfile::tempdir().unwrap();
    let root = base.path().join("root");
    let outside = base.path().join("outside");
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

/// The route is mounted at `/s`: the handler strips that prefix from the
/// raw path, as the router does; other paths are served whole, as by a
/// route at `/`.
pub(super) async fn handler(req: HttpRequest, root: web::Data<PathBuf>) -> HttpResponse {
    let path = req.uri().path();
    let rest = path.strip_prefix("/s").unwrap_or(path);
    super::serve(&req, &root, rest).await
}

/// The test app serving the folder `$root` through [`handler`]; a macro
/// because the request type of `test::init_service`
/// (`actix_http::Request`) cannot be named here.
macro_rules! app {
    ($root:expr) => {
        ::actix_web::test::init_service(
            ::actix_web::App::new()
                .app_data(::actix_web::web::Data::new($root.to_path_buf()))
                .default_service(::actix_web::web::to(
                    $crate::router::static_files::testing::handler,
                )),
        )
        .await
    };
}
pub(super) use app;

/// GET `uri`; the whole response.
macro_rules! get_response {
    ($app:expr, $uri:expr) => {
        ::actix_web::test::call_service(
            &$app,
            ::actix_web::test::TestRequest::get().uri($uri).to_request(),
        )
        .await
    };
}
pub(super) use get_response;

/// GET `uri`; the status and the body as text.
macro_rules! get {
    ($app:expr, $uri:expr) => {
        $crate::router::static_files::testing::body_text(
            $crate::router::static_files::testing::get_response!($app, $uri),
        )
        .await
    };
}
pub(super) use get;

pub(super) async fn body_text(res: ServiceResponse) -> (StatusCode, String) {
    let status = res.status();
    let body = to_bytes(res.into_body()).await.unwrap();
    (status, String::from_utf8_lossy(&body).into_owned())
}

pub(super) fn header_of(res: &ServiceResponse, name: header::HeaderName) -> String {
    res.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}
