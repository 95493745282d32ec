//! The shared table of actor states, read by `/_clace/health`.
//!
//! Each actor writes its own slot (one atomic store); readers never block.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};

/// The five actors, in start order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ActorName {
    CertStore,
    Watcher,
    Acme,
    Http,
    Https,
}

impl ActorName {
    pub const ALL: [ActorName; 5] = [
        ActorName::Http,
        ActorName::Https,
        ActorName::CertStore,
        ActorName::Watcher,
        ActorName::Acme,
    ];

    /// The name used in JSON, logs, signals and `clace restart`.
    pub fn as_str(self) -> &'static str {
        match self {
            ActorName::Http => "http",
            ActorName::Https => "https",
            ActorName::CertStore => "certstore",
            ActorName::Watcher => "watcher",
            ActorName::Acme => "acme",
        }
    }

    pub fn parse(name: &str) -> Option<ActorName> {
        Self::ALL.into_iter().find(|a| a.as_str() == name)
    }

    fn index(self) -> usize {
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

/// States and restart counters of every actor.
#[derive(Debug, Default)]
pub struct Health {
    states: [AtomicU8; 5],
    restarts: [AtomicU64; 5],
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

    #[test]
    fn degraded_while_an_enabled_actor_is_not_running() {
        let h = Health::new();
        for a in ActorName::ALL {
            h.set(a, ActorState::Running);
        }
        h.set(ActorName::Acme, ActorState::Disabled);
        assert!(h.to_json().0);
        h.set(ActorName::Https, ActorState::Restarting);
        let (ok, json) = h.to_json();
        assert!(!ok);
        assert_eq!(json["status"], "degraded");
        assert_eq!(json["actors"]["https"], "restarting");
        assert_eq!(json["actors"]["acme"], "disabled");
    }

    #[test]
    fn names_round_trip() {
        for a in ActorName::ALL {
            assert_eq!(ActorName::parse(a.as_str()), Some(a));
        }
        assert_eq!(ActorName::parse("nope"), None);
    }
}
