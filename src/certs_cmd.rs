//! `clace certs`: what is in the certificate folders, and which certificate
//! a name would get. Reads the folders itself; no daemon needed, except for
//! `--live`, which asks the running daemon's `/_clace/certs`.

use std::process::ExitCode;

use clace_actors::acme::AcmeSettings;
use clace_actors::certs::inventory::read_folder;
use clace_actors::certs::inventory::{self, CertInfo};
use clace_actors::certs::pair::Source;

use crate::config::Loaded;

pub fn run(loaded: &Loaded, json: bool, name: Option<&str>) -> ExitCode {
    let https = &loaded.settings.https;
    let now = clace_actors::certs::now();
    // With PostgreSQL, what the database holds, copied into a folder of
    // this command's own (not an instance's local copy, which may lag).
    let copy = match &https.storage_postgres {
        None => None,
        Some(url) => match PostgresCopy::fetch(url) {
            Ok(copy) => Some(copy),
            Err(e) => {
                eprintln!("clace: https.storage_location: {e}");
                return ExitCode::from(1);
            }
        },
    };
    let storage_root = copy
        .as_ref()
        .map_or_else(|| https.storage_location.clone(), |c| c.root.clone());
    if let Some(name) = name {
        // ACME certificates count (step 3) when ACME is enabled.
        let acme = AcmeSettings::from_settings(&loaded.settings, None).map(|mut a| {
            a.storage_location = storage_root.clone();
            a.certificates_dir()
        });
        let snapshot = read_folder(
            &https.cert_location,
            acme.as_deref(),
            https.enable_cert_lookup,
        );
        return match inventory::explain(&snapshot, name, now) {
            Some(info) => {
                if json {
                    print_json(&info)
                } else {
                    print!("{}", inventory::render_name(&info));
                    ExitCode::SUCCESS
                }
            }
            None => {
                let default = https.cert_location.join("default.crt");
                if json {
                    print_json(&serde_json::json!({
                        "name": name,
                        "step": "self-signed",
                        "file": default.display().to_string(),
                        "names": [],
                        "not_after": null,
                    }))
                } else {
                    println!(
                        "{name}: no certificate fits; the daemon creates a self-signed default at {} when it starts",
                        default.display()
                    );
                    ExitCode::SUCCESS
                }
            }
        };
    }
    let mut infos: Vec<CertInfo> = inventory::scan_folder(&https.cert_location, Source::File, now);
    infos.extend(inventory::scan_pairs(
        inventory::all_managed_pair_files(&storage_root.join("certificates")),
        Source::Acme,
        now,
    ));
    if json {
        print_json(&infos)
    } else {
        if infos.is_empty() {
            println!("no certificates in {}", https.cert_location.display());
        } else {
            print!("{}", inventory::render_table(&infos));
        }
        ExitCode::SUCCESS
    }
}

/// The `certificates/` keys of a PostgreSQL storage, copied into a
/// temporary folder that goes when this is dropped.
struct PostgresCopy {
    root: std::path::PathBuf,
}

impl PostgresCopy {
    fn fetch(url: &str) -> Result<PostgresCopy, String> {
        use clace_actors::acme::storage::{folder::Folder, postgres::Postgres, Backend};
        let root = std::env::temp_dir().join(format!("clace-certs-{}", std::process::id()));
        let copy = PostgresCopy { root };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start a runtime: {e}"))?;
        let local = Folder::new(&copy.root);
        runtime.block_on(async {
            let backend = Backend::Postgres(Postgres::connect(url)?);
            for key in backend.list("certificates").await? {
                if let Some(value) = backend.load(&key).await? {
                    local.store(&key, &value, false)?;
                }
            }
            Ok::<(), String>(())
        })?;
        Ok(copy)
    }
}

impl Drop for PostgresCopy {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// `clace certs --live`: the running daemon's `/_clace/certs` (over its
/// admin socket first), as JSON or as the same table.
pub fn live(loaded: &Loaded, json: bool) -> ExitCode {
    let answer = match crate::admin_client::request(&loaded.home, "GET", "/_clace/certs") {
        Ok(a) => a,
        Err(why) => {
            eprintln!("clace: no daemon running ({why})");
            return ExitCode::from(1);
        }
    };
    if answer.status != 200 {
        eprintln!(
            "clace: the daemon answered {}: {}",
            answer.status,
            answer.body.trim()
        );
        return ExitCode::from(1);
    }
    let value: serde_json::Value = match serde_json::from_str(&answer.body) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("clace: the daemon's /_clace/certs is not JSON: {e}");
            return ExitCode::from(1);
        }
    };
    if json {
        return print_json(&value);
    }
    let infos: Vec<CertInfo> = value
        .as_array()
        .map(|a| a.iter().filter_map(cert_info).collect())
        .unwrap_or_default();
    if infos.is_empty() {
        println!("the running daemon lists no certificates");
    } else {
        print!("{}", inventory::render_table(&infos));
    }
    ExitCode::SUCCESS
}

/// One object of the `/_clace/certs` array (interface §6) back into a row.
fn cert_info(v: &serde_json::Value) -> Option<CertInfo> {
    let text = |key: &str| v.get(key).and_then(|s| s.as_str()).map(str::to_owned);
    let source = match v.get("source")?.as_str()? {
        "acme" => Source::Acme,
        "self-signed" => Source::SelfSigned,
        _ => Source::File,
    };
    Some(CertInfo {
        file: text("file"),
        names: v
            .get("names")?
            .as_array()?
            .iter()
            .filter_map(|n| n.as_str().map(str::to_owned))
            .collect(),
        source,
        issuer: text("issuer").unwrap_or_default(),
        not_after: text("not_after"),
        status: text("status").unwrap_or_default(),
    })
}

fn print_json<T: serde::Serialize>(value: &T) -> ExitCode {
    match serde_json::to_string_pretty(value) {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("clace: cannot encode JSON: {e}");
            ExitCode::from(1)
        }
    }
}
