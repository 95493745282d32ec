//! `kill -9` of the instance that holds a name's lock, in the middle of its
//! order (shared folder): its lock file is left behind, unrefreshed; once
//! stale (10 s) another instance takes it over and completes the name, and
//! the name ends with one valid certificate, served by both survivors.

use std::fs;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::{cert_folder, Cluster, Store};
use crate::acme::{has_words, is_pebble, ISSUE_DEADLINE};
use crate::tls_util::handshake;
use crate::util::wait_until;

const NAME: &str = "a.test";

/// When a lock file not refreshed is taken over (certmagic's rule).
const STALE: Duration = Duration::from_secs(10);

#[test]
fn folder_kill_9_of_the_lock_holder_mid_order_another_instance_completes_the_name() {
    let mut cluster = Cluster::new(Store::folder(), &[NAME], |o| o);
    cluster.start_all();

    // Every instance logs that it orders, then tries the lock: the one
    // that got it is the one that did not log that it waits. Kill it at
    // once, in the middle of its order.
    let ordering = ["ordering a certificate for", NAME];
    let waiting = ["another instance holds the lock", NAME];
    let mut holder = None;
    wait_until(ISSUE_DEADLINE, || {
        let logged = |words: &[&str]| -> Vec<bool> {
            cluster
                .nodes
                .iter()
                .map(|n| n.stderr_lines().iter().any(|l| has_words(l, words)))
                .collect()
        };
        let (ordered, waited) = (logged(&ordering), logged(&waiting));
        let holders: Vec<usize> = (0..cluster.nodes.len())
            .filter(|&i| ordered[i] && !waited[i])
            .collect();
        let waiters = waited.iter().filter(|&&w| w).count();
        holder = (waiters == cluster.nodes.len() - 1 && holders.len() == 1).then(|| holders[0]);
        holder.is_some()
    });
    let Some(holder) = holder else {
        panic!(
            "no lock holder for {NAME} within {ISSUE_DEADLINE:?}: expected one instance to log \
             {ordering:?} and each other to log {waiting:?}{}",
            cluster.diag()
        );
    };
    cluster.nodes[holder].proc_mut().signal(Signal::SIGKILL);
    let killed_at = Instant::now();
    cluster.nodes[holder]
        .proc_mut()
        .wait_exit(crate::util::DEADLINE);
    let finished = cluster.nodes[holder]
        .stderr_lines()
        .iter()
        .any(|l| has_words(l, &["certificate for", NAME, "issued"]));
    assert!(
        !finished && cluster.pebble.issued() == 0,
        "inconclusive: instance #{holder} completed its order before the SIGKILL that followed \
         the others' waiting lines{}",
        cluster.diag()
    );

    // Its lock file stays, as certmagic writes it.
    let lock = cluster
        .store
        .dir()
        .join("locks")
        .join(format!("issue_cert_{NAME}.lock"));
    let content = fs::read(&lock).unwrap_or_else(|e| {
        panic!(
            "the holder's lock file {} is there after its kill ({e}){}",
            lock.display(),
            cluster.diag()
        )
    });
    let json: serde_json::Value = serde_json::from_slice(&content).unwrap_or_default();
    assert!(
        json["created"].is_string() && json["updated"].is_string(),
        "the lock file holds {{\"created\", \"updated\"}}: {}",
        String::from_utf8_lossy(&content)
    );

    // A survivor takes the lock over and completes the name; both serve it.
    let survivors: Vec<usize> = (0..cluster.nodes.len()).filter(|&i| i != holder).collect();
    let deadline = Instant::now() + STALE + ISSUE_DEADLINE;
    let mut served = Vec::new();
    for &i in &survivors {
        let addr = cluster.nodes[i].tls().https;
        let mut last = String::new();
        let ok = wait_until(deadline.saturating_duration_since(Instant::now()), || {
            match handshake(addr, Some(NAME)) {
                Ok(h) if is_pebble(&h.leaf()) => return true,
                Ok(h) => last = format!("serial {} from {:?}", h.serial(), h.leaf().issuer_cn),
                Err(e) => last = e,
            }
            !cluster.nodes[i].is_running()
        });
        assert!(
            ok && cluster.nodes[i].is_running(),
            "survivor #{i} serves no Pebble certificate for {NAME} {:?} after the holder's \
             kill; last: {last}; {}{}",
            killed_at.elapsed(),
            cluster.orderers(),
            cluster.diag()
        );
        served.push(cluster.nodes[i].tls().serial(Some(NAME)));
    }
    let took = killed_at.elapsed();
    let chains = cluster.assert_chains_verify();
    for &i in &survivors {
        assert_eq!(
            chains[i],
            vec![served[0].clone()],
            "both survivors serve one certificate"
        );
    }
    let took_over = ["took over", "lock", NAME];
    assert!(
        survivors.iter().any(|&i| cluster.nodes[i]
            .stderr_lines()
            .iter()
            .any(|l| has_words(l, &took_over))),
        "a survivor logged {took_over:?}; {}{}",
        cluster.orderers(),
        cluster.diag()
    );

    // One certificate for the name: one issuance at Pebble (the killed
    // order, if Pebble had it, was never finalized), one stored.
    let orders = cluster.pebble.orders();
    assert!(
        (1..=2).contains(&orders),
        "the killed order and the survivor's at most: {orders}{}",
        cluster.diag()
    );
    cluster.assert_orders_stay(orders, "nothing ordered once the name is served");
    assert_eq!(
        cluster.pebble.issued(),
        1,
        "one certificate issued for {NAME}{}",
        cluster.diag()
    );
    let issuer = cluster.issuer();
    let certs = cluster.store.dir().join("certificates").join(&issuer);
    let mut entries: Vec<String> = fs::read_dir(&certs)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    entries.sort();
    assert_eq!(entries, vec![NAME.to_owned()], "one certificate folder");
    let mut files: Vec<String> = fs::read_dir(cert_folder(cluster.store.dir(), &issuer, NAME))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(
        files,
        ["a.test.crt", "a.test.json", "a.test.key"],
        "one certificate stored for {NAME}{}",
        cluster.diag()
    );
    assert_eq!(
        cluster.must_be_stored(NAME).serial,
        served[0],
        "the stored certificate is the served one"
    );
    eprintln!(
        "cluster takeover: instance #{holder} killed; {NAME} served by both survivors {took:?} \
         later ({orders} order(s) at Pebble)"
    );
}
