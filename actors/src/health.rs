//! The one list of actors, and the shared table of their states and restart
//! counts, read by `/_clace/health` and `/_clace/metrics`.
//!
//! Each actor writes its own slot (one atomic store); readers never block.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};

/// Declares [`ActorName`] and [`ActorName::ALL`] from one list, so that an
/// actor is added in exactly one place: the health table and the metrics
/// have a slot for each entry of `ALL`, and the admin endpoint and
/// `clace restart` accept the names [`ActorName::parse`] finds there.
macro_rules! actors {
    ($($(#[$doc:meta])* $variant:ident => $name:literal,)+) => {
        /// One of the supervised actors.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ActorName {
            $($(#[$doc])* $variant,)+
        }

        impl ActorName {
            /// How many actors there are: the size of every per-actor table.
            pub const COUNT: usize = [$($name),+].len();

            /// Every actor once, in the order of `/_clace/health` and the
            /// metrics.
            pub const ALL: [ActorName; ActorName::COUNT] = [$(ActorName::$variant),+];

            /// The name used in JSON, logs, signals and `clace restart`.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ActorName::$variant => $name,)+
                }
            }
        }
    };
}

actors! {
    /// The HTTP listener.
    Http => "http",
    /// The HTTPS listener.
    Https => "https",
    /// The cert store.
    CertStore => "certstore",
    /// The certificate folder watcher.
    Watcher => "watcher",
    /// The ACME issuer.
    Acme => "acme",
}

// The enum is declared from the list in its order, so a discriminant is the
// position in `ALL`; checked here, when compiling.
const _: () = {
    let mut i = 0;
    while i < ActorName::COUNT {
        assert!(ActorName::ALL[i] as usize == i);
        i += 1;
    }
};

/// The signal that restarts an actor (interface §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartSignal {
    Usr1,
    Usr2,
    /// `SIGRTMIN+n`.
    RtMin(i32),
}

impl RestartSignal {
    /// The signal's name in logs and docs: `SIGUSR1`, `SIGRTMIN+2`.
    pub fn name(self) -> String {
        match self {
            RestartSignal::Usr1 => "SIGUSR1".into(),
            RestartSignal::Usr2 => "SIGUSR2".into(),
            RestartSignal::RtMin(n) => format!("SIGRTMIN+{n}"),
        }
    }
}

impl ActorName {
    /// The signal that restarts this actor. Every actor has one: a new
    /// actor cannot be added without choosing it.
    pub fn restart_signal(self) -> RestartSignal {
        match self {
            ActorName::CertStore => RestartSignal::Usr1,
            ActorName::Acme => RestartSignal::Usr2,
            ActorName::Http => RestartSignal::RtMin(1),
            ActorName::Https => RestartSignal::RtMin(2),
            ActorName::Watcher => RestartSignal::RtMin(3),
        }
    }

    /// The actor named `name` (as [`ActorName::as_str`] spells it).
    pub fn parse(name: &str) -> Option<ActorName> {
        Self::ALL.into_iter().find(|a| a.as_str() == name)
    }

    /// The position of the actor in [`ActorName::ALL`]: its slot in every
    /// per-actor table.
    pub const fn index(self) -> usize {
        self as usize
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ActorState {
    /// Not started yet, or being started for the first time.
    Starting = 0,
    Running = 1,
    Restarting = 2,
    /// Turned off by configuration (a listener with port -1, ACME without e-mail).
    Disabled = 3,
    Failed = 4,
}

impl ActorState {
    pub fn as_str(self) -> &'static str {
        match self {
            // A starting actor is reported as restarting: not yet serving.
            ActorState::Starting | ActorState::Restarting => "restarting",
            ActorState::Running => "running",
            ActorState::Disabled => "disabled",
            ActorState::Failed => "failed",
        }
    }

    fn from_u8(v: u8) -> ActorState {
        match v {
            1 => ActorState::Running,
            2 => ActorState::Restarting,
            3 => ActorState::Disabled,
            4 => ActorState::Failed,
            _ => ActorState::Starting,
        }
    }
}

/// States and restart counters of every actor, one slot each.
#[derive(Debug, Default)]
pub struct Health {
    states: [AtomicU8; ActorName::COUNT],
    restarts: [AtomicU64; ActorName::COUNT],
}

impl Health {
    pub fn new() -> Health {
        Health::default()
    }

    pub fn set(&self, actor: ActorName, state: ActorState) {
        self.states[actor.index()].store(state as u8, Ordering::Release);
    }

    pub fn get(&self, actor: ActorName) -> ActorState {
        ActorState::from_u8(self.states[actor.index()].load(Ordering::Acquire))
    }

    pub fn count_restart(&self, actor: ActorName) {
        self.restarts[actor.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub fn restarts(&self, actor: ActorName) -> u64 {
        self.restarts[actor.index()].load(Ordering::Relaxed)
    }

    /// True when every enabled actor is running.
    pub fn all_ok(&self) -> bool {
        ActorName::ALL
            .iter()
            .all(|a| matches!(self.get(*a), ActorState::Running | ActorState::Disabled))
    }

    /// The `/_clace/health` body and whether it is a 200.
    pub fn to_json(&self) -> (bool, serde_json::Value) {
        let ok = self.all_ok();
        let actors: serde_json::Map<String, serde_json::Value> = ActorName::ALL
            .iter()
            .map(|a| (a.as_str().to_string(), self.get(*a).as_str().into()))
            .collect();
        let status = if ok { "ok" } else { "degraded" };
        (
            ok,
            serde_json::json!({ "status": status, "actors": actors }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_running() -> Health {
        let h = Health::new();
        for a in ActorName::ALL {
            h.set(a, ActorState::Running);
        }
        h
    }

    #[test]
    fn degraded_while_an_enabled_actor_is_not_running() {
        let h = all_running();
        h.set(ActorName::Acme, ActorState::Disabled);
        assert!(h.to_json().0);
        h.set(ActorName::Https, ActorState::Restarting);
        let (ok, json) = h.to_json();
        assert!(!ok);
        assert_eq!(json["status"], "degraded");
        assert_eq!(json["actors"]["https"], "restarting");
        assert_eq!(json["actors"]["acme"], "disabled");
    }

    /// The body of `/_clace/health`, byte for byte: every actor, by name.
    #[test]
    fn json_lists_every_actor_by_name() {
        let h = all_running();
        h.set(ActorName::Watcher, ActorState::Failed);
        assert_eq!(
            h.to_json().1.to_string(),
            r#"{"actors":{"acme":"running","certstore":"running","http":"running","https":"running","watcher":"failed"},"status":"degraded"}"#
        );
        assert_eq!(Health::new().get(ActorName::Acme).as_str(), "restarting");
    }

    #[test]
    fn index_is_the_position_in_all() {
        for (i, a) in ActorName::ALL.into_iter().enumerate() {
            assert_eq!(a.index(), i);
        }
    }

    #[test]
    fn names_round_trip() {
        for a in ActorName::ALL {
            assert_eq!(ActorName::parse(a.as_str()), Some(a));
        }
        assert_eq!(ActorName::parse("nope"), None);
    }

    #[test]
    fn every_actor_has_its_own_restart_signal() {
        let signals: Vec<_> = ActorName::ALL.iter().map(|a| a.restart_signal()).collect();
        for (i, s) in signals.iter().enumerate() {
            assert!(!signals[i + 1..].contains(s), "{} twice", s.name());
        }
        assert_eq!(ActorName::Https.restart_signal().name(), "SIGRTMIN+2");
    }
}
