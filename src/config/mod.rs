//! Loading the configuration: embedded defaults < file < `CL_<SECTION>__<KEY>`.
//!
//! `load` finds `CL_HOME` and the file (interface §2), layers the three
//! sources with the `config` crate, rejects unknown keys with a suggestion,
//! deserialises into [`raw::RawConfig`] and checks it into the actors'
//! [`Settings`]. Every error names where the bad value came from.

mod check;
mod expand;
#[cfg(test)]
mod prop;
mod raw;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use clace_actors::settings::Settings;
use config::{Config, Environment, File, FileFormat, Value, ValueKind};

pub use raw::RawConfig;

/// The defaults, compiled in; `config/clace.default.toml` in the repository.
pub const DEFAULTS: &str = include_str!("../../config/clace.default.toml");

/// A configuration that loaded and passed every check.
#[derive(Debug)]
pub struct Loaded {
    pub settings: Settings,
    pub log_level: String,
    pub home: PathBuf,
    pub file: Option<PathBuf>,
    /// The effective configuration, paths expanded (what `clace check` prints).
    pub effective: RawConfig,
}

/// A configuration error: bad usage or bad configuration, exit code 2.
#[derive(Debug)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

fn err(msg: impl Into<String>) -> ConfigError {
    ConfigError(msg.into())
}

/// Finds `CL_HOME` and the configuration file, then loads and checks it.
pub fn load(cli_file: Option<&Path>) -> Result<Loaded, ConfigError> {
    let env_file = std::env::var_os("CL_CONFIG_FILE")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    let named_file = cli_file.map(Path::to_path_buf).or(env_file);
    let home = find_home(named_file.as_deref())?;
    std::fs::create_dir_all(&home)
        .map_err(|e| err(format!("cannot create CL_HOME {}: {e}", home.display())))?;
    let file = match named_file {
        Some(f) => {
            if !f.is_file() {
                return Err(err(format!(
                    "configuration file {} not found (given with -c or CL_CONFIG_FILE)",
                    f.display()
                )));
            }
            Some(f)
        }
        None => Some(home.join("clace.toml")).filter(|f| f.is_file()),
    };
    let env: HashMap<String, String> = std::env::vars()
        .filter(|(k, _)| k.starts_with("CL_") && k.contains("__"))
        .collect();
    load_from(home, file, env)
}

/// `CL_HOME`: the variable, else the folder of the named file, else `$HOME/clhome`.
fn find_home(named_file: Option<&Path>) -> Result<PathBuf, ConfigError> {
    if let Some(home) = std::env::var_os("CL_HOME").filter(|v| !v.is_empty()) {
        return absolute(PathBuf::from(home));
    }
    if let Some(file) = named_file {
        let dir = file.parent().filter(|p| !p.as_os_str().is_empty());
        return absolute(dir.map_or_else(|| PathBuf::from("."), Path::to_path_buf));
    }
    match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        Some(h) => Ok(PathBuf::from(h).join("clhome")),
        None => Err(err(
            "neither CL_HOME nor HOME is set: set CL_HOME to a folder",
        )),
    }
}

fn absolute(path: PathBuf) -> Result<PathBuf, ConfigError> {
    std::path::absolute(&path).map_err(|e| err(format!("bad path {}: {e}", path.display())))
}

/// Layers the sources and checks the result; separate from `load` for tests.
pub fn load_from(
    home: PathBuf,
    file: Option<PathBuf>,
    env: HashMap<String, String>,
) -> Result<Loaded, ConfigError> {
    let mut builder = Config::builder().add_source(File::from_str(DEFAULTS, FileFormat::Toml));
    if let Some(f) = &file {
        builder = builder.add_source(File::from(f.as_path()).format(FileFormat::Toml));
    }
    let env_keys: HashMap<String, String> = env
        .keys()
        .map(|k| (env_key_to_path(k), k.clone()))
        .collect();
    builder = builder.add_source(
        Environment::with_prefix("CL")
            .prefix_separator("_")
            .separator("__")
            .try_parsing(true)
            .list_separator(",")
            .with_list_parse_key("https.domains")
            .source(Some(env.into_iter().collect())),
    );
    let cfg = builder
        .build()
        .map_err(|e| err(describe_config_error(&e, file.as_deref(), &env_keys)))?;
    let origins = Origins {
        cfg: &cfg,
        file: file.as_deref(),
        env_keys: &env_keys,
    };
    check_known_keys(&cfg, &origins)?;
    check_whole_numbers(&cfg, &origins)?;
    let raw: RawConfig = cfg
        .clone()
        .try_deserialize()
        .map_err(|e| err(describe_config_error(&e, file.as_deref(), &env_keys)))?;
    let (settings, effective) = check::check(raw, &home, &origins)?;
    Ok(Loaded {
        log_level: effective.logging.level.clone(),
        settings,
        home,
        file,
        effective,
    })
}

/// `CL_HTTPS__CERT_LOCATION` -> `https.cert_location`.
fn env_key_to_path(var: &str) -> String {
    var.trim_start_matches("CL_")
        .to_lowercase()
        .replace("__", ".")
}

/// Tells where a key's value came from, for error messages.
pub(crate) struct Origins<'a> {
    cfg: &'a Config,
    file: Option<&'a Path>,
    env_keys: &'a HashMap<String, String>,
}

impl Origins<'_> {
    /// "in FILE", "in environment variable CL_X__Y" or "in the embedded defaults".
    pub(crate) fn of(&self, key: &str) -> String {
        if let Some(var) = self.env_keys.get(key) {
            return format!("environment variable {var}");
        }
        let origin = lookup(&self.cfg.cache, key).and_then(first_origin);
        match (origin, self.file) {
            // The file is the only source with an origin besides the
            // environment (the embedded defaults are read from a string).
            (Some(o), Some(f)) if o != "the environment" => f.display().to_string(),
            (_, Some(f)) if key.starts_with("route") => f.display().to_string(),
            _ => "the embedded defaults".to_string(),
        }
    }
}

/// The value at a dotted key (`http.port`, `route`) in the merged tree.
fn lookup<'a>(root: &'a Value, key: &str) -> Option<&'a Value> {
    key.split('.').try_fold(root, |v, part| match &v.kind {
        ValueKind::Table(t) => t.get(part),
        _ => None,
    })
}

/// Where a value came from: its own origin, else that of the first value
/// inside it (tables made by merging carry none).
fn first_origin(v: &Value) -> Option<&str> {
    if let Some(o) = v.origin() {
        return Some(o);
    }
    match &v.kind {
        ValueKind::Table(t) => t.values().find_map(first_origin),
        ValueKind::Array(a) => a.iter().find_map(first_origin),
        _ => None,
    }
}

/// Rejects any key that is not in the schema, suggesting the closest one.
fn check_known_keys(cfg: &Config, origins: &Origins<'_>) -> Result<(), ConfigError> {
    let root = cfg
        .cache
        .clone()
        .into_table()
        .map_err(|e| err(format!("configuration is not a table: {e}")))?;
    let section_names: Vec<&str> = raw::SECTIONS.iter().map(|(s, _)| *s).collect();
    for (section, value) in root {
        let Some((_, keys)) = raw::SECTIONS.iter().find(|(s, _)| *s == section) else {
            return Err(unknown(
                &section,
                &section,
                &section_names,
                value.origin(),
                origins,
            ));
        };
        let tables: Vec<(String, Value)> = match value.kind {
            ValueKind::Table(_) => vec![(section.clone(), value)],
            ValueKind::Array(items) if section == "route" => items
                .into_iter()
                .enumerate()
                .map(|(i, v)| (format!("route[{i}]"), v))
                .collect(),
            _ => {
                let what = if section == "route" {
                    "an array of tables ([[route]])"
                } else {
                    "a table"
                };
                return Err(err(format!(
                    "{}: `{section}` must be {what}",
                    origins.of(&section)
                )));
            }
        };
        for (prefix, table) in tables {
            let origin = table.origin().map(str::to_string);
            let map = table.into_table().map_err(|_| {
                err(format!(
                    "{}: `{prefix}` must be a table",
                    origins.of(&section)
                ))
            })?;
            for (key, v) in map {
                if !keys.contains(&key.as_str()) {
                    let full = format!("{prefix}.{key}");
                    let origin = v.origin().map(str::to_string).or(origin.clone());
                    return Err(unknown(&full, &key, keys, origin.as_deref(), origins));
                }
            }
        }
    }
    Ok(())
}

/// Refuses a value that the `config` crate would turn into an integer by
/// rounding or conversion (`1.5`, `80.5`, `true`, `"yes"`) at a key that
/// takes a whole number: the user meant something else, and silently using
/// 2 for 1.5 hides it. A float with no fraction (`30.0`) is that number.
fn check_whole_numbers(cfg: &Config, origins: &Origins<'_>) -> Result<(), ConfigError> {
    for key in raw::WHOLE_NUMBERS {
        let Some((section, name)) = key.split_once('.') else {
            continue;
        };
        // (the key as shown, the key whose origin is asked, the value)
        let mut values: Vec<(String, &str, &Value)> = Vec::new();
        match lookup(&cfg.cache, section).map(|v| &v.kind) {
            Some(ValueKind::Array(routes)) => {
                for (i, route) in routes.iter().enumerate() {
                    if let Some(v) = lookup(route, name) {
                        values.push((format!("{section}[{i}].{name}"), section, v));
                    }
                }
            }
            Some(_) => {
                if let Some(v) = lookup(&cfg.cache, key) {
                    values.push((key.to_string(), key, v));
                }
            }
            None => {}
        }
        for (shown, origin_key, value) in values {
            if let Some(given) = not_whole(value) {
                return Err(err(format!(
                    "{}: `{shown}` is {given}; it takes a whole number (nothing is rounded)",
                    origins.of(origin_key)
                )));
            }
        }
    }
    Ok(())
}

/// How `value` was given, when it is not a whole number the `config` crate
/// would convert anyway; other wrong types are left to deserialisation.
fn not_whole(value: &Value) -> Option<String> {
    match &value.kind {
        ValueKind::Float(f) => {
            // Within the range where every integer is exact in an f64.
            let whole = f.is_finite() && f.fract() == 0.0 && f.abs() <= 9_007_199_254_740_992.0;
            (!whole).then(|| f.to_string())
        }
        ValueKind::Boolean(b) => Some(b.to_string()),
        ValueKind::String(s) => {
            let t = s.trim();
            let as_number = t.parse::<f64>().is_ok() && t.parse::<i64>().is_err();
            let as_bool = ["true", "false", "on", "off", "yes", "no"]
                .iter()
                .any(|w| t.eq_ignore_ascii_case(w));
            (as_number || as_bool).then(|| format!("{s:?}"))
        }
        _ => None,
    }
}

fn unknown(
    full: &str,
    key: &str,
    known: &[&str],
    origin: Option<&str>,
    origins: &Origins<'_>,
) -> ConfigError {
    let from = match (origin, origins.file) {
        (Some("the environment") | None, _) => origins.of(full),
        (Some(_), Some(f)) => f.display().to_string(),
        (Some(o), None) => o.to_string(),
    };
    let mut msg = format!("{from}: unknown key `{full}`");
    if let Some(best) = closest(key, known) {
        msg.push_str(&format!("; did you mean `{best}`?"));
    }
    msg.push_str(&format!(" (known here: {})", known.join(", ")));
    err(msg)
}

/// The known key with the smallest edit distance (Levenshtein: a swap of
/// two letters counts 2), if it is close enough.
fn closest<'a>(key: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (strsim::levenshtein(key, k), *k))
        .filter(|(d, k)| *d <= (k.len().max(key.len()) / 2).max(1) || k.contains(key))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Makes the `config` crate's messages name the environment variable too.
fn describe_config_error(
    e: &config::ConfigError,
    file: Option<&Path>,
    env_keys: &HashMap<String, String>,
) -> String {
    let mut text = e.to_string();
    // The crate names the file relative to the working folder (or by its
    // bare name); give the whole path, and make sure it is named at all.
    if let Some(f) = file {
        let full = f.display().to_string();
        if !text.contains(&full) {
            let same_file = |token: &str| {
                let canonical = |p: &Path| std::fs::canonicalize(p).ok();
                canonical(Path::new(token)).is_some_and(|c| Some(c) == canonical(f))
            };
            let shown = text
                .split_whitespace()
                .map(|t| t.trim_end_matches([',', '.', ':', ';']))
                .find(|t| same_file(t))
                .map(str::to_string);
            text = match shown {
                Some(token) => text.replace(&token, &full),
                None => format!("{full}: {text}"),
            };
        }
    }
    for (path, var) in env_keys {
        if text.contains(&format!("`{path}`")) {
            return format!("{text} (from environment variable {var})");
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Loads `toml` as the file `clace.toml` of a fresh `CL_HOME`, removed
    /// once loaded.
    fn load_str(toml: &str, env: &[(&str, &str)]) -> Result<Loaded, ConfigError> {
        let home = tempfile::tempdir().expect("temp dir");
        let file = home.path().join("clace.toml");
        std::fs::write(&file, toml).expect("write");
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        load_from(home.path().to_path_buf(), Some(file), env)
    }

    #[test]
    fn defaults_alone_load() {
        let l = load_str("", &[]).expect("defaults");
        assert_eq!(
            l.settings.http.port,
            clace_actors::settings::Port::Bind(25223)
        );
        assert_eq!(
            l.settings.https.port,
            clace_actors::settings::Port::Bind(25224)
        );
        assert!(l
            .settings
            .https
            .cert_location
            .ends_with("config/certificates"));
        assert!(!l.effective.https.cert_location.contains("$CL_HOME"));
    }

    #[test]
    fn a_postgres_storage_is_a_url_with_vars_expanded_and_a_local_cache() {
        let l = load_str(
            "[https]\nstorage_location = \"postgres://clace:$CL_HOME@db.test:5433/clace\"\n",
            &[],
        )
        .expect("postgres storage");
        let https = &l.settings.https;
        let url = https.storage_postgres.as_deref().expect("a URL");
        assert!(url.starts_with("postgres://clace:/"), "{url}");
        assert!(url.ends_with("@db.test:5433/clace"), "{url}");
        assert!(https.storage_location.ends_with("run/storage-cache"));
        // What `clace check` prints keeps the $VAR, not the password.
        assert!(l.effective.https.storage_location.contains("$CL_HOME"));

        let folder = load_str("", &[]).expect("defaults");
        assert_eq!(folder.settings.https.storage_postgres, None);

        let bad = load_str("[https]\nstorage_location = \"postgres:///nohost\"\n", &[])
            .expect_err("refused");
        assert!(bad.to_string().contains("storage_location"), "{bad}");
        assert!(bad.to_string().contains("not a PostgreSQL URL"), "{bad}");
    }

    #[test]
    fn unknown_key_is_named_with_a_suggestion() {
        let e = load_str("[http]\nprot = 1\n", &[]).expect_err("unknown");
        assert!(e.0.contains("http.prot"), "{e}");
        assert!(e.0.contains("did you mean `port`"), "{e}");
        assert!(e.0.contains(".toml"), "{e}");
    }

    #[test]
    fn unknown_section_and_route_key() {
        let e = load_str("[htps]\nport = 1\n", &[]).expect_err("section");
        assert!(e.0.contains("`htps`") && e.0.contains("https"), "{e}");
        let e =
            load_str("[[route]]\npath = \"/\"\nproxi = \"http://a\"\n", &[]).expect_err("route");
        assert!(
            e.0.contains("route[0].proxi") && e.0.contains("`proxy`"),
            "{e}"
        );
    }

    #[test]
    fn env_overrides_file() {
        let l = load_str("[http]\nport = 1\n", &[("CL_HTTP__PORT", "0")]).expect("env");
        assert_eq!(l.settings.http.port, clace_actors::settings::Port::Bind(0));
    }

    #[test]
    fn bad_env_value_names_the_variable() {
        let e = load_str("", &[("CL_HTTP__PORT", "abc")]).expect_err("type");
        assert!(
            e.0.contains("http.port") && e.0.contains("CL_HTTP__PORT"),
            "{e}"
        );
        let e = load_str("", &[("CL_HTTP__PORT", "70000")]).expect_err("range");
        assert!(
            e.0.contains("http.port") && e.0.contains("CL_HTTP__PORT"),
            "{e}"
        );
    }

    #[test]
    fn wrong_type_names_key_and_file() {
        let e = load_str("[http]\nport = \"abc\"\n", &[]).expect_err("type");
        assert!(e.0.contains("http.port") && e.0.contains(".toml"), "{e}");
    }

    #[test]
    fn syntax_error_has_line_and_column() {
        let e = load_str("[http]\nport = = 1\n", &[]).expect_err("syntax");
        assert!(e.0.contains("line 2") && e.0.contains("column"), "{e}");
    }

    #[test]
    fn env_domains_list() {
        let l = load_str("", &[("CL_HTTPS__DOMAINS", "a.test,b.test")]).expect("list");
        assert_eq!(l.settings.https.domains, vec!["a.test", "b.test"]);
    }

    #[test]
    fn fractions_and_booleans_are_refused_where_a_whole_number_is_expected() {
        for (toml, key) in [
            (
                "[https]\ncert_rescan_interval = 1.5\n",
                "`https.cert_rescan_interval`",
            ),
            ("[http]\nport = 80.5\n", "`http.port`"),
            ("[https]\nport = true\n", "`https.port`"),
            ("[http]\nport = \"yes\"\n", "`http.port`"),
            ("[http]\nport = nan\n", "`http.port`"),
            (
                "[[route]]\npath = \"/\"\nproxy = \"http://a\"\ntimeout = 0.5\n",
                "`route[0].timeout`",
            ),
        ] {
            let e = load_str(toml, &[]).expect_err(toml);
            assert!(e.0.contains(key) && e.0.contains(".toml"), "{toml}: {e}");
        }
        let e = load_str("", &[("CL_HTTPS__CERT_RESCAN_INTERVAL", "2.5")]).expect_err("env");
        assert!(
            e.0.contains("`https.cert_rescan_interval` is 2.5")
                && e.0.contains("CL_HTTPS__CERT_RESCAN_INTERVAL"),
            "{e}"
        );
        // A float without a fraction is that whole number.
        let l = load_str("[https]\ncert_rescan_interval = 2.0\n", &[]).expect("2.0");
        assert_eq!(l.settings.https.cert_rescan_interval.as_secs(), 2);
    }

    /// Every integer in the embedded defaults is a key `WHOLE_NUMBERS`
    /// guards (a new integer key cannot be forgotten there).
    #[test]
    fn every_integer_key_is_guarded() {
        let defaults: toml::Table = toml::from_str(DEFAULTS).expect("defaults parse");
        for (section, table) in &defaults {
            let Some(table) = table.as_table() else {
                continue;
            };
            for (key, value) in table {
                if value.is_integer() {
                    let full = format!("{section}.{key}");
                    assert!(raw::WHOLE_NUMBERS.contains(&full.as_str()), "{full}");
                }
            }
        }
    }

    #[test]
    fn edit_distance_works() {
        // The distance `closest` ranks by.
        use strsim::levenshtein as edit_distance;

        assert_eq!(edit_distance("prot", "port"), 2);
        assert_eq!(closest("prot", &["host", "port"]), Some("port"));
        assert_eq!(closest("zzzzzzzz", &["host", "port"]), None);
    }
}
