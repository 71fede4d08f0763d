//! Progress of a long command on stderr: an indicatif bar when stderr is a terminal,
//! otherwise plain lines (one when the phase changes, and at most one every
//! [`PLAIN_EVERY`] while only the byte count moves), so logs and CI output stay readable.
//! Results go to stdout; this writes only to stderr.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often a plain line repeats while only the byte count changes.
pub const PLAIN_EVERY: Duration = Duration::from_secs(2);

/// `3.00 MiB of 8.00 MiB (37%)`, or `3.00 MiB` when the total is unknown.
pub fn bytes_of(done: u64, total: Option<u64>) -> String {
    match total {
        Some(t) if t > 0 => format!(
            "{} of {} ({}%)",
            HumanBytes(done),
            HumanBytes(t),
            done.saturating_mul(100) / t
        ),
        Some(t) => format!("{} of {}", HumanBytes(done), HumanBytes(t)),
        None => format!("{}", HumanBytes(done)),
    }
}

/// Where progress is shown.
pub struct Display {
    label: String,
    kind: Kind,
}

enum Kind {
    Bar {
        bar: ProgressBar,
        /// Whether the bar shows a length (the total is known).
        sized: bool,
    },
    Plain {
        out: Box<dyn Write + Send>,
        every: Duration,
        /// When the last line was printed, its phase and byte count.
        last: Option<(Instant, String, u64)>,
    },
}

impl Display {
    /// A bar when stderr is a terminal, plain lines on stderr otherwise. `label` starts
    /// every plain line (`node 0c1…`, the cache key).
    pub fn stderr(label: impl Into<String>) -> Display {
        if std::io::stderr().is_terminal() {
            Display::bar(label)
        } else {
            Display::plain(label, Box::new(std::io::stderr()), PLAIN_EVERY)
        }
    }

    fn bar(label: impl Into<String>) -> Display {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.set_style(Self::style(false));
        bar.enable_steady_tick(Duration::from_millis(120));
        Display {
            label: label.into(),
            kind: Kind::Bar { bar, sized: false },
        }
    }

    /// Plain lines on `out`, repeated at most every `every` while only bytes change.
    pub fn plain(label: impl Into<String>, out: Box<dyn Write + Send>, every: Duration) -> Display {
        Display {
            label: label.into(),
            kind: Kind::Plain {
                out,
                every,
                last: None,
            },
        }
    }

    fn style(sized: bool) -> ProgressStyle {
        let template = if sized {
            "{spinner} {msg} [{bar:30}] {binary_bytes}/{binary_total_bytes} \
             {binary_bytes_per_sec} eta {eta}"
        } else {
            "{spinner} {msg} {binary_bytes} {binary_bytes_per_sec}"
        };
        ProgressStyle::with_template(template)
            .expect("a valid indicatif template")
            .progress_chars("=> ")
    }

    /// Shows `phase` (`fetching`, `preparing deploy`, …) with `done` of `total` bytes
    /// (`None` while no byte count is known).
    pub fn update(&mut self, now: Instant, phase: &str, bytes: Option<(u64, Option<u64>)>) {
        match &mut self.kind {
            Kind::Bar { bar, sized } => {
                let message = format!("{}: {phase}", self.label);
                bar.set_message(message);
                if let Some((done, total)) = bytes {
                    if let Some(t) = total {
                        bar.set_length(t);
                    } else {
                        bar.unset_length();
                    }
                    if total.is_some() != *sized {
                        *sized = total.is_some();
                        bar.set_style(Self::style(*sized));
                    }
                    bar.set_position(done);
                }
            }
            Kind::Plain { out, every, last } => {
                let done = bytes.map_or(0, |(d, _)| d);
                let due = match last {
                    None => true,
                    Some((at, p, d)) => {
                        p != phase || (done != *d && now.duration_since(*at) >= *every)
                    }
                };
                if !due {
                    return;
                }
                let line = match bytes {
                    Some((done, total)) => {
                        format!("{}: {phase} {}", self.label, bytes_of(done, total))
                    }
                    None => format!("{}: {phase}", self.label),
                };
                writeln!(out, "{line}").ok();
                out.flush().ok();
                *last = Some((now, phase.to_string(), done));
            }
        }
    }

    /// Ends the display with a last line (`fetched …`, `ready`).
    pub fn finish(mut self, message: &str) {
        match &mut self.kind {
            Kind::Bar { bar, .. } => {
                bar.finish_and_clear();
                eprintln!("{}: {message}", self.label);
            }
            Kind::Plain { out, .. } => {
                writeln!(out, "{}: {message}", self.label).ok();
                out.flush().ok();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn plain_lines_come_at_phase_changes_and_every_few_seconds() {
        let buf = Shared::default();
        let mut d = Display::plain("k", Box::new(buf.clone()), Duration::from_secs(2));
        let t0 = Instant::now();
        let s = Duration::from_secs;
        d.update(t0, "connecting", None);
        d.update(t0, "fetching", Some((0, Some(8 << 20))));
        d.update(t0 + s(1), "fetching", Some((1 << 20, Some(8 << 20))));
        d.update(t0 + s(2), "fetching", Some((3 << 20, Some(8 << 20))));
        // nothing moved: no line, however long it has been
        d.update(t0 + s(9), "fetching", Some((3 << 20, Some(8 << 20))));
        d.update(t0 + s(9), "fetching", Some((4 << 20, None)));
        d.finish("done");
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert_eq!(
            text,
            "k: connecting\n\
             k: fetching 0 B of 8.00 MiB (0%)\n\
             k: fetching 3.00 MiB of 8.00 MiB (37%)\n\
             k: fetching 4.00 MiB\n\
             k: done\n"
        );
    }
}
