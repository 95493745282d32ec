//! `clace restart ACTOR`: asks the running daemon to restart one actor, over
//! its admin socket first, then its listeners (see `admin_client`).

use std::process::ExitCode;

use clace_actors::health::ActorName;

use crate::admin_client;
use crate::config::Loaded;

pub fn run(loaded: &Loaded, actor: &str) -> ExitCode {
    let Some(actor) = ActorName::parse(actor) else {
        eprintln!(
            "clace: unknown actor {actor:?}; accepted: http, https, certstore, acme, watcher"
        );
        return ExitCode::from(2);
    };
    let path = format!("/_clace/actors/{}/restart", actor.as_str());
    match admin_client::request(&loaded.home, "POST", &path) {
        Ok(answer) if answer.status == 202 => {
            println!("restarting {}", actor.as_str());
            ExitCode::SUCCESS
        }
        Ok(answer) => {
            eprintln!(
                "clace: the daemon answered {}: {}",
                answer.status,
                answer.body.trim()
            );
            ExitCode::from(if answer.status == 404 { 2 } else { 1 })
        }
        Err(why) => {
            eprintln!("clace: no daemon running ({why})");
            ExitCode::from(1)
        }
    }
}
