//! The `herald` binary: read the settings, start the workers, stop on SIGTERM/SIGINT.

use herald::config::Config;
use herald::server::Server;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

fn main() {
    let config = match Config::from_args() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("herald: {e}");
            std::process::exit(2);
        }
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(tracing_subscriber::EnvFilter::new(&config.log_level))
        .init();
    // Registered before the workers start so no signal can find the default action.
    let mut signals = match Signals::new([SIGTERM, SIGINT]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("herald: cannot install signal handlers: {e}");
            std::process::exit(1);
        }
    };
    let server = match Server::start(config) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("{e}");
            std::process::exit(1);
        }
    };
    if let Some(sig) = signals.forever().next() {
        tracing::info!(signal = sig, "stopping: no new connections, ending streams");
    }
    server.stop();
    tracing::info!("stopped");
}
