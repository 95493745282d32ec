//! PostgreSQL back end: being written (issue 12). Placeholder with the
//! interface the rest of the issuer uses.

use super::backend::KeyInfo;

#[derive(Debug, Clone)]
pub struct Postgres {
    url: String,
}

#[derive(Debug)]
pub struct PgLease {}

const NOT_YET: &str = "the PostgreSQL storage is not built yet";

impl Postgres {
    /// A handle that connects (and reconnects) in the background; never
    /// fails for an unreachable server (operations fail until it is back).
    pub fn connect(url: &str) -> Result<Postgres, String> {
        Ok(Postgres {
            url: url.to_string(),
        })
    }

    pub async fn load(&self, _key: &str) -> Result<Option<Vec<u8>>, String> {
        Err(NOT_YET.into())
    }

    pub async fn store(&self, _key: &str, _value: &[u8]) -> Result<(), String> {
        Err(NOT_YET.into())
    }

    pub async fn delete(&self, _key: &str) -> Result<(), String> {
        Err(NOT_YET.into())
    }

    pub async fn list(&self, _prefix: &str) -> Result<Vec<String>, String> {
        Err(NOT_YET.into())
    }

    pub async fn stat(&self, _key: &str) -> Result<Option<KeyInfo>, String> {
        Err(NOT_YET.into())
    }

    pub async fn try_lock(&self, _key: &str) -> Result<Option<PgLease>, String> {
        Err(NOT_YET.into())
    }

    pub fn changes(&self) -> tokio::sync::broadcast::Receiver<String> {
        tokio::sync::broadcast::channel(1).1
    }

    pub fn describe(&self) -> String {
        self.url.clone()
    }
}

impl PgLease {
    pub fn lost(&self) -> bool {
        true
    }

    pub async fn release(self) {}
}
