//! Certificates: pairs read from disk, the immutable snapshot that indexes
//! them, the lock-free resolver that reads it on every handshake, the
//! self-signed default, and the cert store actor that owns them all.

pub mod atomic;
pub mod inventory;
pub mod names;
pub mod pair;
#[cfg(test)]
mod pair_prop;
pub mod resolver;
pub mod selfsigned;
pub mod snapshot;
#[cfg(test)]
mod snapshot_prop;

/// Now, as Unix seconds (what validity checks compare against). A clock
/// before 1970 (never on a working host) counts as 1970, which only makes
/// every certificate "not yet valid".
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
pub mod store;
