//! `clace serve`: bind, start the actors, wait for signals, stop gracefully.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clace_actors::admin_socket;
use clace_actors::health::{ActorName, ActorState, Health, RestartSignal};
use clace_actors::listener::{self, Limits};
use clace_actors::settings::Port;
use clace_actors::supervisor::{Bound, Daemon};
use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::config::Loaded;
use crate::notify::Notifier;

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
    let mut sockets = Vec::new();
    for (scheme, host, port) in [
        ("http", &settings.http.host, settings.http.port),
        ("https", &settings.https.host, settings.https.port),
    ] {
        let Port::Bind(port) = port else { continue };
        match listener::bind_only(host, port) {
            Ok(socket) => {
                let real = socket
                    .local_addr()
                    .ok()
                    .and_then(|a| a.as_socket())
                    .map_or(port, |a| a.port());
                log::info!(target: TARGET, "bound {scheme} to {host}:{real}");
                urls.push(format!("{scheme}://{host}:{real}"));
                sockets.push((scheme, real, socket));
            }
            Err(e) => {
                eprintln!("clace: cannot bind the {scheme} listener to {host}:{port}: {e}");
                if e.kind() == std::io::ErrorKind::PermissionDenied {
                    if let Some(help) = privileged_port_help(port) {
                        eprintln!("{help}");
                    }
                }
                return ExitCode::from(1);
            }
        }
    }
    // Instances sharing an ACME storage: this one is announced before a
    // balancer can reach its HTTPS port (a refused connection goes to
    // another instance meanwhile).
    let https_port = sockets
        .iter()
        .find(|(scheme, ..)| *scheme == "https")
        .map(|(_, port, _)| *port);
    if let Some(acme) = clace_actors::acme::AcmeSettings::from_settings(settings, https_port) {
        clace_actors::acme::cluster::announce_at_start(&acme);
    }
    for (scheme, _, socket) in sockets {
        match listener::listen(socket) {
            Ok(l) if scheme == "http" => bound.http = Some(l),
            Ok(l) => bound.https = Some(l),
            Err(e) => {
                eprintln!("clace: cannot listen on the {scheme} socket: {e}");
                return ExitCode::from(1);
            }
        }
    }
    if urls.is_empty() {
        log::info!(target: TARGET, "both listeners are disabled: managing certificates only");
    }

    // The admin socket (interface §6): a failure to bind it is logged, not
    // fatal; the listeners still serve and `clace restart` uses clace.addr.
    let socket_file = loaded.home.join("run").join("clace.sock");
    bound.admin = match admin_socket::bind(&socket_file) {
        Ok(socket) => socket,
        Err(e) => {
            log::error!(target: TARGET, "cannot bind the admin socket {}: {e}; `clace restart` falls back to clace.addr", socket_file.display());
            None
        }
    };
    let socket_ours = bound.admin.is_some();

    let mut daemon = match Daemon::start(settings, bound, Limits::default()) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("clace: {e}");
            if socket_ours {
                let _ = std::fs::remove_file(&socket_file);
            }
            return ExitCode::from(1);
        }
    };
    let addr_file = loaded.home.join("run").join("clace.addr");
    write_addr_file(&addr_file, &daemon.urls());

    let notifier = Notifier::from_env();
    wait_for_stop(
        &mut signals,
        &mut daemon,
        notifier.as_ref(),
        cli_file.as_deref(),
        &addr_file,
    )
    .await;
    let _ = std::fs::remove_file(&addr_file);
    if socket_ours {
        let _ = std::fs::remove_file(&socket_file);
    }
    actix_rt::System::current().stop();
    ExitCode::SUCCESS
}

/// What to do when a port cannot be bound for want of permission, if it is
/// a privileged one (below `net.ipv4.ip_unprivileged_port_start`, 1024
/// unless changed): the two ways to give clace `CAP_NET_BIND_SERVICE`.
fn privileged_port_help(port: u16) -> Option<String> {
    let first_unprivileged =
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .unwrap_or(1024);
    if u32::from(port) >= first_unprivileged {
        return None;
    }
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "/path/to/clace".to_string());
    Some(format!(
        "clace: port {port} is a privileged port (below {first_unprivileged}): binding it \
         needs the CAP_NET_BIND_SERVICE capability. Either give it to this binary (again \
         after every build or upgrade): `sudo setcap cap_net_bind_service=+ep {exe}`, or \
         run clace under systemd with the unit in config/clace.service, whose \
         AmbientCapabilities=CAP_NET_BIND_SERVICE grants it"
    ))
}

/// `SIGRTMIN+n`: realtime signals have no fixed number (the C library keeps
/// the first few for itself), so it is asked at run time.
fn realtime(n: i32) -> SignalKind {
    SignalKind::from_raw(nix::libc::SIGRTMIN() + n)
}

/// The signals the daemon handles, installed before anything else starts.
struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
    /// One per actor, from the list of actors: its restart signal.
    restart: Vec<(ActorName, String, Signal)>,
}

impl Signals {
    fn new() -> std::io::Result<Signals> {
        let mut restart = Vec::with_capacity(ActorName::COUNT);
        for actor in ActorName::ALL {
            let which = actor.restart_signal();
            let kind = match which {
                RestartSignal::Usr1 => SignalKind::user_defined1(),
                RestartSignal::Usr2 => SignalKind::user_defined2(),
                RestartSignal::RtMin(n) => realtime(n),
            };
            restart.push((actor, which.name(), signal(kind)?));
        }
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
            restart,
        })
    }
}

/// The next restart signal, whichever actor's it is.
async fn next_restart(signals: &mut [(ActorName, String, Signal)]) -> (ActorName, String) {
    let waits = signals.iter_mut().map(|(actor, name, signal)| {
        Box::pin(async move {
            signal.recv().await;
            (*actor, name.clone())
        })
    });
    futures_util::future::select_all(waits).await.0
}

/// Restarts one actor on its signal, saying so in the log.
fn restart_on_signal(daemon: &Daemon, signal: &str, actor: ActorName) {
    let name = actor.as_str();
    if actor == ActorName::Acme {
        if daemon.restart(actor) {
            log::info!(target: TARGET, "{signal}: re-checking every ACME certificate");
        } else {
            log::info!(target: TARGET, "{signal}: ACME is disabled; nothing to re-check");
        }
        return;
    }
    log::info!(target: TARGET, "{signal}: restarting the {name} actor");
    if !daemon.restart(actor) {
        log::warn!(target: TARGET, "{signal}: the {name} actor is disabled; nothing restarted");
    }
}

/// Resolves once every enabled listener has printed its `Server listening
/// on` line and serves (health says `running`), which is when systemd is
/// told `READY=1`.
async fn listeners_serving(health: Arc<Health>) {
    let serving = |a| matches!(health.get(a), ActorState::Running | ActorState::Disabled);
    while !(serving(ActorName::Http) && serving(ActorName::Https)) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The `STATUS=` systemd shows next to `READY=1`.
fn status_line(daemon: &Daemon) -> String {
    let urls = daemon.urls();
    if urls.is_empty() {
        "managing certificates (both listeners disabled)".to_string()
    } else {
        format!("serving {}", urls.join(" "))
    }
}

/// Handles signals until SIGTERM/SIGINT, then stops gracefully; a second
/// SIGINT (or SIGTERM) during the graceful stop ends the process at once.
/// `notifier`: systemd's socket (`Type=notify`), told `READY=1` once the
/// listeners serve, `RELOADING=1` then `READY=1` around a SIGHUP reload and
/// `STOPPING=1` when the stop starts.
async fn wait_for_stop(
    signals: &mut Signals,
    daemon: &mut Daemon,
    notifier: Option<&Notifier>,
    cli_file: Option<&Path>,
    addr_file: &Path,
) {
    let Signals {
        term,
        int,
        hup,
        restart,
    } = signals;
    let serving = listeners_serving(Arc::clone(&daemon.health));
    tokio::pin!(serving);
    // Whether systemd was told READY=1: a reload before that is not
    // announced (systemd still waits for the start to finish).
    let mut ready = false;
    let which = loop {
        tokio::select! {
            _ = term.recv() => break "SIGTERM",
            _ = int.recv() => break "SIGINT",
            () = &mut serving, if !ready => {
                ready = true;
                if let Some(n) = notifier {
                    n.ready(&status_line(daemon));
                }
            }
            _ = hup.recv() => {
                let notifier = notifier.filter(|_| ready);
                if let Some(n) = notifier {
                    n.reloading();
                }
                reload(daemon, cli_file, addr_file);
                if let Some(n) = notifier {
                    n.ready(&status_line(daemon));
                }
            }
            (actor, name) = next_restart(restart) => restart_on_signal(daemon, &name, actor),
        }
    };
    if let Some(n) = notifier {
        n.stopping();
    }
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
