//! The self-signed default certificate (interface §4 step 5): made when
//! `default.crt`/`default.key` are missing, and again when the one clace made
//! has expired.
//!
//! It is recognised later by its subject CN, [`SELF_SIGNED_CN`], so that a
//! default the operator dropped in is never replaced, and `clace certs`
//! reports it as `self-signed`.

use std::fs;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use log::{info, warn};
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, KeyPair,
    KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

use super::names::{normalize_sni, DEFAULT_STEM, SELF_SIGNED_CN};
use super::pair::{Pair, Source};

/// How long a generated default is valid.
const LIFETIME: Duration = Duration::days(365);

/// How far back validity starts, so that a client whose clock is a little
/// behind does not see a certificate from the future.
const BACKDATE: Duration = Duration::hours(1);

/// Why the default could not be made. Messages name the folder or file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SelfSignedError {
    /// The certificate folder is missing and cannot be created.
    #[error("cannot create certificate folder {}: {error}", dir.display())]
    CreateDir {
        /// The folder.
        dir: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// rcgen failed to make the key or the certificate.
    #[error("cannot generate the self-signed default: {0}")]
    Generate(#[from] rcgen::Error),
    /// Writing, syncing or renaming one of the files failed.
    #[error("cannot write {}: {error}", file.display())]
    Write {
        /// The file (the final name, not the temporary one).
        file: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
}

/// Writes a new `default.crt` and `default.key` into `dir`: ECDSA P-256,
/// subject CN [`SELF_SIGNED_CN`], SANs `localhost`, `127.0.0.1`, `::1` and
/// the host name (when it is a DNS name other than `localhost`), valid from
/// an hour ago for a year.
///
/// `dir` is created with mode 0700 if missing. The key is never readable by
/// anyone else, not even for an instant: each file is written under a
/// temporary dot-name (ignored by the scanner) created with mode 0600,
/// synced, then put into place, the key first and the certificate last,
/// so a watcher that sees `default.crt` appear finds its key already there.
///
/// With `replace = false` nothing that exists is ever overwritten: the files
/// are linked into place (which fails if the name exists) rather than
/// renamed, so an operator's file that arrives at the same moment wins.
/// `replace = true` (an expired self-signed default) renames over them.
pub fn generate(dir: &Path, replace: bool) -> Result<(), SelfSignedError> {
    create_dir(dir)?;
    let names = san_names();
    let (cert_pem, key_pem) = make_pem(&names, super::now())?;
    let cert_path = dir.join(format!("{DEFAULT_STEM}.crt"));
    let key_path = dir.join(format!("{DEFAULT_STEM}.key"));
    let key_tmp = write_temp(dir, &key_path, key_pem.as_bytes())?;
    let cert_tmp = match write_temp(dir, &cert_path, cert_pem.as_bytes()) {
        Ok(tmp) => tmp,
        Err(e) => {
            let _ = fs::remove_file(&key_tmp);
            return Err(e);
        }
    };
    if let Err(error) = put_in_place(&key_tmp, &key_path, replace) {
        let _ = fs::remove_file(&key_tmp);
        let _ = fs::remove_file(&cert_tmp);
        return Err(SelfSignedError::Write {
            file: key_path,
            error,
        });
    }
    if let Err(error) = put_in_place(&cert_tmp, &cert_path, replace) {
        let _ = fs::remove_file(&cert_tmp);
        return Err(SelfSignedError::Write {
            file: cert_path,
            error,
        });
    }
    // Make the renames durable; a failure here loses nothing that a new
    // generation at the next start would not make again.
    super::atomic::sync_dir(dir);
    info!(
        "created self-signed default certificate {} (names: {})",
        cert_path.display(),
        names.join(", ")
    );
    Ok(())
}

/// Renames `tmp` to `path`, or (not replacing) links it there and removes
/// the temporary name: `link` fails if `path` exists, atomically.
fn put_in_place(tmp: &Path, path: &Path, replace: bool) -> std::io::Result<()> {
    if replace {
        return fs::rename(tmp, path);
    }
    fs::hard_link(tmp, path)?;
    fs::remove_file(tmp)
}

/// Whether `pair` is a default clace made that has expired at `now`, and so
/// is to be replaced. An operator's own expired default is never touched.
pub fn is_expired_self_signed(pair: &Pair, now: i64) -> bool {
    pair.source == Source::SelfSigned && now > pair.not_after
}

/// Logs a warning naming `path` if the key file is readable or writable by
/// its group or by others. Nothing is changed: the file belongs to the
/// operator. A file whose mode cannot be read is left to the loader, which
/// reports it.
pub fn warn_if_key_readable(path: &Path) {
    if let Some(mode) = open_mode(path) {
        warn!(
            "private key {} is accessible by group or others (mode {mode:03o}); chmod 600 it",
            path.display()
        );
    }
}

/// The permission bits of `path` (symbolic links followed) if its group or
/// others have any access.
fn open_mode(path: &Path) -> Option<u32> {
    let mode = fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (mode & 0o077 != 0).then_some(mode)
}

/// The names the certificate carries, in order; IP addresses included.
fn san_names() -> Vec<String> {
    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    let host = gethostname::gethostname();
    if let Some(host) = host.to_str().and_then(host_name) {
        names.push(host);
    }
    names
}

/// The host name as a DNS SAN: `None` for a name that is not a valid DNS
/// name, that is `localhost`, or that parses as an IP address (it is then
/// already covered, or not ours to claim).
fn host_name(raw: &str) -> Option<String> {
    let name = normalize_sni(raw)?;
    if name == "localhost" || name.parse::<IpAddr>().is_ok() {
        return None;
    }
    Some(name)
}

fn make_pem(names: &[String], now: i64) -> Result<(String, String), SelfSignedError> {
    let now = OffsetDateTime::from_unix_timestamp(now).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let mut params = CertificateParams::default();
    params.subject_alt_names = names
        .iter()
        .map(|name| match name.parse::<IpAddr>() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => name.clone().try_into().map(SanType::DnsName),
        })
        .collect::<Result<_, rcgen::Error>>()?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, SELF_SIGNED_CN);
    params.distinguished_name = dn;
    params.not_before = now - BACKDATE;
    params.not_after = now + LIFETIME;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn create_dir(dir: &Path) -> Result<(), SelfSignedError> {
    super::atomic::create_private_dir(dir).map_err(|error| SelfSignedError::CreateDir {
        dir: dir.to_path_buf(),
        error,
    })
}

/// Writes `content` to a new dot-file next to `target`, mode 0600, synced;
/// returns its path.
fn write_temp(_dir: &Path, target: &Path, content: &[u8]) -> Result<PathBuf, SelfSignedError> {
    super::atomic::write_temp(target, content, 0o600).map_err(|error| SelfSignedError::Write {
        file: target.to_path_buf(),
        error,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::pair::read_pair;
    use super::super::pair::testing::*;
    use super::*;
    use x509_parser::extensions::GeneralName;
    use x509_parser::prelude::FromDer;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn generates_a_readable_marked_pair() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("new").join("certs");
        generate(&dir, false).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&tmp.path().join("new")), 0o700);
        let key = dir.join("default.key");
        let crt = dir.join("default.crt");
        assert_eq!(mode(&key), 0o600);
        // Nothing but the two files is left behind.
        let mut entries: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        entries.sort();
        assert_eq!(entries, ["default.crt", "default.key"]);

        let pair = read_pair("default", &crt, &key, Source::File).unwrap();
        assert_eq!(pair.source, Source::SelfSigned);
        assert_eq!(pair.subject, format!("CN={SELF_SIGNED_CN}"));
        assert_eq!(pair.names[0], "localhost");
        assert!(pair.names.iter().all(|n| n != "127.0.0.1"));
        let now = crate::certs::now();
        assert!((pair.not_before - (now - 3600)).abs() < 60);
        assert!((pair.not_after - (now + 365 * 86400)).abs() < 60);
        assert!(!is_expired_self_signed(&pair, now));
        assert!(is_expired_self_signed(&pair, pair.not_after + 1));

        // IP SANs are IP addresses, not DNS names.
        let der = pair.certified.cert[0].to_vec();
        let (_, cert) = x509_parser::certificate::X509Certificate::from_der(&der).unwrap();
        let san = cert.subject_alternative_name().unwrap().unwrap();
        let ips: Vec<_> = san
            .value
            .general_names
            .iter()
            .filter_map(|g| match g {
                GeneralName::IPAddress(ip) => Some(ip.len()),
                _ => None,
            })
            .collect();
        assert_eq!(ips, [4, 16]);
        // The key is P-256 ECDSA.
        assert_eq!(
            pair.certified.key.algorithm(),
            rustls::SignatureAlgorithm::ECDSA
        );
    }

    #[test]
    fn replaces_existing_files_and_keeps_a_dir_mode() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        fs::set_permissions(dir, fs::Permissions::from_mode(0o750)).unwrap();
        fs::write(dir.join("default.crt"), "old").unwrap();
        fs::write(dir.join("default.key"), "old").unwrap();
        // Not replacing: an existing file is never overwritten...
        assert!(generate(dir, false).is_err());
        assert_eq!(fs::read_to_string(dir.join("default.key")).unwrap(), "old");
        assert_eq!(fs::read_to_string(dir.join("default.crt")).unwrap(), "old");
        // ...and nothing temporary is left behind.
        let names: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        // Replacing (an expired self-signed default) overwrites both.
        generate(dir, true).unwrap();
        // An existing folder is not re-moded.
        assert_eq!(mode(dir), 0o750);
        let pair = read_pair(
            "default",
            &dir.join("default.crt"),
            &dir.join("default.key"),
            Source::File,
        )
        .unwrap();
        assert_eq!(pair.source, Source::SelfSigned);
    }

    #[test]
    fn host_name_rules() {
        assert_eq!(host_name("MyHost").as_deref(), Some("myhost"));
        assert_eq!(
            host_name("build-1.example.com.").as_deref(),
            Some("build-1.example.com")
        );
        assert_eq!(host_name("localhost"), None);
        assert_eq!(host_name("LOCALHOST."), None);
        assert_eq!(host_name("my_host"), None);
        assert_eq!(host_name(""), None);
        assert_eq!(host_name("10.0.0.1"), None);
        let names = san_names();
        assert_eq!(&names[..3], ["localhost", "127.0.0.1", "::1"]);
        assert!(names.len() <= 4);
    }

    #[test]
    fn an_operators_expired_default_is_not_self_signed() {
        let pair = pair_at(
            "default",
            &["localhost"],
            NOW - 2 * YEAR,
            NOW - YEAR,
            Source::File,
        );
        assert!(!is_expired_self_signed(&pair, NOW));
        let ours = pair_at(
            "default",
            &["localhost"],
            NOW - 2 * YEAR,
            NOW - YEAR,
            Source::SelfSigned,
        );
        assert!(is_expired_self_signed(&ours, NOW));
        assert!(!is_expired_self_signed(&ours, NOW - YEAR));
    }

    #[test]
    fn cannot_create_dir_names_it() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("file");
        fs::write(&file, "x").unwrap();
        let err = generate(&file.join("sub"), false).unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("cannot create certificate folder"),
            "{text}"
        );
        assert!(text.contains("file/sub"), "{text}");
    }

    #[test]
    fn warns_only_on_open_modes() {
        let tmp = tempfile::tempdir().unwrap();
        let key = tmp.path().join("k.key");
        fs::write(&key, "x").unwrap();
        for (set, expected) in [
            (0o600, None),
            (0o400, None),
            (0o640, Some(0o640)),
            (0o604, Some(0o604)),
            (0o620, Some(0o620)),
        ] {
            fs::set_permissions(&key, fs::Permissions::from_mode(set)).unwrap();
            assert_eq!(open_mode(&key), expected, "{set:o}");
        }
        // Through a symbolic link, the target's mode counts.
        let link = tmp.path().join("link.key");
        std::os::unix::fs::symlink(&key, &link).unwrap();
        assert_eq!(open_mode(&link), Some(0o620));
        assert_eq!(open_mode(&tmp.path().join("missing.key")), None);
        warn_if_key_readable(&link);
        warn_if_key_readable(&tmp.path().join("missing.key"));
    }
}
