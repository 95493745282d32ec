//! The HTTP client every call to the CA goes through.
//!
//! instant-acme's own client sets no timeout and drops `Retry-After` from
//! error answers; this one bounds each request, head and body, and records
//! the `Retry-After` of an error answer in a task-local slot that the order
//! reads when it fails (each order runs in [`with_retry_after`]).

use std::cell::Cell;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::RETRY_AFTER;
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper_rustls::HttpsConnectorBuilder;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use instant_acme::{BodyWrapper, BytesResponse, Error, HttpClient};

/// How long one request to the CA may take, answer body included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

tokio::task_local! {
    static RETRY_AFTER_SEEN: Cell<Option<SystemTime>>;
}

/// Runs `fut` with a slot for the `Retry-After` of the CA's error answers;
/// returns its output and the latest `Retry-After` seen.
pub async fn with_retry_after<F: Future>(fut: F) -> (F::Output, Option<SystemTime>) {
    RETRY_AFTER_SEEN
        .scope(Cell::new(None), async move {
            let out = fut.await;
            let seen = RETRY_AFTER_SEEN.with(Cell::get);
            (out, seen)
        })
        .await
}

type Inner = Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    BodyWrapper<Bytes>,
>;

/// hyper over rustls (ring), trusting the web PKI roots plus `ca_file`.
pub struct CaClient {
    inner: Inner,
    timeout: Duration,
}

impl CaClient {
    pub fn new(ca_file: Option<&Path>) -> Result<CaClient, String> {
        let tls = crate::certs::client_tls::client_config(ca_file, "acme_ca_file")?;
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .build();
        Ok(CaClient {
            inner: Client::builder(TokioExecutor::new()).build(connector),
            timeout: REQUEST_TIMEOUT,
        })
    }
}

impl HttpClient for CaClient {
    fn request(
        &self,
        req: Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, Error>> + Send>> {
        let url = req.uri().to_string();
        let fut = self.inner.request(req);
        let timeout = self.timeout;
        Box::pin(async move {
            let whole = async move {
                let rsp = fut.await.map_err(|e| Error::Other(Box::new(e)))?;
                let (parts, body) = rsp.into_parts();
                let body = body.collect().await.map_err(Error::Hyper)?.to_bytes();
                Ok::<_, Error>((parts, body))
            };
            let (parts, body) = match tokio::time::timeout(timeout, whole).await {
                Ok(r) => r?,
                Err(_) => {
                    return Err(Error::Other(
                        format!("{url}: no answer within {}s", timeout.as_secs()).into(),
                    ))
                }
            };
            if parts.status.is_client_error() || parts.status.is_server_error() {
                if let Some(at) = parts
                    .headers
                    .get(RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| parse_retry_after(v, SystemTime::now()))
                {
                    let _ = RETRY_AFTER_SEEN.try_with(|c| c.set(Some(at)));
                }
            }
            let body = BodyWrapper::from(body.to_vec());
            Ok(BytesResponse::from(Response::from_parts(parts, body)))
        })
    }
}

/// `Retry-After`: delay-seconds or an HTTP date (RFC 9110 §10.2.3).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<SystemTime> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(now + Duration::from_secs(secs));
    }
    let format = time::format_description::well_known::Rfc2822;
    // An HTTP date is RFC 2822 with "GMT" for the zone.
    let value = value.replace("GMT", "+0000");
    time::OffsetDateTime::parse(&value, &format)
        .ok()
        .map(SystemTime::from)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        assert_eq!(
            parse_retry_after("120", now),
            Some(now + Duration::from_secs(120))
        );
        let date = parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now).unwrap();
        assert_eq!(
            date.duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_secs(),
            1_445_412_480
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn an_unreadable_ca_file_is_named() {
        let err = CaClient::new(Some(Path::new("/nonexistent/ca.pem")))
            .err()
            .unwrap();
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
    }
}
