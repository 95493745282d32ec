//! `clace`: puts internal web applications behind HTTP and HTTPS, with
//! certificates that take care of themselves.
//!
//! Thin on purpose: parse the command line, load the configuration, hand
//! over to the command. Exit codes: 0 success or clean stop, 1 runtime
//! failure, 2 bad configuration or usage.
#![forbid(unsafe_code)]

mod admin_client;
mod certs_cmd;
mod cli;
mod config;
mod logging;
mod notify;
mod restart_cmd;
mod serve;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let file = cli.config.as_deref();
    if matches!(cli.command, Command::Version) {
        println!("clace {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    let loaded = match config::load(file) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("clace: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    match cli.command {
        Command::Serve => {
            logging::init(&loaded.log_level);
            serve::serve(loaded, cli.config)
        }
        Command::Check => match toml::to_string_pretty(&loaded.effective) {
            Ok(text) => {
                if let Some(f) = &loaded.file {
                    println!("# configuration file: {}", f.display());
                } else {
                    println!("# no configuration file: embedded defaults and environment");
                }
                println!("# CL_HOME: {}\n", loaded.home.display());
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("clace: cannot print the configuration: {e}");
                ExitCode::from(1)
            }
        },
        Command::Certs {
            json, live: true, ..
        } => certs_cmd::live(&loaded, json),
        Command::Certs { json, name, .. } => certs_cmd::run(&loaded, json, name.as_deref()),
        Command::Restart { actor } => restart_cmd::run(&loaded, &actor),
        Command::Version => ExitCode::SUCCESS,
    }
}
