//! The Pebble guard itself: instances side by side on ports of their own,
//! each answering its directory, DNS and management API; both processes
//! gone once the guard is dropped.

use std::net::TcpStream;
use std::path::Path;

use crate::tls_util::pem_certs;
use crate::util::pebble::{dns_resolves, free_port, Pebble, PebbleOptions};
use crate::util::{wait_until, DEADLINE};

#[test]
fn pebble_guards_run_side_by_side_and_drop_kills_both_processes() {
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| Pebble::start(PebbleOptions::new(free_port())));
        let b = s.spawn(|| Pebble::start(PebbleOptions::new(free_port()).validity(60)));
        (a.join().expect("start a"), b.join().expect("start b"))
    });
    let ports = |p: &Pebble| [p.api_port, p.mgmt_port, p.dns_port, p.cts_mgmt_port];
    for pa in ports(&a) {
        assert!(
            !ports(&b).contains(&pa),
            "port {pa} shared: {:?} {:?}",
            ports(&a),
            ports(&b)
        );
    }
    for p in [&a, &b] {
        let dir = p.api_get("/dir").expect("GET /dir").json();
        assert!(dir["newOrder"].as_str().is_some(), "{dir}");
        assert!(
            dns_resolves(p.dns_port, "anything.test"),
            "mock DNS answers"
        );
        assert_eq!(
            pem_certs(p.root_pem().as_bytes()).len(),
            1,
            "one issuing root"
        );
        assert!(Path::new(&p.root_file()).is_file());
        assert!(p.api_ca_file().is_file());
        assert_eq!(p.issuer_key(), format!("127.0.0.1-{}-dir", p.api_port));
        assert_eq!(p.orders(), 0);
        assert_eq!(p.issued(), 0);
    }
    assert!(
        b.log().contains("validity period of 60 seconds"),
        "{}",
        b.log_tail(20)
    );

    let pids = a.pids();
    assert_eq!(pids.len(), 2);
    let api = a.api_port;
    drop(a);
    for pid in pids {
        let gone = wait_until(DEADLINE, || {
            !Path::new(&format!("/proc/{pid}")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .is_ok_and(|s| s.contains(") Z "))
        });
        assert!(gone, "process {pid} still runs after the guard was dropped");
    }
    assert!(
        TcpStream::connect(("127.0.0.1", api)).is_err(),
        "the API port is closed"
    );
    // The other instance is untouched.
    assert!(b.api_get("/dir").is_ok());
}
