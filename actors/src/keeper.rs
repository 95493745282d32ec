//! Keeps each actor alive across panics: actix's [`actix::Supervisor`]
//! restarts an actor that *stops*, but a panic in a handler, a timer or a
//! stream callback unwinds out of the actor's future, and the runtime drops
//! it for good (its mailbox closes; health would still say `running`).
//!
//! [`Keeper`] is that supervisor with the panic caught: it polls the
//! actor's context inside `catch_unwind`, and on a panic marks the actor
//! `restarting`, waits out a backoff (100 ms doubling to 30 s; reset after
//! [`HEALTHY_STRETCH`] without a panic), and restarts the same context, so
//! the actor keeps its address and its mailbox and the messages queued
//! meanwhile are handled after the restart. After [`MAX_PANICS`] panics in a
//! row it gives up: the actor is `failed`, its mailbox closes, and the
//! other actors never notice. Dropping an actor (at a give-up or at exit)
//! runs its stop hooks inside `catch_unwind` too, so no panic there can
//! abort the process.
//!
//! [`install_panic_hook`] sends every panic message through `log`, with the
//! name of the actor being polled on that thread, into the same log as
//! everything else.

use std::cell::Cell;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use actix::dev::channel;
use actix::dev::ContextFut;
use actix::prelude::*;

use crate::health::{ActorName, ActorState, Health};

/// Panics in a row after which an actor is given up (`failed`).
pub const MAX_PANICS: u32 = 8;

/// Running this long without a panic forgets the earlier ones.
pub const HEALTHY_STRETCH: Duration = Duration::from_secs(60);

const TARGET: &str = "clace::supervisor";

thread_local! {
    /// The actor being polled on this thread, for the panic hook.
    static POLLING: Cell<Option<ActorName>> = const { Cell::new(None) };
}

/// Logs every panic through `log` (error level), naming the actor that was
/// being polled on the panicking thread, if any; called once at start.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let actor = POLLING.with(Cell::get);
        let message = payload_text(info.payload());
        let place = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        match actor {
            Some(a) => {
                log::error!(target: TARGET, "the {} actor panicked: {message}{place}", a.as_str())
            }
            None => log::error!(
                target: TARGET,
                "panic in thread {}: {message}{place}",
                std::thread::current().name().unwrap_or("unnamed")
            ),
        }
    }));
}

/// The text of a panic payload (`panic!("...")` gives a `&str` or a
/// `String`).
fn payload_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(a panic without a message)".to_string())
}

/// The restart delay after `panics` panics in a row (1 for the first).
pub fn backoff(panics: u32) -> Duration {
    let ms = 100u64.saturating_mul(1u64 << panics.saturating_sub(1).min(16));
    Duration::from_millis(ms.min(30_000))
}

/// Starts `actor` on the current arbiter, kept alive across panics.
pub fn start<A>(name: ActorName, health: Arc<Health>, actor: A) -> Addr<A>
where
    A: Actor<Context = Context<A>> + Supervised,
{
    let (tx, rx) = channel::channel(16);
    let fut = Context::with_receiver(rx).into_future(actor);
    actix_rt::spawn(Keeper::new(name, health, fut));
    Addr::new(tx)
}

/// Starts the actor `make` builds on `arbiter`, kept alive across panics.
pub fn start_in_arbiter<A, F>(
    arbiter: &ArbiterHandle,
    name: ActorName,
    health: Arc<Health>,
    make: F,
) -> Addr<A>
where
    A: Actor<Context = Context<A>> + Supervised,
    F: FnOnce() -> A + Send + 'static,
{
    let (tx, rx) = channel::channel(16);
    arbiter.spawn_fn(move || {
        let fut = Context::with_receiver(rx).into_future(make());
        actix_rt::spawn(Keeper::new(name, health, fut));
    });
    Addr::new(tx)
}

/// The future that runs one actor; see the module documentation.
pub struct Keeper<A>
where
    A: Actor<Context = Context<A>> + Supervised,
{
    fut: Option<ContextFut<A, Context<A>>>,
    name: ActorName,
    health: Arc<Health>,
    panics: u32,
    last_panic: Option<Instant>,
    /// The backoff before the next restart, after a panic.
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<A> Keeper<A>
where
    A: Actor<Context = Context<A>> + Supervised,
{
    fn new(name: ActorName, health: Arc<Health>, fut: ContextFut<A, Context<A>>) -> Keeper<A> {
        Keeper {
            fut: Some(fut),
            name,
            health,
            panics: 0,
            last_panic: None,
            sleep: None,
        }
    }

    /// Drops the actor's context (running its stop hooks) without letting
    /// a panic out.
    fn drop_actor(&mut self) {
        if let Some(fut) = self.fut.take() {
            let name = self.name;
            POLLING.with(|p| p.set(Some(name)));
            let _ = catch_unwind(AssertUnwindSafe(move || drop(fut)));
            POLLING.with(|p| p.set(None));
        }
    }

    /// After a panic: count it, and either give up or arm the backoff.
    fn panicked(&mut self, message: &str) -> bool {
        let now = Instant::now();
        if self
            .last_panic
            .is_some_and(|t| now.duration_since(t) > HEALTHY_STRETCH)
        {
            self.panics = 0;
        }
        self.last_panic = Some(now);
        self.panics += 1;
        if self.panics >= MAX_PANICS {
            self.health.set(self.name, ActorState::Failed);
            log::error!(target: TARGET, "the {} actor panicked {} times in a row; giving up (last panic: {message}); the other actors keep running", self.name.as_str(), self.panics);
            return false;
        }
        let delay = backoff(self.panics);
        self.health.set(self.name, ActorState::Restarting);
        log::warn!(target: TARGET, "the {} actor panicked ({message}); restarting it in {delay:?} (panic {} in a row)", self.name.as_str(), self.panics);
        self.sleep = Some(Box::pin(tokio::time::sleep(delay)));
        true
    }

    /// Restarts the actor's context; false when its mailbox has no sender
    /// left (nobody can reach it: it is done).
    fn restart(&mut self) -> Result<bool, String> {
        let Some(fut) = self.fut.as_mut() else {
            return Ok(false);
        };
        let name = self.name;
        POLLING.with(|p| p.set(Some(name)));
        let result = catch_unwind(AssertUnwindSafe(|| fut.restart()));
        POLLING.with(|p| p.set(None));
        if let Ok(true) = result {
            self.health.count_restart(name);
        }
        result.map_err(|p| payload_text(&*p))
    }
}

impl<A> Future for Keeper<A>
where
    A: Actor<Context = Context<A>> + Supervised,
{
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<()> {
        let this = &mut *self;
        loop {
            if let Some(sleep) = this.sleep.as_mut() {
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                this.sleep = None;
                if !this.restart_or_give_up() {
                    this.drop_actor();
                    return Poll::Ready(());
                }
                continue;
            }
            let Some(fut) = this.fut.as_mut() else {
                return Poll::Ready(());
            };
            let name = this.name;
            POLLING.with(|p| p.set(Some(name)));
            let polled = catch_unwind(AssertUnwindSafe(|| Pin::new(&mut *fut).poll(cx)));
            POLLING.with(|p| p.set(None));
            let alive = match polled {
                Ok(Poll::Pending) => return Poll::Pending,
                // Stopped (failed, or asked to restart): what actix's
                // Supervisor does, restart unless nobody can reach it.
                Ok(Poll::Ready(())) => this.restart_or_give_up(),
                Err(payload) => this.panicked(&payload_text(&*payload)),
            };
            if !alive {
                this.drop_actor();
                return Poll::Ready(());
            }
        }
    }
}

impl<A> Keeper<A>
where
    A: Actor<Context = Context<A>> + Supervised,
{
    /// Restarts the actor now; false when nobody can reach it any more or
    /// it panicked once too often (then it is to be dropped).
    fn restart_or_give_up(&mut self) -> bool {
        match self.restart() {
            Ok(restarted) => restarted,
            Err(message) => self.panicked(&message),
        }
    }
}

impl<A> Drop for Keeper<A>
where
    A: Actor<Context = Context<A>> + Supervised,
{
    fn drop(&mut self) {
        self.drop_actor();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn backoff_doubles_from_100_ms_to_30_s() {
        assert_eq!(backoff(1), Duration::from_millis(100));
        assert_eq!(backoff(2), Duration::from_millis(200));
        assert_eq!(backoff(4), Duration::from_millis(800));
        assert_eq!(backoff(10), Duration::from_secs(30));
        assert_eq!(backoff(1000), Duration::from_secs(30));
    }

    /// Panics on `Boom`, counts its starts, answers `Ping`.
    struct Fragile {
        starts: Arc<AtomicU32>,
        panic_in_drop: bool,
    }

    impl Actor for Fragile {
        type Context = Context<Self>;
        fn started(&mut self, _: &mut Context<Self>) {
            self.starts.fetch_add(1, Ordering::SeqCst);
        }
    }

    impl Supervised for Fragile {}

    impl Drop for Fragile {
        fn drop(&mut self) {
            if self.panic_in_drop {
                panic!("panic while dropped");
            }
        }
    }

    #[derive(Message)]
    #[rtype(result = "()")]
    struct Boom;

    #[derive(Message)]
    #[rtype(result = "u32")]
    struct Ping;

    impl Handler<Boom> for Fragile {
        type Result = ();
        fn handle(&mut self, _: Boom, _: &mut Context<Self>) {
            panic!("boom");
        }
    }

    impl Handler<Ping> for Fragile {
        type Result = u32;
        fn handle(&mut self, _: Ping, _: &mut Context<Self>) -> u32 {
            self.starts.load(Ordering::SeqCst)
        }
    }

    #[actix_rt::test]
    async fn a_panicking_actor_runs_again_with_the_same_address() {
        let health = Arc::new(Health::new());
        let starts = Arc::new(AtomicU32::new(0));
        let addr = start(
            ActorName::Watcher,
            Arc::clone(&health),
            Fragile {
                starts: Arc::clone(&starts),
                panic_in_drop: false,
            },
        );
        assert_eq!(addr.send(Ping).await.unwrap(), 1);
        addr.do_send(Boom);
        // Queued behind the panic: answered after the restart.
        assert_eq!(addr.send(Ping).await.unwrap(), 2);
        assert_eq!(health.restarts(ActorName::Watcher), 1);
        assert!(addr.connected());
    }

    #[actix_rt::test]
    async fn too_many_panics_in_a_row_fail_the_actor_and_close_its_mailbox() {
        let health = Arc::new(Health::new());
        let starts = Arc::new(AtomicU32::new(0));
        let addr = start(
            ActorName::Acme,
            Arc::clone(&health),
            Fragile {
                starts: Arc::clone(&starts),
                // Dropped at the give-up: its panic must not escape.
                panic_in_drop: true,
            },
        );
        for _ in 0..MAX_PANICS {
            addr.do_send(Boom);
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while health.get(ActorName::Acme) != ActorState::Failed {
            assert!(Instant::now() < deadline, "never failed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(addr.send(Ping).await.is_err(), "the mailbox is closed");
    }
}
