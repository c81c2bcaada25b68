use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// A device registry serving the Devices API from one embedded database file.
#[derive(Parser)]
#[command(
    name = "devicehub",
    version,
    args_conflicts_with_subcommands = true,
    after_help = devicehub::config::ENVIRONMENT_HELP
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP server (the default).
    #[command(after_help = devicehub::config::ENVIRONMENT_HELP)]
    Serve(ServeArgs),
    /// Print a signed access token for a tenant.
    Token(TokenArgs),
    /// Ask the configured server's /healthz: exit 0 when it answers 200
    /// within 2 s, else 1 with the reason (for Docker and systemd).
    Healthcheck(HealthcheckArgs),
    /// Check a backup snapshot and replace the configured database with it
    /// (stop the server first).
    Restore(RestoreArgs),
    /// Write the whole store (devices with their key hashes, and events) to
    /// stdout as NDJSON, the format `import` reads (docs/EXPORT.md).
    Export(ExportArgs),
    /// Read an export from stdin into the configured store, which must be
    /// empty (stop the server first).
    Import(ImportArgs),
}

#[derive(Args)]
struct ExportArgs {
    /// Configuration file (TOML); also $DEVICEHUB_CONFIG.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Read this backup snapshot instead of the configured database (which
    /// a running server holds locked).
    #[arg(long, value_name = "SNAPSHOT")]
    from: Option<PathBuf>,
    /// Export only this tenant.
    #[arg(long, value_name = "T")]
    tenant: Option<String>,
}

#[derive(Args)]
struct ImportArgs {
    /// Configuration file (TOML); also $DEVICEHUB_CONFIG.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

#[derive(Args)]
struct RestoreArgs {
    /// The snapshot file (`devicehub-<UTC time>.redb` from backup.dir).
    #[arg(value_name = "SNAPSHOT")]
    snapshot: PathBuf,
    /// Configuration file (TOML); also $DEVICEHUB_CONFIG.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

#[derive(Args)]
struct HealthcheckArgs {
    /// Configuration file (TOML); also $DEVICEHUB_CONFIG.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

#[derive(Args)]
struct ServeArgs {
    /// Configuration file (TOML); also $DEVICEHUB_CONFIG.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Listen on HOST:PORT instead of `server.bind` (port 0 picks a free one).
    #[arg(long, value_name = "HOST:PORT")]
    bind: Option<String>,
    /// Seed a demo tenant (only into an empty database) and print a
    /// dashboard URL with ready admin and read-only tokens.
    #[arg(long)]
    demo: bool,
}

#[derive(Args)]
struct TokenArgs {
    /// The tenant whose devices the token reaches.
    #[arg(long)]
    tenant: String,
    /// Space-separated scopes: `devices:read`, `admin`.
    #[arg(long)]
    scope: String,
    /// Lifetime: 90s, 30m, 12h, 7d or plain seconds.
    #[arg(long, default_value = "1h")]
    ttl: String,
    /// Who the token names (`sub`), shown in change logs.
    #[arg(long)]
    sub: Option<String>,
    /// Configuration file (TOML); also $DEVICEHUB_CONFIG.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

fn serve(args: ServeArgs) -> Result<(), devicehub::error::StartupError> {
    devicehub::cli::serve(args.config.as_deref(), args.bind.as_deref(), args.demo)
}

fn main() -> ExitCode {
    devicehub::logging::init();
    let cli = Cli::parse();
    let result = match cli.command {
        None => serve(cli.serve),
        Some(Command::Serve(args)) => serve(args),
        Some(Command::Token(args)) => devicehub::cli::token(
            args.config.as_deref(),
            &args.tenant,
            &args.scope,
            &args.ttl,
            args.sub.as_deref(),
        )
        .map(|token| println!("{token}")),
        Some(Command::Healthcheck(args)) => {
            devicehub::cli::healthcheck(args.config.as_deref()).map(|line| println!("{line}"))
        }
        Some(Command::Restore(args)) => {
            devicehub::cli::restore(args.config.as_deref(), &args.snapshot)
                .map(|line| println!("{line}"))
        }
        Some(Command::Export(args)) => devicehub::cli::export(
            args.config.as_deref(),
            args.from.as_deref(),
            args.tenant.as_deref(),
        )
        .map(|summary| eprintln!("{summary}")),
        Some(Command::Import(args)) => {
            devicehub::cli::import(args.config.as_deref()).map(|line| println!("{line}"))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("devicehub: {e}");
            ExitCode::FAILURE
        }
    }
}
