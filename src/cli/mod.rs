//! The command line: clap definitions and one function per command. `main` only parses,
//! calls [`run`] and turns the result into an exit code.
//!
//! Exit codes: 0 success, 1 runtime failure, 2 bad arguments, 64 invalid configuration
//! (`EX_USAGE`, as linkerd2-proxy does).

mod cache;
mod client;
mod conductor;
mod image;
mod node;
mod progress;
pub mod serve;
mod tempurl;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{self, ConfigErrors};
use crate::tempurl::TempUrlError;

/// ironboot: network boot for bare metal. Per-node iPXE scripts, with kernels and ramdisks
/// from Swift temporary URLs or from a local image cache.
#[derive(Debug, Parser)]
#[command(name = "ironboot", version, about, long_about = None)]
pub struct Cli {
    /// Configuration file. Default: /etc/ironboot/ironboot.conf if it exists, else built-in
    /// defaults.
    #[arg(long, global = true, env = "IRONBOOT_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Log filter, e.g. info or ironboot=debug (also IRONBOOT_LOG).
    #[arg(long, global = true, env = "IRONBOOT_LOG", default_value = "info")]
    pub log: String,
    /// Log lines as JSON objects instead of text.
    #[arg(long, global = true)]
    pub log_json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print a sample configuration or check one.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Run the API and boot servers (SQLite and loopback unless configured otherwise).
    Serve,
    /// Manage nodes through the API.
    Node(Box<node::NodeArgs>),
    /// Sign a Swift temporary URL, exactly as `swift tempurl` / generate_temp_url would.
    Tempurl(Box<tempurl::TempurlArgs>),
    /// Check image references against the configured services.
    Image(image::ImageArgs),
    /// The conductors sharing the database, through the API.
    Conductor(conductor::ConductorArgs),
    /// List, fill and clean the master image cache ([pxe] tftp_master_path) directly;
    /// safe next to a running `serve`.
    Cache(cache::CacheArgs),
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print every option, commented out, with its help and default.
    Sample,
    /// Validate the configuration and print the effective settings (secrets redacted).
    Check,
}

/// Why a command failed; each kind has its exit code.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    TempUrl(#[from] TempUrlError),
    #[error("{0}")]
    Io(std::io::Error),
    #[error("{0}")]
    Runtime(String),
    #[error("{message} ({code}, HTTP {status})")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
}

impl CliError {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            CliError::Config(_) => ExitCode::from(64),
            CliError::Usage(_) | CliError::TempUrl(_) => ExitCode::from(2),
            CliError::Io(_) | CliError::Runtime(_) | CliError::Api { .. } => ExitCode::from(1),
        }
    }
}

/// Loads the configuration and prints its warnings to stderr.
pub fn load_config(cli: &Cli, err: &mut dyn Write) -> Result<config::Loaded, CliError> {
    let loaded = config::load(cli.config.as_deref())?;
    for w in &loaded.warnings {
        writeln!(err, "warning: {w}").ok();
    }
    Ok(loaded)
}

/// Logs to stderr, as text or JSON, filtered by `--log`.
pub fn init_tracing(cli: &Cli) -> Result<(), CliError> {
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log)
        .map_err(|e| CliError::Usage(format!("--log {:?}: {e}", cli.log)))?;
    // Colours only for a terminal: log files and journald get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let result = if cli.log_json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    result.map_err(|e| CliError::Runtime(format!("cannot set up logging: {e}")))
}

/// Runs a parsed command line. Commands that need no runtime run on this thread.
pub fn run(cli: Cli, out: &mut dyn Write, err: &mut dyn Write) -> Result<(), CliError> {
    match &cli.command {
        Command::Config(ConfigCommand::Sample) => {
            out.write_all(config::sample().as_bytes())
                .map_err(CliError::Io)?;
            Ok(())
        }
        Command::Config(ConfigCommand::Check) => {
            let loaded = load_config(&cli, err)?;
            out.write_all(config::render_effective(&loaded.settings).as_bytes())
                .map_err(CliError::Io)?;
            writeln!(err, "configuration is valid").ok();
            Ok(())
        }
        Command::Serve => serve::run(&cli, err),
        Command::Node(_) => {
            let Command::Node(args) = cli.command else {
                unreachable!()
            };
            node::run(*args, out)
        }
        Command::Conductor(_) => {
            let Command::Conductor(args) = cli.command else {
                unreachable!()
            };
            conductor::run(args, out)
        }
        Command::Tempurl(_) => {
            let Command::Tempurl(args) = cli.command else {
                unreachable!()
            };
            tempurl::run(*args, out, err)
        }
        Command::Image(args) => image::run(&cli, args, out, err),
        Command::Cache(args) => cache::run(&cli, args, out, err),
    }
}
