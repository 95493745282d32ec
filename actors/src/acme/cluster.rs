//! Several instances on one storage (issue 12). Each running issuer:
//!
//! - writes a heartbeat, `instances/<id>.json`, every [`HEARTBEAT`] and at
//!   once when the challenges it serves change: `{"id", "updated" (Unix
//!   ms), "challenges": {name: digest}}`; an instance whose heartbeat is
//!   older than [`LIVE_FOR`] is gone;
//! - serves every TLS-ALPN-01 challenge stored under
//!   `acme/<issuer>/challenge_tokens/` (by whichever instance ordered), so
//!   that a validation a TCP balancer sends to any instance succeeds;
//! - with PostgreSQL, copies the stored certificates into the local folder
//!   the cert store reads, when a notification names them.
//!
//! The ordering instance stores the challenge, then waits until every live
//! instance's heartbeat lists it (at most [`CONFIRM_WITHIN`]) before it
//! tells the CA that the challenge is ready: see [`wait_served`].

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use actix::Addr;
use serde::{Deserialize, Serialize};

use super::storage::Storage;
use super::{challenge, TARGET};
use crate::certstore::CertStore;
use crate::messages::{AcmeStored, SetChallenge};

/// How often an instance says it is alive.
pub const HEARTBEAT: Duration = Duration::from_secs(5);

/// A heartbeat older than this is an instance that stopped.
pub const LIVE_FOR: Duration = Duration::from_secs(15);

/// How long the ordering instance waits for the others to serve a
/// challenge before it asks the CA anyway.
pub const CONFIRM_WITHIN: Duration = Duration::from_secs(5);

/// How often the challenges are looked for in a folder (a few directory
/// reads a second: inotify does not see another NFS client's writes).
const FOLDER_POLL: Duration = Duration::from_millis(200);

/// With PostgreSQL the notifications wake the loop; this is the fallback.
const REMOTE_POLL: Duration = Duration::from_secs(2);

/// A challenge as stored for the other instances (certmagic's field names
/// where it has them).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StoredChallenge {
    #[serde(rename = "type")]
    pub kind: String,
    pub identifier: String,
    #[serde(rename = "keyAuthorization")]
    pub key_authorization: String,
    /// SHA-256 of the key authorization, hex: what goes in the certificate.
    pub digest: String,
}

/// One instance's heartbeat.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Heartbeat {
    pub id: String,
    /// Unix milliseconds.
    pub updated: i64,
    #[serde(default)]
    pub challenges: BTreeMap<String, String>,
}

/// This instance's id: the host name and the HTTPS port, which two
/// instances on one host cannot share, so that a restarted instance keeps
/// its id and its heartbeat file (no file left behind per restart).
/// Without HTTPS (no challenge can be answered anyway), the process id.
pub fn instance_id(https_port: Option<u16>) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    let host = if host.is_empty() {
        "localhost".into()
    } else {
        host
    };
    match https_port {
        Some(port) => format!("{host}-{port}"),
        None => format!("{host}-pid{}", std::process::id()),
    }
}

fn now_ms() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis()),
    )
    .unwrap_or(i64::MAX)
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Whether a heartbeat says its instance is alive at `now_ms`.
pub fn is_live(beat: &Heartbeat, now_ms: i64) -> bool {
    now_ms - beat.updated <= i64::try_from(LIVE_FOR.as_millis()).unwrap_or(i64::MAX)
}

/// The live instances (other than `own`) whose heartbeat does not list
/// `digest` for `name`.
pub fn unconfirmed(
    beats: &[Heartbeat],
    own: &str,
    name: &str,
    digest: &str,
    now: i64,
) -> Vec<String> {
    beats
        .iter()
        .filter(|b| b.id != own && is_live(b, now))
        .filter(|b| b.challenges.get(name).map(String::as_str) != Some(digest))
        .map(|b| b.id.clone())
        .collect()
}

async fn heartbeats(storage: &Storage) -> Result<Vec<Heartbeat>, String> {
    let backend = storage.backend();
    let mut out = Vec::new();
    for key in backend.list(Storage::INSTANCES_PREFIX).await? {
        if let Some(bytes) = backend.load(&key).await? {
            if let Ok(beat) = serde_json::from_slice::<Heartbeat>(&bytes) {
                out.push(beat);
            }
        }
    }
    Ok(out)
}

/// How long the start waits to announce this instance in the storage.
pub const ANNOUNCE_WITHIN: Duration = Duration::from_secs(3);

/// Announces this instance in the storage before its HTTPS socket listens
/// (called between bind and listen): an instance is live for the others
/// before a balancer can send it a validation, so that an order never asks
/// the CA while an unannounced instance would answer with the default
/// certificate. Waits at most [`ANNOUNCE_WITHIN`] (PostgreSQL down: the
/// instance starts anyway, and says so). Nothing to do without ACME.
pub fn announce_at_start(settings: &super::AcmeSettings) {
    let Some(port) = settings.https_port else {
        return;
    };
    let id = instance_id(Some(port));
    let beat = Heartbeat {
        id: id.clone(),
        updated: now_ms(),
        challenges: BTreeMap::new(),
    };
    let Ok(json) = serde_json::to_vec(&beat) else {
        return;
    };
    let key = Storage::instance_key(&id);
    let settings = settings.clone();
    let (done, result) = std::sync::mpsc::channel();
    let worker = std::thread::Builder::new()
        .name("clace-announce".into())
        .spawn(move || {
            let outcome = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("cannot start a runtime: {e}"))
                .and_then(|rt| {
                    rt.block_on(async {
                        let storage = settings.storage()?;
                        storage.backend().store_volatile(&key, &json).await
                    })
                });
            let _ = done.send(outcome);
        });
    if worker.is_err() {
        return;
    }
    match result.recv_timeout(ANNOUNCE_WITHIN) {
        Ok(Ok(())) => log::debug!(target: TARGET, "announced as {id} in the storage"),
        Ok(Err(e)) => {
            log::warn!(target: TARGET, "could not announce this instance ({id}) in the storage: {e}; starting anyway (a validation sent here before the issuer reaches the storage fails)")
        }
        Err(_) => {
            log::warn!(target: TARGET, "the storage did not answer within {}s; starting without announcing this instance ({id}) (a validation sent here before the issuer reaches the storage fails)", ANNOUNCE_WITHIN.as_secs())
        }
    }
}

/// Stores the challenge of `name` for every instance and waits until every
/// live one serves it, or [`CONFIRM_WITHIN`]. Logs who did not confirm.
pub async fn publish_challenge(
    storage: &Storage,
    own: &str,
    name: &str,
    key_authorization: &str,
    digest: &[u8],
) -> Result<(), String> {
    let stored = StoredChallenge {
        kind: "tls-alpn-01".into(),
        identifier: name.to_string(),
        key_authorization: key_authorization.to_string(),
        digest: hex(digest),
    };
    let json = serde_json::to_vec(&stored).map_err(|e| e.to_string())?;
    storage
        .backend()
        .store_volatile(&storage.challenge_key(name), &json)
        .await
        .map_err(|e| format!("the storage is unavailable: {e}"))?;
    let started = Instant::now();
    loop {
        let beats = heartbeats(storage).await.unwrap_or_default();
        let missing = unconfirmed(&beats, own, name, &stored.digest, now_ms());
        let live = beats.iter().filter(|b| is_live(b, now_ms())).count().max(1);
        if missing.is_empty() {
            if live > 1 {
                log::info!(target: TARGET, "{name}: the challenge is served by all {live} instances");
            }
            return Ok(());
        }
        if started.elapsed() >= CONFIRM_WITHIN {
            log::warn!(target: TARGET, "{name}: instances {} did not confirm the challenge within {}s; asking the CA anyway (a validation sent to them fails)", missing.join(", "), CONFIRM_WITHIN.as_secs());
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Removes the stored challenge of `name`.
pub async fn withdraw_challenge(storage: &Storage, name: &str) {
    if let Err(e) = storage.backend().delete(&storage.challenge_key(name)).await {
        log::warn!(target: TARGET, "{name}: could not remove the stored challenge: {e}");
    }
}

/// The loop every running issuer keeps: challenges of other instances
/// served, heartbeats written, PostgreSQL's certificates copied locally.
/// Runs until aborted.
pub async fn run(storage: Storage, own: String, store: Addr<CertStore>) {
    let mut served: HashMap<String, String> = HashMap::new();
    let mut last_beat: Option<Instant> = None;
    let mut changes = storage.backend().changes();
    let poll = if storage.is_remote() {
        REMOTE_POLL
    } else {
        FOLDER_POLL
    };
    let mut mirror_all = storage.is_remote();
    let mut mirror_names: Vec<String> = Vec::new();
    let mut storage_down = false;
    loop {
        // Certificates stored by another instance (PostgreSQL).
        if mirror_all || !mirror_names.is_empty() {
            let wanted: Vec<Option<String>> = if mirror_all {
                vec![None]
            } else {
                std::mem::take(&mut mirror_names)
                    .into_iter()
                    .map(Some)
                    .collect()
            };
            let mut names = Vec::new();
            let mut failed = false;
            for name in &wanted {
                match storage.mirror(name.as_deref()).await {
                    Ok(changed) => names.extend(changed),
                    Err(e) => {
                        log::debug!(target: TARGET, "storage: {e}");
                        failed = true;
                    }
                }
            }
            // A copy that failed is tried again whole at the next turn.
            mirror_all = failed;
            if !names.is_empty() {
                log::info!(target: TARGET, "storage: certificates of [{}] changed in {}; serving them", names.join(", "), storage.backend().describe());
                let _ = store.send(AcmeStored { names }).await;
            }
        }

        let changed = match sync_challenges(&storage, &store, &mut served).await {
            Ok(changed) => {
                if storage_down {
                    storage_down = false;
                }
                changed
            }
            Err(e) => {
                if !storage_down {
                    log::warn!(target: TARGET, "storage: cannot read the challenges of other instances: {e}");
                    storage_down = true;
                }
                false
            }
        };
        if changed || last_beat.is_none_or(|t| t.elapsed() >= HEARTBEAT) {
            let beat = Heartbeat {
                id: own.clone(),
                updated: now_ms(),
                challenges: served.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            };
            if let Ok(json) = serde_json::to_vec(&beat) {
                match storage
                    .backend()
                    .store_volatile(&Storage::instance_key(&own), &json)
                    .await
                {
                    Ok(()) => last_beat = Some(Instant::now()),
                    Err(e) => log::debug!(target: TARGET, "storage: heartbeat: {e}"),
                }
            }
        }

        // Sleep until the next poll, or a notification.
        let sleep = tokio::time::sleep(poll);
        match changes.as_mut() {
            Some(rx) => {
                tokio::select! {
                    () = sleep => {}
                    key = rx.recv() => match key {
                        Ok(key) => note_change(&storage, &key, &mut mirror_all, &mut mirror_names),
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => mirror_all = true,
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => changes = None,
                    },
                }
            }
            None => sleep.await,
        }
    }
}

/// What a changed key means for the loop.
fn note_change(storage: &Storage, key: &str, all: &mut bool, names: &mut Vec<String>) {
    if key == "*" {
        *all = true;
        return;
    }
    let prefix = format!("{}/", storage.certificates_prefix());
    if let Some(rest) = key.strip_prefix(&prefix) {
        if let Some((name, _)) = rest.split_once('/') {
            if !names.iter().any(|n| n == name) {
                names.push(name.to_string());
            }
        }
    }
}

/// Serves what is stored under the challenges prefix and stops serving
/// what is gone. `true` when the set changed.
async fn sync_challenges(
    storage: &Storage,
    store: &Addr<CertStore>,
    served: &mut HashMap<String, String>,
) -> Result<bool, String> {
    let backend = storage.backend();
    let mut stored: HashMap<String, String> = HashMap::new();
    for key in backend.list(&storage.challenges_prefix()).await? {
        let Some(bytes) = backend.load(&key).await? else {
            continue;
        };
        match serde_json::from_slice::<StoredChallenge>(&bytes) {
            Ok(c) => {
                stored.insert(c.identifier.to_ascii_lowercase(), c.digest);
            }
            Err(e) => log::debug!(target: TARGET, "storage: {key} is not a challenge: {e}"),
        }
    }
    let mut changed = false;
    for (name, digest) in &stored {
        if served.get(name) == Some(digest) {
            continue;
        }
        let Some(bytes) = unhex(digest) else { continue };
        match challenge::certificate(name, &bytes) {
            Ok(cert) => {
                let _ = store
                    .send(SetChallenge {
                        name: name.clone(),
                        cert: Some(cert),
                    })
                    .await;
                served.insert(name.clone(), digest.clone());
                changed = true;
            }
            Err(e) => log::warn!(target: TARGET, "{name}: {e}"),
        }
    }
    let gone: Vec<String> = served
        .keys()
        .filter(|n| !stored.contains_key(*n))
        .cloned()
        .collect();
    for name in gone {
        served.remove(&name);
        let _ = store.send(SetChallenge { name, cert: None }).await;
        changed = true;
    }
    Ok(changed)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn beat(id: &str, updated: i64, challenges: &[(&str, &str)]) -> Heartbeat {
        Heartbeat {
            id: id.into(),
            updated,
            challenges: challenges
                .iter()
                .map(|(n, d)| (n.to_string(), d.to_string()))
                .collect(),
        }
    }

    #[test]
    fn only_live_other_instances_must_confirm_the_right_digest() {
        let now = 100_000;
        let beats = [
            beat("me", now, &[]),
            beat("b", now - 1_000, &[("a.test", "aa")]),
            beat("c", now - 2_000, &[("a.test", "bb")]),
            beat("d", now - 3_000, &[]),
            beat("gone", now - 16_000, &[]),
        ];
        assert_eq!(
            unconfirmed(&beats, "me", "a.test", "aa", now),
            vec!["c", "d"]
        );
        assert!(unconfirmed(&beats[..2], "me", "a.test", "aa", now).is_empty());
    }

    #[test]
    fn digests_round_trip_through_hex() {
        let d = [0u8, 1, 0xab, 0xff];
        assert_eq!(hex(&d), "0001abff");
        assert_eq!(unhex("0001abff").unwrap(), d);
        assert!(unhex("abc").is_none());
        assert!(unhex("zz").is_none());
    }

    #[test]
    fn instance_ids_are_one_storage_key_component() {
        let id = instance_id(Some(443));
        assert!(id.ends_with("-443"), "{id}");
        assert!(Storage::instance_key(&id).ends_with(".json"));
        assert!(!Storage::instance_key(&id)["instances/".len()..].contains('/'));
    }
}
