//! `ironboot image show REF`: what `prepare` would use for an image reference, checked
//! against the real services with the configuration of `serve`: the source it resolves
//! to, the size and checksums the source knows, the location stored in the snapshot and,
//! in swift mode, a TempURL as a node would get it (its signature redacted unless
//! `--show-url`).

use std::io::Write;
use std::sync::Arc;

use clap::{Args, Subcommand};

use super::{Cli, CliError};
use crate::boot::BootService;
use crate::clock::{Clock, SystemClock};
use crate::ipxe::Templates;

/// Arguments of `ironboot image`.
#[derive(Debug, Args)]
pub struct ImageArgs {
    #[command(subcommand)]
    command: ImageCommand,
}

#[derive(Debug, Subcommand)]
enum ImageCommand {
    /// Check an image reference as prepare would and print what it resolves to.
    Show {
        /// swift://CONTAINER/OBJECT, http(s)://…, glance://UUID or a bare UUID.
        reference: String,
        /// Print the TempURL with its signature (anyone holding it can download the image
        /// until it expires).
        #[arg(long)]
        show_url: bool,
    },
}

/// Replaces the value of `temp_url_sig` in a URL.
pub fn redact_signature(url: &str) -> String {
    let Some(at) = url.find("temp_url_sig=") else {
        return url.to_string();
    };
    let start = at + "temp_url_sig=".len();
    let end = url[start..].find('&').map_or(url.len(), |i| start + i);
    format!("{}<redacted>{}", &url[..start], &url[end..])
}

pub(super) fn run(
    cli: &Cli,
    args: &ImageArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), CliError> {
    let ImageCommand::Show {
        reference,
        show_url,
    } = &args.command;
    let show_url = *show_url;
    let loaded = super::load_config(cli, err)?;
    let settings = loaded.settings;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(CliError::Io)?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let templates = Templates::new(
        settings.templates.boot_script.clone(),
        settings.templates.node_template.clone(),
    )
    .map_err(|e| CliError::Runtime(format!("templates: {e}")))?;
    let boot = BootService::new(&settings, templates, clock.clone())
        .map_err(|e| CliError::Runtime(format!("boot service: {e}")))?;
    let now = clock.now();
    let details = runtime
        .block_on(boot.sources().inspect("REF", reference, now))
        .map_err(|e| CliError::Runtime(format!("{e} ({})", e.code())))?;
    let lifetime = i64::try_from(boot.url_lifetime().as_secs()).unwrap_or(i64::MAX);
    let mut url = String::new();
    let signed = boot
        .sources()
        .url(
            "REF",
            &details.prepared,
            None,
            now.saturating_add(lifetime),
            &mut url,
        )
        .map_err(|e| CliError::Runtime(format!("{e} ({})", e.code())))?;

    let mut lines: Vec<(&str, String)> = vec![
        ("reference", reference.clone()),
        ("source", details.resolved.clone()),
    ];
    lines.extend(details.facts.iter().cloned());
    if let Some(size) = details.size {
        lines.push(("size", format!("{size} bytes")));
    }
    if let Some(c) = &details.checksum {
        lines.push(("checksum", c.clone()));
    }
    if let Some((algo, value)) = &details.hash {
        lines.push(("hash", format!("{algo} {value}")));
    }
    lines.push(("location", details.prepared.location.clone()));
    if signed {
        let shown = if show_url {
            url.clone()
        } else {
            redact_signature(&url)
        };
        lines.push(("url", shown));
        lines.push((
            "expires",
            format!(
                "{} ({lifetime} s from now, [glance] swift_temp_url_duration){}",
                crate::tempurl::expiry::iso8601(now.saturating_add(lifetime)),
                if show_url {
                    ""
                } else {
                    "; --show-url prints the signature"
                }
            ),
        ));
    } else {
        lines.push(("url", url));
    }
    let width = lines.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
    for (key, value) in lines {
        writeln!(out, "{:width$} {value}", format!("{key}:")).map_err(CliError::Io)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_redacted_wherever_they_are() {
        assert_eq!(
            redact_signature("http://s/v1/A/c/o?temp_url_sig=abc123&temp_url_expires=5"),
            "http://s/v1/A/c/o?temp_url_sig=<redacted>&temp_url_expires=5"
        );
        assert_eq!(
            redact_signature("http://s/o?temp_url_expires=5&temp_url_sig=sha512:AbC"),
            "http://s/o?temp_url_expires=5&temp_url_sig=<redacted>"
        );
        assert_eq!(redact_signature("http://h/k"), "http://h/k");
    }
}
