//! The `framerec` command: parse, load the config, dispatch, map errors to
//! exit codes. Everything else lives in the library.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use framerec::config::{parse_duration, ConfigError, Settings};
use framerec::daemon::{self, Limits};

/// Exit codes (EX_CONFIG lets systemd tell a bad config from a crash).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Exit {
    /// Done, also after a graceful stop.
    Success = 0,
    /// A runtime failure.
    Failure = 1,
    /// A bad config (EX_CONFIG).
    Config = 78,
    /// A second TERM/INT: exited at once (from the signal handler).
    Quit = 130,
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> ExitCode {
        ExitCode::from(exit as u8)
    }
}

#[derive(Parser)]
#[command(
    name = "framerec",
    version,
    about = "A streaming frame recorder: camera frames to durable, numbered JPEG/PNG files"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Record. Without --config, records the built-in synthetic camera
    /// (1280x720, 30 fps, one JPEG a second) into ./frames.
    Run {
        /// The config file (TOML).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Stop after this many files are written.
        #[arg(long)]
        frames: Option<u64>,
        /// Stop after this long (e.g. 30s, 5m, 2h).
        #[arg(long, value_parser = parse_duration_arg)]
        duration: Option<Duration>,
    },
    /// Validate a config file and print the effective settings.
    Check {
        /// The config file (TOML).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// List cameras with their formats, resolutions and frame rates.
    Devices,
}

fn parse_duration_arg(text: &str) -> Result<Duration, String> {
    parse_duration(text)
}

fn load(config: Option<&PathBuf>) -> Result<Settings, ConfigError> {
    match config {
        Some(path) => Settings::load(path),
        None => Ok(Settings::demo()),
    }
}

/// Prints a line to stderr; if even that fails there is no one left to tell.
fn say(message: std::fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stderr(), "{message}");
}

fn report_config_error(error: &ConfigError) -> ExitCode {
    say(format_args!("framerec: {error:#}"));
    if let ConfigError::Read { source, .. } = error {
        say(format_args!("  {source}"));
    }
    Exit::Config.into()
}

/// `RUST_LOG`, or INFO. notify logs its routine inotify bookkeeping at INFO
/// (a line per directory removed): kept to warnings unless `RUST_LOG` names
/// notify itself.
fn log_filter() -> tracing_subscriber::EnvFilter {
    use tracing_subscriber::EnvFilter;
    let spec = std::env::var(EnvFilter::DEFAULT_ENV).unwrap_or_default();
    let filter = match EnvFilter::try_new(&spec) {
        Ok(filter) if !spec.trim().is_empty() => filter,
        _ => EnvFilter::new("info"),
    };
    if spec.contains("notify") {
        return filter;
    }
    match "notify=warn".parse() {
        Ok(directive) => filter.add_directive(directive),
        Err(_) => filter,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(log_filter())
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        // A log line that cannot be written (stderr closed, disk full under a
        // redirect) is lost; it must never take the recorder down.
        .log_internal_errors(false)
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Check { config } => match Settings::load(&config) {
            Ok(settings) => match writeln!(std::io::stdout(), "{settings}") {
                Ok(()) => Exit::Success.into(),
                Err(_) => Exit::Failure.into(),
            },
            Err(e) => report_config_error(&e),
        },
        Command::Devices => match write!(
            std::io::stdout(),
            "{}",
            framerec::source::v4l2::describe_devices()
        ) {
            Ok(()) => Exit::Success.into(),
            Err(_) => Exit::Failure.into(),
        },
        Command::Run {
            config,
            frames,
            duration,
        } => {
            // A HUP before the handlers are in place (systemctl reload just
            // after start) must not end the recorder: ignored until then.
            // SAFETY: setting a signal's disposition to SIG_IGN has no
            // preconditions.
            unsafe { libc::signal(libc::SIGHUP, libc::SIG_IGN) };
            let settings = match load(config.as_ref()) {
                Ok(settings) => settings,
                Err(e) => return report_config_error(&e),
            };
            match record(&settings, config.as_deref(), Limits { frames, duration }) {
                Ok(()) => Exit::Success.into(),
                Err(e) => {
                    say(format_args!("framerec: {e:#}"));
                    Exit::Failure.into()
                }
            }
        }
    }
}

/// Lifts the soft limit on open files to the hard one (systemd gives 1024
/// and 524288): HTTP clients must never leave the writers without
/// descriptors.
fn raise_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid resource and a pointer to a
    // live rlimit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// Records with `settings`, read from `config` (read again on HUP).
fn record(
    settings: &Settings,
    config: Option<&std::path::Path>,
    limits: Limits,
) -> anyhow::Result<()> {
    raise_file_limit();
    let (control_tx, control_rx) = crossbeam_channel::bounded(16);
    let signals = daemon::forward_signals(control_tx, Exit::Quit as i32)?;
    let reload = config.map(|path| move || Settings::load(path));
    let reload = reload.as_ref().map(|f| f as &daemon::Loader<'_>);
    let result = daemon::run(settings, reload, &control_rx, limits);
    signals.close();
    result.map(drop)
}
