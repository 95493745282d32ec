//! Why a proxied request got no answer from its upstream, and the short
//! answer the client gets instead (the detail goes to the log with the
//! route and upstream).

use actix_web::http::StatusCode;
use actix_web::HttpResponse;

use super::body::Sent;
use super::client::ConnectError;
use super::exchange::ReadError;
use super::{short, too_large, TARGET};
use crate::settings::ProxyTarget;

/// Why no response head came.
pub enum Failure {
    Connect(ConnectError),
    Answer(ReadError),
    HeadTimeout,
    Body(Sent),
}

impl Failure {
    pub fn respond(
        self,
        label: &str,
        authority: &str,
        target: &ProxyTarget,
        max_body: Option<u64>,
    ) -> HttpResponse {
        let (status, message, detail) = match self {
            Failure::HeadTimeout => {
                log::warn!(target: TARGET, "{label}: no response head within {}s (timeout)", target.timeout.as_secs());
                return short(
                    StatusCode::GATEWAY_TIMEOUT,
                    format!("gateway timeout: upstream {authority} did not answer in time"),
                );
            }
            Failure::Body(Sent::TooLarge) => return too_large(label, max_body.unwrap_or(0)),
            Failure::Body(Sent::Idle) => {
                log::info!(target: TARGET, "{label}: the client's request body went silent for {}s (idle_timeout)", target.idle_timeout.as_secs());
                return short(
                    StatusCode::REQUEST_TIMEOUT,
                    "request timeout: the request body stopped arriving".into(),
                );
            }
            Failure::Body(_) => {
                log::debug!(target: TARGET, "{label}: the client's request body broke off");
                return short(
                    StatusCode::BAD_REQUEST,
                    "bad request: the request body could not be read".into(),
                );
            }
            Failure::Connect(e) => {
                let (status, message) = match &e {
                    ConnectError::Refused => (
                        StatusCode::BAD_GATEWAY,
                        format!("bad gateway: upstream {authority} refused the connection"),
                    ),
                    ConnectError::Timeout => (
                        StatusCode::GATEWAY_TIMEOUT,
                        format!(
                            "gateway timeout: upstream {authority} did not accept the connection within {}s",
                            target.connect_timeout.as_secs()
                        ),
                    ),
                    ConnectError::Resolve(..) => (
                        StatusCode::BAD_GATEWAY,
                        format!("bad gateway: upstream host {authority} could not be resolved"),
                    ),
                    ConnectError::Tls(tls) => (
                        StatusCode::BAD_GATEWAY,
                        format!("bad gateway: the certificate of upstream {authority} cannot be trusted ({tls})"),
                    ),
                    ConnectError::Unreachable(_) | ConnectError::Handshake(_) => (
                        StatusCode::BAD_GATEWAY,
                        format!("bad gateway: upstream {authority} could not be reached"),
                    ),
                };
                (status, message, e.to_string())
            }
            Failure::Answer(e) => {
                let detail = match e {
                    ReadError::Closed => "the connection closed before an answer".to_string(),
                    ReadError::Io(e) => e.to_string(),
                    ReadError::Wire(e) => e.to_string(),
                };
                (
                    StatusCode::BAD_GATEWAY,
                    format!("bad gateway: upstream {authority} failed to answer"),
                    detail,
                )
            }
        };
        log::warn!(target: TARGET, "{label}: {message}: {detail}");
        short(status, message)
    }
}
