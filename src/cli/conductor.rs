//! `ironboot conductor list`: the conductors sharing the database, through the REST API.

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde_json::json;

use super::CliError;
use super::client::ApiClient;
use super::node::{table, text};

#[derive(Debug, Args)]
pub struct ConductorArgs {
    /// URL of the ironboot API.
    #[arg(
        long,
        global = true,
        env = "IRONBOOT_URL",
        default_value = "http://127.0.0.1:6385"
    )]
    url: String,
    /// File holding the API token ([api] auth_strategy = token).
    #[arg(long, global = true, env = "IRONBOOT_TOKEN_FILE", value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: ConductorCommand,
}

#[derive(Debug, Subcommand)]
pub enum ConductorCommand {
    /// Each conductor, its last heartbeat, whether it is alive, and how many nodes it owns.
    List,
}

pub(super) fn run(args: ConductorArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let client = ApiClient::from_args(&args.url, args.token_file.as_deref())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(CliError::Io)?;
    runtime.block_on(async {
        match args.command {
            ConductorCommand::List => {
                let conductors = client.list_all("/v1/conductors", Vec::new()).await?;
                if args.json {
                    let list = json!({ "conductors": conductors });
                    return writeln!(out, "{}", serde_json::to_string_pretty(&list).unwrap())
                        .map_err(CliError::Io);
                }
                let rows: Vec<Vec<String>> = conductors
                    .iter()
                    .map(|c| {
                        vec![
                            text(&c["hostname"]),
                            text(&c["http_url"]),
                            text(&c["heartbeat_at"]),
                            if c["alive"] == true { "yes" } else { "no" }.into(),
                            text(&c["nodes"]),
                        ]
                    })
                    .collect();
                table(
                    out,
                    &["HOST", "HTTP_URL", "LAST HEARTBEAT", "ALIVE", "NODES"],
                    &rows,
                )
                .map_err(CliError::Io)
            }
        }
    })
}
