//! The commands besides `serve` (interface §1) and where the home folder and
//! the configuration file come from (§2), seen through `clace check`.

use std::fs;
use std::path::Path;

use crate::util::{config_with, toml_path, Clace, Finished};

/// Runs `clace check ARGS`, asserts exit 0 and parses stdout as TOML.
fn check_ok(clace: &Clace, args: &[&str]) -> (Finished, toml::Table) {
    let mut all = vec!["check"];
    all.extend_from_slice(args);
    let out = clace.run(&all);
    assert_eq!(
        out.code(),
        Some(0),
        "check of a good configuration exits 0; stdout:\n{}\nstderr:\n{}",
        out.stdout,
        out.stderr
    );
    let table: toml::Table = out.stdout.parse().unwrap_or_else(|e| {
        panic!(
            "check must print the configuration as TOML ({e}); stdout:\n{}",
            out.stdout
        )
    });
    (out, table)
}

fn get<'a>(table: &'a toml::Table, section: &str, key: &str) -> &'a toml::Value {
    table
        .get(section)
        .and_then(|s| s.get(key))
        .unwrap_or_else(|| panic!("{section}.{key} missing from the printed configuration"))
}

fn get_str<'a>(table: &'a toml::Table, section: &str, key: &str) -> &'a str {
    get(table, section, key)
        .as_str()
        .unwrap_or_else(|| panic!("{section}.{key} is not a string"))
}

fn get_int(table: &toml::Table, section: &str, key: &str) -> i64 {
    get(table, section, key)
        .as_integer()
        .unwrap_or_else(|| panic!("{section}.{key} is not an integer"))
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

#[test]
fn check_prints_effective_configuration_with_cl_home_expanded() {
    let clace = Clace::new();
    let site = clace.root().join("site");
    fs::create_dir_all(&site).expect("create site");
    clace.write_config(&config_with(&format!(
        "[[route]]\npath = \"/docs\"\nstatic = {}\n",
        toml_path(&site)
    )));
    let (out, table) = check_ok(&clace, &[]);

    assert!(
        !out.stdout.contains("$CL_HOME"),
        "$CL_HOME must be expanded; stdout:\n{}",
        out.stdout
    );
    let expected = clace.cl_home().join("config").join("certificates");
    assert_eq!(
        Path::new(get_str(&table, "https", "cert_location")),
        expected,
        "cert_location is the default under the real CL_HOME"
    );
    let storage = clace.cl_home().join("run").join("certmagic");
    assert_eq!(
        Path::new(get_str(&table, "https", "storage_location")),
        storage
    );
    // Values from the file win over the embedded defaults.
    assert_eq!(get_int(&table, "http", "port"), 0);
    assert_eq!(get_int(&table, "https", "port"), -1);
    let routes = table
        .get("route")
        .and_then(|r| r.as_array())
        .expect("the routes are printed as [[route]]");
    assert_eq!(routes.len(), 1, "one route: {routes:?}");
    assert_eq!(
        routes[0].get("path").and_then(|p| p.as_str()),
        Some("/docs")
    );
    assert_eq!(
        routes[0].get("static").and_then(|p| p.as_str()),
        Some(path_str(&site))
    );
}

#[test]
fn check_without_a_file_prints_the_embedded_defaults() {
    let clace = Clace::new();
    let (_, table) = check_ok(&clace, &[]);
    // The documented defaults (interface §3).
    assert_eq!(get_str(&table, "http", "host"), "127.0.0.1");
    assert_eq!(get_int(&table, "http", "port"), 25223);
    assert_eq!(get_str(&table, "https", "host"), "0.0.0.0");
    assert_eq!(get_int(&table, "https", "port"), 25224);
    assert_eq!(get(&table, "https", "use_staging").as_bool(), Some(true));
    assert_eq!(get_str(&table, "https", "service_email"), "");
}

#[test]
fn check_applies_environment_overrides() {
    let mut clace = Clace::new();
    clace.write_config("[http]\nport = 8080\n");
    clace
        .env("CL_HTTP__PORT", "9090")
        .env("CL_HTTPS__PORT", "-1");
    let (_, table) = check_ok(&clace, &[]);
    assert_eq!(get_int(&table, "http", "port"), 9090, "env beats the file");
    assert_eq!(get_int(&table, "https", "port"), -1);
}

#[test]
fn check_expands_other_variables_in_paths() {
    let mut clace = Clace::new();
    let certs = clace.root().join("my-certs");
    clace.env("MY_CERTS_DIR", &certs);
    clace.write_config("[https]\ncert_location = \"${MY_CERTS_DIR}/live\"\n");
    let (_, table) = check_ok(&clace, &[]);
    assert_eq!(
        Path::new(get_str(&table, "https", "cert_location")),
        certs.join("live")
    );
}

#[test]
fn cl_home_defaults_to_home_clhome_and_is_created() {
    let clace = Clace::new();
    let home = clace.root().join("user");
    let mut cmd = clace.command(&["check"]);
    cmd.env_remove("CL_HOME");
    let mut proc = crate::util::Proc::spawn(cmd);
    let status = proc.wait_exit(crate::util::DEADLINE);
    assert_eq!(status.code(), Some(0), "stderr:\n{}", proc.stderr());
    let table: toml::Table = proc.stdout().parse().expect("TOML on stdout");
    let cl_home = home.join("clhome");
    assert_eq!(
        Path::new(get_str(&table, "https", "cert_location")),
        cl_home.join("config").join("certificates")
    );
    assert!(cl_home.is_dir(), "$HOME/clhome is created when missing");
}

#[test]
fn cl_home_defaults_to_the_folder_of_the_config_file() {
    let clace = Clace::new();
    let dir = clace.root().join("etc-clace");
    fs::create_dir_all(&dir).expect("create dir");
    let file = dir.join("server.toml");
    fs::write(&file, "[http]\nport = 0\n").expect("write config");
    let mut cmd = clace.command(&["check", "-c", path_str(&file)]);
    cmd.env_remove("CL_HOME");
    let mut proc = crate::util::Proc::spawn(cmd);
    let status = proc.wait_exit(crate::util::DEADLINE);
    assert_eq!(status.code(), Some(0), "stderr:\n{}", proc.stderr());
    let table: toml::Table = proc.stdout().parse().expect("TOML on stdout");
    assert_eq!(
        Path::new(get_str(&table, "https", "cert_location")),
        dir.join("config").join("certificates")
    );
    assert_eq!(get_int(&table, "http", "port"), 0, "the -c file is read");
}

#[test]
fn config_file_can_come_from_cl_config_file() {
    let mut clace = Clace::new();
    let file = clace.root().join("from-env.toml");
    fs::write(&file, "[http]\nport = 4321\n").expect("write config");
    // A file in CL_HOME too: CL_CONFIG_FILE must win over it.
    clace.write_config("[http]\nport = 1234\n");
    clace.env("CL_CONFIG_FILE", &file);
    let (_, table) = check_ok(&clace, &[]);
    assert_eq!(get_int(&table, "http", "port"), 4321);
}

#[test]
fn dash_c_wins_over_the_file_in_cl_home() {
    let clace = Clace::new();
    let file = clace.root().join("given.toml");
    fs::write(&file, "[http]\nport = 4321\n").expect("write config");
    clace.write_config("[http]\nport = 1234\n");
    let (_, table) = check_ok(&clace, &["-c", path_str(&file)]);
    assert_eq!(get_int(&table, "http", "port"), 4321);
    let (_, table) = check_ok(&clace, &[]);
    assert_eq!(
        get_int(&table, "http", "port"),
        1234,
        "$CL_HOME/clace.toml is found"
    );
}

#[test]
fn version_command_and_flag_print_the_version() {
    let clace = Clace::new();
    let version = env!("CARGO_PKG_VERSION");
    for args in [&["version"][..], &["--version"][..]] {
        let out = clace.run(args);
        assert_eq!(out.code(), Some(0), "{args:?}: stderr:\n{}", out.stderr);
        assert!(
            out.stdout.contains(version),
            "{args:?} should print {version}; stdout:\n{}",
            out.stdout
        );
    }
}

#[test]
fn help_mentions_the_commands() {
    let clace = Clace::new();
    let out = clace.run(&["--help"]);
    assert_eq!(out.code(), Some(0), "stderr:\n{}", out.stderr);
    for word in ["serve", "check", "version"] {
        assert!(
            out.stdout.contains(word),
            "--help should mention {word}; stdout:\n{}",
            out.stdout
        );
    }
}

#[test]
fn unknown_command_is_bad_usage() {
    let clace = Clace::new();
    let out = clace.run(&["frobnicate"]);
    assert_eq!(out.code(), Some(2), "stderr:\n{}", out.stderr);
    assert!(out.stderr.contains("frobnicate"), "stderr:\n{}", out.stderr);
}
