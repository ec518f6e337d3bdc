//! The command line, declared with clap's derive API. Names, flags and exit codes are a contract:
//! scripts and other issues rely on them (see docs/commands.md).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "kz",
    version,
    about = "Plan and apply a fleet of Linux servers declared in TOML stacks"
)]
pub struct Cli {
    /// Only ASCII in the output (chosen automatically when the locale is not UTF-8).
    #[arg(long, global = true)]
    pub ascii: bool,
    /// When to use colours (NO_COLOR is honoured by `auto`).
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Load the stack, interpolate it and build its graph; exit 0 when valid, 1 otherwise.
    Validate { dir: PathBuf },
    /// Show what apply would change, host by host.
    Plan(PlanArgs),
    /// Converge the hosts to the stack (or apply a saved plan).
    Apply(ApplyArgs),
    /// Delete everything kz manages in this stack, in reverse dependency order.
    Destroy(DestroyArgs),
    /// Run every health check once, read-only, and report module by module; exit 0 only when
    /// everything passes.
    Verify(VerifyArgs),
    /// Run the stack's failover drills (`[[drill]]`) one at a time and print their journal; exit
    /// 0 only when every drill passed.
    Drill(DrillArgs),
    /// Print the dependency graph in Graphviz DOT, modules as clusters.
    Graph { dir: PathBuf },
    /// Inspect or edit the state.
    #[command(subcommand)]
    State(StateCommand),
    /// Break the state lock of a process that cannot release it.
    ForceUnlock { dir: PathBuf },
    /// Fetch a host's SSH key, show its fingerprint, and record it in known_hosts once confirmed.
    Trust {
        dir: PathBuf,
        host: String,
        /// Record the key without asking (check the fingerprint another way first).
        #[arg(long)]
        yes: bool,
    },
    /// Disposable lab hosts (podman containers) to try the stack on before production.
    #[command(subcommand)]
    Lab(LabCommand),
    /// Print a shell completion script.
    Completions { shell: clap_complete::Shell },
}

#[derive(Debug, Args)]
pub struct LockArgs {
    /// How long to wait for the state lock (e.g. 30s); 0 fails at once naming the holder.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub lock_timeout: std::time::Duration,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    pub dir: PathBuf,
    /// Read the hosts (true) or trust the state (false).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub refresh: bool,
    /// Limit the plan to MODULE, MODULE.TYPE.NAME or an address, plus what it depends on.
    #[arg(long = "target", value_name = "ADDR|MODULE")]
    pub targets: Vec<String>,
    /// Plan to replace this instance even if it is in sync.
    #[arg(long = "replace", value_name = "ADDR")]
    pub replace: Vec<String>,
    /// Save the plan for `kz apply FILE`.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Print the plan as a JSON document.
    #[arg(long)]
    pub json: bool,
    /// Exit 0 when there are no changes, 2 when there are, 1 on error.
    #[arg(long)]
    pub detailed_exitcode: bool,
    /// How many hosts to read at once.
    #[arg(long)]
    pub parallelism: Option<usize>,
    /// Plan against the stack's lab hosts (`kz lab up`) and the lab's own state.
    #[arg(long)]
    pub lab: bool,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    pub dir: PathBuf,
    /// Only this module (repeatable).
    #[arg(long = "module", value_name = "MODULE")]
    pub modules: Vec<String>,
    /// Print the report as a JSON document.
    #[arg(long)]
    pub json: bool,
    /// How many hosts to read at once.
    #[arg(long)]
    pub parallelism: Option<usize>,
    /// Verify the stack's lab hosts (`kz lab up`), with the lab's own state.
    #[arg(long)]
    pub lab: bool,
}

#[derive(Debug, Args)]
pub struct DrillArgs {
    pub dir: PathBuf,
    /// The drills to run, by name (default: every drill, in module order).
    #[arg(value_name = "NAME")]
    pub names: Vec<String>,
    /// Run on the stack's lab hosts (`kz lab up`), with the lab's own state.
    #[arg(long)]
    pub lab: bool,
    /// Print the journal as a JSON document.
    #[arg(long)]
    pub json: bool,
    /// How many hosts to read at once when polling checks.
    #[arg(long)]
    pub parallelism: Option<usize>,
    /// Run on the stack's own hosts, not a lab: also asks for the stack's name on the terminal.
    #[arg(long)]
    pub i_know_this_is_production: bool,
    #[command(flatten)]
    pub lock: LockArgs,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// A stack directory, or a plan file saved by `kz plan --out`.
    pub target: PathBuf,
    /// Apply without asking.
    #[arg(long)]
    pub yes: bool,
    /// How many changes may run at once (default: the stack's, else 10).
    #[arg(long)]
    pub parallelism: Option<usize>,
    #[arg(long = "target", value_name = "ADDR|MODULE")]
    pub targets: Vec<String>,
    #[arg(long = "replace", value_name = "ADDR")]
    pub replace: Vec<String>,
    /// Apply to the stack's lab hosts (`kz lab up`) with the lab's own state.
    #[arg(long)]
    pub lab: bool,
    #[command(flatten)]
    pub lock: LockArgs,
}

#[derive(Debug, Args)]
pub struct DestroyArgs {
    pub dir: PathBuf,
    #[arg(long)]
    pub yes: bool,
    #[arg(long = "target", value_name = "ADDR|MODULE")]
    pub targets: Vec<String>,
    #[arg(long)]
    pub parallelism: Option<usize>,
    /// Destroy what kz made on the lab hosts (the hosts stay; `kz lab down` removes them).
    #[arg(long)]
    pub lab: bool,
    #[command(flatten)]
    pub lock: LockArgs,
}

#[derive(Debug, Subcommand)]
pub enum LabCommand {
    /// Start one lab host per stack host (building the base image once) and write the overlay.
    Up {
        dir: PathBuf,
        /// Only these hosts (comma-separated).
        #[arg(long, value_delimiter = ',', conflicts_with = "module")]
        hosts: Vec<String>,
        /// Only the hosts MODULE has resources on.
        #[arg(long)]
        module: Option<String>,
        /// Let every lab host run containers of its own (nested podman needs a privileged container).
        #[arg(long)]
        privileged: bool,
    },
    /// Remove the lab: its containers, its network and its overlay (lab state included).
    Down { dir: PathBuf },
    /// List the lab hosts with their addresses and whether they are up.
    Status { dir: PathBuf },
    /// Stop a lab host (host gone).
    Stop { dir: PathBuf, host: String },
    /// Start a stopped lab host again.
    Start { dir: PathBuf, host: String },
    /// Freeze a lab host: TCP still connects, nothing answers.
    Pause { dir: PathBuf, host: String },
    /// Thaw a paused lab host.
    Unpause { dir: PathBuf, host: String },
    /// Disconnect a lab host from the lab network.
    Cut { dir: PathBuf, host: String },
    /// Reconnect a cut lab host, at its address.
    Heal { dir: PathBuf, host: String },
    /// Load an image tarball (`podman save`) into lab hosts' own podman; without IMAGE_TAR, the
    /// lab's base image, as kz-debian:12.
    LoadImage {
        dir: PathBuf,
        image_tar: Option<PathBuf>,
        /// Only these hosts (comma-separated); default: every lab host.
        #[arg(long, value_delimiter = ',')]
        hosts: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum StateCommand {
    /// List the instances in the state.
    List { dir: PathBuf },
    /// Show one instance's recorded attributes (secrets masked).
    Show { dir: PathBuf, address: String },
    /// Forget instances without touching the hosts.
    Rm {
        dir: PathBuf,
        #[arg(required = true)]
        addresses: Vec<String>,
        #[command(flatten)]
        lock: LockArgs,
    },
    /// List the stored versions of the state (postgres backend).
    History { dir: PathBuf },
    /// Restore a stored version as a new serial (postgres backend).
    Rollback {
        dir: PathBuf,
        serial: u64,
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        lock: LockArgs,
    },
    /// Copy the state to another backend, verify the copy, then switch stack.toml to it.
    Migrate {
        dir: PathBuf,
        #[arg(long, value_enum)]
        to: BackendChoice,
        /// For postgres: the variable holding the libpq URL (else the PG* variables are used).
        #[arg(long)]
        url_env: Option<String>,
        /// For postgres: the schema (default kz).
        #[arg(long)]
        schema: Option<String>,
        #[command(flatten)]
        lock: LockArgs,
    },
    /// Write a state file (e.g. the rescue file of an apply) back to the backend.
    Push {
        dir: PathBuf,
        file: PathBuf,
        /// Push even if the backend moved on since the file was written.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        lock: LockArgs,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendChoice {
    Local,
    Postgres,
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    kz_engine::units::duration(s).map_err(|e| e.to_string())
}
