//! `ironboot tempurl`: the arguments of `swift tempurl`, and exactly the output of
//! `swiftclient.utils.generate_temp_url` for them.
//!
//! Two deliberate differences from the `swift tempurl` command: the key may come from a file
//! or the environment instead of the command line, and PATH is never run through `urlparse`,
//! so object names with `?`, `#` or `;` are signed as they are. A PATH that starts with
//! `http://` or `https://` is split after the host, and the origin is printed in front of the
//! result, as `swift tempurl` does.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;

use super::CliError;
use crate::config::Secret;
use crate::tempurl::{self, Digest, Endpoint, Method, Request, Signer, TempUrlError, expiry};

/// Arguments of `ironboot tempurl`.
#[derive(Debug, Args)]
pub struct TempurlArgs {
    /// Read SECONDS as a Unix time instead of an offset from now.
    #[arg(long)]
    absolute: bool,
    /// Make a prefix-based URL: PATH is /v1/<account>/<container>/<prefix>.
    #[arg(long = "prefix-based")]
    prefix_based: bool,
    /// Write the expiry as an ISO 8601 UTC time.
    #[arg(long)]
    iso8601: bool,
    /// Restrict the URL to this client address or network.
    #[arg(long = "ip-range", value_name = "RANGE")]
    ip_range: Option<String>,
    /// HMAC digest.
    #[arg(long, default_value = "sha256", value_parser = ["sha1", "sha256", "sha512"])]
    digest: String,
    /// Read the key from this file (exactly one trailing newline is removed).
    #[arg(long = "key-file", value_name = "FILE", conflicts_with = "key")]
    key_file: Option<PathBuf>,
    /// Add `filename=NAME` (not signed): Swift sends it in Content-Disposition.
    #[arg(long, value_name = "NAME")]
    filename: Option<String>,
    /// Add `inline` (not signed): Swift sends Content-Disposition: inline.
    #[arg(long)]
    inline: bool,
    /// Print the absolute, percent-encoded URL under this Swift endpoint (what ironboot puts
    /// in iPXE scripts) instead of swiftclient's form.
    #[arg(long, value_name = "URL")]
    endpoint: Option<String>,
    /// GET, HEAD, PUT, POST or DELETE.
    method: String,
    /// Seconds from now (suffixes s, m, min, h, hr, d allowed), a Unix time with --absolute,
    /// or an ISO 8601 time (%Y-%m-%dT%H:%M:%SZ, or local %Y-%m-%dT%H:%M:%S or %Y-%m-%d).
    #[arg(allow_hyphen_values = true)]
    seconds: String,
    /// /v1/<account>/<container>/<object>, /info, or a full URL to one of them.
    path: String,
    /// The temp-URL key. Prefer --key-file or IRONBOOT_TEMP_URL_KEY: a key on the command
    /// line ends up in shell history and in the process list.
    #[arg(env = "IRONBOOT_TEMP_URL_KEY", hide_env_values = true)]
    key: Option<String>,
}

/// `time.mktime` for the zone-less ISO forms: the Unix time at which the civil time `t`
/// is shown in a zone whose offset east of UTC, in seconds, at a given Unix time is
/// `offset_at(unix)`. Like mktime, it looks the offset up twice, so that a time on the other
/// side of a daylight-saving change from its UTC reading gets that side's offset.
fn civil_to_unix(
    t: expiry::CivilTime,
    offset_at: &dyn Fn(i64) -> Result<i64, String>,
) -> Result<i64, String> {
    let as_utc = t.as_utc();
    let guess = as_utc - offset_at(as_utc)?;
    Ok(as_utc - offset_at(guess)?)
}

/// The offset of this machine's time zone (`TZ`, `/etc/localtime`) at `unix`. The `time`
/// crate gives it only while the process is single-threaded, which it is when this command
/// runs (see `cli::run`).
fn local_offset_at(unix: i64) -> Result<i64, String> {
    let at = time::OffsetDateTime::from_unix_timestamp(unix).map_err(|e| e.to_string())?;
    time::UtcOffset::local_offset_at(at)
        .map(|o| i64::from(o.whole_seconds()))
        .map_err(|_| "the local time zone is unknown; add Z to give the time in UTC".to_string())
}

fn local_to_unix(t: expiry::CivilTime) -> Result<i64, String> {
    civil_to_unix(t, &local_offset_at)
}

pub(super) fn run(
    args: TempurlArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), CliError> {
    let key = match (&args.key, &args.key_file) {
        (Some(k), None) => Secret::new(k.clone()),
        (None, Some(path)) => {
            // The rule `serve` reads [glance] swift_temp_url_key_file by: one trailing
            // newline is removed, nothing else.
            let file = crate::config::read_secret_file(path)
                .map_err(|e| CliError::Usage(format!("--key-file: {e}")))?;
            if let Some(w) = file.warning {
                writeln!(err, "WARNING: --key-file: {w}").ok();
            }
            file.secret
        }
        _ => {
            return Err(CliError::Usage(
                "no key: give KEY, --key-file FILE or set IRONBOOT_TEMP_URL_KEY".into(),
            ));
        }
    };
    let digest: Digest = args.digest.parse()?;
    let method = Method::parse(&args.method)?;
    if !method.is_standard() {
        writeln!(
            err,
            "WARNING: Non default HTTP method {method} for tempurl specified, possibly an error"
        )
        .ok();
    }
    let expiry =
        expiry::parse(&args.seconds, args.absolute, &local_to_unix).map_err(TempUrlError::from)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let expires = expiry.resolve(now);

    let (origin, path) = split_origin(&args.path);
    if let Some(range) = args.ip_range.as_deref().filter(|r| !r.is_empty())
        && let Err(e) = tempurl::validate_ip_range(range)
    {
        writeln!(err, "WARNING: {e}; Swift will refuse this URL with 401").ok();
    }
    if path != "/info" && path.split('/').nth(1).is_some_and(|v| v != "v1") {
        writeln!(
            err,
            "WARNING: Swift's tempurl only accepts /v1/ paths; this URL will get 401"
        )
        .ok();
    }
    if path == "/info" && digest != Digest::Sha1 {
        // swift/proxy/controllers/info.py checks get_hmac() with its default digest only.
        writeln!(
            err,
            "WARNING: Swift 2.38 checks /info signatures with sha1 only; this {digest} URL will get 401 (use --digest sha1)"
        )
        .ok();
    } else if digest == Digest::Sha1 {
        writeln!(
            err,
            "WARNING: sha1 is deprecated by Swift; clusters may refuse it"
        )
        .ok();
    }

    let mut req = Request::new(&method, path, expires);
    req.prefix = args.prefix_based;
    req.ip_range = args.ip_range.as_deref();
    req.iso8601 = args.iso8601;
    req.filename = args.filename.as_deref();
    req.inline = args.inline;
    let signed = Signer::new(key.expose().as_bytes(), digest).sign(&req)?;
    let line = match &args.endpoint {
        Some(ep) => signed.to_url(&Endpoint::parse(ep)?),
        None => format!("{}{}", origin.unwrap_or(""), signed.swiftclient_form()),
    };
    writeln!(out, "{line}").map_err(CliError::Io)?;
    Ok(())
}

/// `https://host:port/v1/a/c/o` → (`https://host:port`, `/v1/a/c/o`); anything else is a
/// path as it is.
fn split_origin(path: &str) -> (Option<&str>, &str) {
    for scheme in ["http://", "https://"] {
        if let Some(rest) = path.strip_prefix(scheme)
            && let Some(slash) = rest.find('/')
        {
            let at = scheme.len() + slash;
            return (Some(&path[..at]), &path[at..]);
        }
    }
    (None, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_split_without_touching_the_path() {
        assert_eq!(
            split_origin("https://h:8080/v1/a/c/o?x#y"),
            (Some("https://h:8080"), "/v1/a/c/o?x#y")
        );
        assert_eq!(split_origin("/v1/a/c/o"), (None, "/v1/a/c/o"));
        assert_eq!(split_origin("http://h"), (None, "http://h"));
    }

    const NOON: expiry::CivilTime = expiry::CivilTime {
        year: 2026,
        month: 11,
        day: 26,
        hour: 12,
        minute: 0,
        second: 0,
    };

    #[test]
    fn civil_times_are_read_in_the_given_zone() {
        let t = NOON.as_utc();
        for (offset, expected) in [(0, t), (9 * 3600, t - 9 * 3600), (-5 * 3600, t + 5 * 3600)] {
            assert_eq!(
                civil_to_unix(NOON, &|_| Ok(offset)),
                Ok(expected),
                "UTC{offset:+}"
            );
        }
        // a half-hour zone (India)
        assert_eq!(civil_to_unix(NOON, &|_| Ok(19_800)), Ok(t - 19_800));
    }

    /// US Eastern in 2026: UTC-4 from 8 March 07:00 UTC to 1 November 06:00 UTC, else UTC-5.
    fn new_york(unix: i64) -> Result<i64, String> {
        let dst = 1_772_953_200..1_793_512_800;
        Ok(if dst.contains(&unix) {
            -4 * 3600
        } else {
            -5 * 3600
        })
    }

    #[test]
    fn daylight_saving_time_uses_the_offset_of_that_day() {
        let summer = expiry::CivilTime { month: 7, ..NOON };
        assert_eq!(
            civil_to_unix(summer, &new_york),
            Ok(summer.as_utc() + 4 * 3600)
        );
        assert_eq!(civil_to_unix(NOON, &new_york), Ok(NOON.as_utc() + 5 * 3600));
        // The UTC reading of these clock times is on the other side of the change from the
        // instants themselves: one look-up would be an hour off, mktime's second one is not.
        let after_fall_back = expiry::CivilTime {
            month: 11,
            day: 1,
            hour: 3,
            ..NOON
        };
        assert_eq!(
            civil_to_unix(after_fall_back, &new_york),
            Ok(after_fall_back.as_utc() + 5 * 3600)
        );
        let after_spring_forward = expiry::CivilTime {
            month: 3,
            day: 8,
            hour: 5,
            ..NOON
        };
        assert_eq!(
            civil_to_unix(after_spring_forward, &new_york),
            Ok(after_spring_forward.as_utc() + 4 * 3600)
        );
    }

    #[test]
    fn an_unknown_zone_is_an_error_not_utc() {
        assert_eq!(
            civil_to_unix(NOON, &|_| Err("zone unknown".into())),
            Err("zone unknown".into())
        );
    }
}
