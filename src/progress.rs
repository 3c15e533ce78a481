//! Progress of a long command on stderr, for the person waiting: a bar on a terminal, one line
//! as each phase starts and ends where stderr is a log or a pipe (indicatif draws nothing
//! there), and nothing at all for library callers and tests that ask for [`Progress::hidden`].

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use web_time::Instant;

/// Where progress goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Hidden,
    Bar,
    Lines,
}

/// How a command shows its phases.
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    mode: Mode,
}

impl Progress {
    /// Shows nothing.
    pub fn hidden() -> Self {
        Progress { mode: Mode::Hidden }
    }

    /// Shows progress on stderr: a bar if it is a terminal, lines otherwise.
    pub fn stderr() -> Self {
        let mode = if std::io::stderr().is_terminal() {
            Mode::Bar
        } else {
            Mode::Lines
        };
        Progress { mode }
    }

    /// Starts a phase of `len` units of work (`0`: unknown, a spinner) named by `what`, e.g.
    /// "linear probe: features of 10000 train images".
    pub fn phase(&self, what: impl Into<String>, len: u64) -> Phase {
        let what = what.into();
        let bar = match self.mode {
            Mode::Bar => Some(bar(&what, len)),
            Mode::Lines => {
                eprintln!("{what}…");
                None
            }
            Mode::Hidden => None,
        };
        Phase {
            mode: self.mode,
            what,
            bar,
            started: Instant::now(),
        }
    }
}

fn bar(what: &str, len: u64) -> ProgressBar {
    let (bar, template) = if len == 0 {
        (
            ProgressBar::new_spinner(),
            "{spinner} {msg} [{elapsed_precise}]",
        )
    } else {
        (
            ProgressBar::new(len),
            "{msg} {bar:30} {pos}/{len} [{elapsed_precise} < {eta_precise}]",
        )
    };
    bar.set_style(ProgressStyle::with_template(template).expect("valid template"));
    bar.set_message(what.to_string());
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// A phase under way; it reports its end when dropped.
pub struct Phase {
    mode: Mode,
    what: String,
    bar: Option<ProgressBar>,
    started: Instant,
}

impl Phase {
    /// `n` more units done.
    pub fn advance(&self, n: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(n);
        }
    }
}

impl Drop for Phase {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        if self.mode != Mode::Hidden {
            let seconds = self.started.elapsed().as_secs_f64();
            eprintln!("{}: done in {seconds:.1} s", self.what);
        }
    }
}
