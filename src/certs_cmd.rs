//! `clace certs`: what is in the certificate folders, and which certificate
//! a name would get. Reads the folders itself; no daemon needed.

use std::process::ExitCode;

use clace_actors::acme::AcmeSettings;
use clace_actors::certs::inventory::{self, CertInfo};
use clace_actors::certs::pair::Source;
use clace_actors::certs::store::read_folder;

use crate::config::Loaded;

pub fn run(loaded: &Loaded, json: bool, name: Option<&str>) -> ExitCode {
    let https = &loaded.settings.https;
    let now = clace_actors::certs::now();
    if let Some(name) = name {
        // ACME certificates count (step 3) when ACME is enabled.
        let acme = AcmeSettings::from_settings(&loaded.settings, None)
            .map(|a| a.storage().certificates_dir());
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
        inventory::all_managed_pair_files(&https.acme_certificates()),
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
