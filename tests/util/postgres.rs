//! A throwaway PostgreSQL server for one test (Debian's `postgresql`
//! package): `initdb` into a temporary folder, listening on 127.0.0.1 at a
//! free port (its Unix socket inside that folder), a role `clace` with a
//! password and a database `clace` it owns, `pg_hba` asking TCP clients for
//! that password (scram-sha-256). The guard's `Drop` stops the server and
//! removes the folder, pass or fail.
//!
//! PostgreSQL refuses to run as root: as root the binaries run as the
//! `postgres` system user (`runuser -u postgres --`) on a folder chowned to
//! it; otherwise as the current user. Debian keeps them in
//! `/usr/lib/postgresql/<version>/bin`, not on the PATH; `$PG_BIN` (a
//! folder) wins.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use super::pebble::{free_port, tail};
use super::unique;

/// The variable a test sets on clace to the role's password; the URL
/// names it (`$CLACE_TEST_PGPASSWORD`), which proves `$VAR` expansion.
pub const PASSWORD_VAR: &str = "CLACE_TEST_PGPASSWORD";

/// How long `pg_ctl` waits for a start or a stop.
const PG_CTL_WAIT_SECS: &str = "30";

/// The folder holding `initdb`: `$PG_BIN`, else the newest
/// `/usr/lib/postgresql/<version>/bin`, else the PATH's.
fn bin_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).find(|dir| dir.join("initdb").is_file())
}

/// Whether this process runs as root (the owner of `/proc/self` is the
/// effective user).
fn is_root() -> bool {
    fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// A PostgreSQL server and its data; stopped and removed when dropped.
pub struct Postgres {
    /// The TCP port on 127.0.0.1.
    pub port: u16,
    password: String,
    dir: tempfile::TempDir,
    bin: PathBuf,
    as_postgres_user: bool,
    running: bool,
}

impl Postgres {
    /// A new cluster, started, with the role and the database made.
    pub fn new() -> Postgres {
        let bin = bin_dir().unwrap_or_else(|| {
            panic!(
                "no initdb (looked in $PG_BIN, /usr/lib/postgresql/*/bin and the PATH); install \
                 it with: apt-get install -y postgresql"
            )
        });
        let dir = tempfile::Builder::new()
            .prefix("clace-pg-")
            .tempdir()
            .expect("create temp dir");
        let as_postgres_user = is_root();
        let mut pg = Postgres {
            port: free_port(),
            password: unique("pw").replace('-', "x"),
            dir,
            bin,
            as_postgres_user,
            running: false,
        };
        fs::create_dir(pg.socket_dir()).expect("create the socket folder");
        if as_postgres_user {
            pg.check(
                Command::new("chown")
                    .args(["-R", "postgres:postgres"])
                    .arg(pg.dir.path()),
                "chown the folder to postgres",
            );
        }
        let mut initdb = pg.command("initdb");
        initdb
            .arg("-D")
            .arg(pg.data_dir())
            .args(["-U", "postgres", "-E", "UTF8", "--no-locale", "--no-sync"])
            .args(["--auth-local=trust", "--auth-host=scram-sha-256"]);
        pg.check(&mut initdb, "initdb");
        fs::write(
            pg.data_dir().join("pg_hba.conf"),
            "local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n",
        )
        .expect("write pg_hba.conf");
        let mut conf = fs::read_to_string(pg.data_dir().join("postgresql.conf"))
            .expect("read postgresql.conf");
        conf.push_str(&format!(
            "\nport = {}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             fsync = off\n",
            pg.port,
            pg.socket_dir().display()
        ));
        fs::write(pg.data_dir().join("postgresql.conf"), conf).expect("write postgresql.conf");
        pg.start();
        for sql in [
            format!("CREATE ROLE clace LOGIN PASSWORD '{}'", pg.password),
            "CREATE DATABASE clace OWNER clace".to_owned(),
        ] {
            if let Err(e) = pg.psql_db("postgres", &sql) {
                panic!(
                    "psql -c {sql:?}: {e}\n--- postgres log ---\n{}",
                    pg.log_tail(30)
                );
            }
        }
        pg
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn socket_dir(&self) -> PathBuf {
        self.dir.path().join("sock")
    }

    fn log_file(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    /// `clace`'s password (set it as [`PASSWORD_VAR`] on clace).
    pub fn password(&self) -> &str {
        &self.password
    }

    /// `postgres://clace:$CLACE_TEST_PGPASSWORD@127.0.0.1:PORT/clace`: the
    /// `storage_location` to configure, the password left to the variable.
    pub fn url_with_var(&self) -> String {
        format!(
            "postgres://clace:${PASSWORD_VAR}@127.0.0.1:{}/clace",
            self.port
        )
    }

    /// Starts the server (again: same port, same data) and waits until it
    /// accepts connections.
    pub fn start(&mut self) {
        let mut cmd = self.command("pg_ctl");
        cmd.arg("start")
            .arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.log_file())
            .args(["-w", "-t", PG_CTL_WAIT_SECS]);
        self.check(&mut cmd, "pg_ctl start");
        self.running = true;
    }

    /// Stops the server (fast: sessions are ended) and waits for its end.
    pub fn stop(&mut self) {
        let mut cmd = self.command("pg_ctl");
        cmd.arg("stop").arg("-D").arg(self.data_dir()).args([
            "-m",
            "fast",
            "-w",
            "-t",
            PG_CTL_WAIT_SECS,
        ]);
        self.check(&mut cmd, "pg_ctl stop");
        self.running = false;
    }

    /// Runs `sql` in the `clace` database as the superuser; returns what
    /// psql printed (unaligned, tuples only: one row a line, `|` between
    /// columns). Panics if psql fails.
    pub fn psql(&self, sql: &str) -> String {
        self.psql_db("clace", sql)
            .unwrap_or_else(|e| panic!("psql -c {sql:?} failed: {e}"))
    }

    /// As [`Postgres::psql`], with psql's error instead of a panic (a table
    /// not made yet, the server stopped).
    pub fn try_psql(&self, sql: &str) -> Result<String, String> {
        self.psql_db("clace", sql)
    }

    fn psql_db(&self, db: &str, sql: &str) -> Result<String, String> {
        let mut cmd = self.command("psql");
        cmd.args([
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-U",
            "postgres",
        ])
        .arg("-h")
        .arg(self.socket_dir())
        .args(["-p", &self.port.to_string(), "-d", db, "-c", sql]);
        let out = cmd.output().map_err(|e| format!("cannot run psql: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// The last `n` lines of the server's log.
    pub fn log_tail(&self, n: usize) -> String {
        tail(&fs::read_to_string(self.log_file()).unwrap_or_default(), n)
    }

    /// `PROGRAM` from the binaries' folder, as the postgres user when this
    /// process is root, in the cluster's folder.
    fn command(&self, program: &str) -> Command {
        let exe = self.bin.join(program);
        let mut cmd = if self.as_postgres_user {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        };
        cmd.current_dir(self.dir.path())
            .env_remove("PGDATA")
            .env_remove("PGHOST")
            .env_remove("PGPORT")
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `cmd` to its end; panics with its output and the server's log
    /// if it fails.
    fn check(&self, cmd: &mut Command, what: &str) -> Output {
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("{what}: cannot run {:?}: {e}", cmd.get_program()));
        if !out.status.success() {
            panic!(
                "{what} failed ({}):\n{}{}\n--- postgres log ---\n{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                self.log_tail(30)
            );
        }
        out
    }

    /// The postmaster's pid, from `postmaster.pid`, while it runs.
    fn postmaster_pid(&self) -> Option<i32> {
        fs::read_to_string(self.data_dir().join("postmaster.pid"))
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if !self.running {
            return;
        }
        let mut cmd = self.command("pg_ctl");
        cmd.arg("stop")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-m", "immediate", "-w", "-t", "10"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let stopped = cmd.status().is_ok_and(|s| s.success());
        if !stopped {
            if let Some(pid) = self.postmaster_pid() {
                // SIGKILL of the postmaster; its children exit when they
                // see it gone.
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}
