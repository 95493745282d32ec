//! `clace certs -c FILE` with PostgreSQL as the storage: it lists what the
//! table holds (issue 12, point 5). The table is filled here through psql,
//! with the layout the storage keeps (`clace_storage(key, value,
//! modified)`, the folder's keys), so no CA is needed.

use std::fs;

use crate::acme::EMAIL;
use crate::tls_util::{hex, make_pair};
use crate::util::postgres::{Postgres, PASSWORD_VAR};
use crate::util::{toml_path, toml_str, Clace};

use super::NAMES;

/// The directory URL configured (nothing listens there: `clace certs`
/// only reads the storage); its issuer key is `127.0.0.1-14000-dir`.
const DIRECTORY: &str = "https://127.0.0.1:14000/dir";
const ISSUER: &str = "127.0.0.1-14000-dir";

#[test]
fn postgres_clace_certs_lists_the_certificates_the_table_holds() {
    let pg = Postgres::new();
    let mut rows = Vec::new();
    for name in NAMES {
        let pair = make_pair(&[name]);
        let meta = format!("{{\"sans\": [\"{name}\"], \"issuer_data\": {{\"url\": \"\"}}}}");
        let base = format!("certificates/{ISSUER}/{name}/{name}");
        for (ext, content) in [
            ("crt", pair.cert_pem.as_bytes()),
            ("key", pair.key_pem.as_bytes()),
            ("json", meta.as_bytes()),
        ] {
            rows.push(format!(
                "('{base}.{ext}', decode('{}', 'hex'), now())",
                hex(content)
            ));
        }
    }
    // Made as the role clace uses, as clace makes it on first use.
    pg.psql(&format!(
        "SET ROLE clace; \
         CREATE TABLE IF NOT EXISTS clace_storage \
         (key text PRIMARY KEY, value bytea NOT NULL, modified timestamptz NOT NULL); \
         INSERT INTO clace_storage (key, value, modified) VALUES {}",
        rows.join(", ")
    ));

    let mut clace = Clace::new();
    clace.env(PASSWORD_VAR, pg.password());
    let certs = clace.root().join("certs");
    fs::create_dir_all(&certs).expect("create cert_location");
    let config = clace.write_config(&format!(
        "[http]\nport = 0\n\n[https]\nport = 0\ncert_location = {}\nstorage_location = {}\nservice_email = {}\n\
         acme_directory_url = {}\ndomains = [{}]\n",
        toml_path(&certs),
        toml_str(pg.url_with_var()),
        toml_str(EMAIL),
        toml_str(DIRECTORY),
        NAMES.map(toml_str).join(", ")
    ));
    let config = config.to_str().expect("UTF-8 path");

    let out = clace.run(&["certs", "-c", config, "--json"]);
    let why = format!(
        "clace certs -c {config} --json: {:?}\nstdout:\n{}\nstderr:\n{}\n--- postgres log ---\n{}",
        out.status,
        out.stdout,
        out.stderr,
        pg.log_tail(20)
    );
    assert_eq!(out.code(), Some(0), "{why}");
    let list: serde_json::Value =
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {why}"));
    let list = list
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {why}"));
    for name in NAMES {
        let entry = list
            .iter()
            .find(|e| e["names"] == serde_json::json!([name]))
            .unwrap_or_else(|| panic!("no entry for {name}: {why}"));
        assert_eq!(
            entry["source"], "acme",
            "{name} comes from the storage: {why}"
        );
        assert_eq!(entry["status"], "ok", "{name} is valid: {why}");
    }
    assert_eq!(
        list.len(),
        NAMES.len(),
        "one entry per stored certificate: {why}"
    );

    let table = clace.run(&["certs", "-c", config]);
    assert_eq!(
        table.code(),
        Some(0),
        "clace certs -c {config}: {}",
        table.stderr
    );
    for name in NAMES {
        assert!(
            table.stdout.contains(name),
            "the table lists {name}:\n{}\nstderr:\n{}",
            table.stdout,
            table.stderr
        );
    }
}
