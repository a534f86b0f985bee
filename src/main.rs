//! The `switchboard` binary: parses the command line and starts the chosen role.

use std::ffi::OsString;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, CommandFactory, Parser, Subcommand};
use switchboard::auth::keygen::{self, KeyAlg};
use switchboard::auth::{ActiveKeys, ApiKeys, TokenIssuer};
use switchboard::config::{Config, Role, Settings, TokenSettings};

// mimalloc: less memory per idle connection than glibc's malloc, and less CPU per join
// and per message (measured side by side in docs/BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Carrier-grade WebRTC signaling: JWT auth, rooms, and SDP/ICE relay over WebSocket.
#[derive(Parser)]
#[command(name = "switchboard", version = env!("SWITCHBOARD_VERSION"), about)]
// The top-level settings are those of the bare `switchboard` run; a subcommand has its own.
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    settings: Settings,
}

#[derive(Subcommand)]
enum Command {
    /// Auth + signaling + web client on one port (the default).
    Serve(Server),
    /// The Auth service alone, on AUTH_PORT.
    Auth(Server),
    /// The Signaling service (and web client) alone; needs the Auth service's keys.
    Signal(Server),
    /// Mint a token offline with the configured signing key and print it.
    Token(Token),
    /// Signing keys: `keys generate` prints a new private key and its public JWK.
    #[command(subcommand)]
    Keys(Keys),
}

#[derive(Subcommand)]
enum Keys {
    /// Print a new private key (PKCS#8 PEM) for AUTH_SIGNING_KEY_FILE, then its public key
    /// as a JWK (for AUTH_PUBLIC_KEYS_FILE); the private key never leaves stdout.
    Generate {
        /// Signature algorithm: ed25519 (EdDSA) or es256 (ECDSA P-256).
        #[arg(long, value_enum, default_value = "ed25519")]
        alg: KeyAlg,
        /// Key id [default: the key's RFC 7638 thumbprint].
        #[arg(long)]
        kid: Option<String>,
    },
}

/// Every server setting.
#[derive(Args)]
struct Server {
    #[command(flatten)]
    settings: Settings,
}

/// What minting a token reads: its own flags and the secret and claims.
#[derive(Args)]
struct Token {
    /// User id (`sub`).
    #[arg(long)]
    user: String,
    /// Restrict the token to this room.
    #[arg(long)]
    room: Option<String>,
    /// Lifetime, e.g. `1h` (default: TOKEN_TTL).
    #[arg(long, value_parser = humantime::parse_duration)]
    ttl: Option<Duration>,
    #[command(flatten)]
    settings: TokenSettings,
}

fn main() -> ExitCode {
    let cli = Cli::parse_from(subcommand_first(std::env::args_os().collect()));
    let (role, settings) = match cli.command {
        None => (Role::Serve, cli.settings),
        Some(Command::Serve(s)) => (Role::Serve, s.settings),
        Some(Command::Auth(s)) => (Role::Auth, s.settings),
        Some(Command::Signal(s)) => (Role::Signal, s.settings),
        Some(Command::Keys(Keys::Generate { alg, kid })) => return generate(alg, kid.as_deref()),
        Some(Command::Token(token)) => {
            let settings = token.settings.into_settings();
            return match Config::from_settings(&settings, Role::Token) {
                Ok(config) => mint(&config, &token.user, token.room.as_deref(), token.ttl),
                Err(e) => refused(&e),
            };
        }
    };
    let config = match Config::from_settings(&settings, role) {
        Ok(c) => c,
        Err(e) => return refused(&e),
    };
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
    // Spawned rather than run by `block_on` itself: the accept loop then runs on a worker
    // thread, and the connections it spawns start there too instead of each waking a
    // worker from this thread (about a tenth of the server's CPU per join).
    let server = runtime.spawn(switchboard::server::run(config, role, bind));
    match runtime.block_on(server) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            tracing::error!("{e}");
            eprintln!("switchboard: {e}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("switchboard: the server stopped unexpectedly: {e}");
            ExitCode::FAILURE
        }
    }
}

fn refused(e: &switchboard::config::ConfigError) -> ExitCode {
    eprintln!("switchboard: refusing to start: {e}");
    ExitCode::from(2)
}

/// `args` with the subcommand moved in front of the flags, so settings written before it
/// (`switchboard --port 9000 serve`, which worked when they were global) still reach it.
fn subcommand_first(mut args: Vec<OsString>) -> Vec<OsString> {
    let command = Cli::command();
    let takes_value = |long: &str| {
        command
            .get_arguments()
            .any(|a| a.get_long() == Some(long) && a.get_action().takes_values())
    };
    let mut i = 1;
    while i < args.len() {
        let Some(arg) = args[i].to_str() else {
            return args;
        };
        if arg == "--" {
            return args;
        }
        if let Some(long) = arg.strip_prefix("--") {
            if !long.contains('=') && takes_value(long) {
                i += 1;
            }
        } else if !arg.starts_with('-') {
            if command.find_subcommand(arg).is_some() {
                let name = args.remove(i);
                args.insert(1, name);
            }
            return args;
        }
        i += 1;
    }
    args
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
    let longest = config.auth.max_lifetime;
    if ttl.is_some_and(|t| t > longest || t.is_zero()) {
        eprintln!(
            "switchboard: --ttl must be between 1s and {} (TOKEN_MAX_LIFETIME)",
            humantime::format_duration(longest)
        );
        return ExitCode::from(2);
    }
    let keys = ActiveKeys::new(config.auth.keyring.clone(), ApiKeys::default(), None);
    let Some(issuer) = TokenIssuer::with_keys(
        keys,
        &config.auth.issuer,
        &config.auth.audience,
        config.auth.token_ttl,
    ) else {
        eprintln!("switchboard: no signing key is configured");
        return ExitCode::from(2);
    };
    println!("{}", issuer.issue(user, room, ttl).token);
    ExitCode::SUCCESS
}

fn generate(alg: KeyAlg, kid: Option<&str>) -> ExitCode {
    match keygen::generate(alg, kid) {
        Ok(key) => {
            print!("{}", key.private_pem);
            println!(
                "{}",
                serde_json::to_string(&key.public_jwk).expect("a JWK serialises")
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("switchboard: {e}");
            ExitCode::FAILURE
        }
    }
}
