//! Certificate logic the actors use: pairs read from disk, the immutable
//! snapshot that indexes them, the lock-free resolver that reads it on
//! every handshake, the self-signed default, the inventory `clace certs`
//! shows, and whole-file writes. The cert store actor that owns the pairs
//! is `crate::certstore`.

pub mod atomic;
pub mod client_tls;
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
