//! One ACME CA and the work done with it: the account (loaded from the
//! storage or created once) and the order of one certificate over
//! TLS-ALPN-01. Runs off the issuer's mailbox; talks to the cert store only
//! by messages (challenge certificates in, stored certificates published).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actix::Addr;
use instant_acme::{
    Account, AuthorizationStatus, CertificateIdentifier, ChallengeType, Error, HttpClient,
    Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy,
};
use rcgen::{CertificateParams, DistinguishedName, KeyPair};
use tokio::sync::OnceCell;

use super::client::CaClient;
use super::storage::{backend::LOCK_POLL, Lease, Storage};
use super::{challenge, cluster, schedule, TARGET};
use crate::certs::pair::{parse_pair, Source, Validity};
use crate::certstore::CertStore;
use crate::messages::{AcmeStored, SetChallenge};

/// How long the CA may take to validate, and then to issue.
const VALIDATION_TIMEOUT: Duration = Duration::from_secs(90);

/// How a rejected nonce is named in [`describe`]'s text.
const BAD_NONCE: &str = "badNonce";

/// How many times one order is started over after a `badNonce`.
const BAD_NONCE_ORDERS: u32 = 5;

/// How long an instance waits for another one's order of the same name
/// before it gives up (and tries again after its backoff).
const LOCK_WAIT: Duration = Duration::from_secs(600);

/// The start of every error that comes from the storage rather than the CA.
pub const STORAGE_UNAVAILABLE: &str = "the storage is unavailable";

/// The problem type a renewal gets when its `replaces` was used already.
const ALREADY_REPLACED: &str = "urn:ietf:params:acme:error:alreadyReplaced";

/// The CA, as configured, and its account once there is one.
pub struct Ca {
    pub directory: String,
    pub email: String,
    pub storage: Storage,
    pub ca_file: Option<PathBuf>,
    /// This instance's id in the storage's heartbeats.
    pub instance: String,
    account: OnceCell<Account>,
}

/// What an order brought.
#[derive(Debug)]
pub struct Issued {
    pub serial: String,
    pub not_after: i64,
    pub path: PathBuf,
    /// Stored by another instance while this one waited for the lock.
    pub by_another: bool,
}

impl Ca {
    pub fn new(
        directory: String,
        email: String,
        storage: Storage,
        ca_file: Option<PathBuf>,
        instance: String,
    ) -> Ca {
        Ca {
            directory,
            email,
            storage,
            ca_file,
            instance,
            account: OnceCell::new(),
        }
    }

    /// The account, loaded or created on first use; a failure is tried
    /// again at the next use.
    pub async fn account(&self) -> Result<&Account, String> {
        self.account.get_or_try_init(|| self.load_or_create()).await
    }

    fn http(&self) -> Result<Box<dyn HttpClient>, String> {
        Ok(Box::new(CaClient::new(self.ca_file.as_deref())?))
    }

    async fn load_or_create(&self) -> Result<Account, String> {
        let dir = self.directory.clone();
        let unavailable = |e: String| format!("{STORAGE_UNAVAILABLE}: {e}");
        if let Some(stored) = self
            .storage
            .load_account(&self.email)
            .await
            .map_err(unavailable)?
        {
            let path = stored.json_path.clone();
            let account = match stored.location {
                Some(location) => Account::builder_with_http(self.http()?)
                    .from_parts(location, stored.key, dir)
                    .await
                    .map_err(|e| format!("cannot use the account in {path}: {}", describe(&e)))?,
                None => {
                    // No account URL stored: ask the CA for the account of
                    // this key, and store its URL.
                    let key = instant_acme::Key::from_pkcs8_der(stored.key.clone_key())
                        .map_err(|e| format!("{path}: {}", describe(&e)))?;
                    let (account, _) = Account::builder_with_http(self.http()?)
                        .from_key((key, stored.key.clone_key().into()), dir)
                        .await
                        .map_err(|e| {
                            format!("cannot find the account of {path}: {}", describe(&e))
                        })?;
                    self.storage
                        .save_account(&self.email, account.id(), &stored.key)
                        .await
                        .map_err(unavailable)?;
                    account
                }
            };
            log::info!(target: TARGET, "using the ACME account {} stored in {path}", account.id());
            return Ok(account);
        }
        let contact = format!("mailto:{}", self.email);
        let contacts = [contact.as_str()];
        let new = NewAccount {
            contact: if self.email.is_empty() {
                &[]
            } else {
                &contacts
            },
            terms_of_service_agreed: true,
            only_return_existing: false,
        };
        let (account, credentials) = Account::builder_with_http(self.http()?)
            .create(&new, dir, None)
            .await
            .map_err(|e| {
                format!(
                    "cannot create an ACME account at {}: {}",
                    self.directory,
                    describe(&e)
                )
            })?;
        let path = self
            .storage
            .save_account(&self.email, account.id(), credentials.private_key())
            .await
            .map_err(unavailable)?;
        log::info!(target: TARGET, "created the ACME account {} for {}; stored in {path}", account.id(), self.email);
        Ok(account)
    }

    /// Orders a certificate for `name` and stores it; the cert store has
    /// published it when this returns. `renewing` is the serial the issuer
    /// serves and wants replaced (`None`: none served); `replaces` names
    /// it for the CA (ARI); a CA that says it was replaced already gets
    /// the order again without it.
    ///
    /// The name's lock is taken first (instances sharing the storage order
    /// each name once): an instance that finds it held waits, and then
    /// takes what the holder stored instead of ordering.
    ///
    /// A `badNonce` that outlasts instant-acme's own three retries of one
    /// request starts the order again at once (a CA rejecting nonces is
    /// not an outage), up to [`BAD_NONCE_ORDERS`] times.
    pub async fn obtain(
        &self,
        store: &Addr<CertStore>,
        name: &str,
        renewing: Option<&str>,
        replaces: Option<CertificateIdentifier<'static>>,
    ) -> Result<Issued, String> {
        let lease = self.lock(name).await?;
        let result = match self.stored_by_another(store, name, renewing).await {
            Some(issued) => Ok(issued),
            None => {
                match renewing {
                    Some(serial) => {
                        log::info!(target: TARGET, "ordering a certificate for {name} (renewal of serial {serial})")
                    }
                    None => log::info!(target: TARGET, "ordering a certificate for {name}"),
                }
                self.obtain_locked(store, name, replaces).await
            }
        };
        if lease.lost() {
            log::warn!(target: TARGET, "{name}: the lock was lost during the order (another instance may have ordered too)");
        }
        lease.release().await;
        result
    }

    async fn obtain_locked(
        &self,
        store: &Addr<CertStore>,
        name: &str,
        replaces: Option<CertificateIdentifier<'static>>,
    ) -> Result<Issued, String> {
        let mut attempt = 1;
        loop {
            match self.obtain_once(store, name, replaces.clone()).await {
                Err(e) if e.contains(BAD_NONCE) && attempt < BAD_NONCE_ORDERS => {
                    log::info!(target: TARGET, "{name}: the CA rejected a nonce ({e}); ordering again");
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// Takes the lock of `name`'s orders, waiting while another instance
    /// holds it.
    async fn lock(&self, name: &str) -> Result<Lease, String> {
        let key = Storage::order_lock_key(name);
        let started = std::time::Instant::now();
        let mut waited = false;
        loop {
            match self.storage.backend().try_lock(&key).await {
                Ok(Some((lease, took_over))) => {
                    if took_over {
                        log::warn!(target: TARGET, "{name}: took over the lock of an instance that stopped refreshing it");
                    }
                    return Ok(lease);
                }
                Ok(None) => {
                    if !waited {
                        log::info!(target: TARGET, "{name}: another instance holds the lock; waiting for its order");
                        waited = true;
                    }
                    if started.elapsed() > LOCK_WAIT {
                        return Err(format!(
                            "another instance has held the lock of {name} for more than {}s",
                            LOCK_WAIT.as_secs()
                        ));
                    }
                }
                Err(e) => return Err(format!("{STORAGE_UNAVAILABLE}: {e}")),
            }
            tokio::time::sleep(LOCK_POLL).await;
        }
    }

    /// A certificate for `name` in the storage that another instance stored
    /// (not the `renewing` one), valid and not due for renewal: published
    /// and returned instead of a new order.
    async fn stored_by_another(
        &self,
        store: &Addr<CertStore>,
        name: &str,
        renewing: Option<&str>,
    ) -> Option<Issued> {
        let (chain, key) = match self.storage.load_certificate(name).await {
            Ok(Some(pair)) => pair,
            Ok(None) => return None,
            Err(e) => {
                log::warn!(target: TARGET, "{name}: {e}");
                return None;
            }
        };
        let pair = parse_pair(name, &chain, &key, Source::Acme).ok()?;
        let now = crate::certs::now();
        let fresh = pair.validity(now) == Validity::Valid
            && schedule::one_third_left(pair.not_before, pair.not_after) > now
            && renewing != Some(pair.serial.as_str());
        if !fresh {
            return None;
        }
        if let Err(e) = self.storage.mirror(Some(name)).await {
            log::warn!(target: TARGET, "{name}: {e}");
        }
        store
            .send(AcmeStored {
                names: vec![name.to_string()],
            })
            .await
            .ok()?;
        log::info!(target: TARGET, "{name}: another instance stored a certificate (serial {}); not ordered", pair.serial);
        Some(Issued {
            serial: pair.serial,
            not_after: pair.not_after,
            path: self.storage.cert_path(name),
            by_another: true,
        })
    }

    async fn obtain_once(
        &self,
        store: &Addr<CertStore>,
        name: &str,
        replaces: Option<CertificateIdentifier<'static>>,
    ) -> Result<Issued, String> {
        let account = self.account().await?;
        let ids = [Identifier::Dns(name.to_string())];
        let mut order = match replaces {
            Some(r) => match account.new_order(&NewOrder::new(&ids).replaces(r)).await {
                Err(Error::Api(p)) if p.r#type.as_deref() == Some(ALREADY_REPLACED) => {
                    log::info!(target: TARGET, "{name}: the certificate was replaced already; ordering without `replaces`");
                    account.new_order(&NewOrder::new(&ids)).await
                }
                other => other,
            },
            None => account.new_order(&NewOrder::new(&ids)).await,
        }
        .map_err(|e| format!("new order: {}", describe(&e)))?;

        // Validation, with the challenge certificate in the snapshot for
        // exactly as long as the CA may look at it.
        let validated = self.validate(store, name, &mut order).await;
        cluster::withdraw_challenge(&self.storage, name).await;
        store
            .send(SetChallenge {
                name: name.to_string(),
                cert: None,
            })
            .await
            .map_err(|e| format!("the cert store is not running: {e}"))?;
        validated?;

        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| format!("certificate key: {e}"))?;
        let mut params =
            CertificateParams::new(vec![name.to_string()]).map_err(|e| format!("CSR: {e}"))?;
        params.distinguished_name = DistinguishedName::new();
        let csr = params
            .serialize_request(&key)
            .map_err(|e| format!("CSR: {e}"))?;
        order
            .finalize_csr(csr.der())
            .await
            .map_err(|e| format!("finalize: {}", describe(&e)))?;
        // The order may be valid already (a CA that signs at once): ask
        // before waiting.
        let chain = match order
            .certificate()
            .await
            .map_err(|e| format!("certificate: {}", describe(&e)))?
        {
            Some(chain) => chain,
            None => order
                .poll_certificate(&retry_policy())
                .await
                .map_err(|e| format!("certificate: {}", describe(&e)))?,
        };
        let cert_url = order.state().certificate.clone().unwrap_or_default();

        // What the CA sent must be a whole, matching pair before it goes
        // anywhere near the storage.
        let key_pem = key.serialize_pem();
        let pair = parse_pair(name, chain.as_bytes(), key_pem.as_bytes(), Source::Acme)
            .map_err(|e| format!("the CA sent a certificate that cannot be served: {e}"))?;
        let path = self
            .storage
            .save_certificate(name, &chain, &key_pem, &cert_url)
            .await
            .map_err(|e| format!("{STORAGE_UNAVAILABLE}: {e}"))?;
        store
            .send(AcmeStored {
                names: vec![name.to_string()],
            })
            .await
            .map_err(|e| format!("the cert store is not running: {e}"))?;
        Ok(Issued {
            serial: pair.serial,
            not_after: pair.not_after,
            path,
            by_another: false,
        })
    }

    /// Answers every pending authorization of the order over TLS-ALPN-01
    /// and waits until the order is ready.
    async fn validate(
        &self,
        store: &Addr<CertStore>,
        name: &str,
        order: &mut instant_acme::Order,
    ) -> Result<(), String> {
        let mut authorizations = order.authorizations();
        while let Some(result) = authorizations.next().await {
            let mut authz = result.map_err(|e| format!("authorization: {}", describe(&e)))?;
            match authz.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                other => return Err(format!("the authorization for {name} is {other:?}")),
            }
            let mut challenge = authz
                .challenge(ChallengeType::TlsAlpn01)
                .ok_or_else(|| format!("the CA offers no tls-alpn-01 challenge for {name}"))?;
            let digest = challenge.key_authorization().digest();
            let cert = challenge::certificate(name, digest.as_ref())?;
            store
                .send(SetChallenge {
                    name: name.to_string(),
                    cert: Some(cert),
                })
                .await
                .map_err(|e| format!("the cert store is not running: {e}"))?;
            // Every instance behind the balancer must answer it too.
            cluster::publish_challenge(
                &self.storage,
                &self.instance,
                name,
                challenge.key_authorization().as_str(),
                digest.as_ref(),
            )
            .await?;
            log::info!(target: TARGET, "{name}: tls-alpn-01 challenge ready; asking the CA to validate");
            challenge
                .set_ready()
                .await
                .map_err(|e| format!("challenge: {}", describe(&e)))?;
        }
        let status = order
            .poll_ready(&retry_policy())
            .await
            .map_err(|e| format!("validation: {}", describe(&e)))?;
        if status != OrderStatus::Ready {
            let why = order
                .state()
                .error
                .as_ref()
                .map(|p| format!(": {}", problem(p)))
                .unwrap_or_default();
            return Err(format!(
                "the CA did not validate {name} over tls-alpn-01 (order {status:?}){why}; is port 443 of this name forwarded to clace's HTTPS port?"
            ));
        }
        log::info!(target: TARGET, "{name}: validated");
        Ok(())
    }

    /// The ARI window of a certificate, when the CA offers renewal
    /// information: `(start, end)` in Unix seconds. `Ok(None)` when the CA
    /// has no ARI.
    pub async fn renewal_window(
        &self,
        cert_der: &rustls_pki_types::CertificateDer<'static>,
    ) -> Result<Option<(i64, i64)>, String> {
        let account = self.account().await?;
        let id = CertificateIdentifier::try_from(cert_der)?;
        match account.renewal_info(&id).await {
            Ok((info, _)) => Ok(Some((
                info.suggested_window.start.unix_timestamp(),
                info.suggested_window.end.unix_timestamp(),
            ))),
            Err(Error::Unsupported(_)) => Ok(None),
            Err(e) => Err(format!("renewal information: {}", describe(&e))),
        }
    }
}

/// Polling the order: soon at first (a CA often answers within a few
/// hundred milliseconds), then less and less often.
fn retry_policy() -> RetryPolicy {
    RetryPolicy::new()
        .initial_delay(Duration::from_millis(50))
        .backoff(1.5)
        .timeout(VALIDATION_TIMEOUT)
}

/// An error with the CA's problem type and detail spelled out.
pub fn describe(e: &Error) -> String {
    match e {
        Error::Api(p) => problem(p),
        other => {
            // Include the causes (a connection refused, a TLS failure).
            let mut text = other.to_string();
            let mut source = std::error::Error::source(other);
            while let Some(s) = source {
                let s_text = s.to_string();
                if !text.contains(&s_text) {
                    text.push_str(": ");
                    text.push_str(&s_text);
                }
                source = s.source();
            }
            text
        }
    }
}

fn problem(p: &instant_acme::Problem) -> String {
    let kind = p
        .r#type
        .as_deref()
        .map(|t| t.trim_start_matches("urn:ietf:params:acme:error:"))
        .unwrap_or("error");
    let mut text = format!("{kind}: {}", p.detail.as_deref().unwrap_or("(no detail)"));
    for sub in &p.subproblems {
        if let Some(d) = &sub.detail {
            text.push_str("; ");
            text.push_str(d);
        }
    }
    text
}

/// The shared CA handle the issuer gives each order.
pub type SharedCa = Arc<Ca>;
