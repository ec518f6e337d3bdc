//! A real PostgreSQL server for tests, from Debian's packages (`/usr/lib/postgresql/<version>/bin`):
//! each `Postgres` is a fresh cluster in a temp directory, listening on its own port of 127.0.0.1,
//! with trust authentication for the user `kz`. Stopped on drop.
//!
//! PostgreSQL refuses to run as root, so `initdb` and `pg_ctl` run as the `postgres` user (through
//! `runuser`), in a directory it owns. `psql` is only a client and runs as the test's user.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const PG_ROOT: &str = "/usr/lib/postgresql";

/// The `bin` directory of the highest PostgreSQL version installed.
pub fn bin_dir() -> PathBuf {
    let versions = std::fs::read_dir(PG_ROOT)
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let version: u32 = name.parse().ok()?;
                    e.path()
                        .join("bin/initdb")
                        .exists()
                        .then(|| (version, e.path().join("bin")))
                })
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    versions
        .into_iter()
        .max_by_key(|(v, _)| *v)
        .map(|(_, bin)| bin)
        .unwrap_or_else(|| {
            panic!(
                "no PostgreSQL server under {PG_ROOT}/<version>/bin: install it (apt-get install postgresql) to run these tests"
            )
        })
}

fn free_port() -> u16 {
    TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn describe(o: &Output) -> String {
    format!(
        "{}\n--- stdout\n{}\n--- stderr\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

pub struct Postgres {
    pub dir: tempfile::TempDir,
    pub port: u16,
    bin: PathBuf,
    running: bool,
}

impl Postgres {
    /// A new cluster, started.
    pub fn start() -> Postgres {
        let bin = bin_dir();
        let dir = tempfile::tempdir().expect("tempdir");
        let st = Command::new("chown")
            .args(["-R", "postgres:"])
            .arg(dir.path())
            .status()
            .expect("chown");
        assert!(
            st.success(),
            "chown -R postgres: {} failed (is there a `postgres` user? apt-get install postgresql creates it)",
            dir.path().display()
        );
        let mut pg = Postgres {
            dir,
            port: 0,
            bin,
            running: false,
        };
        let data = pg.data();
        let o = pg
            .as_postgres("initdb")
            .arg("-D")
            .arg(&data)
            .args([
                "-A",
                "trust",
                "-U",
                "kz",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ])
            .output()
            .expect("run initdb");
        assert!(o.status.success(), "initdb failed: {}", describe(&o));
        // Another process may take the port between our probe and the server's bind: try again.
        let mut last = String::new();
        for _ in 0..5 {
            pg.port = free_port();
            match pg.pg_ctl_start() {
                Ok(()) => {
                    pg.running = true;
                    return pg;
                }
                Err(e) => last = e,
            }
        }
        panic!("PostgreSQL did not start: {last}");
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("log")
    }

    /// A PostgreSQL program run as the `postgres` user.
    fn as_postgres(&self, program: &str) -> Command {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"])
            .arg(self.bin.join(program))
            .current_dir(self.dir.path())
            .env("LC_ALL", "C")
            .stdin(Stdio::null());
        c
    }

    fn pg_ctl_start(&self) -> Result<(), String> {
        let o = self
            .as_postgres("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .arg("-o")
            .arg(format!(
                "-p {} -h 127.0.0.1 -k {} -F",
                self.port,
                self.dir.path().display()
            ))
            .arg("-l")
            .arg(self.log())
            .args(["-w", "-t", "30", "start"])
            .output()
            .expect("run pg_ctl start");
        if o.status.success() {
            Ok(())
        } else {
            Err(format!(
                "pg_ctl start on port {}: {}\n--- server log\n{}",
                self.port,
                describe(&o),
                std::fs::read_to_string(self.log()).unwrap_or_default()
            ))
        }
    }

    /// `postgresql://kz@127.0.0.1:PORT/postgres`
    pub fn url(&self) -> String {
        format!("postgresql://kz@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops the server at once (`-m immediate`): clients see their connections drop.
    pub fn stop(&mut self) {
        let o = self
            .as_postgres("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w", "stop"])
            .output()
            .expect("run pg_ctl stop");
        assert!(o.status.success(), "pg_ctl stop failed: {}", describe(&o));
        self.running = false;
    }

    /// Starts the stopped server again, on the same port and data.
    pub fn start_again(&mut self) {
        if let Err(e) = self.pg_ctl_start() {
            panic!("PostgreSQL did not start again: {e}");
        }
        self.running = true;
    }

    /// Runs SQL with psql; `Err` carries psql's error output.
    pub fn try_psql(&self, sql: &str) -> Result<String, String> {
        let o = Command::new(self.bin.join("psql"))
            .arg(self.url())
            .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .stdin(Stdio::null())
            .output()
            .expect("run psql");
        if o.status.success() {
            Ok(String::from_utf8_lossy(&o.stdout).trim_end().to_string())
        } else {
            Err(describe(&o))
        }
    }

    /// Runs SQL with psql and returns its unaligned, tuples-only output.
    #[track_caller]
    pub fn psql(&self, sql: &str) -> String {
        self.try_psql(sql)
            .unwrap_or_else(|e| panic!("psql -c {sql:?} failed: {e}"))
    }

    /// The server's log so far, for failure messages.
    pub fn server_log(&self) -> String {
        std::fs::read_to_string(self.log()).unwrap_or_default()
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if self.running {
            let _ = self
                .as_postgres("pg_ctl")
                .arg("-D")
                .arg(self.data())
                .args(["-m", "immediate", "-w", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}
