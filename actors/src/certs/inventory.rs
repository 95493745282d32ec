//! What `clace certs` and `GET /_clace/certs` report (interface §1 and §6).
//!
//! The inventory reads the folders itself rather than the published
//! snapshot, because its purpose is to show what the snapshot leaves out:
//! the pairs that are expired, half-written, mismatched or unreadable.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use serde::Serialize;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::names::normalize_sni;
use super::pair::{read_leaf, read_pair, validity_at, Pair, Source};
use super::snapshot::{Snapshot, Step};

/// One certificate, as one object of the `clace certs --json` array.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CertInfo {
    /// The certificate file, or `null` for a pair built in memory.
    pub file: Option<String>,
    /// The DNS SANs (empty when the certificate cannot be read).
    pub names: Vec<String>,
    /// `file`, `acme` or `self-signed`.
    pub source: Source,
    /// The issuer (empty when the certificate cannot be read).
    pub issuer: String,
    /// Not-after in RFC 3339, UTC (`null` when the certificate cannot be
    /// read).
    pub not_after: Option<String>,
    /// `ok`, `expired`, `not-yet-valid`, `key-mismatch` or
    /// `unreadable: <why>`.
    pub status: String,
}

/// The answer of `clace certs --name NAME --json`: which certificate a
/// handshake for the name would get, and which step of §4 chose it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NameInfo {
    /// The name as asked.
    pub name: String,
    /// The step that chose the certificate.
    pub step: Step,
    /// Its certificate file, if it has one.
    pub file: Option<String>,
    /// Its DNS SANs.
    pub names: Vec<String>,
    /// Its not-after in RFC 3339, UTC.
    pub not_after: Option<String>,
}

/// Describes every pair in `dir`: each `*.crt` directly in the folder
/// (symbolic links followed; sub-folders and names starting with `.` are
/// ignored, as the loader does, interface §4) with its `<stem>.key`. Sorted
/// by file. A missing or unreadable folder has no certificates.
///
/// Where the certificate parses but the pair is not servable (missing or
/// mismatched key), its names, issuer and expiry are still shown, since they
/// tell the operator which certificate is at fault.
pub fn scan_folder(dir: &Path, source_hint: Source, now: i64) -> Vec<CertInfo> {
    scan_pairs(pair_files(dir), source_hint, now)
}

/// Describes the pairs given as `(stem, cert, key)`, sorted by file.
pub fn scan_pairs(
    files: Vec<(String, PathBuf, PathBuf)>,
    source_hint: Source,
    now: i64,
) -> Vec<CertInfo> {
    let mut infos: Vec<CertInfo> = files
        .into_iter()
        .map(|(stem, cert_path, key_path)| {
            match read_pair(&stem, &cert_path, &key_path, source_hint) {
                Ok(pair) => info_for(&pair, now),
                Err(e) => {
                    let file = Some(cert_path.display().to_string());
                    let status = e.status_text();
                    match read_leaf(&cert_path) {
                        Ok(leaf) => CertInfo {
                            file,
                            names: leaf.names,
                            source: if leaf.self_signed_marker {
                                Source::SelfSigned
                            } else {
                                source_hint
                            },
                            issuer: leaf.issuer,
                            not_after: rfc3339(leaf.not_after),
                            status,
                        },
                        Err(_) => CertInfo {
                            file,
                            names: Vec::new(),
                            source: source_hint,
                            issuer: String::new(),
                            not_after: None,
                            status,
                        },
                    }
                }
            }
        })
        .collect();
    infos.sort_by(|a, b| a.file.cmp(&b.file));
    infos
}

/// Describes a loaded pair.
pub fn info_for(pair: &Pair, now: i64) -> CertInfo {
    CertInfo {
        file: pair.cert_path.as_ref().map(|p| p.display().to_string()),
        names: pair.names.clone(),
        source: pair.source,
        issuer: pair.issuer.clone(),
        not_after: rfc3339(pair.not_after),
        status: validity_at(pair.not_before, pair.not_after, now)
            .as_status()
            .to_owned(),
    }
}

/// Which certificate a handshake for `name` (without `acme-tls/1`) would get
/// from `snapshot` at `now`; `None` if there is nothing to serve.
pub fn explain(snapshot: &Snapshot, name: &str, now: i64) -> Option<NameInfo> {
    let selection = snapshot.select(Some(name), false, now)?;
    let pair = selection.pair.as_deref();
    Some(NameInfo {
        name: name.to_owned(),
        step: selection.step,
        file: pair
            .and_then(|p| p.cert_path.as_ref())
            .map(|p| p.display().to_string()),
        names: pair.map(|p| p.names.clone()).unwrap_or_default(),
        not_after: pair.and_then(|p| rfc3339(p.not_after)),
    })
}

/// A text table with a header, one line per certificate, columns aligned.
pub fn render_table(infos: &[CertInfo]) -> String {
    const HEADER: [&str; 6] = ["FILE", "NAMES", "SOURCE", "ISSUER", "NOT AFTER", "STATUS"];
    let rows: Vec<[String; 6]> = infos
        .iter()
        .map(|info| {
            [
                info.file.clone().unwrap_or_else(|| "-".to_owned()),
                dash_if_empty(info.names.join(",")),
                info.source.as_str().to_owned(),
                dash_if_empty(info.issuer.clone()),
                info.not_after.clone().unwrap_or_else(|| "-".to_owned()),
                info.status.clone(),
            ]
        })
        .collect();
    let mut widths = HEADER.map(|h| h.chars().count());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header = HEADER.map(str::to_owned);
    for row in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let pad = widths[i] - cell.chars().count();
                line.push_str(cell);
                line.extend(std::iter::repeat_n(' ', pad + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `clace certs --name NAME` as text, one `key: value` line per field.
pub fn render_name(info: &NameInfo) -> String {
    let mut out = String::new();
    let fields = [
        ("name", info.name.clone()),
        ("step", info.step.as_str().to_owned()),
        ("file", info.file.clone().unwrap_or_else(|| "-".to_owned())),
        ("names", dash_if_empty(info.names.join(", "))),
        (
            "not after",
            info.not_after.clone().unwrap_or_else(|| "-".to_owned()),
        ),
    ];
    for (key, value) in fields {
        // Writing to a String cannot fail.
        let _ = writeln!(out, "{:<10} {value}", format!("{key}:"));
    }
    out
}

/// Unix seconds as RFC 3339 in UTC, e.g. `2030-01-01T00:00:00Z`.
pub fn rfc3339(unix: i64) -> Option<String> {
    OffsetDateTime::from_unix_timestamp(unix)
        .ok()?
        .format(&Rfc3339)
        .ok()
}

/// Whether `name` is one `clace certs --name` can answer for; lets the CLI
/// say "not a valid host name" rather than silently show the default.
pub fn is_valid_name(name: &str) -> bool {
    normalize_sni(name).is_some()
}

/// The `(name, cert, key)` of every ACME pair of one issuer's folder
/// (certmagic's `certificates/<issuer>`): `<name>/<name>.crt` + `.key`.
pub fn managed_pair_files(issuer_dir: &Path) -> Vec<(String, PathBuf, PathBuf)> {
    let Ok(entries) = fs::read_dir(issuer_dir) else {
        return Vec::new();
    };
    let mut found: Vec<_> = entries
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| !name.starts_with('.'))
        .filter_map(|name| {
            let dir = issuer_dir.join(&name);
            let crt = dir.join(format!("{name}.crt"));
            crt.is_file()
                .then(|| (name.clone(), crt, dir.join(format!("{name}.key"))))
        })
        .collect();
    found.sort();
    found
}

/// Every ACME pair under `certificates/`, of every issuer.
pub fn all_managed_pair_files(certificates: &Path) -> Vec<(String, PathBuf, PathBuf)> {
    let Ok(entries) = fs::read_dir(certificates) else {
        return Vec::new();
    };
    let mut issuers: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| !e.file_name().as_bytes().starts_with(b"."))
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    issuers.sort();
    issuers.iter().flat_map(|i| managed_pair_files(i)).collect()
}

/// The `(stem, cert, key)` of every `*.crt` directly in `dir`.
pub fn pair_files(dir: &Path) -> Vec<(String, PathBuf, PathBuf)> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let bytes = file_name.as_bytes();
        if bytes.starts_with(b".") {
            continue;
        }
        let Some(stem) = bytes.strip_suffix(b".crt") else {
            continue;
        };
        if stem.is_empty() {
            continue;
        }
        let cert_path = entry.path();
        // Symbolic links are followed; a dangling one is still reported
        // (as unreadable), a folder named `x.crt` is not a certificate. The
        // entry's own type comes with the listing: only a link needs a
        // `stat` (this runs on every rescan of 10,000 pairs).
        let is_dir = match entry.file_type() {
            Ok(t) if t.is_symlink() => fs::metadata(&cert_path).is_ok_and(|m| m.is_dir()),
            Ok(t) => t.is_dir(),
            Err(_) => false,
        };
        if is_dir {
            continue;
        }
        let mut key_name = stem.to_vec();
        key_name.extend_from_slice(b".key");
        let key_path = dir.join(OsString::from_vec(key_name));
        found.push((
            String::from_utf8_lossy(stem).into_owned(),
            cert_path,
            key_path,
        ));
    }
    found
}

fn dash_if_empty(s: String) -> String {
    if s.is_empty() {
        "-".to_owned()
    } else {
        s
    }
}

/// Reads every valid pair of a folder (and of the ACME folder, when given)
/// into a snapshot, without creating or watching anything: what
/// `clace certs --name` explains from.
pub fn read_folder(dir: &Path, acme_dir: Option<&Path>, lookup_enabled: bool) -> Snapshot {
    let read = |files: Vec<(String, PathBuf, PathBuf)>, source| {
        files
            .into_iter()
            .filter_map(|(stem, crt, key)| {
                read_pair(&stem, &crt, &key, source)
                    .ok()
                    .map(std::sync::Arc::new)
            })
            .collect()
    };
    let acme = acme_dir.map_or_else(Vec::new, |a| read(managed_pair_files(a), Source::Acme));
    Snapshot::build(
        read(pair_files(dir), Source::File),
        acme,
        std::collections::HashMap::new(),
        lookup_enabled,
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;

    use super::super::names::SELF_SIGNED_CN;
    use super::super::pair::testing::*;
    use super::*;

    fn write(dir: &Path, name: &str, content: &str) {
        fs::write(dir.join(name), content).unwrap();
    }

    fn status_of<'a>(infos: &'a [CertInfo], file: &str) -> &'a CertInfo {
        infos
            .iter()
            .find(|i| i.file.as_deref().is_some_and(|f| f.ends_with(file)))
            .unwrap_or_else(|| panic!("{file} not listed"))
    }

    #[test]
    fn statuses() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let (ok_crt, ok_key) = make_pem(&["ok.test"], NOW - YEAR, NOW + YEAR, "ok");
        write(dir, "ok.crt", &ok_crt);
        write(dir, "ok.key", &ok_key);
        let (old_crt, old_key) = make_pem(&["old.test"], NOW - 2 * YEAR, NOW - YEAR, "old");
        write(dir, "old.crt", &old_crt);
        write(dir, "old.key", &old_key);
        let (new_crt, new_key) = make_pem(&["new.test"], NOW + YEAR, NOW + 2 * YEAR, "new");
        write(dir, "new.crt", &new_crt);
        write(dir, "new.key", &new_key);
        // A key from another pair.
        write(dir, "mismatch.crt", &ok_crt);
        write(dir, "mismatch.key", &old_key);
        // A certificate whose key has not arrived.
        write(dir, "lonely.crt", &ok_crt);
        write(dir, "garbage.crt", "not a certificate");
        write(dir, "garbage.key", &ok_key);

        let infos = scan_folder(dir, Source::File, NOW);
        let files: Vec<_> = infos.iter().map(|i| i.file.clone().unwrap()).collect();
        let mut sorted = files.clone();
        sorted.sort();
        assert_eq!(files, sorted);
        assert_eq!(infos.len(), 6);

        let ok = status_of(&infos, "/ok.crt");
        assert_eq!(ok.status, "ok");
        assert_eq!(ok.names, ["ok.test"]);
        assert_eq!(ok.issuer, "CN=ok");
        assert_eq!(ok.source, Source::File);
        assert_eq!(ok.not_after.as_deref(), rfc3339(NOW + YEAR).as_deref());
        assert_eq!(
            ok.file.as_deref(),
            Some(dir.join("ok.crt").to_str().unwrap())
        );
        assert_eq!(status_of(&infos, "/old.crt").status, "expired");
        assert_eq!(status_of(&infos, "/new.crt").status, "not-yet-valid");

        let mismatch = status_of(&infos, "/mismatch.crt");
        assert_eq!(mismatch.status, "key-mismatch");
        assert_eq!(mismatch.names, ["ok.test"]);
        assert_eq!(mismatch.issuer, "CN=ok");
        assert!(mismatch.not_after.is_some());

        let lonely = status_of(&infos, "/lonely.crt");
        assert_eq!(lonely.status, "unreadable: missing lonely.key");
        assert_eq!(lonely.names, ["ok.test"]);

        let garbage = status_of(&infos, "/garbage.crt");
        assert_eq!(garbage.status, "unreadable: no certificate in garbage.crt");
        assert!(garbage.names.is_empty());
        assert!(garbage.issuer.is_empty());
        assert!(garbage.not_after.is_none());
    }

    #[test]
    fn only_direct_visible_crt_files_links_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let (crt, key) = make_pem(&["a.test"], NOW - YEAR, NOW + YEAR, "a");
        // Kubernetes style: the real files in a hidden folder, links to them.
        fs::create_dir(dir.join("..data")).unwrap();
        write(&dir.join("..data"), "tls.crt", &crt);
        write(&dir.join("..data"), "tls.key", &key);
        std::os::unix::fs::symlink(dir.join("..data/tls.crt"), dir.join("tls.crt")).unwrap();
        std::os::unix::fs::symlink(dir.join("..data/tls.key"), dir.join("tls.key")).unwrap();
        // Ignored: hidden files, sub-folders, other extensions, a folder
        // named like a certificate.
        write(dir, ".hidden.crt", &crt);
        write(dir, ".hidden.key", &key);
        fs::create_dir(dir.join("sub")).unwrap();
        write(&dir.join("sub"), "b.crt", &crt);
        write(&dir.join("sub"), "b.key", &key);
        write(dir, "c.pem", &crt);
        write(dir, ".crt", &crt);
        fs::create_dir(dir.join("folder.crt")).unwrap();
        // A dangling link is reported, not skipped.
        std::os::unix::fs::symlink(dir.join("nowhere.crt"), dir.join("dangling.crt")).unwrap();

        let infos = scan_folder(dir, Source::File, NOW);
        let files: Vec<_> = infos
            .iter()
            .map(|i| {
                Path::new(i.file.as_deref().unwrap())
                    .file_name()
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(files, ["dangling.crt", "tls.crt"]);
        assert_eq!(infos[0].status, "unreadable: missing dangling.crt");
        assert_eq!(infos[1].status, "ok");
        assert_eq!(infos[1].names, ["a.test"]);
    }

    #[test]
    fn missing_folder_is_empty() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(scan_folder(&tmp.path().join("nope"), Source::File, NOW).is_empty());
    }

    #[test]
    fn self_signed_is_recognised_and_hint_used_otherwise() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let (crt, key) = make_pem(&["localhost"], NOW - YEAR, NOW + YEAR, SELF_SIGNED_CN);
        write(dir, "default.crt", &crt);
        write(dir, "default.key", &key);
        let (crt, key) = make_pem(&["a.test"], NOW - YEAR, NOW + YEAR, "a");
        write(dir, "a.test.crt", &crt);
        write(dir, "a.test.key", &key);
        let infos = scan_folder(dir, Source::Acme, NOW);
        assert_eq!(infos[0].source, Source::Acme);
        assert_eq!(infos[1].source, Source::SelfSigned);
    }

    #[test]
    fn json_shape() {
        let info = CertInfo {
            file: Some("/path/a.crt".into()),
            names: vec!["a.test".into()],
            source: Source::SelfSigned,
            issuer: "CN=x".into(),
            not_after: rfc3339(NOW),
            status: "ok".into(),
        };
        assert_eq!(
            serde_json::to_string(&info).unwrap(),
            r#"{"file":"/path/a.crt","names":["a.test"],"source":"self-signed","issuer":"CN=x","not_after":"2030-01-01T00:00:00Z","status":"ok"}"#
        );
        let info = CertInfo {
            file: None,
            names: vec![],
            source: Source::File,
            issuer: String::new(),
            not_after: None,
            status: "unreadable: missing a.key".into(),
        };
        assert_eq!(
            serde_json::to_string(&info).unwrap(),
            r#"{"file":null,"names":[],"source":"file","issuer":"","not_after":null,"status":"unreadable: missing a.key"}"#
        );
    }

    #[test]
    fn info_for_a_pair() {
        let pair = pair_at("a", &["a.test"], NOW - 10, NOW + 10, Source::Acme);
        let info = info_for(&pair, NOW);
        assert_eq!(info.file, None);
        assert_eq!(info.source, Source::Acme);
        assert_eq!(info.status, "ok");
        assert_eq!(info_for(&pair, NOW + 11).status, "expired");
        assert_eq!(info_for(&pair, NOW - 11).status, "not-yet-valid");
    }

    #[test]
    fn explain_a_name() {
        let mut a = (*pair("a", &["a.test", "*.w.test"])).clone();
        a.cert_path = Some(PathBuf::from("/certs/a.crt"));
        let s = Snapshot::build(
            vec![Arc::new(a), pair("default", &[])],
            vec![],
            HashMap::new(),
            true,
        );
        let info = explain(&s, "X.W.Test", NOW).unwrap();
        assert_eq!(info.name, "X.W.Test");
        assert_eq!(info.step, Step::Wildcard);
        assert_eq!(info.file.as_deref(), Some("/certs/a.crt"));
        assert_eq!(info.names, ["a.test", "*.w.test"]);
        let json = serde_json::to_value(&info).unwrap();
        assert_eq!(json["step"], "wildcard");
        assert_eq!(
            json.as_object()
                .unwrap()
                .keys()
                .cloned()
                .collect::<Vec<_>>(),
            ["file", "name", "names", "not_after", "step"]
        );
        let info = explain(&s, "other.test", NOW).unwrap();
        assert_eq!(info.step, Step::Default);
        assert_eq!(info.file, None);
        assert!(explain(&Snapshot::empty(), "a.test", NOW).is_none());
        let text = render_name(&explain(&s, "a.test", NOW).unwrap());
        assert!(
            text.starts_with("name:      a.test\nstep:      san\n"),
            "{text}"
        );
        assert!(text.contains("file:      /certs/a.crt\n"), "{text}");
        assert!(is_valid_name("a.test"));
        assert!(!is_valid_name("../a"));
    }

    #[test]
    fn table_is_aligned() {
        let infos = [
            CertInfo {
                file: Some("/c/a.crt".into()),
                names: vec!["a.test".into(), "b.test".into()],
                source: Source::File,
                issuer: "CN=long issuer".into(),
                not_after: rfc3339(NOW),
                status: "ok".into(),
            },
            CertInfo {
                file: Some("/c/garbage-long-name.crt".into()),
                names: vec![],
                source: Source::File,
                issuer: String::new(),
                not_after: None,
                status: "unreadable: no certificate in garbage-long-name.crt".into(),
            },
        ];
        let table = render_table(&infos);
        let lines: Vec<_> = table.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("FILE"));
        let col = |name: &str| lines[0].find(name).unwrap();
        assert_eq!(lines[1].find("a.test,b.test"), Some(col("NAMES")));
        assert_eq!(lines[2].find("- "), Some(col("NAMES")));
        assert_eq!(
            lines[1].find("2030-01-01T00:00:00Z"),
            Some(col("NOT AFTER"))
        );
        assert_eq!(lines[1].find("ok"), Some(col("STATUS")));
        assert_eq!(lines[2].find("unreadable"), Some(col("STATUS")));
        assert_eq!(
            render_table(&[]),
            "FILE  NAMES  SOURCE  ISSUER  NOT AFTER  STATUS\n"
        );
    }
}
