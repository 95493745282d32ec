//! Randomized tests (proptest) of configuration loading: any file text and
//! any value for any key load or fail with an error, never a panic; a value
//! of the wrong kind for a known key is an error that names the key.
//!
//! Cases: `PROPTEST_CASES`, else 2,000 per property.

use std::collections::HashMap;

use proptest::prelude::*;

use super::{load_from, ConfigError, Loaded};

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Loads `toml` as `clace.toml` of a throw-away `CL_HOME`, with `env`.
fn load(toml: &str, env: &[(String, String)]) -> Result<Loaded, ConfigError> {
    let home = tempfile::tempdir().expect("temp dir");
    let file = home.path().join("clace.toml");
    std::fs::write(&file, toml).expect("write");
    load_from(
        home.path().to_path_buf(),
        Some(file),
        env.iter().cloned().collect::<HashMap<_, _>>(),
    )
}

/// Every key of the contract (§3), as `section`, `key`.
const KEYS: &[(&str, &str)] = &[
    ("http", "host"),
    ("http", "port"),
    ("http", "redirect_to_https"),
    ("https", "host"),
    ("https", "port"),
    ("https", "enable_cert_lookup"),
    ("https", "service_email"),
    ("https", "use_staging"),
    ("https", "cert_location"),
    ("https", "storage_location"),
    ("https", "acme_directory_url"),
    ("https", "acme_ca_file"),
    ("https", "domains"),
    ("https", "cert_watch"),
    ("https", "cert_rescan_interval"),
    ("limits", "max_header_line"),
    ("limits", "max_header_total"),
    ("limits", "max_handshakes_per_worker"),
    ("limits", "max_conns_per_ip"),
    ("admin", "on_listeners"),
    ("logging", "level"),
];

/// A TOML value of any kind; strings stay inside the temporary home (a
/// relative path) so that nothing is created elsewhere.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        (-3i64..70_000).prop_map(|n| n.to_string()),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| format!("{f:?}")),
        any::<bool>().prop_map(|b| b.to_string()),
        "[a-zA-Z0-9._:/$ {}-]{0,20}".prop_map(|s| toml::Value::String(s).to_string()),
        prop::collection::vec("[a-z.]{0,10}", 0..3).prop_map(|v| toml::Value::Array(
            v.into_iter().map(toml::Value::String).collect()
        )
        .to_string()),
        Just("{ a = 1 }".to_string()),
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_text_loads_or_fails_without_panicking(text in "\\PC{0,200}") {
        let _ = load(&text, &[]);
    }

    #[test]
    fn toml_like_text_loads_or_fails_without_panicking(
        lines in prop::collection::vec(
            prop_oneof![
                "\\[[a-z_]{1,8}\\]".prop_map(|s| s),
                Just("[[route]]".to_string()),
                (prop::sample::select(KEYS.iter().map(|(_, k)| *k).chain(
                    ["path", "domain", "static", "proxy", "timeout", "max_body"]).collect::<Vec<_>>()),
                 value()).prop_map(|(k, v)| format!("{k} = {v}")),
                "[ -~]{0,30}".prop_map(|s| s),
            ],
            0..12,
        )
    ) {
        let _ = load(&lines.join("\n"), &[]);
    }

    #[test]
    fn a_value_for_a_known_key_loads_or_names_the_key(
        key in prop::sample::select(KEYS.to_vec()),
        v in value(),
    ) {
        let (section, name) = key;
        match load(&format!("[{section}]\n{name} = {v}\n"), &[]) {
            Ok(_) => {}
            Err(e) => prop_assert!(
                e.0.contains(name),
                "[{}] {} = {}: the error does not name the key: {}", section, name, v, e
            ),
        }
    }

    #[test]
    fn an_environment_value_loads_or_names_the_key(
        key in prop::sample::select(KEYS.to_vec()),
        v in "[ -~]{0,20}",
    ) {
        let (section, name) = key;
        let var = format!("CL_{}__{}", section.to_uppercase(), name.to_uppercase());
        if let Err(e) = load("", &[(var.clone(), v.clone())]) {
            prop_assert!(
                e.0.contains(name) || e.0.contains(&var),
                "{}={:?}: the error names neither the key nor the variable: {}", var, v, e
            );
        }
    }
}
