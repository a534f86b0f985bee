//! The `switchboard` binary: parses the command line and starts the chosen role.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use switchboard::auth::TokenIssuer;
use switchboard::config::{Config, Role, Settings};

/// Carrier-grade WebRTC signaling: JWT auth, rooms, and SDP/ICE relay over WebSocket.
#[derive(Parser)]
#[command(name = "switchboard", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    settings: Settings,
}

#[derive(Subcommand)]
enum Command {
    /// Auth + signaling + web client on one port (the default).
    Serve,
    /// The Auth service alone, on AUTH_PORT.
    Auth,
    /// The Signaling service (and web client) alone; needs AUTH_SECRET.
    Signal,
    /// Mint a token offline with the configured secret and print it.
    Token {
        /// User id (`sub`).
        #[arg(long)]
        user: String,
        /// Restrict the token to this room.
        #[arg(long)]
        room: Option<String>,
        /// Lifetime, e.g. `1h` (default: TOKEN_TTL).
        #[arg(long, value_parser = humantime::parse_duration)]
        ttl: Option<Duration>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let role = match &cli.command {
        None | Some(Command::Serve) => Role::Serve,
        Some(Command::Auth) => Role::Auth,
        Some(Command::Signal) => Role::Signal,
        Some(Command::Token { .. }) => Role::Token,
    };
    let config = match Config::from_settings(&cli.settings, role) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("switchboard: refusing to start: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(Command::Token { user, room, ttl }) = cli.command {
        return mint(&config, &user, room.as_deref(), ttl);
    }
    let _guard = match switchboard::telemetry::init(config.logging.format, &config.logging.level) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("switchboard: {e}");
            return ExitCode::from(2);
        }
    };
    let bind = config.node.listen;
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("switchboard: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(switchboard::server::run(config, role, bind)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("switchboard: {e}");
            ExitCode::FAILURE
        }
    }
}

fn mint(config: &Config, user: &str, room: Option<&str>, ttl: Option<Duration>) -> ExitCode {
    for (name, value) in [("--user", Some(user)), ("--room", room)] {
        if let Some(v) = value
            && let Err(why) = switchboard::identifier::check(v)
        {
            eprintln!("switchboard: {name} {why}");
            return ExitCode::from(2);
        }
    }
    if ttl.is_some_and(|t| t > switchboard::config::MAX_TOKEN_TTL || t.is_zero()) {
        eprintln!("switchboard: --ttl must be between 1s and 24h");
        return ExitCode::from(2);
    }
    let issuer = TokenIssuer::new(
        &config.auth.secret,
        &config.auth.issuer,
        &config.auth.audience,
        config.auth.token_ttl,
    );
    println!("{}", issuer.issue(user, room, ttl).token);
    ExitCode::SUCCESS
}
