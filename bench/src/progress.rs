//! Progress bars on standard error (hidden when it is not a terminal).

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// A bar counting `total` items (connections, handshakes).
pub fn counter(total: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} {per_sec} eta {eta}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}

/// A bar over a timed run; the caller sets the message (rate, counts) as it goes.
pub fn timed(length: Duration, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(length.as_millis() as u64);
    bar.set_style(
        ProgressStyle::with_template("{prefix:>12} [{bar:40}] {elapsed}/{duration} {msg}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(what.to_string());
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}
