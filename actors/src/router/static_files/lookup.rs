//! Finding the file for a decoded relative path under a route's folder, in
//! as few system calls as the kernel allows, and never outside the folder.
//!
//! One `openat2(RESOLVE_BENEATH)` from the root does the walk: the kernel
//! follows symbolic links and fails with `EXDEV` on any step that would
//! leave the root. Where it cannot answer (no `openat2`, or a step out of
//! the root, which includes every absolute link), the path is canonicalized
//! and checked against the canonical root instead. Only regular files are
//! opened for serving; a folder leads to its `index.html`.

use std::{
    fs::File,
    io,
    path::{Path, PathBuf},
};

/// The file served for a folder.
const INDEX_FILE: &str = "index.html";

/// The outcome of looking a path up on disk.
#[derive(Debug)]
pub(super) enum Lookup {
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
/// where the kernel has it (Linux 5.6+), else by canonicalizing. `slash`:
/// the request path ends with `/` (it names a folder).
pub(super) fn lookup(root: &Path, relative: &Path, slash: bool) -> Lookup {
    match lookup_beneath(root, relative, slash) {
        Some(found) => found,
        None => lookup_canonical(root, relative, slash),
    }
}

/// The lookup in three system calls for a file (open the root, `openat2`,
/// `fstat`), two more for a folder's index: `openat2` with
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
            // Once a minute per root: every request would log it again.
            crate::logonce::warn(
                module_path!(),
                &format!("static root {}", root.display()),
                &format!("static root {} is not usable: {err}", root.display()),
            );
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
            // Once a minute per root: every request would log it again.
            crate::logonce::warn(
                module_path!(),
                &format!("static root {}", root.display()),
                &format!("static root {} is not usable: {err}", root.display()),
            );
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

/// What an I/O error on `path` means for the request; only the unexpected
/// ones are logged.
pub(super) fn io_failure(path: &Path, err: &io::Error) -> Lookup {
    match err.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory | io::ErrorKind::InvalidInput => {
            Lookup::NotFound
        }
        io::ErrorKind::PermissionDenied => Lookup::Forbidden,
        // Names too long for the file system are refused by `decode_path`,
        // so what is left (a symbolic link loop, an I/O error) is a fault
        // of the site or the disk that the operator should see.
        _ => {
            // Once a minute per kind of error (the path comes from the
            // request, so it is in the message, not in the cause).
            crate::logonce::warn(
                module_path!(),
                &format!("static lookup {:?}", err.kind()),
                &format!("static lookup of {} failed: {err}", path.display()),
            );
            Lookup::Failed
        }
    }
}

#[cfg(test)]
mod tests {
    // Tests may unwrap: a failure is a test failure.
    #![allow(clippy::unwrap_used)]

    use actix_web::{
        http::{header, StatusCode},
        test,
    };

    use super::super::testing::{app, get, get_response, header_of, site, SECRET};

    #[actix_web::test]
    async fn folders_use_index_html_and_never_list() {
        let (_base, root) = site();
        let app = app!(root);

        assert_eq!(
            get!(app, "/s/sub/"),
            (StatusCode::OK, "<p>sub index</p>".into())
        );
        let res = get_response!(app, "/s/sub?x=1");
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
}
