//! The command line (interface §1).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Puts internal web applications behind HTTP and HTTPS, with certificates
/// that take care of themselves: PEM pairs dropped into a folder are served
/// at once, a self-signed default is made when nothing else fits.
#[derive(Debug, Parser)]
#[command(name = "clace", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// Configuration file (default: $CL_CONFIG_FILE, else $CL_HOME/clace.toml if it exists)
    #[arg(short = 'c', long = "config", global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon in the foreground until SIGTERM or SIGINT
    Serve,
    /// Validate the configuration and print the effective one as TOML
    Check,
    /// List the certificates clace can serve, or which one a name would get
    Certs {
        /// Machine-readable output
        #[arg(long)]
        json: bool,
        /// Say which certificate a handshake for NAME would get, and why
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
        /// Ask the running daemon what it serves (its admin socket, else its listeners)
        #[arg(long, conflicts_with = "name")]
        live: bool,
    },
    /// Ask the running daemon to restart one actor
    Restart {
        /// http, https, certstore, acme or watcher
        actor: String,
    },
    /// Print the version
    Version,
}
