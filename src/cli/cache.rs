//! `ironboot cache list|fetch|clean`: the master image cache of the configuration
//! (`[pxe] tftp_master_path`, `image_cache_size`, `image_cache_ttl`), used directly. The
//! cache's per-key file locks make this safe next to a running `serve`: a fetch waits for
//! (and then reuses) a download `serve` has in progress, and `clean` leaves alone what
//! anyone is fetching or linking and every image a node links.
//!
//! `fetch REF` resolves a reference as cache mode does (the key, Glance's checksum, the
//! origin) with the cache-mode source; the bytes are not linked for any node.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::progress::{Display, bytes_of};
use super::{Cli, CliError};
use crate::cache::{CacheError, CleanReport, Entry, Fetched, MasterCache, Outcome, Progress};
use crate::clock::{Clock, SystemClock};
use crate::config::Settings;
use crate::images::cached::{CachedSource, parse_checksum};
use crate::images::glance::GlanceClient;
use crate::images::{ImageError, ImageRef, ImageSource};

/// The field name references are checked under (as `image show` does).
const FIELD: &str = "REF";
/// How often the progress display is refreshed.
const TICK: Duration = Duration::from_millis(100);

/// Arguments of `ironboot cache`.
#[derive(Debug, Args)]
pub struct CacheArgs {
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: CacheCommand,
}

#[derive(Debug, Subcommand)]
enum CacheCommand {
    /// List the master images: key, size, digest, links, last used, source.
    List,
    /// Download (or revalidate) an image into the cache as a node's preparation would,
    /// without linking it for any node. Progress goes to stderr (a bar on a terminal).
    Fetch {
        /// http(s)://…, file:///path, glance://UUID or a bare Glance UUID.
        reference: String,
    },
    /// Remove abandoned temporary files and orphaned metadata, every expired image no
    /// node uses, then the least recently used unused ones while the cache is over
    /// [pxe] image_cache_size; print what was removed.
    Clean,
}

/// Opens the configured master directory; also returns what the opening sweep removed.
fn open(settings: &Settings) -> Result<(MasterCache, CleanReport), CliError> {
    let pxe = &settings.options.pxe;
    MasterCache::open(
        &pxe.tftp_master_path,
        pxe.image_cache_size.saturating_mul(1024 * 1024),
        Duration::from_secs(pxe.image_cache_ttl.saturating_mul(60)),
    )
    .map_err(|e| CliError::Runtime(format!("pxe.tftp_master_path: {e} ({})", e.code())))
}

fn cache_error(e: &CacheError) -> CliError {
    CliError::Runtime(format!("{e} ({})", e.code()))
}

/// A reference that is not one (or names no cached kind) is a bad argument; anything a
/// service said is a runtime failure.
fn image_error(e: &ImageError) -> CliError {
    match e {
        ImageError::Invalid(_) => CliError::Usage(e.to_string()),
        _ => CliError::Runtime(format!("{e} ({})", e.code())),
    }
}

pub(super) fn run(
    cli: &Cli,
    args: &CacheArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), CliError> {
    let loaded = super::load_config(cli, err)?;
    let settings = loaded.settings;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let (cache, swept) = open(&settings)?;
    // Several threads: the body is received, hashed and written while progress is shown.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(CliError::Io)?;
    let io = CliError::Io;
    match &args.command {
        CacheCommand::List => {
            let entries = runtime
                .block_on(cache.list())
                .map_err(|e| cache_error(&e))?;
            if args.json {
                let list: Vec<Value> = entries.iter().map(entry_json).collect();
                writeln!(out, "{}", pretty(&json!({ "entries": list }))).map_err(io)
            } else {
                list_table(out, &entries).map_err(io)
            }
        }
        CacheCommand::Clean => {
            let mut report = swept;
            let cleaned = runtime
                .block_on(cache.clean(clock.now()))
                .map_err(|e| cache_error(&e))?;
            report.merge(cleaned);
            print_clean(out, &report, args.json).map_err(io)
        }
        CacheCommand::Fetch { reference } => {
            if swept.files_removed > 0 {
                writeln!(
                    err,
                    "removed {} abandoned temporary file(s) ({} bytes) from {}",
                    swept.files_removed,
                    swept.bytes_freed,
                    cache.dir().display()
                )
                .ok();
            }
            if settings.swift.is_some() && settings.options.ipxe.use_swift {
                writeln!(
                    err,
                    "warning: [ipxe] use_swift = true: `serve` gives nodes Swift URLs and does \
                     not use this cache"
                )
                .ok();
            }
            let fetched = runtime.block_on(fetch(&settings, &cache, clock, reference))?;
            if args.json {
                let mut v = entry_json(&fetched.entry);
                v["outcome"] = json!(outcome(fetched.outcome));
                writeln!(out, "{}", pretty(&v)).map_err(io)
            } else {
                show_entry(out, &fetched).map_err(io)
            }
        }
    }
}

/// Resolves `reference` with the cache-mode source and fetches it, showing progress.
async fn fetch(
    settings: &Settings,
    cache: &MasterCache,
    clock: Arc<dyn Clock>,
    reference: &str,
) -> Result<Fetched, CliError> {
    let glance = match &settings.glance {
        Some(g) => Some(Arc::new(
            GlanceClient::new(g, clock.clone())
                .map_err(|e| CliError::Runtime(format!("glance: {e}")))?,
        )),
        None => None,
    };
    // Cache mode's source, for its rules; `http_passthrough` does not apply: the caller
    // asked for this reference to be cached.
    let source = CachedSource::new(
        cache.clone(),
        settings.options.deploy.http_root.clone(),
        settings.http_url.clone(),
        glance.clone(),
        false,
        true,
    )
    .map_err(CliError::Runtime)?;
    let image = ImageRef::parse(FIELD, reference)
        .map_err(|e| CliError::Usage(format!("{}: {}", e.field, e.message)))?;
    if let Some(why) = source.refusal(reference, &image) {
        return Err(CliError::Usage(why));
    }
    let now = clock.now();
    // Glance: the image must be active; its checksum is what the bytes must have.
    let prepared = source
        .check(FIELD, reference, &image, now)
        .await
        .map_err(|e| image_error(&e))?;
    let expected = match &prepared.checksum {
        Some(text) => Some(parse_checksum(FIELD, text).map_err(|e| image_error(&e))?),
        None => None,
    };
    let key = CachedSource::key(FIELD, reference).map_err(|e| image_error(&e))?;
    let origin = source
        .origin(FIELD, reference)
        .await
        .map_err(|e| image_error(&e))?;

    let progress = Progress::new();
    let mut display = Display::stderr(key.to_string());
    display.update(
        Instant::now(),
        &format!("fetching {}", origin.describe()),
        None,
    );
    let task = {
        let (cache, key, progress) = (cache.clone(), key.clone(), progress.clone());
        tokio::spawn(async move {
            cache
                .fetch(&key, origin, expected, Some(progress), now)
                .await
        })
    };
    tokio::pin!(task);
    let mut tick = tokio::time::interval(TICK);
    let result = loop {
        tokio::select! {
            r = &mut task => break r,
            _ = tick.tick() => {
                let total = progress.total();
                if progress.done() > 0 || total.is_some() {
                    display.update(Instant::now(), "receiving", Some((progress.done(), total)));
                }
            }
        }
    };
    let result = result
        .unwrap_or_else(|e| {
            Err(CacheError::Io {
                what: "the fetch task failed".into(),
                detail: e.to_string(),
            })
        })
        .map_err(|e| cache_error(&e));
    match &result {
        Ok(f) => display.finish(&format!(
            "{} ({})",
            outcome(f.outcome),
            bytes_of(f.entry.size, None)
        )),
        Err(_) => display.finish("failed"),
    }
    result
}

fn outcome(o: Outcome) -> &'static str {
    match o {
        Outcome::Downloaded => "downloaded",
        Outcome::Unchanged => "unchanged",
        Outcome::NotModified => "not modified",
        Outcome::Shared => "fetched by another process",
    }
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).expect("JSON values serialize")
}

fn entry_json(e: &Entry) -> Value {
    json!({
        "key": e.key.as_str(),
        "path": e.path.display().to_string(),
        "size": e.size,
        "digests": e.digests,
        "links": e.links,
        "last_used": e.last_used,
        "fetched_at": e.fetched_at,
        "source": e.source,
        "validator": e.validator,
    })
}

fn digest_text(e: &Entry) -> String {
    e.digests
        .first()
        .map_or_else(|| "-".into(), |d| format!("{}:{}", d.algo.as_str(), d.hex))
}

fn list_table(out: &mut dyn Write, entries: &[Entry]) -> std::io::Result<()> {
    let headers = ["KEY", "SIZE", "DIGEST", "LINKS", "LAST USED", "SOURCE"];
    let rows: Vec<[String; 6]> = entries
        .iter()
        .map(|e| {
            [
                e.key.to_string(),
                e.size.to_string(),
                digest_text(e),
                e.links.to_string(),
                crate::tempurl::expiry::iso8601(e.last_used),
                e.source.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let mut widths = headers.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; 6]| {
        cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    writeln!(out, "{}", line(headers))?;
    for row in &rows {
        writeln!(out, "{}", line(row.each_ref().map(String::as_str)))?;
    }
    let total: u64 = entries.iter().map(|e| e.size).sum();
    writeln!(
        out,
        "{} image(s), {total} bytes ({})",
        entries.len(),
        indicatif::HumanBytes(total)
    )
}

fn show_entry(out: &mut dyn Write, f: &Fetched) -> std::io::Result<()> {
    let e = &f.entry;
    writeln!(out, "key:       {}", e.key)?;
    writeln!(out, "path:      {}", e.path.display())?;
    writeln!(out, "size:      {} bytes", e.size)?;
    for d in &e.digests {
        writeln!(out, "{:<10} {}", format!("{}:", d.algo.as_str()), d.hex)?;
    }
    writeln!(out, "links:     {}", e.links)?;
    writeln!(out, "source:    {}", e.source.as_deref().unwrap_or("-"))?;
    writeln!(out, "outcome:   {}", outcome(f.outcome))
}

fn print_clean(out: &mut dyn Write, r: &CleanReport, json: bool) -> std::io::Result<()> {
    if json {
        let v = json!({
            "evicted": r.evicted.iter().map(|k| k.as_str()).collect::<Vec<_>>(),
            "files": r.files.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
            "files_removed": r.files_removed,
            "bytes_freed": r.bytes_freed,
        });
        return writeln!(out, "{}", pretty(&v));
    }
    for k in &r.evicted {
        writeln!(out, "evicted {k}")?;
    }
    for f in &r.files {
        writeln!(out, "removed {}", f.display())?;
    }
    writeln!(
        out,
        "{} image(s) evicted, {} file(s) removed, {} bytes freed",
        r.evicted.len(),
        r.files_removed,
        r.bytes_freed
    )
}
