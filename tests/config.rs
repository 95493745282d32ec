//! Configuration errors (interface §1 exit codes, §2, §3): every one exits 2
//! before anything listens, and the message names the key (and, for errors
//! found while reading a file, the file).

use std::fs;
use std::path::Path;

use crate::util::{config_with, toml_path, Clace, Finished};

/// Runs `clace serve` and asserts the configuration was refused: exit code 2,
/// no listener, and every `needle` in stderr.
fn assert_refused(clace: &Clace, args: &[&str], needles: &[&str]) -> Finished {
    let out = clace.run(args);
    assert_eq!(
        out.code(),
        Some(2),
        "bad configuration must exit 2; stderr:\n{}",
        out.stderr
    );
    assert!(
        !out.stderr.contains("Server listening"),
        "nothing may listen with a bad configuration; stderr:\n{}",
        out.stderr
    );
    for needle in needles {
        assert!(
            out.stderr.contains(needle),
            "stderr should mention {needle:?}; stderr:\n{}",
            out.stderr
        );
    }
    out
}

/// Writes `$CL_HOME/clace.toml` and asserts `clace serve` refuses it.
fn assert_file_refused(toml: &str, needles: &[&str]) -> Finished {
    let clace = Clace::new();
    clace.write_config(toml);
    assert_refused(&clace, &["serve"], needles)
}

/// Like [`assert_file_refused`], and the error also names the file.
fn assert_file_refused_naming_file(toml: &str, needles: &[&str]) -> Finished {
    let clace = Clace::new();
    let path = clace.write_config(toml);
    let path = path.to_str().expect("UTF-8 path").to_owned();
    let mut all = needles.to_vec();
    all.push(&path);
    assert_refused(&clace, &["serve"], &all)
}

/// An existing folder to use as a `static` target.
fn site(clace: &Clace) -> String {
    let dir = clace.root().join("site");
    fs::create_dir_all(&dir).expect("create site");
    toml_path(&dir)
}

#[test]
fn unknown_key_is_named_and_the_closest_key_suggested() {
    let out = assert_file_refused_naming_file("[http]\nprot = 1\n", &["prot"]);
    // "port" does not occur in "prot": the suggestion must be there.
    assert!(
        out.stderr.contains("port"),
        "the closest known key `port` should be suggested; stderr:\n{}",
        out.stderr
    );
}

#[test]
fn unknown_section_is_named() {
    let out = assert_file_refused_naming_file("[htp]\nport = 0\n", &["htp"]);
    assert!(
        out.stderr.contains("http"),
        "the closest known section `http` should be suggested; stderr:\n{}",
        out.stderr
    );
}

#[test]
fn unknown_route_key_is_named() {
    let clace = Clace::new();
    let toml = config_with(&format!(
        "[[route]]\npath = \"/x\"\nstatic = {}\ndomian = \"a.test\"\n",
        site(&clace)
    ));
    let path = clace.write_config(&toml);
    assert_refused(
        &clace,
        &["serve"],
        &["domian", "domain", path.to_str().expect("UTF-8 path")],
    );
}

#[test]
fn wrong_type_names_the_key_and_the_file() {
    assert_file_refused_naming_file("[http]\nport = \"abc\"\n", &["port"]);
}

#[test]
fn wrong_type_for_a_boolean_is_refused() {
    assert_file_refused_naming_file(
        "[http]\nport = 0\nredirect_to_https = \"sometimes\"\n[https]\nport = -1\n",
        &["redirect_to_https"],
    );
}

#[test]
fn port_above_65535_is_refused() {
    assert_file_refused(
        "[http]\nport = 70000\n[https]\nport = -1\n",
        &["port", "65535"],
    );
}

#[test]
fn port_below_minus_one_is_refused() {
    assert_file_refused(
        "[http]\nport = -2\n[https]\nport = -1\n",
        &["port", "65535"],
    );
}

#[test]
fn https_port_out_of_range_is_refused_naming_https() {
    assert_file_refused(
        "[http]\nport = 0\n[https]\nport = 65536\n",
        &["https", "port"],
    );
}

#[test]
fn a_fraction_where_a_whole_number_is_expected_is_refused_not_rounded() {
    assert_file_refused_naming_file(
        "[http]\nport = 0\n[https]\nport = -1\ncert_rescan_interval = 1.5\n",
        &["`https.cert_rescan_interval` is 1.5", "whole number"],
    );
    assert_file_refused_naming_file(
        "[http]\nport = 80.5\n[https]\nport = -1\n",
        &["`http.port` is 80.5", "whole number"],
    );
    assert_file_refused_naming_file(
        "[http]\nport = 0\n[https]\nport = -1\n\n[[route]]\npath = \"/\"\n\
         proxy = \"http://127.0.0.1:9\"\ntimeout = 2.5\n",
        &["`route[0].timeout` is 2.5", "whole number"],
    );
    // `true` is not 1.
    assert_file_refused_naming_file(
        "[http]\nport = true\n[https]\nport = -1\n",
        &["`http.port` is true", "whole number"],
    );
}

#[test]
fn a_fraction_in_the_environment_is_refused_naming_the_variable() {
    let mut clace = Clace::new();
    clace
        .env("CL_HTTP__PORT", "0")
        .env("CL_HTTPS__PORT", "443.5");
    assert_refused(
        &clace,
        &["serve"],
        &["`https.port` is 443.5", "CL_HTTPS__PORT", "whole number"],
    );
}

#[test]
fn value_errors_in_the_file_name_the_file() {
    // The bad value comes from the file, so the file is the one to blame
    // (not the embedded defaults, not the environment).
    assert_file_refused_naming_file("[http]\nport = 70000\n[https]\nport = -1\n", &["port"]);
    assert_file_refused_naming_file(
        "[http]\nport = 0\n[https]\nport = -1\nhost = \"\"\n",
        &["host"],
    );
}

#[test]
fn empty_host_is_refused() {
    assert_file_refused(
        "[http]\nhost = \"\"\nport = 0\n[https]\nport = -1\n",
        &["host"],
    );
}

#[test]
fn route_with_both_static_and_proxy_is_refused() {
    let clace = Clace::new();
    clace.write_config(&config_with(&format!(
        "[[route]]\npath = \"/x\"\nstatic = {}\nproxy = \"http://127.0.0.1:9\"\n",
        site(&clace)
    )));
    assert_refused(&clace, &["serve"], &["static", "proxy"]);
}

#[test]
fn route_with_neither_static_nor_proxy_is_refused() {
    assert_file_refused(
        &config_with("[[route]]\npath = \"/x\"\n"),
        &["static", "proxy"],
    );
}

#[test]
fn route_path_must_start_with_a_slash() {
    let clace = Clace::new();
    clace.write_config(&config_with(&format!(
        "[[route]]\npath = \"nolead\"\nstatic = {}\n",
        site(&clace)
    )));
    assert_refused(&clace, &["serve"], &["path", "nolead"]);
}

#[test]
fn route_path_under_clace_prefix_is_refused() {
    let clace = Clace::new();
    clace.write_config(&config_with(&format!(
        "[[route]]\npath = \"/_clace/mine\"\nstatic = {}\n",
        site(&clace)
    )));
    assert_refused(&clace, &["serve"], &["/_clace/"]);
}

#[test]
fn proxy_that_is_not_an_http_url_is_refused() {
    assert_file_refused(
        &config_with("[[route]]\npath = \"/x\"\nproxy = \"ftp://x\"\n"),
        &["proxy", "ftp://x"],
    );
}

#[test]
fn proxy_without_a_scheme_is_refused() {
    assert_file_refused(
        &config_with("[[route]]\npath = \"/x\"\nproxy = \"127.0.0.1:8080\"\n"),
        &["proxy", "127.0.0.1:8080"],
    );
}

#[test]
fn static_folder_that_does_not_exist_is_refused() {
    let clace = Clace::new();
    let missing = clace.root().join("no-such-site");
    clace.write_config(&config_with(&format!(
        "[[route]]\npath = \"/x\"\nstatic = {}\n",
        toml_path(&missing)
    )));
    assert_refused(
        &clace,
        &["serve"],
        &["static", missing.to_str().expect("UTF-8 path")],
    );
}

#[test]
fn toml_syntax_error_gives_line_and_file() {
    let out = assert_file_refused_naming_file("[http\nport = 0\n", &["line"]);
    assert!(
        out.stderr.contains("column") || out.stderr.contains("col"),
        "a syntax error should give the column too; stderr:\n{}",
        out.stderr
    );
}

#[test]
fn env_override_that_is_not_a_number_is_refused() {
    let mut clace = Clace::new();
    clace
        .env("CL_HTTP__PORT", "abc")
        .env("CL_HTTPS__PORT", "-1");
    assert_refused(&clace, &["serve"], &["http.port"]);
}

#[test]
fn env_override_out_of_range_is_refused() {
    let mut clace = Clace::new();
    clace
        .env("CL_HTTP__PORT", "70000")
        .env("CL_HTTPS__PORT", "-1");
    assert_refused(&clace, &["serve"], &["http.port"]);
}

#[test]
fn config_given_with_dash_c_is_named_in_errors() {
    let clace = Clace::new();
    let file = clace.root().join("elsewhere.toml");
    fs::write(&file, "[http]\nprot = 0\n").expect("write config");
    let file = file.to_str().expect("UTF-8 path");
    assert_refused(&clace, &["serve", "-c", file], &["prot", file]);
    assert_refused(&clace, &["serve", "--config", file], &["prot", file]);
}

#[test]
fn missing_config_file_given_with_dash_c_is_refused() {
    let clace = Clace::new();
    let file = clace.root().join("absent.toml");
    let file = file.to_str().expect("UTF-8 path");
    assert_refused(&clace, &["serve", "-c", file], &[file]);
}

#[test]
fn check_refuses_a_bad_configuration_with_exit_2() {
    let clace = Clace::new();
    let path = clace.write_config("[http]\nport = 70000\n");
    let out = clace.run(&["check"]);
    assert_eq!(out.code(), Some(2), "stderr:\n{}", out.stderr);
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(all.contains("port"), "output:\n{all}");
    // The refused file never produces a configuration on stdout.
    assert!(
        !out.stdout.contains("[https]"),
        "no configuration should be printed: {}",
        out.stdout
    );
    assert!(Path::new(&path).exists());
}
