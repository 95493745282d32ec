//! `clace certs [--json] [--name NAME]` (interface §1 and §6): what is in
//! `cert_location`, with a status per certificate, and which certificate a
//! name would get and why.

use std::fs;
use std::path::Path;

use serde_json::Value;

use crate::tls_util::{install_pair, make_pair, Spec, Validity, World};
use crate::util::Finished;

/// The keys of each object of `clace certs --json`.
const KEYS: [&str; 6] = ["file", "names", "source", "issuer", "not_after", "status"];

fn run(world: &World, args: &[&str]) -> Finished {
    let out = world.clace.run(args);
    assert_eq!(
        out.code(),
        Some(0),
        "clace {args:?}: stdout:\n{}\nstderr:\n{}",
        out.stdout,
        out.stderr
    );
    out
}

fn json(world: &World, args: &[&str]) -> Value {
    let out = run(world, args);
    serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("clace {args:?} printed no JSON ({e}):\n{}", out.stdout))
}

/// The entry of the array whose `file` is `path` (same file, however the
/// daemon spells the folder).
fn entry<'a>(list: &'a [Value], path: &Path) -> &'a Value {
    let want = fs::canonicalize(path).expect("canonical path");
    list.iter()
        .find(|e| {
            e["file"]
                .as_str()
                .and_then(|f| fs::canonicalize(f).ok())
                .is_some_and(|f| f == want)
        })
        .unwrap_or_else(|| panic!("no entry for {} in {list:#?}", path.display()))
}

fn names(v: &Value) -> Vec<String> {
    let mut n: Vec<String> = v["names"]
        .as_array()
        .unwrap_or_else(|| panic!("names is not an array: {v}"))
        .iter()
        .map(|s| s.as_str().expect("name is a string").to_owned())
        .collect();
    n.sort();
    n
}

/// A folder with one pair of each status and a user default.
struct Folder {
    world: World,
}

fn folder() -> Folder {
    let world = World::with_certs();
    let certs = world.certs.clone();
    let ok = Spec::new(&["ok.test", "www.ok.test"])
        .chain("Clace Test Issuer")
        .make();
    install_pair(&certs, "ok.test", &ok);
    let expired = Spec::new(&["old.test"]).validity(Validity::Expired).make();
    install_pair(&certs, "old.test", &expired);
    let future = Spec::new(&["future.test"])
        .validity(Validity::NotYetValid)
        .make();
    install_pair(&certs, "future.test", &future);
    let mut mismatch = make_pair(&["mismatch.test"]);
    mismatch.key_pem = make_pair(&["someone-else.test"]).key_pem;
    install_pair(&certs, "mismatch.test", &mismatch);
    fs::write(certs.join("junk.test.crt"), "not a certificate\n").expect("write");
    fs::write(certs.join("junk.test.key"), "not a key\n").expect("write");
    let example = make_pair(&["example.com"]);
    install_pair(&certs, "example", &example);
    let wild = make_pair(&["*.wild.test"]);
    install_pair(&certs, "wild", &wild);
    let default = Spec::new(&["default.test"]).cn("My Own Default").make();
    install_pair(&certs, "default", &default);
    // Not pairs: a hidden file and a sub-folder.
    install_pair(&certs, ".hidden", &make_pair(&["hidden.test"]));
    fs::create_dir_all(certs.join("sub")).expect("mkdir");
    install_pair(&certs.join("sub"), "sub.test", &make_pair(&["sub.test"]));
    world.configure("", "", "");
    Folder { world }
}

#[test]
fn certs_json_lists_every_pair_with_its_status() {
    let f = folder();
    let w = &f.world;
    let v = json(w, &["certs", "--json"]);
    let list = v.as_array().unwrap_or_else(|| panic!("not an array: {v}"));
    for e in list {
        let obj = e
            .as_object()
            .unwrap_or_else(|| panic!("not an object: {e}"));
        let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        keys.sort();
        let mut want = KEYS.to_vec();
        want.sort();
        assert_eq!(keys, want, "keys of {e}");
    }
    let files = [
        "ok.test",
        "old.test",
        "future.test",
        "mismatch.test",
        "junk.test",
        "example",
        "wild",
        "default",
    ];
    assert_eq!(list.len(), files.len(), "one entry per .crt: {v:#}");
    for name in files {
        let e = entry(list, &w.crt(name));
        assert_eq!(e["source"], "file", "{name}");
    }

    let ok = entry(list, &w.crt("ok.test"));
    assert_eq!(ok["status"], "ok");
    assert_eq!(names(ok), ["ok.test", "www.ok.test"]);
    assert!(
        ok["issuer"]
            .as_str()
            .unwrap_or("")
            .contains("Clace Test Issuer"),
        "issuer of {ok}"
    );
    assert!(
        ok["not_after"]
            .as_str()
            .unwrap_or("")
            .starts_with("2090-01-01T00:00:00"),
        "RFC 3339 not_after: {ok}"
    );

    let old = entry(list, &w.crt("old.test"));
    assert_eq!(old["status"], "expired");
    assert!(
        old["not_after"]
            .as_str()
            .unwrap_or("")
            .starts_with("2001-01-01T00:00:00"),
        "{old}"
    );
    assert_eq!(names(old), ["old.test"]);
    assert_eq!(
        entry(list, &w.crt("future.test"))["status"],
        "not-yet-valid"
    );
    let mismatch = entry(list, &w.crt("mismatch.test"));
    assert_eq!(mismatch["status"], "key-mismatch");
    assert_eq!(names(mismatch), ["mismatch.test"], "names still shown");
    let junk = entry(list, &w.crt("junk.test"));
    let status = junk["status"].as_str().unwrap_or("");
    assert!(
        status.starts_with("unreadable: ") && status.len() > "unreadable: ".len(),
        "unreadable with a reason: {junk}"
    );
    assert_eq!(names(entry(list, &w.crt("wild"))), ["*.wild.test"]);
    let default = entry(list, &w.crt("default"));
    assert_eq!(default["status"], "ok");
    assert_eq!(
        default["source"], "file",
        "a user's default is not self-signed"
    );
}

#[test]
fn certs_text_names_every_file_and_status() {
    let f = folder();
    let w = &f.world;
    let out = run(w, &["certs"]);
    let text = out.stdout;
    for name in [
        "ok.test",
        "old.test",
        "future.test",
        "mismatch.test",
        "junk.test",
    ] {
        let path = w.crt(name);
        assert!(
            text.contains(&path.display().to_string()),
            "{} missing from:\n{text}",
            path.display()
        );
    }
    for word in [
        "ok",
        "expired",
        "not-yet-valid",
        "key-mismatch",
        "unreadable",
        "www.ok.test",
        "*.wild.test",
        "2001-01-01",
    ] {
        assert!(text.contains(word), "{word:?} missing from:\n{text}");
    }
    assert!(!text.contains("hidden.test"), "hidden file listed:\n{text}");
    assert!(!text.contains("sub.test"), "sub-folder listed:\n{text}");
    // The text is not the JSON.
    assert!(serde_json::from_str::<Value>(&text).is_err());
}

#[test]
fn certs_name_says_which_certificate_and_which_step() {
    let f = folder();
    let w = &f.world;
    let cases = [
        ("ok.test", "file-name", w.crt("ok.test")),
        ("OK.TEST", "file-name", w.crt("ok.test")),
        ("www.ok.test", "san", w.crt("ok.test")),
        ("example.com", "san", w.crt("example")),
        ("a.wild.test", "wildcard", w.crt("wild")),
        ("a.b.wild.test", "default", w.crt("default")),
        ("unknown.test", "default", w.crt("default")),
        // Only an expired certificate: it is what the name gets (§4).
        ("old.test", "file-name", w.crt("old.test")),
        // Not pairs: hidden files and sub-folders.
        ("hidden.test", "default", w.crt("default")),
        ("sub.test", "default", w.crt("default")),
    ];
    for (name, step, file) in cases {
        let v = json(w, &["certs", "--json", "--name", name]);
        assert!(v.is_object(), "{name}: one object: {v}");
        assert_eq!(v["name"], name, "{v}");
        assert_eq!(v["step"], step, "{name}: {v:#}");
        let got = v["file"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: file {v}"));
        assert_eq!(
            fs::canonicalize(got).ok(),
            fs::canonicalize(&file).ok(),
            "{name}: {v:#}"
        );
        assert!(v["names"].is_array() && v.get("not_after").is_some(), "{v}");
        // The text form names the file too.
        let text = run(w, &["certs", "--name", name]).stdout;
        assert!(
            text.contains(&file.display().to_string()),
            "{name}: text without {}:\n{text}",
            file.display()
        );
    }
}

#[test]
fn certs_knows_the_self_signed_default() {
    let world = World::new();
    world.configure("", "", "");
    // Before the daemon ever ran: step 5, nothing on disk yet.
    let v = json(&world, &["certs", "--json", "--name", "anything.test"]);
    assert_eq!(v["step"], "self-signed", "{v:#}");
    // The daemon makes it.
    let mut tls = world.serve();
    tls.wait_ready();
    assert!(world.crt("default").is_file());
    drop(tls);
    let v = json(&world, &["certs", "--json"]);
    let list = v.as_array().expect("array");
    assert_eq!(list.len(), 1, "{v:#}");
    let e = entry(list, &world.crt("default"));
    assert_eq!(e["source"], "self-signed", "recognised by its subject: {e}");
    assert_eq!(e["status"], "ok");
    assert!(names(e).contains(&"localhost".to_owned()), "{e}");
    let v = json(&world, &["certs", "--json", "--name", "anything.test"]);
    assert!(
        v["step"] == "default" || v["step"] == "self-signed",
        "{v:#}"
    );
    assert_eq!(
        fs::canonicalize(v["file"].as_str().expect("file")).ok(),
        fs::canonicalize(world.crt("default")).ok()
    );
}

#[test]
fn certs_endpoint_gives_the_same_json_as_the_command() {
    let f = folder();
    let w = &f.world;
    let cli = json(w, &["certs", "--json"]);
    let tls = w.serve();
    let resp = crate::util::http::get(tls.http, "/_clace/certs");
    assert_eq!(resp.status, 200);
    let by_file = |v: &Value| {
        let mut list = v.as_array().expect("array").clone();
        list.sort_by_key(|e| e["file"].as_str().unwrap_or("").to_owned());
        list
    };
    let endpoint = resp.json();
    assert_eq!(
        by_file(&endpoint),
        by_file(&cli),
        "GET /_clace/certs and `clace certs --json` differ"
    );
}
