//! `static` routes: content types, conditional and range requests, folder
//! index, no listing, and no way out of the folder.

use std::fs;
use std::os::unix::fs::symlink;

use crate::util::http::{get, send_raw, Request, Response};
use crate::util::{config_with, toml_path, unique, Clace, Daemon};

/// A site folder served at `/site`, next to secrets it must never serve.
struct Site {
    daemon: Daemon,
    /// The content of `secret.txt` beside the site folder.
    secret: String,
    /// The content of `outside/inner.txt`, reached only through a link.
    outside_secret: String,
    index: String,
    css: String,
    // Declared last: the temporary folders go after the daemon is stopped.
    _clace: Clace,
}

const PNG: &[u8] =
    b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0\x1f\x15\xc4\x89";

fn start_site() -> Site {
    let clace = Clace::new();
    let root = clace.root();
    let site = root.join("site");
    fs::create_dir_all(site.join("sub")).expect("mkdir");
    fs::create_dir_all(site.join("docs")).expect("mkdir");
    fs::create_dir_all(root.join("outside")).expect("mkdir");

    let secret = unique("TOP-SECRET");
    fs::write(root.join("secret.txt"), &secret).expect("write");
    let outside_secret = unique("OUTSIDE-SECRET");
    fs::write(root.join("outside").join("inner.txt"), &outside_secret).expect("write");

    let index = format!("<html><body>{}</body></html>", unique("index"));
    fs::write(site.join("index.html"), &index).expect("write");
    let css = format!("body {{ color: red; }} /* {} */", unique("css"));
    fs::write(site.join("style.css"), &css).expect("write");
    fs::write(
        site.join("data.json"),
        format!("{{\"k\":\"{}\"}}", unique("json")),
    )
    .expect("write");
    fs::write(site.join("image.png"), PNG).expect("write");
    fs::write(site.join("sub").join("listed-name.txt"), "in sub").expect("write");
    fs::write(
        site.join("docs").join("index.html"),
        format!("<p>{}</p>", unique("docs")),
    )
    .expect("write");
    symlink(root.join("secret.txt"), site.join("link.txt")).expect("symlink");
    symlink(root.join("outside"), site.join("outdir")).expect("symlink");
    symlink(site.join("style.css"), site.join("alias.css")).expect("symlink");

    clace.write_config(&config_with(&format!(
        "[[route]]\npath = \"/site\"\nstatic = {}\n",
        toml_path(&site)
    )));
    let daemon = clace.serve();
    Site {
        daemon,
        secret,
        outside_secret,
        index,
        css,
        _clace: clace,
    }
}

fn content_type(resp: &Response) -> String {
    resp.header("content-type")
        .unwrap_or("")
        .to_ascii_lowercase()
}

#[test]
fn files_are_served_with_their_content_type() {
    let site = start_site();
    let addr = site.daemon.http;
    let cases: [(&str, &str, Option<&[u8]>); 4] = [
        ("/site/index.html", "text/html", Some(site.index.as_bytes())),
        ("/site/style.css", "text/css", Some(site.css.as_bytes())),
        ("/site/data.json", "application/json", None),
        ("/site/image.png", "image/png", Some(PNG)),
    ];
    for (path, ct, body) in cases {
        let resp = get(addr, path);
        assert_eq!(resp.status, 200, "{path}");
        assert!(
            content_type(&resp).starts_with(ct),
            "{path}: Content-Type {:?}, expected {ct}",
            resp.header("content-type")
        );
        if let Some(body) = body {
            assert_eq!(resp.body, body, "{path}: the file's bytes");
        }
    }
    assert_eq!(get(addr, "/site/missing.txt").status, 404);

    // A link that stays inside the folder is followed.
    let resp = get(addr, "/site/alias.css");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), site.css);
}

#[test]
fn head_gives_the_headers_without_a_body() {
    let site = start_site();
    let resp = Request::new("HEAD", "/site/style.css").send(site.daemon.http);
    assert_eq!(resp.status, 200);
    assert!(content_type(&resp).starts_with("text/css"));
    assert_eq!(
        resp.header("content-length"),
        Some(site.css.len().to_string().as_str())
    );
    assert!(resp.body.is_empty());
}

#[test]
fn etag_and_last_modified_give_304() {
    let site = start_site();
    let addr = site.daemon.http;
    let resp = get(addr, "/site/style.css");
    assert_eq!(resp.status, 200);
    let etag = resp.header("etag").expect("an ETag").to_owned();
    let last_modified = resp
        .header("last-modified")
        .expect("a Last-Modified")
        .to_owned();

    let resp = Request::get("/site/style.css")
        .header("If-None-Match", &etag)
        .send(addr);
    assert_eq!(resp.status, 304, "matching If-None-Match");
    assert!(resp.body.is_empty());

    let resp = Request::get("/site/style.css")
        .header("If-None-Match", "\"some-other-tag\"")
        .send(addr);
    assert_eq!(resp.status, 200, "a different tag gets the file");
    assert_eq!(resp.text(), site.css);

    let resp = Request::get("/site/style.css")
        .header("If-Modified-Since", &last_modified)
        .send(addr);
    assert_eq!(resp.status, 304, "If-Modified-Since the file's own date");
}

#[test]
fn range_request_gets_206_with_those_bytes() {
    let site = start_site();
    let resp = Request::get("/site/style.css")
        .header("Range", "bytes=0-4")
        .send(site.daemon.http);
    assert_eq!(resp.status, 206);
    assert_eq!(resp.body, &site.css.as_bytes()[..5]);
    assert_eq!(
        resp.header("content-range"),
        Some(format!("bytes 0-4/{}", site.css.len()).as_str())
    );
}

#[test]
fn folder_serves_its_index_html() {
    let site = start_site();
    let addr = site.daemon.http;
    let resp = get(addr, "/site/");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), site.index);
    assert!(content_type(&resp).starts_with("text/html"));

    // The folder named without its trailing slash: its index, or a redirect
    // to the slashed form (so relative links in the page resolve).
    let resp = get(addr, "/site/docs");
    match resp.status {
        200 => assert!(resp.text().contains("<p>docs-"), "{}", resp.text()),
        301 | 302 | 307 | 308 => {
            let location = resp.header("location").unwrap_or("");
            assert!(
                location.ends_with("/site/docs/"),
                "redirect to the folder: {location:?}"
            );
        }
        other => panic!("/site/docs: expected the index or a redirect, got {other}"),
    }

    let docs_index = fs::read_to_string(site._clace.root().join("site/docs/index.html"))
        .expect("read docs index");
    let resp = get(addr, "/site/docs/");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), docs_index);
}

#[test]
fn folder_without_index_is_not_listed() {
    let site = start_site();
    let resp = get(site.daemon.http, "/site/sub/");
    assert_eq!(resp.status, 404, "no directory listing: {}", resp.text());
    assert!(!resp.text().contains("listed-name.txt"));
}

#[test]
fn no_request_gets_out_of_the_folder() {
    let site = start_site();
    let addr = site.daemon.http;
    let attempts = [
        "/site/../secret.txt",
        "/site/%2e%2e/secret.txt",
        "/site/%2E%2E/secret.txt",
        "/site/%2E%2E%2Fsecret.txt",
        "/site/..%2fsecret.txt",
        "/site/..%2Fsecret.txt",
        "/site/sub/..%2F..%2Fsecret.txt",
        "/site/sub/../../secret.txt",
        "/site/sub/%2e%2e/%2e%2e/secret.txt",
        "/site/.%2e/secret.txt",
        "/site/%252e%252e/secret.txt",
        "/site/..\\secret.txt",
        "/site/%5c..%5csecret.txt",
        "/site/link.txt",
        "/site/outdir/inner.txt",
        "/site/outdir/",
        "/site//etc/passwd",
        "/site/%2fetc%2fpasswd",
        "/site/%2F..%2Fsecret.txt",
    ];
    for target in attempts {
        let raw = format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        let resp = send_raw(addr, raw.as_bytes(), false)
            .unwrap_or_else(|e| panic!("{target}: no response ({e})"));
        let body = resp.text();
        assert!(
            !body.contains(&site.secret) && !body.contains(&site.outside_secret),
            "{target} leaked a file outside the folder (status {})",
            resp.status
        );
        assert!(
            !body.contains("root:"),
            "{target} served /etc/passwd (status {})",
            resp.status
        );
        assert!(
            resp.status == 400 || resp.status == 404,
            "{target}: expected 400 or 404, got {} ({body:?})",
            resp.status
        );
    }
    // The folder itself still works.
    assert_eq!(get(addr, "/site/style.css").text(), site.css);
}
