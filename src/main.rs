//! The `postern` binary: reads the command line and the environment, installs
//! tracing, runs one command, exits. Everything else lives in the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use postern::app::{self, App};
use postern::config::{Config, LogFormat, Sources, CONFIG_ENV_VAR};
use postern_vault::{Actor, RequestContext, Vault};

/// Postern: a privileged session gateway with a credential vault, session recording and a web console.
#[derive(Parser, Debug)]
#[command(name = "postern", version, about)]
struct Cli {
    /// Configuration file (TOML). Also POSTERN_CONFIG.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Data directory (overrides `data_dir`). Also POSTERN_DATA_DIR.
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the server (the default when no command is given).
    Run(RunArgs),
    /// Check the configuration: print every error (exit 1) or a summary (exit 0).
    Check,
    /// API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Re-wrap every secret under a new master key (stop the server first).
    RotateMasterKey {
        /// Secrets re-wrapped per transaction.
        #[arg(long, default_value_t = 100)]
        batch_size: usize,
        /// Pause between batches in milliseconds (limits load on a busy database).
        #[arg(long, default_value_t = 0)]
        pause_ms: u64,
    },
    /// Verify the audit chain (`--audit`) or a session recording (FILE).
    Verify {
        /// Verify the audit hash chain and name the first broken row.
        #[arg(long)]
        audit: bool,
        /// A recording file to verify.
        file: Option<PathBuf>,
    },
}

#[derive(Args, Debug, Default)]
struct RunArgs {
    /// Web/API listen address (overrides `[web] listen`).
    #[arg(long)]
    web_listen: Option<String>,
    /// SSH listen address (overrides `[ssh] listen`).
    #[arg(long)]
    ssh_listen: Option<String>,
    /// RDP listen address (overrides `[rdp] listen`).
    #[arg(long)]
    rdp_listen: Option<String>,
    /// Log filter (overrides `[log] level`), e.g. `debug` or `info,postern_web=debug`.
    #[arg(long)]
    log_level: Option<String>,
}

#[derive(Subcommand, Debug)]
enum TokenCommand {
    /// Create an API token for a user and print it once.
    Create {
        /// The user the token authenticates as.
        #[arg(long)]
        user: String,
        /// Lifetime, e.g. 30m, 1h, 7d.
        #[arg(long, default_value = "1h")]
        ttl: String,
        /// A name to recognise the token by in the audit.
        #[arg(long, default_value = "cli")]
        name: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let env: Vec<(String, String)> = std::env::vars().filter(|(k, _)| k.starts_with("POSTERN_")).collect();
    let file = cli
        .config
        .clone()
        .or_else(|| std::env::var_os(CONFIG_ENV_VAR).map(PathBuf::from));
    let mut overrides: Vec<(String, String)> = Vec::new();
    if let Some(d) = &cli.data_dir {
        overrides.push(("data_dir".into(), d.display().to_string()));
    }
    if let Some(Command::Run(r)) = &cli.command {
        for (k, v) in [
            ("web.listen", &r.web_listen),
            ("ssh.listen", &r.ssh_listen),
            ("rdp.listen", &r.rdp_listen),
            ("log.level", &r.log_level),
        ] {
            if let Some(v) = v {
                overrides.push((k.into(), v.clone()));
            }
        }
    }
    let loaded = Config::load(&Sources {
        file: file.as_deref(),
        env: &env,
        cli: &overrides,
    });
    if let Some(Command::Check) = cli.command {
        return match loaded {
            Ok(cfg) => {
                println!(
                    "configuration OK{}",
                    file.as_ref().map(|f| format!(" ({})", f.display())).unwrap_or_default()
                );
                print!("{}", cfg.summary());
                ExitCode::SUCCESS
            }
            Err(errs) => {
                eprintln!("{} configuration error(s):", errs.len());
                for e in errs.iter() {
                    eprintln!("  {e}");
                }
                ExitCode::FAILURE
            }
        };
    }
    let cfg = match loaded {
        Ok(c) => c,
        Err(errs) => {
            eprintln!("postern: {} configuration error(s):", errs.len());
            for e in errs.iter() {
                eprintln!("  {e}");
            }
            eprintln!("(run `postern check` to see them again)");
            return ExitCode::from(2);
        }
    };
    install_tracing(&cfg);
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("postern: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        match cli.command.unwrap_or(Command::Run(RunArgs::default())) {
            Command::Run(_) => run(&cfg).await,
            Command::Check => unreachable!("handled above"),
            Command::Token(TokenCommand::Create { user, ttl, name }) => token_create(&cfg, &user, &ttl, &name).await,
            Command::RotateMasterKey { batch_size, pause_ms } => rotate(&cfg, batch_size, pause_ms).await,
            Command::Verify { audit, file } => verify(&cfg, audit, file).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("postern: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn install_tracing(cfg: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(&cfg.log.level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Libraries that log secrets at debug level are held below it whatever the configured level.
    let filter = postern_gateway::rdp::QUIET_LOG_DIRECTIVES
        .iter()
        .filter_map(|d| d.parse().ok())
        .fold(filter, |f, d| f.add_directive(d));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cfg.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

async fn run(cfg: &Config) -> Result<ExitCode> {
    let running = App::start(cfg).await?;
    let r = &running.report;
    if let Some(path) = &r.vault.created_master_key {
        tracing::info!(path = %path.display(), key_id = %r.vault.master_key_id, "generated a new master key (back it up: without it the vault cannot be read)");
    }
    if r.vault.created_database {
        tracing::info!(url = %cfg.vault.database_url, "created the database");
    }
    if r.vault.rotation_pending {
        tracing::warn!("an interrupted master-key rotation was found; every secret is readable; run `postern rotate-master-key` again to finish it");
    }
    for path in &r.host_keys_created {
        tracing::info!(path = %path.display(), "generated an SSH host key");
    }
    if let Some(path) = &r.recording_key_created {
        tracing::info!(path = %path.display(), "generated the recording signing key (ed25519)");
    }
    if let Some(path) = &r.tls_generated {
        tracing::info!(path = %path.display(), "generated a self-signed TLS certificate");
    }
    if let Some(admin) = &r.initial_admin {
        let file = r
            .initial_password_file
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        tracing::info!(user = %admin.username, file = %file, "created the first administrator; its password is printed once below and kept in the file until changed");
        eprintln!();
        eprintln!("  First administrator: {}", admin.username);
        eprintln!("  Password:            {}", admin.password.expose());
        eprintln!("  (also in {file}, removed when the password is changed at first login)");
        eprintln!();
    }
    let token = running.shutdown_token();
    tokio::select! {
        _ = shutdown_signal() => tracing::info!("shutdown requested"),
        _ = token.cancelled() => {}
    }
    if running.shutdown().await {
        tracing::info!("stopped cleanly");
        Ok(ExitCode::SUCCESS)
    } else {
        tracing::warn!("some tasks did not stop within the grace period");
        Ok(ExitCode::FAILURE)
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
            (Ok(mut i), Ok(mut t)) => {
                tokio::select! {
                    _ = i.recv() => {}
                    _ = t.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn open_vault(cfg: &Config) -> Result<Vault> {
    if !cfg.data_dir.exists() {
        anyhow::bail!(
            "data directory {} does not exist; start the server once first (`postern run`)",
            cfg.data_dir.display()
        );
    }
    let (vault, report) = Vault::open(app::vault_options(cfg))
        .await
        .context("opening the vault")?;
    if report.created_master_key.is_some() {
        tracing::info!("generated a new master key");
    }
    Ok(vault)
}

fn parse_ttl(s: &str) -> Result<Duration> {
    let (num, unit) = s
        .trim()
        .split_at(s.trim().find(|c: char| !c.is_ascii_digit()).unwrap_or(s.trim().len()));
    let n: u64 = num
        .parse()
        .with_context(|| format!("--ttl {s:?}: expected a number followed by s, m, h or d"))?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => anyhow::bail!("--ttl {s:?}: unit must be s, m, h or d"),
    };
    Ok(Duration::from_secs(n.saturating_mul(mult)))
}

async fn token_create(cfg: &Config, user: &str, ttl: &str, name: &str) -> Result<ExitCode> {
    let ttl = parse_ttl(ttl)?;
    let vault = open_vault(cfg).await?;
    let issued = vault
        .create_token(&Actor::system(), user, ttl, name, &RequestContext::default())
        .await
        .with_context(|| format!("creating a token for {user}"))?;
    println!("{}", issued.token.expose());
    eprintln!("token for {} expires {}", issued.actor.username, issued.expires_at);
    vault.close().await;
    Ok(ExitCode::SUCCESS)
}

async fn rotate(cfg: &Config, batch_size: usize, pause_ms: u64) -> Result<ExitCode> {
    let _lock = app::DataDirLock::acquire(&cfg.data_dir).context("stop the server before rotating the master key")?;
    let vault = open_vault(cfg).await?;
    let r = vault
        .rotate_master_key(batch_size, Duration::from_millis(pause_ms))
        .await
        .context("rotating the master key")?;
    println!(
        "master key rotated: {} -> {}; {} secrets re-wrapped{}",
        r.old_key_id,
        r.new_key_id,
        r.rewrapped,
        if r.resumed {
            " (resumed an interrupted rotation)"
        } else {
            ""
        }
    );
    vault.close().await;
    Ok(ExitCode::SUCCESS)
}

async fn verify(cfg: &Config, audit: bool, file: Option<PathBuf>) -> Result<ExitCode> {
    match (audit, file) {
        (true, None) => {
            let vault = open_vault(cfg).await?;
            let v = vault.verify_audit().await?;
            vault.close().await;
            match v.first_broken {
                None => {
                    println!("audit chain OK: {} events, head {}", v.events, v.head);
                    Ok(ExitCode::SUCCESS)
                }
                Some(b) => {
                    println!("audit chain BROKEN at event {}: {}", b.seq, b.problem);
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        (false, Some(f)) => {
            let key = postern::recording::load_public_key(&cfg.data_dir)?;
            match postern_recorder::verify(&f, &key) {
                Ok(v) if !v.truncated => {
                    println!(
                        "recording OK: sealed and signed; {} chunks, {} events, final hash {}{}",
                        v.chunks,
                        v.events,
                        v.final_hash,
                        if v.data_lost {
                            " (the recorder lost data: the session was ended)"
                        } else {
                            ""
                        }
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Ok(v) => {
                    println!(
                        "recording TRUNCATED (no seal: the recorder stopped mid-session); the first {} chunks ({} events) are intact, last hash {}",
                        v.chunks, v.events, v.final_hash
                    );
                    Ok(ExitCode::from(2))
                }
                Err(e) => {
                    println!("recording BAD: {e}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        _ => anyhow::bail!("give either --audit or a recording FILE"),
    }
}
