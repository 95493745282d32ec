//! Issue 4: certificate files that change on disk reach new handshakes
//! within a second, whatever way they arrive (interface §5), and nothing bad
//! that lands in the folder displaces a good certificate.
//!
//! Every arrival test starts the daemon with version 1 of a pair, waits until
//! it is served and the watcher runs, changes the files, notes the moment the
//! pair became complete on disk and asserts that a handshake started within
//! [`RELOAD_LIMIT`] of it gets the new serial (no handshake may fail
//! meanwhile).

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::tls_util::{
    file_serial, handshake, install_pair, make_pair, write_atomic, write_pair, Pair, Tls, World,
    RELOAD_LIMIT,
};
use crate::util::DEADLINE;

/// A running daemon with a user `default.crt` and `NAME.crt` at version 1,
/// both served.
struct Running {
    tls: Tls,
    world: World,
    default: Pair,
}

fn start_with(name: &str, sni: &str, v1: &Pair, https_extra: &str) -> Running {
    let world = World::with_certs();
    let default = make_pair(&["default.test"]);
    install_pair(&world.certs, "default", &default);
    install_pair(&world.certs, name, v1);
    world.configure("", https_extra, "");
    start(world, default, sni, &v1.serial)
}

fn start(world: World, default: Pair, sni: &str, serial: &str) -> Running {
    let tls = world.serve_ready();
    tls.wait_serial(Some(sni), serial);
    Running {
        tls,
        world,
        default,
    }
}

/// Reports a latency so that a slow run shows in the output.
fn report(test: &str, latency: Duration) {
    eprintln!("{test}: served {latency:?} after the pair was complete");
}

#[test]
fn fresh_pair_is_served_within_a_second() {
    let world = World::with_certs();
    let default = make_pair(&["default.test"]);
    install_pair(&world.certs, "default", &default);
    world.configure("", "", "");
    let r = start(world, default.clone(), "fresh.test", &default.serial);
    let fresh = make_pair(&["fresh.test"]);
    write_pair(&r.world.certs, "fresh.test", &fresh);
    let done = Instant::now();
    let latency = r
        .tls
        .assert_served_within(Some("fresh.test"), &fresh.serial, done, RELOAD_LIMIT);
    report("fresh", latency);
    // A second, SAN-only pair in a file of another name.
    let other = make_pair(&["other-name.test"]);
    write_pair(&r.world.certs, "some-file", &other);
    let done = Instant::now();
    r.tls
        .assert_served_within(Some("other-name.test"), &other.serial, done, RELOAD_LIMIT);
    assert_eq!(r.tls.serial(Some("fresh.test")), fresh.serial);
}

#[test]
fn pair_rewritten_in_place_is_served_within_a_second() {
    let v1 = make_pair(&["inplace.test"]);
    let r = start_with("inplace.test", "inplace.test", &v1, "");
    for round in 0..2 {
        let v2 = make_pair(&["inplace.test"]);
        let inode = inode(&r.world.crt("inplace.test"));
        // Truncate and rewrite the same files, key first.
        write_pair(&r.world.certs, "inplace.test", &v2);
        let done = Instant::now();
        assert_eq!(
            inode,
            self::inode(&r.world.crt("inplace.test")),
            "same file"
        );
        let latency =
            r.tls
                .assert_served_within(Some("inplace.test"), &v2.serial, done, RELOAD_LIMIT);
        report(&format!("in place, round {round}"), latency);
    }
}

#[test]
fn pair_renamed_into_place_is_served_within_a_second() {
    let v1 = make_pair(&["renamed.test"]);
    let r = start_with("renamed.test", "renamed.test", &v1, "");
    let certs = &r.world.certs;
    // `cp` then `mv`: temporary names that are not pairs, then renames.
    let v2 = make_pair(&["renamed.test"]);
    fs::write(certs.join("renamed.test.key.tmp"), &v2.key_pem).expect("write");
    fs::write(certs.join("renamed.test.crt.tmp"), &v2.cert_pem).expect("write");
    fs::rename(
        certs.join("renamed.test.key.tmp"),
        certs.join("renamed.test.key"),
    )
    .expect("rename");
    fs::rename(
        certs.join("renamed.test.crt.tmp"),
        certs.join("renamed.test.crt"),
    )
    .expect("rename");
    let done = Instant::now();
    let latency = r
        .tls
        .assert_served_within(Some("renamed.test"), &v2.serial, done, RELOAD_LIMIT);
    report("renamed", latency);
    // Again, from a folder outside cert_location (a rename across folders
    // of the same filesystem, as deploy tools do).
    let staging = r.world.root().join("staging");
    fs::create_dir_all(&staging).expect("mkdir");
    let v3 = make_pair(&["renamed.test"]);
    write_pair(&staging, "renamed.test", &v3);
    fs::rename(
        staging.join("renamed.test.key"),
        certs.join("renamed.test.key"),
    )
    .expect("rename");
    fs::rename(
        staging.join("renamed.test.crt"),
        certs.join("renamed.test.crt"),
    )
    .expect("rename");
    let done = Instant::now();
    r.tls
        .assert_served_within(Some("renamed.test"), &v3.serial, done, RELOAD_LIMIT);
}

#[test]
fn certbot_symlink_swap_is_served_within_a_second() {
    let world = World::with_certs();
    let default = make_pair(&["default.test"]);
    install_pair(&world.certs, "default", &default);
    // certbot's layout: live/NAME/*.pem -> ../../archive/NAME/*N.pem, and
    // cert_location links to live/.
    let le = world.root().join("letsencrypt");
    let archive = le.join("archive").join("a.test");
    let live = le.join("live").join("a.test");
    fs::create_dir_all(&archive).expect("mkdir");
    fs::create_dir_all(&live).expect("mkdir");
    let v1 = make_pair(&["a.test"]);
    fs::write(archive.join("fullchain1.pem"), &v1.cert_pem).expect("write");
    fs::write(archive.join("privkey1.pem"), &v1.key_pem).expect("write");
    symlink(
        "../../archive/a.test/fullchain1.pem",
        live.join("fullchain.pem"),
    )
    .expect("link");
    symlink(
        "../../archive/a.test/privkey1.pem",
        live.join("privkey.pem"),
    )
    .expect("link");
    symlink(live.join("fullchain.pem"), world.crt("a.test")).expect("link");
    symlink(live.join("privkey.pem"), world.key("a.test")).expect("link");
    world.configure("", "", "");
    let r = start(world, default, "a.test", &v1.serial);

    for n in 2..=3 {
        // Renewal: new archive files, then the live links re-pointed
        // atomically (a temporary link renamed over the old one), key first.
        let next = make_pair(&["a.test"]);
        fs::write(archive.join(format!("fullchain{n}.pem")), &next.cert_pem).expect("write");
        fs::write(archive.join(format!("privkey{n}.pem")), &next.key_pem).expect("write");
        for (kind, file) in [("privkey", "privkey.pem"), ("fullchain", "fullchain.pem")] {
            let tmp = live.join(format!("{file}.new"));
            symlink(format!("../../archive/a.test/{kind}{n}.pem"), &tmp).expect("link");
            fs::rename(&tmp, live.join(file)).expect("swap link");
        }
        let done = Instant::now();
        let latency = r
            .tls
            .assert_served_within(Some("a.test"), &next.serial, done, RELOAD_LIMIT);
        report(&format!("certbot renewal {n}"), latency);
    }
}

#[test]
fn kubernetes_data_swap_is_served_within_a_second() {
    let world = World::with_certs();
    let default = make_pair(&["default.test"]);
    install_pair(&world.certs, "default", &default);
    // A secret mount: tls.crt -> ..data/tls.crt, ..data -> ..TIMESTAMP/.
    let v1 = make_pair(&["k8s.test"]);
    let first = world.certs.join("..2026_11_30_10_00_00.000000001");
    fs::create_dir_all(&first).expect("mkdir");
    fs::write(first.join("tls.crt"), &v1.cert_pem).expect("write");
    fs::write(first.join("tls.key"), &v1.key_pem).expect("write");
    symlink(
        "..2026_11_30_10_00_00.000000001",
        world.certs.join("..data"),
    )
    .expect("link");
    symlink("..data/tls.crt", world.crt("tls")).expect("link");
    symlink("..data/tls.key", world.key("tls")).expect("link");
    world.configure("", "", "");
    let r = start(world, default, "k8s.test", &v1.serial);

    let mut old = first;
    for n in 1..=2 {
        let next = make_pair(&["k8s.test"]);
        let stamp = format!("..2026_11_30_10_0{n}_00.00000000{n}");
        let dir = r.world.certs.join(&stamp);
        fs::create_dir_all(&dir).expect("mkdir");
        fs::write(dir.join("tls.crt"), &next.cert_pem).expect("write");
        fs::write(dir.join("tls.key"), &next.key_pem).expect("write");
        // The kubelet's atomic swap: ..data_tmp renamed over ..data.
        let tmp = r.world.certs.join("..data_tmp");
        symlink(&stamp, &tmp).expect("link");
        fs::rename(&tmp, r.world.certs.join("..data")).expect("swap ..data");
        let done = Instant::now();
        // Then the old folder goes.
        fs::remove_dir_all(&old).expect("remove old data");
        let latency =
            r.tls
                .assert_served_within(Some("k8s.test"), &next.serial, done, RELOAD_LIMIT);
        report(&format!("kubernetes swap {n}"), latency);
        old = dir;
    }
}

#[test]
fn certificate_before_its_key_waits_for_the_key() {
    let v1 = make_pair(&["order.test"]);
    let r = start_with("order.test", "order.test", &v1, "");
    let v2 = make_pair(&["order.test"]);
    let crt = r.world.crt("order.test");
    write_atomic(&crt, v2.cert_pem.as_bytes());
    // The daemon has seen the new certificate once it says the pair is
    // rejected (the old key does not belong to it) ...
    r.tls.wait_lines(&format!("rejected {}", crt.display()), 1);
    // ... and the old pair still serves, whole.
    assert_eq!(r.tls.serial(Some("order.test")), v1.serial);
    write_atomic(&r.world.key("order.test"), v2.key_pem.as_bytes());
    let done = Instant::now();
    let latency = r
        .tls
        .assert_served_within(Some("order.test"), &v2.serial, done, RELOAD_LIMIT);
    report("key after certificate", latency);
}

/// Keeps doing handshakes for `sni` for `window`, asserting that each one
/// succeeds and gets `serial`.
fn keeps_serving(tls: &Tls, sni: &str, serial: &str, window: Duration) {
    let end = Instant::now() + window;
    let mut count = 0;
    while Instant::now() < end {
        match handshake(tls.https, Some(sni)) {
            Ok(h) => assert_eq!(h.serial(), serial, "after {count} handshakes"),
            Err(e) => panic!("handshake failed: {e}; stderr:\n{}", tls.stderr()),
        }
        count += 1;
        thread::sleep(Duration::from_millis(20));
    }
    assert!(count > 0);
}

/// Long enough for two rescans at `cert_rescan_interval = 1`: a bad version
/// must not be logged again by them.
const RESCANS: Duration = Duration::from_millis(2500);

#[test]
fn garbage_certificate_keeps_the_old_pair_and_is_logged_once() {
    let v1 = make_pair(&["garbage.test"]);
    let mut r = start_with(
        "garbage.test",
        "garbage.test",
        &v1,
        "cert_rescan_interval = 1",
    );
    let crt = r.world.crt("garbage.test");
    let needle = format!("rejected {}", crt.display());
    write_atomic(&crt, b"this is not a certificate\n");
    r.tls.wait_lines(&needle, 1);
    keeps_serving(&r.tls, "garbage.test", &v1.serial, RESCANS);
    assert!(r.tls.proc.is_running(), "daemon alive");
    assert_eq!(
        r.tls.count_lines(&needle),
        1,
        "logged once per bad version; stderr:\n{}",
        r.tls.stderr()
    );
    // A half-written PEM is another bad version: logged once more.
    let v2 = make_pair(&["garbage.test"]);
    let half = &v2.cert_pem[..v2.cert_pem.len() / 2];
    write_atomic(&crt, half.as_bytes());
    r.tls.wait_lines(&needle, 2);
    keeps_serving(&r.tls, "garbage.test", &v1.serial, RESCANS);
    assert_eq!(r.tls.count_lines(&needle), 2, "{}", r.tls.stderr());
    // Other pairs are untouched.
    assert_eq!(r.tls.serial(None), r.default.serial);
    // A good pair is taken as soon as it is whole.
    install_pair(&r.world.certs, "garbage.test", &v2);
    let done = Instant::now();
    r.tls
        .assert_served_within(Some("garbage.test"), &v2.serial, done, RELOAD_LIMIT);
}

#[test]
fn mismatched_key_keeps_the_old_pair_and_is_logged_once() {
    let v1 = make_pair(&["mismatch.test"]);
    let mut r = start_with(
        "mismatch.test",
        "mismatch.test",
        &v1,
        "cert_rescan_interval = 1",
    );
    let crt = r.world.crt("mismatch.test");
    let needle = format!("rejected {}", crt.display());
    let stranger = make_pair(&["stranger.test"]);
    write_atomic(&r.world.key("mismatch.test"), stranger.key_pem.as_bytes());
    r.tls.wait_lines(&needle, 1);
    keeps_serving(&r.tls, "mismatch.test", &v1.serial, RESCANS);
    assert!(r.tls.proc.is_running(), "daemon alive");
    assert_eq!(
        r.tls.count_lines(&needle),
        1,
        "logged once per bad version; stderr:\n{}",
        r.tls.stderr()
    );
    // Garbage in the key file: another bad version.
    write_atomic(
        &r.world.key("mismatch.test"),
        b"-----BEGIN PRIVATE KEY-----\nAAAA\n",
    );
    r.tls.wait_lines(&needle, 2);
    keeps_serving(
        &r.tls,
        "mismatch.test",
        &v1.serial,
        Duration::from_millis(300),
    );
    // The right key back: v1 was never gone, and a new pair is taken.
    let v2 = make_pair(&["mismatch.test"]);
    install_pair(&r.world.certs, "mismatch.test", &v2);
    let done = Instant::now();
    r.tls
        .assert_served_within(Some("mismatch.test"), &v2.serial, done, RELOAD_LIMIT);
}

#[test]
fn deleted_pair_stops_being_served() {
    let v1 = make_pair(&["gone.test", "also-gone.test"]);
    let r = start_with("gone.test", "gone.test", &v1, "");
    assert_eq!(r.tls.serial(Some("also-gone.test")), v1.serial);
    fs::remove_file(r.world.key("gone.test")).expect("rm key");
    fs::remove_file(r.world.crt("gone.test")).expect("rm crt");
    let done = Instant::now();
    r.tls
        .assert_served_within(Some("gone.test"), &r.default.serial, done, RELOAD_LIMIT);
    assert_eq!(r.tls.serial(Some("also-gone.test")), r.default.serial);
}

#[test]
fn deleted_default_is_replaced_by_a_new_self_signed_one() {
    let world = World::with_certs();
    let a = make_pair(&["a.test"]);
    install_pair(&world.certs, "a.test", &a);
    world.configure("", "", "");
    let tls = world.serve_ready();
    let crt = world.crt("default");
    let key = world.key("default");
    // The first self-signed default, made at start.
    let mut first = None;
    assert!(
        crate::util::wait_until(DEADLINE, || {
            first = file_serial(&crt);
            first.is_some()
        }),
        "no default.crt; stderr:\n{}",
        tls.stderr()
    );
    let first = first.expect("serial");
    tls.wait_serial(Some("unknown.test"), &first);

    fs::remove_file(&crt).expect("rm default.crt");
    fs::remove_file(&key).expect("rm default.key");
    let done = Instant::now();
    // A new pair appears on disk and is what unknown names get.
    let mut last = String::new();
    loop {
        let started = Instant::now();
        assert!(
            started - done <= RELOAD_LIMIT,
            "no new self-signed default served within {RELOAD_LIMIT:?} (last: {last}); stderr:\n{}",
            tls.stderr()
        );
        if let Some(on_disk) = file_serial(&crt) {
            if on_disk != first && key.is_file() {
                let served = tls.serial(Some("unknown.test"));
                if served == on_disk {
                    break;
                }
                last = format!("served {served}, on disk {on_disk}");
            }
        }
        thread::sleep(Duration::from_millis(5));
    }
    report("self-signed default replaced", done.elapsed());
    assert_eq!(crate::tls_util::mode(&key), 0o600);
    assert_eq!(
        tls.serial(Some("a.test")),
        a.serial,
        "other pairs untouched"
    );
}

#[test]
fn storm_of_replacements_never_fails_a_handshake() {
    const ROUNDS: usize = 200;
    let world = World::with_certs();
    let default = make_pair(&["default.test"]);
    install_pair(&world.certs, "default", &default);
    let v0 = make_pair(&["storm.test"]);
    let steady = make_pair(&["steady.test"]);
    install_pair(&world.certs, "storm.test", &v0);
    install_pair(&world.certs, "steady.test", &steady);
    world.configure("", "", "");
    let mut r = start(world, default, "storm.test", &v0.serial);
    r.tls.wait_serial(Some("steady.test"), &steady.serial);

    let versions: Vec<Pair> = (0..ROUNDS).map(|_| make_pair(&["storm.test"])).collect();
    let mut known: Vec<String> = versions.iter().map(|p| p.serial.clone()).collect();
    known.push(v0.serial.clone());

    // The client: handshakes back to back, alternating the name that
    // changes and one that does not.
    let stop = Arc::new(AtomicBool::new(false));
    let done_count = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let client = {
        let (stop, done_count, failures, seen) = (
            stop.clone(),
            done_count.clone(),
            failures.clone(),
            seen.clone(),
        );
        let addr = r.tls.https;
        let steady_serial = steady.serial.clone();
        thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let sni = if i % 2 == 0 {
                    "storm.test"
                } else {
                    "steady.test"
                };
                match handshake(addr, Some(sni)) {
                    Ok(h) => {
                        let serial = h.serial();
                        if sni == "steady.test" && serial != steady_serial {
                            failures
                                .lock()
                                .unwrap()
                                .push(format!("steady.test got {serial}"));
                        } else if sni == "storm.test" {
                            seen.lock().unwrap().push(serial);
                        }
                    }
                    Err(e) => failures.lock().unwrap().push(format!("{sni}: {e}")),
                }
                i += 1;
                done_count.fetch_add(1, Ordering::Relaxed);
            }
        })
    };

    let storm_start = Instant::now();
    for pair in &versions {
        let before = done_count.load(Ordering::Relaxed);
        install_pair(&r.world.certs, "storm.test", pair);
        // Let the client complete at least one handshake per replacement,
        // so the storm and the handshakes overlap all along.
        let deadline = Instant::now() + DEADLINE;
        while done_count.load(Ordering::Relaxed) == before {
            assert!(Instant::now() < deadline, "the client thread is stuck");
            thread::sleep(Duration::from_millis(1));
        }
    }
    let done = Instant::now();
    let last = versions.last().expect("versions");
    let latency = r
        .tls
        .assert_served_within(Some("storm.test"), &last.serial, done, RELOAD_LIMIT);
    stop.store(true, Ordering::Relaxed);
    client.join().expect("client thread");
    let total = done_count.load(Ordering::Relaxed);
    eprintln!(
        "storm: {ROUNDS} replacements in {:?}, {total} handshakes, last served {latency:?} after",
        done - storm_start
    );
    let failures = failures.lock().unwrap();
    assert!(
        failures.is_empty(),
        "{} of {total} handshakes failed: {:?}; stderr:\n{}",
        failures.len(),
        &failures[..failures.len().min(10)],
        r.tls.stderr()
    );
    for serial in seen.lock().unwrap().iter() {
        assert!(known.contains(serial), "served an unknown serial {serial}");
    }
    assert!(total as usize >= ROUNDS, "{total} handshakes");
    assert!(r.tls.proc.is_running());
}

#[test]
fn poll_mode_picks_up_a_change_within_the_interval() {
    let v1 = make_pair(&["poll.test"]);
    let r = start_with(
        "poll.test",
        "poll.test",
        &v1,
        "cert_watch = \"poll\"\ncert_rescan_interval = 1",
    );
    for round in 0..2 {
        let next = make_pair(&["poll.test"]);
        install_pair(&r.world.certs, "poll.test", &next);
        let done = Instant::now();
        // One interval, plus a second for the scan and the handshake.
        let latency = r.tls.assert_served_within(
            Some("poll.test"),
            &next.serial,
            done,
            Duration::from_secs(2),
        );
        report(&format!("poll round {round}"), latency);
    }
    // A new pair too, not just a changed one.
    let fresh = make_pair(&["fresh-poll.test"]);
    write_pair(&r.world.certs, "fresh-poll.test", &fresh);
    let done = Instant::now();
    r.tls.assert_served_within(
        Some("fresh-poll.test"),
        &fresh.serial,
        done,
        Duration::from_secs(2),
    );
}

fn inode(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(path).expect("stat").ino()
}

#[test]
fn folder_symlink_switch_is_served_within_a_second() {
    // A deploy layout: cert_location/s.test.crt -> current/s.crt, and
    // `current` a link to a release folder, switched atomically.
    let world = World::with_certs();
    let default = make_pair(&["default.test"]);
    install_pair(&world.certs, "default", &default);
    let deploy = world.root().join("deploy");
    let releases = deploy.join("releases");
    let mut versions = Vec::new();
    for v in 1..=3 {
        let dir = releases.join(format!("v{v}"));
        fs::create_dir_all(&dir).expect("mkdir");
        let pair = make_pair(&["s.test"]);
        fs::write(dir.join("s.crt"), &pair.cert_pem).expect("write");
        fs::write(dir.join("s.key"), &pair.key_pem).expect("write");
        versions.push(pair);
    }
    symlink("releases/v1", deploy.join("current")).expect("link");
    symlink(deploy.join("current/s.crt"), world.crt("s.test")).expect("link");
    symlink(deploy.join("current/s.key"), world.key("s.test")).expect("link");
    world.configure("", "", "");
    let r = start(world, default, "s.test", &versions[0].serial);
    for (v, pair) in versions.iter().enumerate().skip(1) {
        let tmp = deploy.join("current.new");
        symlink(format!("releases/v{}", v + 1), &tmp).expect("link");
        fs::rename(&tmp, deploy.join("current")).expect("switch");
        let done = Instant::now();
        let latency = r
            .tls
            .assert_served_within(Some("s.test"), &pair.serial, done, RELOAD_LIMIT);
        report(&format!("folder link switch v{}", v + 1), latency);
    }
}

#[test]
fn renamed_target_folder_keeps_being_watched() {
    // The folder the links point into is replaced by a rename, twice: the
    // watch must follow the new folder, not the one renamed away.
    let world = World::with_certs();
    let default = make_pair(&["default.test"]);
    install_pair(&world.certs, "default", &default);
    let store = world.root().join("store");
    let live = store.join("live");
    fs::create_dir_all(&live).expect("mkdir");
    let v1 = make_pair(&["r.test"]);
    install_pair(&live, "r", &v1);
    symlink(live.join("r.crt"), world.crt("r.test")).expect("link");
    symlink(live.join("r.key"), world.key("r.test")).expect("link");
    world.configure("", "", "");
    let r = start(world, default, "r.test", &v1.serial);

    let v2 = make_pair(&["r.test"]);
    let next = store.join("live.new");
    fs::create_dir_all(&next).expect("mkdir");
    install_pair(&next, "r", &v2);
    fs::rename(&live, store.join("live.old")).expect("move away");
    fs::rename(&next, &live).expect("move in");
    let done = Instant::now();
    r.tls
        .assert_served_within(Some("r.test"), &v2.serial, done, RELOAD_LIMIT);

    // A renewal written inside the new folder is seen too.
    let v3 = make_pair(&["r.test"]);
    install_pair(&live, "r", &v3);
    let done = Instant::now();
    let latency = r
        .tls
        .assert_served_within(Some("r.test"), &v3.serial, done, RELOAD_LIMIT);
    report("renewal in a renamed-in folder", latency);
}

#[test]
fn dangling_link_is_served_when_its_target_appears() {
    let world = World::with_certs();
    let default = make_pair(&["default.test"]);
    install_pair(&world.certs, "default", &default);
    let later = world.root().join("later");
    symlink(later.join("d.crt"), world.crt("d.test")).expect("link");
    symlink(later.join("d.key"), world.key("d.test")).expect("link");
    world.configure("", "", "");
    let r = start(world, default.clone(), "d.test", &default.serial);

    let pair = make_pair(&["d.test"]);
    let tmp = r.world.root().join("later.tmp");
    fs::create_dir_all(&tmp).expect("mkdir");
    install_pair(&tmp, "d", &pair);
    fs::rename(&tmp, &later).expect("folder into place");
    let done = Instant::now();
    let latency = r
        .tls
        .assert_served_within(Some("d.test"), &pair.serial, done, RELOAD_LIMIT);
    report("dangling link target appeared", latency);
}

#[test]
fn chain_written_in_two_steps_is_taken_only_when_closed() {
    use std::io::Write;
    let ca = "Two Step CA";
    let v1 = crate::tls_util::Spec::new(&["c.test"]).chain(ca).make();
    let r = start_with("c.test", "c.test", &v1, "");
    let v2 = crate::tls_util::Spec::new(&["c.test"]).chain(ca).make();
    let split = v2
        .cert_pem
        .find("-----END CERTIFICATE-----")
        .map(|i| i + "-----END CERTIFICATE-----\n".len())
        .expect("a leaf then a chain");
    // The key first (renamed into place: complete at once)...
    write_atomic(&r.world.key("c.test"), v2.key_pem.as_bytes());
    // ...then the certificate file written in place in two steps by one
    // writer that keeps it open, as a slow copy does.
    let mut file = fs::File::create(r.world.crt("c.test")).expect("open");
    file.write_all(&v2.cert_pem.as_bytes()[..split])
        .expect("leaf");
    file.flush().expect("flush");
    let gap_end = Instant::now() + Duration::from_millis(400);
    while Instant::now() < gap_end {
        // While the file is open, never a chain of one.
        if let Ok(h) = handshake(r.tls.https, Some("c.test")) {
            assert_eq!(h.chain.len(), 2, "a half-written chain was served");
        }
        thread::sleep(Duration::from_millis(10));
    }
    file.write_all(&v2.cert_pem.as_bytes()[split..])
        .expect("chain");
    drop(file);
    let done = Instant::now();
    r.tls
        .assert_served_within(Some("c.test"), &v2.serial, done, RELOAD_LIMIT);
    let h = handshake(r.tls.https, Some("c.test")).expect("handshake");
    assert_eq!(h.chain.len(), 2, "the whole chain once the file is closed");
}

#[test]
fn a_fifo_in_the_folder_blocks_nothing() {
    let r = start_with("ok.test", "ok.test", &make_pair(&["ok.test"]), "");
    let fifo = r.world.crt("evil");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo");
    assert!(status.success());
    fs::write(r.world.key("evil"), "not a key").expect("write");
    let fresh = make_pair(&["after.test"]);
    write_pair(&r.world.certs, "after.test", &fresh);
    let done = Instant::now();
    r.tls
        .assert_served_within(Some("after.test"), &fresh.serial, done, RELOAD_LIMIT);
    let text = crate::util::http::get(r.tls.http, "/_clace/certs").text();
    assert!(text.contains("not a regular file"), "{text}");
}

#[test]
fn a_default_crt_waiting_for_its_key_is_never_overwritten() {
    let world = World::with_certs();
    let mine = make_pair(&["mine.test"]);
    fs::write(world.crt("default"), &mine.cert_pem).expect("write");
    world.configure("", "", "");
    let r = world.serve_ready();
    assert_eq!(
        file_serial(&world.crt("default")),
        Some(mine.serial.clone()),
        "the operator's default.crt is kept"
    );
    // No default is served until the pair is whole (handshakes without a
    // name fail meanwhile); then the operator's pair is.
    write_atomic(&world.key("default"), mine.key_pem.as_bytes());
    r.wait_serial(None, &mine.serial);
    assert_eq!(
        file_serial(&world.crt("default")),
        Some(mine.serial.clone())
    );
}

#[test]
fn a_self_signed_default_half_deleted_is_made_again() {
    let world = World::with_certs();
    world.configure("", "", "");
    let tls = world.serve_ready();
    let crt = world.crt("default");
    let mut first = None;
    assert!(crate::util::wait_until(DEADLINE, || {
        first = file_serial(&crt);
        first.is_some()
    }));
    let first = first.expect("serial");
    tls.wait_serial(None, &first);
    fs::remove_file(&crt).expect("rm default.crt only");
    let done = Instant::now();
    assert!(
        crate::util::wait_until(RELOAD_LIMIT, || {
            file_serial(&crt).is_some_and(|s| s != first)
                && handshake(tls.https, None).is_ok_and(|h| h.serial() != first)
        }),
        "a new self-signed default is made and served; stderr:\n{}",
        tls.stderr()
    );
    report("half-deleted self-signed default", done.elapsed());
}

#[test]
fn an_operator_default_half_deleted_keeps_serving() {
    let world = World::with_certs();
    let mine = make_pair(&["mine.test"]);
    install_pair(&world.certs, "default", &mine);
    world.configure("", "", "");
    let mut tls = world.serve_ready();
    tls.wait_serial(None, &mine.serial);
    fs::remove_file(world.crt("default")).expect("rm default.crt only");
    tls.proc
        .wait_for_line("keeps serving until the pair is whole", DEADLINE);
    assert_eq!(
        tls.serial(None),
        mine.serial,
        "the last good default serves"
    );
    assert!(
        !world.crt("default").exists(),
        "nothing was written over it"
    );
    assert_eq!(
        fs::read_to_string(world.key("default")).expect("key"),
        mine.key_pem,
        "the operator's key is untouched"
    );
}

#[test]
fn a_file_written_for_a_long_time_delays_no_other_pair() {
    use std::io::Write;
    let r = start_with("x.test", "x.test", &make_pair(&["x.test"]), "");
    let log = r.world.certs.join("progress.log");
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = Arc::clone(&stop);
        thread::spawn(move || {
            let mut f = fs::File::create(log).expect("open");
            let until = Instant::now() + Duration::from_secs(4);
            while !stop.load(Ordering::Relaxed) && Instant::now() < until {
                let _ = f.write_all(b"still copying\n");
                let _ = f.flush();
                thread::sleep(Duration::from_millis(50));
            }
        })
    };
    thread::sleep(Duration::from_millis(200));
    let next = make_pair(&["x.test"]);
    install_pair(&r.world.certs, "x.test", &next);
    let done = Instant::now();
    let latency = r
        .tls
        .assert_served_within(Some("x.test"), &next.serial, done, RELOAD_LIMIT);
    report("pair beside a file still being written", latency);
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("writer");
}

#[test]
fn a_file_renamed_before_it_is_closed_is_served_within_a_second() {
    use std::io::Write;
    let r = start_with("y.test", "y.test", &make_pair(&["y.test"]), "");
    let next = make_pair(&["y.test"]);
    write_atomic(&r.world.key("y.test"), next.key_pem.as_bytes());
    // Written under a temporary name, renamed into place, closed later (as
    // a `with NamedTemporaryFile(...)` block that calls `os.replace`).
    let tmp = r.world.certs.join(".y.test.crt.partial");
    let mut f = fs::File::create(&tmp).expect("open");
    f.write_all(next.cert_pem.as_bytes()).expect("write");
    f.flush().expect("flush");
    fs::rename(&tmp, r.world.crt("y.test")).expect("rename");
    let done = Instant::now();
    let latency = r
        .tls
        .assert_served_within(Some("y.test"), &next.serial, done, RELOAD_LIMIT);
    report("renamed before close", latency);
    drop(f);
}

#[test]
fn cert_location_deleted_and_made_again_is_still_watched() {
    let r = start_with("z.test", "z.test", &make_pair(&["z.test"]), "");
    for round in 0..2 {
        fs::remove_dir_all(&r.world.certs).expect("rm -rf");
        fs::create_dir_all(&r.world.certs).expect("mkdir");
        let pair = make_pair(&[&format!("z{round}.test")]);
        install_pair(&r.world.certs, &format!("z{round}.test"), &pair);
        let done = Instant::now();
        let latency = r.tls.assert_served_within(
            Some(&format!("z{round}.test")),
            &pair.serial,
            done,
            RELOAD_LIMIT,
        );
        report(&format!("folder made again, round {round}"), latency);
    }
}
