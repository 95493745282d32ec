//! Logging to standard error: `[logging] level`, unless `RUST_LOG` is set.

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
        }
    }
    builder.format_timestamp_millis().init();
}
