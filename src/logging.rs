//! Logging to standard error: `[logging] level`, unless `RUST_LOG` is set.
//!
//! The libraries that speak to clients log what a client did wrong:
//! actix-http an `ERROR stream error: request parse error` for every
//! malformed request, rustls a `WARN Illegal SNI extension` for every
//! handshake that names an IP address, actix-server an accept error for
//! every connection past the file limit. Anyone on the network could
//! multiply those lines, so each of these targets logs at most one line per
//! level per minute, with the count held back (as `logonce` does for
//! clace's own request-caused warnings).

use std::time::Instant;

use clace_actors::logonce::{LogOnce, WINDOW};

/// Targets whose lines a client can cause, by prefix.
const PEER_CAUSED: &[&str] = &[
    "actix_http",
    "actix_server::accept",
    "actix_tls",
    "h2",
    "rustls",
];

pub fn init(level: &str) {
    let mut builder = env_logger::Builder::new();
    match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.is_empty() => {
            builder.parse_filters(&spec);
        }
        _ => {
            builder.parse_filters(level);
            // actix-server announces every worker at info: keep it quieter
            // unless asked for, the listeners log what matters.
            if matches!(level, "info") {
                builder.filter_module("actix_server", log::LevelFilter::Warn);
            }
            // notify warns when it cannot unwatch a folder that a swap
            // (Kubernetes' `..data`) removed: expected, and the watcher
            // logs what it does about it.
            if !matches!(level, "debug" | "trace") {
                builder.filter_module("notify", log::LevelFilter::Error);
            }
        }
    }
    let inner = builder.format_timestamp_millis().build();
    let max = inner.filter();
    let logger = Limited {
        inner,
        limiter: LogOnce::new(WINDOW),
    };
    if log::set_boxed_logger(Box::new(logger)).is_ok() {
        log::set_max_level(max);
    }
}

/// env_logger, with the client-caused lines of [`PEER_CAUSED`] limited.
struct Limited {
    inner: env_logger::Logger,
    limiter: LogOnce,
}

impl log::Log for Limited {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        self.inner.enabled(metadata)
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.inner.matches(record) {
            return;
        }
        let target = record.target();
        if !PEER_CAUSED
            .iter()
            .any(|p| target == *p || target.starts_with(&format!("{p}::")))
        {
            return self.inner.log(record);
        }
        let cause = format!("{target} {}", record.level());
        match self.limiter.admit(&cause, Instant::now()) {
            None => {}
            Some(held) if held.is_empty() => self.inner.log(record),
            Some(held) => self.inner.log(
                &log::Record::builder()
                    .args(format_args!("{}{held}", record.args()))
                    .level(record.level())
                    .target(target)
                    .module_path(record.module_path())
                    .file(record.file())
                    .line(record.line())
                    .build(),
            ),
        }
    }

    fn flush(&self) {
        self.inner.flush();
    }
}
