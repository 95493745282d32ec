//! `clace serve`: bind, start the actors, wait for signals, stop gracefully.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clace_actors::health::ActorName;
use clace_actors::listener::{self, Limits};
use clace_actors::settings::Port;
use clace_actors::supervisor::{Bound, Daemon};
use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::config::Loaded;

const TARGET: &str = "clace::supervisor";

/// Runs the daemon; `cli_file` is the `-c` argument, kept so that SIGHUP
/// finds the configuration the same way start-up did.
pub fn serve(loaded: Loaded, cli_file: Option<PathBuf>) -> ExitCode {
    let system = actix_rt::System::new();
    system.block_on(run(loaded, cli_file))
}

async fn run(loaded: Loaded, cli_file: Option<PathBuf>) -> ExitCode {
    // First of all: a SIGHUP (a reload from systemd, say) during start-up
    // must not kill the daemon with the default action; tokio keeps the
    // signals that arrive before they are read.
    let mut signals = match Signals::new() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("clace: cannot handle signals: {e}");
            return ExitCode::from(1);
        }
    };
    let settings = &loaded.settings;
    let mut bound = Bound::default();
    let mut urls = Vec::new();
    for (scheme, host, port) in [
        ("http", &settings.http.host, settings.http.port),
        ("https", &settings.https.host, settings.https.port),
    ] {
        let Port::Bind(port) = port else { continue };
        match listener::bind(host, port) {
            Ok(socket) => {
                let real = socket.local_addr().map(|a| a.port()).unwrap_or(port);
                log::info!(target: TARGET, "bound {scheme} to {host}:{real}");
                urls.push(format!("{scheme}://{host}:{real}"));
                if scheme == "http" {
                    bound.http = Some(socket);
                } else {
                    bound.https = Some(socket);
                }
            }
            Err(e) => {
                eprintln!("clace: cannot bind the {scheme} listener to {host}:{port}: {e}");
                return ExitCode::from(1);
            }
        }
    }
    if urls.is_empty() {
        log::info!(target: TARGET, "both listeners are disabled: managing certificates only");
    }

    let mut daemon = match Daemon::start(settings, bound, Limits::default()) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("clace: {e}");
            return ExitCode::from(1);
        }
    };
    let addr_file = loaded.home.join("run").join("clace.addr");
    write_addr_file(&addr_file, &daemon.urls());

    wait_for_stop(&mut signals, &mut daemon, cli_file.as_deref(), &addr_file).await;
    let _ = std::fs::remove_file(&addr_file);
    actix_rt::System::current().stop();
    ExitCode::SUCCESS
}

/// The signals the daemon handles, installed before anything else starts.
struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
    usr1: Signal,
    usr2: Signal,
}

impl Signals {
    fn new() -> std::io::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
            usr1: signal(SignalKind::user_defined1())?,
            usr2: signal(SignalKind::user_defined2())?,
        })
    }
}

/// Handles signals until SIGTERM/SIGINT, then stops gracefully; a second
/// SIGINT (or SIGTERM) during the graceful stop ends the process at once.
async fn wait_for_stop(
    signals: &mut Signals,
    daemon: &mut Daemon,
    cli_file: Option<&Path>,
    addr_file: &Path,
) {
    let Signals {
        term,
        int,
        hup,
        usr1,
        usr2,
    } = signals;
    let which = loop {
        tokio::select! {
            _ = term.recv() => break "SIGTERM",
            _ = int.recv() => break "SIGINT",
            _ = hup.recv() => reload(daemon, cli_file, addr_file),
            _ = usr1.recv() => {
                log::info!(target: TARGET, "SIGUSR1: restarting the cert store (full rescan)");
                daemon.restart(ActorName::CertStore);
            }
            _ = usr2.recv() => log::info!(target: TARGET, "SIGUSR2: the ACME issuer is not running; nothing to re-check"),
        }
    };
    log::info!(target: TARGET, "{which}: stopping gracefully (in-flight requests get up to 30s; send SIGINT again to stop at once)");
    tokio::select! {
        _ = daemon.shutdown() => {
            log::info!(target: TARGET, "stopped");
        }
        _ = int.recv() => {
            log::warn!(target: TARGET, "second SIGINT: stopping now");
        }
        _ = term.recv() => {
            log::warn!(target: TARGET, "second SIGTERM: stopping now");
        }
    }
}

/// SIGHUP: re-reads the configuration the way start-up found it. An
/// invalid one changes nothing; a valid one is applied to the actors whose
/// settings changed (see `Daemon::reconfigure`).
fn reload(daemon: &mut Daemon, cli_file: Option<&Path>, addr_file: &Path) {
    log::info!(target: TARGET, "SIGHUP: re-reading the configuration");
    let loaded = match crate::config::load(cli_file) {
        Ok(l) => l,
        Err(e) => {
            log::error!(target: TARGET, "SIGHUP: the configuration is not valid, nothing changed: {e}");
            return;
        }
    };
    if loaded.log_level != daemon_log_level() {
        log::warn!(target: TARGET, "logging.level changes apply at the next start");
    }
    for error in daemon.reconfigure(loaded.settings) {
        log::error!(target: TARGET, "SIGHUP: {error}");
    }
    write_addr_file(addr_file, &daemon.urls());
    log::info!(target: TARGET, "SIGHUP: configuration applied");
}

fn daemon_log_level() -> String {
    log::max_level().to_string().to_lowercase()
}

/// `$CL_HOME/run/clace.addr`: the URLs the daemon listens on, one a line,
/// for `clace restart`.
fn write_addr_file(path: &Path, urls: &[String]) {
    let dir: PathBuf = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let result = std::fs::create_dir_all(&dir).and_then(|()| {
        let tmp = dir.join(".clace.addr.tmp");
        std::fs::write(
            &tmp,
            urls.iter().map(|u| format!("{u}\n")).collect::<String>(),
        )?;
        std::fs::rename(&tmp, path)
    });
    if let Err(e) = result {
        log::warn!(target: TARGET, "cannot write {}: {e}; `clace restart` will not find this daemon", path.display());
    }
}
