//! Compatibility (issue 8, §9 "Storage"): a storage folder that Caddy 2.6
//! (certmagic) filled from the same Pebble is served by clace as it is,
//! with no new order. Caddy is the plain ACME client that also proves the
//! Pebble guard works whatever the state of clace's issuer.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{is_pebble, Acme, EMAIL, ISSUE_DEADLINE};
use crate::tls_util::{file_serial, handshake, Handshake};
use crate::util::pebble::{free_port, tail};
use crate::util::{wait_until, DEADLINE};

/// Caddy, killed when dropped.
struct Caddy {
    child: Child,
    log: PathBuf,
}

impl Caddy {
    /// Runs `caddy run` with a Caddyfile that obtains `name` from `acme`'s
    /// Pebble over TLS-ALPN-01 only, answering on 127.0.0.1:P, storing under
    /// `storage`.
    fn start(acme: &Acme, name: &str, storage: &Path) -> Caddy {
        let home = acme.clace.root().join("caddy");
        fs::create_dir_all(&home).expect("create Caddy's home");
        let log = home.join("caddy.log");
        let caddyfile = home.join("Caddyfile");
        fs::write(
            &caddyfile,
            format!(
                "{{\n\tadmin off\n\tskip_install_trust\n\thttp_port {http}\n\thttps_port {https}\n\
                 \tauto_https disable_redirects\n\temail {EMAIL}\n\
                 \tstorage file_system {{\n\t\troot {storage}\n\t}}\n\
                 \tlog {{\n\t\toutput file {log}\n\t\tlevel DEBUG\n\t}}\n}}\n\n\
                 {name} {{\n\tbind 127.0.0.1\n\ttls {{\n\t\tissuer acme {{\n\t\t\tdir {dir}\n\
                 \t\t\ttrusted_roots {ca}\n\t\t\tdisable_http_challenge\n\t\t}}\n\t}}\n\
                 \trespond \"hello from {name}\"\n}}\n",
                http = free_port(),
                https = acme.port,
                storage = storage.display(),
                log = log.display(),
                dir = acme.pebble().directory_url(),
                ca = acme.pebble().api_ca_file().display(),
            ),
        )
        .expect("write the Caddyfile");
        let bin = std::env::var_os("CADDY_BIN").unwrap_or_else(|| "/usr/bin/caddy".into());
        let out = fs::File::create(home.join("stdout.log")).expect("Caddy's output file");
        let err = out.try_clone().expect("clone");
        let child = Command::new(&bin)
            .args(["run", "--adapter", "caddyfile", "--config"])
            .arg(&caddyfile)
            .env("HOME", &home)
            .env("XDG_DATA_HOME", home.join("data"))
            .env("XDG_CONFIG_HOME", home.join("config"))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("run {bin:?} ({e}); install it: apt-get install -y caddy"));
        Caddy { child, log }
    }

    fn diag(&self, acme: &Acme) -> String {
        let caddy = fs::read_to_string(&self.log).unwrap_or_default();
        let stdout = fs::read_to_string(self.log.with_file_name("stdout.log")).unwrap_or_default();
        format!(
            "\n--- caddy log (last 20 lines) ---\n{}\n--- caddy stdout ---\n{}\n--- pebble log ---\n{}",
            tail(&caddy, 20),
            tail(&stdout, 10),
            acme.pebble().log_tail(20)
        )
    }

    /// Waits until Caddy serves a Pebble certificate for `name`.
    fn wait_issued(&mut self, acme: &Acme, name: &str) -> Handshake {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], acme.port));
        let deadline = Instant::now() + ISSUE_DEADLINE;
        loop {
            let last = match handshake(addr, Some(name)) {
                Ok(h) if is_pebble(&h.leaf()) => return h,
                Ok(h) => format!("issuer {:?}", h.leaf().issuer_cn),
                Err(e) => e,
            };
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("caddy exited ({status}); last: {last}{}", self.diag(acme));
            }
            if Instant::now() >= deadline {
                panic!(
                    "Caddy served no Pebble certificate for {name}; last: {last}{}",
                    self.diag(acme)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM, then waits for the exit (SIGKILL after the deadline).
    fn stop(mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        if !wait_until(DEADLINE, || matches!(self.child.try_wait(), Ok(Some(_)))) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl Drop for Caddy {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[test]
fn a_storage_folder_made_by_caddy_is_served_as_it_is_with_no_new_order() {
    let acme = Acme::new();
    let storage = acme.clace.root().join("caddy-storage");
    let mut caddy = Caddy::start(&acme, "a.test", &storage);
    let by_caddy = caddy.wait_issued(&acme, "a.test");
    acme.pebble()
        .verify_chain(&by_caddy.chain, "a.test")
        .expect("Caddy's chain verifies to Pebble's root (the guard works)");
    let serial = by_caddy.serial();
    let crt = acme.cert_dir(&storage, "a.test").join("a.test.crt");
    assert!(
        wait_until(DEADLINE, || file_serial(&crt).as_deref()
            == Some(serial.as_str())),
        "Caddy stored {} in certmagic's layout{}",
        crt.display(),
        caddy.diag(&acme)
    );
    caddy.stop();
    assert_eq!(acme.pebble().orders(), 1, "Caddy made one order");
    assert_eq!(acme.pebble().issued(), 1, "Pebble issued one certificate");

    acme.configure_storage(&["a.test"], &storage, "", "");
    let mut tls = acme.serve();
    let h = acme.wait_issued_within(&mut tls, "a.test", Instant::now() + DEADLINE);
    assert_eq!(h.serial(), serial, "clace serves Caddy's certificate");
    acme.assert_verifies(&tls, &h, "a.test");
    acme.assert_orders_stay(
        &tls,
        1,
        "clace orders nothing for a name Caddy's folder covers",
    );
    assert_eq!(tls.serial(Some("a.test")), serial);
}
