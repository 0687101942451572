//! Typed configuration for Postern.
//!
//! Values are layered, lowest precedence first:
//!
//! 1. built-in defaults,
//! 2. the TOML configuration file (optional, see [`Sources::file`]),
//! 3. environment variables named `POSTERN_<SECTION>_<KEY>` (see [`Sources::env`]),
//! 4. command-line overrides given as `(dotted key, raw value)` (see [`Sources::cli`]).
//!
//! Every value is parsed straight into its typed form. Unknown keys, values of
//! the wrong type and invalid values are all errors; every error found in every
//! layer is collected and returned together in [`ConfigErrors`], each naming
//! where the offending value came from (`path:line:col` for the file, the
//! variable name for the environment, the dotted key for the command line).
//!
//! The paths `vault.master_key_file`, `vault.database_url`, `web.tls_cert`,
//! `web.tls_key` and `ssh.host_key_dir` default to locations under the *final*
//! `data_dir` (after all layers) unless one of the layers sets them.
//!
//! `conf/postern.example.toml` documents every key together with its default.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use postern_web::IpNet;
use toml_edit::{ImDocument, Item, TableLike, Value};

/// Default for the top-level `data_dir` key.
pub const DEFAULT_DATA_DIR: &str = "./postern-data";
/// Name of the environment variable that the CLI reads the config file path
/// from. It is ignored by [`Config::load`].
pub const CONFIG_ENV_VAR: &str = "POSTERN_CONFIG";
/// Reserved environment variable (log filter override); ignored by
/// [`Config::load`].
pub const LOG_ENV_VAR: &str = "POSTERN_LOG";
/// Prefix of every environment variable considered by [`Config::load`].
pub const ENV_PREFIX: &str = "POSTERN_";

/// Longest duration accepted anywhere in the configuration (100 years), so
/// that adding a configured duration to a timestamp can never overflow.
const MAX_DURATION: Duration = Duration::from_secs(36_500 * 86_400);
/// Maximum number of characters of user-provided text echoed in an error.
const MAX_ECHO: usize = 40;
/// Maximum number of characters of an unknown key name echoed in an error.
const MAX_KEY_ECHO: usize = 64;

// ---------------------------------------------------------------------------
// Public configuration types
// ---------------------------------------------------------------------------

/// The complete, validated configuration of a Postern instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Directory holding all state (`data_dir`, default `./postern-data`).
    pub data_dir: PathBuf,
    /// Credential vault settings (`[vault]`).
    pub vault: VaultConfig,
    /// Authentication policy of the web console (`[auth]`).
    pub auth: AuthConfig,
    /// Web console / API listener (`[web]`).
    pub web: WebConfig,
    /// SSH gateway listener (`[ssh]`).
    pub ssh: SshConfig,
    /// RDP gateway listener (`[rdp]`).
    pub rdp: RdpConfig,
    /// Session recordings (`[recording]`).
    pub recording: RecordingConfig,
    /// Logging (`[log]`).
    pub log: LogConfig,
    /// How long in-flight sessions get to finish on shutdown
    /// (`shutdown_grace`, default `5s`).
    pub shutdown_grace: Duration,
}

/// `[vault]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultConfig {
    /// File holding the vault master key (`master_key_file`, default
    /// `<data_dir>/master.key`).
    pub master_key_file: PathBuf,
    /// Database URL (`database_url`, default `sqlite://<data_dir>/postern.db`).
    /// Must start with `sqlite:`.
    pub database_url: String,
    /// How often expired access-request check-outs are checked in (and their
    /// passwords reset) and passwords past their maximum age are rotated
    /// (`sweep_interval`, default `30s`, non-zero).
    pub sweep_interval: Duration,
    /// URL that checks ticket ids of access requests (`ticket_webhook_url`,
    /// default empty: ticket ids are recorded unchecked). Postern POSTs
    /// `{"ticket_id", "requester", "account", "reason"}` and expects
    /// `{"valid": true}`.
    pub ticket_webhook_url: String,
    /// A reason is mandatory for every password retrieval and every gateway
    /// session (`require_reason`, default false). Sessions take it from the
    /// user's checked-out access request (approved at once for accounts that
    /// need no approval); the reason is in the audit.
    pub require_reason: bool,
}

/// `[auth]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthConfig {
    /// Consecutive failed logins before an account is locked
    /// (`lockout_threshold`, default 5, at least 1).
    pub lockout_threshold: u32,
    /// How long a locked account stays locked (`lockout_duration`, default
    /// `15m`, non-zero).
    pub lockout_duration: Duration,
    /// Lifetime of an issued session token (`token_ttl`, default `12h`,
    /// non-zero).
    pub token_ttl: Duration,
    /// Minimum length of user passwords (`min_password_length`, default 12,
    /// at least 8).
    pub min_password_length: usize,
    /// Refuse to make any further user a super administrator
    /// (`deny_new_super_admins`, default false). Existing super admins keep
    /// the flag and may still give it up.
    pub deny_new_super_admins: bool,
}

/// `[web]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebConfig {
    /// Listen address of the HTTPS console and API (`listen`, default
    /// `127.0.0.1:8443`).
    pub listen: SocketAddr,
    /// PEM certificate chain (`tls_cert`, default `<data_dir>/tls/cert.pem`).
    pub tls_cert: PathBuf,
    /// PEM private key (`tls_key`, default `<data_dir>/tls/key.pem`).
    pub tls_key: PathBuf,
    /// A browser session with no request for this long ends
    /// (`session_idle_timeout`, default `15m`, non-zero).
    pub session_idle_timeout: Duration,
    /// When not empty, only these networks reach the web console (`ui_allow`,
    /// default empty: everyone).
    pub ui_allow: Vec<IpNet>,
    /// These networks never reach the web console (`ui_deny`, default empty).
    pub ui_deny: Vec<IpNet>,
    /// When not empty, only these networks reach the API (`api_allow`,
    /// default empty: everyone).
    pub api_allow: Vec<IpNet>,
    /// These networks never reach the API (`api_deny`, default empty).
    pub api_deny: Vec<IpNet>,
}

/// `[ssh]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshConfig {
    /// Listen address of the SSH gateway (`listen`, default `127.0.0.1:2222`).
    pub listen: SocketAddr,
    /// Directory holding the gateway's own host keys (`host_key_dir`, default
    /// `<data_dir>/ssh`).
    pub host_key_dir: PathBuf,
    /// Timeout to connect and authenticate to a target, and to each landing
    /// server on the way (`connect_timeout`, default `10s`, non-zero).
    pub connect_timeout: Duration,
    /// A client that has not authenticated within this time after
    /// connecting is disconnected (`login_grace_time`, default `30s`,
    /// non-zero).
    pub login_grace_time: Duration,
    /// A session with no traffic in either direction for this long is closed
    /// (`idle_timeout`, default `30m`, non-zero).
    pub idle_timeout: Duration,
    /// Longest a session may last before it is closed
    /// (`max_session_duration`, default `12h`). [`Duration::ZERO`] (written
    /// `"0s"` or `0`) means unlimited.
    pub max_session_duration: Duration,
    /// Connections (authenticated or not) the SSH listener serves at once;
    /// further connections are refused (`max_connections`, default 1000, at
    /// least 1).
    pub max_connections: u32,
    /// Settings that weaken security (`[ssh.dangerous]`).
    pub dangerous: SshDangerous,
}

/// `[ssh.dangerous]` section: settings that weaken security. All default to
/// the safe choice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshDangerous {
    /// Connect to targets whose host key is unknown or changed
    /// (`accept_any_target_host_key`, default `false`).
    pub accept_any_target_host_key: bool,
}

/// `[rdp]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RdpConfig {
    /// Listen address of the RDP gateway (`listen`, default `127.0.0.1:3389`).
    pub listen: SocketAddr,
    /// How long a one-time RDP ticket from the web console stays valid (`ticket_ttl`, default `5m`, at most
    /// `1h`). Tickets live in memory only and are lost on restart.
    pub ticket_ttl: Duration,
    /// Settings that weaken security (`[rdp.dangerous]`).
    pub dangerous: RdpDangerous,
}

/// `[rdp.dangerous]` section: settings that weaken security. All default to the safe choice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RdpDangerous {
    /// Connect to RDP targets whose TLS certificate differs from the one pinned on first use
    /// (`accept_any_target_certificate`, default `false`).
    pub accept_any_target_certificate: bool,
}

/// `[recording]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingConfig {
    /// Record the user's keystrokes too (`record_input`, default `false`:
    /// keystrokes may carry passwords typed at `sudo` prompts, which terminals
    /// do not echo and output recording therefore never sees).
    pub record_input: bool,
    /// Sealed recordings older than this many days are deleted (file, catalog
    /// row, search index) at start and every 24 hours (`retention_days`,
    /// default 0 = keep forever; at most 36500).
    pub retention_days: u32,
}

/// `[log]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// `tracing_subscriber::EnvFilter` directive (`level`, default `info`,
    /// non-empty).
    pub level: String,
    /// Output format (`format`, `"text"` or `"json"`, default `"text"`).
    pub format: LogFormat,
}

/// Log output format (`[log] format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human readable lines (`"text"`, the default).
    #[default]
    Text,
    /// One JSON object per line (`"json"`).
    Json,
}

impl LogFormat {
    /// The configuration spelling: `"text"` or `"json"`.
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where configuration values come from, lowest precedence first:
/// defaults < file < env < cli.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sources<'a> {
    /// The TOML config file. `None` means no file (pure defaults);
    /// `Some(path)` means the file must exist and be readable.
    pub file: Option<&'a Path>,
    /// The process environment, passed in (the module never reads
    /// `std::env` itself). Only variables starting with `POSTERN_` are
    /// considered; `POSTERN_CONFIG` and `POSTERN_LOG` are ignored.
    pub env: &'a [(String, String)],
    /// Command-line overrides as `(dotted key, raw value)`, e.g.
    /// `("data_dir", "/x")` or `("web.listen", "127.0.0.1:0")`. Later
    /// entries win over earlier ones.
    pub cli: &'a [(String, String)],
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// Where a configuration value (or an error about it) comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The built-in default.
    Default,
    /// The config file, at a 1-based line and column (columns count
    /// characters, not bytes).
    File {
        /// Path of the config file, as given in [`Sources::file`].
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        col: usize,
    },
    /// An environment variable.
    Env {
        /// Variable name, e.g. `POSTERN_WEB_LISTEN`.
        var: String,
    },
    /// A command-line override.
    Cli {
        /// Dotted key, e.g. `web.listen`.
        key: String,
    },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("built-in default"),
            Origin::File { path, line, col } => {
                write!(f, "{}:{line}:{col}", one_line(&path.display().to_string()))
            }
            Origin::Env { var } => write!(f, "environment variable {var}"),
            Origin::Cli { key } => write!(f, "command-line override `{key}`"),
        }
    }
}

/// One configuration problem. Its `Display` is a single line that starts with
/// the origin of the problem.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read (missing, unreadable, not UTF-8).
    #[error("{}: cannot read config file: {source}", one_line(&path.display().to_string()))]
    Io {
        /// Path of the config file.
        path: PathBuf,
        /// Underlying I/O error.
        source: std::io::Error,
    },
    /// The config file is not valid TOML.
    #[error("{}:{line}:{col}: invalid TOML: {msg}", one_line(&path.display().to_string()))]
    Syntax {
        /// Path of the config file.
        path: PathBuf,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column (in characters) of the error.
        col: usize,
        /// Parser message (single line).
        msg: String,
    },
    /// A key (file), variable (env) or override (cli) that Postern does not
    /// know. The value is never echoed; the key is truncated if very long.
    #[error("{origin}: {}", unknown_key_message(origin, key))]
    UnknownKey {
        /// Where the key was found.
        origin: Origin,
        /// Dotted key (file, cli) or variable name (env), sanitized.
        key: String,
    },
    /// A file value has the wrong TOML type (e.g. a string where an integer
    /// is expected, or a value where a table is expected).
    #[error("{origin}: `{key}` must be {expected}, found {found}")]
    WrongType {
        /// Where the value was found.
        origin: Origin,
        /// Dotted key.
        key: String,
        /// What was expected, e.g. `a string (socket address)`.
        expected: String,
        /// TOML type found, e.g. `integer`.
        found: String,
    },
    /// A value has the right type but is not acceptable.
    #[error("{origin}: invalid value {value_description} for `{key}`: expected {expected}")]
    InvalidValue {
        /// Where the value was found.
        origin: Origin,
        /// Dotted key.
        key: String,
        /// The offending value, quoted, escaped and truncated to ~40 chars.
        value_description: String,
        /// What an acceptable value looks like.
        expected: String,
    },
    /// Two listeners are configured on the same address (port non-zero).
    #[error("{second_origin}: `{second_key}` = {addr} is already used by `{first_key}` ({first_origin})")]
    ListenConflict {
        /// The shared address.
        addr: SocketAddr,
        /// Dotted key of the first listener.
        first_key: String,
        /// Where the first listener's address came from.
        first_origin: Origin,
        /// Dotted key of the second listener.
        second_key: String,
        /// Where the second listener's address came from.
        second_origin: Origin,
    },
}

/// All problems found while loading the configuration (never empty when
/// returned by [`Config::load`]). `Display` prints one error per line.
#[derive(Debug, thiserror::Error)]
#[error("{}", join_lines(.0))]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    /// Number of errors.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no errors.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Iterates over the errors.
    pub fn iter(&self) -> std::slice::Iter<'_, ConfigError> {
        self.0.iter()
    }
}

fn unknown_key_message(origin: &Origin, key: &str) -> String {
    match origin {
        Origin::Env { .. } => {
            "unknown variable (not a POSTERN_<SECTION>_<KEY> setting, POSTERN_CONFIG or POSTERN_LOG)".to_owned()
        }
        _ => format!("unknown key `{key}`"),
    }
}

fn join_lines(errors: &[ConfigError]) -> String {
    errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n")
}

/// Escapes control characters so that the result is a single line.
fn one_line(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() {
                c.escape_debug().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect()
}

/// Single-line, truncated rendering of user-provided text.
fn truncated(s: &str, max: usize) -> String {
    let mut out = one_line(&s.chars().take(max).collect::<String>());
    if s.chars().nth(max).is_some() {
        out.push('…');
    }
    out
}

/// Quoted, escaped, truncated rendering of a user-provided value.
fn quoted(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars().take(MAX_ECHO) {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.extend(c.escape_debug()),
            c => out.push(c),
        }
    }
    out.push('"');
    if s.chars().nth(MAX_ECHO).is_some() {
        out.push('…');
    }
    out
}

// ---------------------------------------------------------------------------
// Key registry
// ---------------------------------------------------------------------------

/// Every leaf key of the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Setting {
    DataDir,
    ShutdownGrace,
    VaultMasterKeyFile,
    VaultDatabaseUrl,
    VaultSweepInterval,
    VaultTicketWebhookUrl,
    VaultRequireReason,
    AuthLockoutThreshold,
    AuthLockoutDuration,
    AuthTokenTtl,
    AuthMinPasswordLength,
    AuthDenyNewSuperAdmins,
    WebListen,
    WebTlsCert,
    WebTlsKey,
    WebSessionIdleTimeout,
    WebUiAllow,
    WebUiDeny,
    WebApiAllow,
    WebApiDeny,
    SshListen,
    SshHostKeyDir,
    SshConnectTimeout,
    SshLoginGraceTime,
    SshIdleTimeout,
    SshMaxSessionDuration,
    SshMaxConnections,
    SshDangerousAcceptAnyTargetHostKey,
    RdpListen,
    RdpTicketTtl,
    RdpDangerousAcceptAnyTargetCertificate,
    RecordingRecordInput,
    RecordingRetentionDays,
    LogLevel,
    LogFormat,
}

const ALL_KEYS: [Setting; 35] = [
    Setting::DataDir,
    Setting::ShutdownGrace,
    Setting::VaultMasterKeyFile,
    Setting::VaultDatabaseUrl,
    Setting::VaultSweepInterval,
    Setting::VaultTicketWebhookUrl,
    Setting::VaultRequireReason,
    Setting::AuthLockoutThreshold,
    Setting::AuthLockoutDuration,
    Setting::AuthTokenTtl,
    Setting::AuthMinPasswordLength,
    Setting::AuthDenyNewSuperAdmins,
    Setting::WebListen,
    Setting::WebTlsCert,
    Setting::WebTlsKey,
    Setting::WebSessionIdleTimeout,
    Setting::WebUiAllow,
    Setting::WebUiDeny,
    Setting::WebApiAllow,
    Setting::WebApiDeny,
    Setting::SshListen,
    Setting::SshHostKeyDir,
    Setting::SshConnectTimeout,
    Setting::SshLoginGraceTime,
    Setting::SshIdleTimeout,
    Setting::SshMaxSessionDuration,
    Setting::SshMaxConnections,
    Setting::SshDangerousAcceptAnyTargetHostKey,
    Setting::RdpListen,
    Setting::RdpTicketTtl,
    Setting::RdpDangerousAcceptAnyTargetCertificate,
    Setting::RecordingRecordInput,
    Setting::RecordingRetentionDays,
    Setting::LogLevel,
    Setting::LogFormat,
];

impl Setting {
    /// The dotted key, e.g. `ssh.dangerous.accept_any_target_host_key`.
    fn dotted(self) -> &'static str {
        match self {
            Setting::DataDir => "data_dir",
            Setting::ShutdownGrace => "shutdown_grace",
            Setting::VaultMasterKeyFile => "vault.master_key_file",
            Setting::VaultDatabaseUrl => "vault.database_url",
            Setting::VaultSweepInterval => "vault.sweep_interval",
            Setting::VaultTicketWebhookUrl => "vault.ticket_webhook_url",
            Setting::VaultRequireReason => "vault.require_reason",
            Setting::AuthLockoutThreshold => "auth.lockout_threshold",
            Setting::AuthLockoutDuration => "auth.lockout_duration",
            Setting::AuthTokenTtl => "auth.token_ttl",
            Setting::AuthMinPasswordLength => "auth.min_password_length",
            Setting::AuthDenyNewSuperAdmins => "auth.deny_new_super_admins",
            Setting::WebListen => "web.listen",
            Setting::WebTlsCert => "web.tls_cert",
            Setting::WebTlsKey => "web.tls_key",
            Setting::WebSessionIdleTimeout => "web.session_idle_timeout",
            Setting::WebUiAllow => "web.ui_allow",
            Setting::WebUiDeny => "web.ui_deny",
            Setting::WebApiAllow => "web.api_allow",
            Setting::WebApiDeny => "web.api_deny",
            Setting::SshListen => "ssh.listen",
            Setting::SshHostKeyDir => "ssh.host_key_dir",
            Setting::SshConnectTimeout => "ssh.connect_timeout",
            Setting::SshLoginGraceTime => "ssh.login_grace_time",
            Setting::SshIdleTimeout => "ssh.idle_timeout",
            Setting::SshMaxSessionDuration => "ssh.max_session_duration",
            Setting::SshMaxConnections => "ssh.max_connections",
            Setting::SshDangerousAcceptAnyTargetHostKey => "ssh.dangerous.accept_any_target_host_key",
            Setting::RdpListen => "rdp.listen",
            Setting::RdpTicketTtl => "rdp.ticket_ttl",
            Setting::RdpDangerousAcceptAnyTargetCertificate => "rdp.dangerous.accept_any_target_certificate",
            Setting::RecordingRecordInput => "recording.record_input",
            Setting::RecordingRetentionDays => "recording.retention_days",
            Setting::LogLevel => "log.level",
            Setting::LogFormat => "log.format",
        }
    }

    /// The environment variable, e.g. `POSTERN_WEB_LISTEN`.
    fn env_var(self) -> String {
        format!("{ENV_PREFIX}{}", self.dotted().replace('.', "_").to_ascii_uppercase())
    }

    fn segments(self) -> impl Iterator<Item = &'static str> {
        self.dotted().split('.')
    }

    fn from_dotted(s: &str) -> Option<Setting> {
        ALL_KEYS.into_iter().find(|k| k.dotted() == s)
    }

    fn from_env_var(s: &str) -> Option<Setting> {
        ALL_KEYS.into_iter().find(|k| k.env_var() == s)
    }

    fn from_segments(path: &[String]) -> Option<Setting> {
        ALL_KEYS
            .into_iter()
            .find(|k| k.segments().eq(path.iter().map(String::as_str)))
    }

    /// Whether `path` names a section (a strict prefix of some key).
    fn is_section(path: &[String]) -> bool {
        ALL_KEYS.into_iter().any(|k| {
            let segs: Vec<&str> = k.segments().collect();
            segs.len() > path.len() && segs.iter().zip(path).all(|(a, b)| *a == b.as_str())
        })
    }
}

// ---------------------------------------------------------------------------
// Raw values and typed parsing
// ---------------------------------------------------------------------------

/// A value before typing: from the file (typed TOML) or from env/cli (text).
#[derive(Clone, Copy)]
enum Raw<'a> {
    Toml(&'a Value),
    Text(&'a str),
}

impl Raw<'_> {
    fn describe(self) -> String {
        match self {
            Raw::Text(s) => quoted(s),
            Raw::Toml(v) => match v {
                Value::String(s) => quoted(s.value()),
                Value::Integer(i) => i.value().to_string(),
                Value::Float(x) => truncated(&x.value().to_string(), MAX_ECHO),
                Value::Boolean(b) => b.value().to_string(),
                Value::Datetime(_) => "a datetime".to_owned(),
                Value::Array(_) => "an array".to_owned(),
                Value::InlineTable(_) => "an inline table".to_owned(),
            },
        }
    }
}

/// Result of the private parsing helpers (boxed: `ConfigError` is large).
type Fallible<T> = Result<T, Box<ConfigError>>;

/// Parsing context of one value: which key, where from.
struct Ctx<'a> {
    key: Setting,
    origin: &'a Origin,
    raw: Raw<'a>,
}

impl<'a> Ctx<'a> {
    fn invalid(&self, expected: &str) -> Box<ConfigError> {
        Box::new(ConfigError::InvalidValue {
            origin: self.origin.clone(),
            key: self.key.dotted().to_owned(),
            value_description: self.raw.describe(),
            expected: expected.to_owned(),
        })
    }

    fn wrong_type(&self, expected: &str, found: &str) -> Box<ConfigError> {
        Box::new(ConfigError::WrongType {
            origin: self.origin.clone(),
            key: self.key.dotted().to_owned(),
            expected: expected.to_owned(),
            found: found.to_owned(),
        })
    }

    /// The value as text; file values must be TOML strings.
    fn text(&self, what: &str) -> Fallible<&'a str> {
        match self.raw {
            Raw::Text(s) => Ok(s),
            Raw::Toml(Value::String(s)) => Ok(s.value()),
            Raw::Toml(v) => Err(self.wrong_type(&format!("a string ({what})"), v.type_name())),
        }
    }

    fn path(&self) -> Fallible<PathBuf> {
        const EXPECTED: &str = "a non-empty path";
        let s = self.text("path")?;
        if s.is_empty() || s.contains('\0') {
            return Err(self.invalid(EXPECTED));
        }
        Ok(PathBuf::from(s))
    }

    fn database_url(&self) -> Fallible<String> {
        const EXPECTED: &str = "a SQLite URL such as \"sqlite:///var/lib/postern/postern.db\"";
        let s = self.text("database URL")?;
        if !s.starts_with("sqlite:") || s.len() <= "sqlite:".len() || s.contains('\0') {
            return Err(self.invalid(EXPECTED));
        }
        Ok(s.to_owned())
    }

    fn webhook_url(&self) -> Fallible<String> {
        const EXPECTED: &str = "empty, or an http:// or https:// URL";
        let s = self.text("URL")?;
        let ok = s.is_empty()
            || ((s.starts_with("https://") || s.starts_with("http://"))
                && s.len() > "https://".len()
                && !s.chars().any(|c| c.is_control() || c.is_whitespace()));
        if ok {
            Ok(s.to_owned())
        } else {
            Err(self.invalid(EXPECTED))
        }
    }

    fn log_level(&self) -> Fallible<String> {
        const EXPECTED: &str = "a non-empty log filter directive such as \"info\" or \"postern=debug,info\"";
        let s = self.text("log filter directive")?;
        if s.trim().is_empty() || s.chars().any(char::is_control) {
            return Err(self.invalid(EXPECTED));
        }
        Ok(s.to_owned())
    }

    fn log_format(&self) -> Fallible<LogFormat> {
        match self.text("log format")? {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(self.invalid("\"text\" or \"json\"")),
        }
    }

    fn socket_addr(&self) -> Fallible<SocketAddr> {
        const EXPECTED: &str = "a socket address such as \"127.0.0.1:8443\" or \"[::1]:8443\"";
        self.text("socket address")?.parse().map_err(|_| self.invalid(EXPECTED))
    }

    fn duration(&self, allow_zero: bool) -> Fallible<Duration> {
        let expected = format!(
            "a {}duration such as \"500ms\", \"30s\", \"15m\", \"12h\", \"7d\" or \"1h30m\" \
             (units d, h, m, s, ms, us, ns; at most 36500d)",
            if allow_zero { "" } else { "non-zero " }
        );
        let s = self.text("duration")?;
        match parse_duration(s) {
            Some(d) if d <= MAX_DURATION && (allow_zero || !d.is_zero()) => Ok(d),
            _ => Err(self.invalid(&expected)),
        }
    }

    /// A duration where zero may also be written as a bare `0` (text, or a
    /// TOML integer `0`); zero is allowed.
    fn duration_or_bare_zero(&self) -> Fallible<Duration> {
        match self.raw {
            Raw::Text("0") => Ok(Duration::ZERO),
            Raw::Toml(Value::String(s)) if s.value() == "0" => Ok(Duration::ZERO),
            Raw::Toml(Value::Integer(i)) if *i.value() == 0 => Ok(Duration::ZERO),
            _ => self.duration(true),
        }
    }

    /// An integer in `min..=max`.
    fn integer(&self, min: u64, max: u64) -> Fallible<u64> {
        let expected = format!("an integer between {min} and {max}");
        let n: Option<u64> = match self.raw {
            Raw::Text(s) => s.parse::<u64>().ok(),
            Raw::Toml(Value::Integer(i)) => u64::try_from(*i.value()).ok(),
            Raw::Toml(v) => return Err(self.wrong_type("an integer", v.type_name())),
        };
        match n {
            Some(n) if (min..=max).contains(&n) => Ok(n),
            _ => Err(self.invalid(&expected)),
        }
    }

    /// A list of networks: a TOML array of strings, or (environment, command
    /// line) one comma-separated string; each item a CIDR network or a single
    /// address. An empty array or string is the empty list.
    fn networks(&self) -> Fallible<Vec<IpNet>> {
        const EXPECTED: &str = "a list of networks in CIDR notation such as [\"10.0.0.0/8\", \"2001:db8::/32\"] \
             (single addresses allowed; in the environment or on the command line: comma-separated)";
        let items: Vec<&str> = match self.raw {
            Raw::Text(s) => s.split(',').map(str::trim).filter(|s| !s.is_empty()).collect(),
            Raw::Toml(Value::Array(a)) => {
                let mut v = Vec::new();
                for item in a.iter() {
                    match item {
                        Value::String(s) => v.push(s.value().as_str()),
                        other => return Err(self.wrong_type("an array of strings (networks)", other.type_name())),
                    }
                }
                v
            }
            Raw::Toml(v) => return Err(self.wrong_type("an array of strings (networks)", v.type_name())),
        };
        items
            .into_iter()
            .map(|i| postern_web::parse_network(i).ok_or_else(|| self.invalid(EXPECTED)))
            .collect()
    }

    fn boolean(&self) -> Fallible<bool> {
        match self.raw {
            Raw::Toml(Value::Boolean(b)) => Ok(*b.value()),
            Raw::Toml(v) => Err(self.wrong_type("a boolean (true or false)", v.type_name())),
            Raw::Text("true" | "1") => Ok(true),
            Raw::Text("false" | "0") => Ok(false),
            Raw::Text(_) => Err(self.invalid("\"true\", \"false\", \"1\" or \"0\"")),
        }
    }
}

/// Parses `500ms`, `30s`, `15m`, `12h`, `7d`, `1h30m`, ... Units must appear
/// at most once each, largest first. Returns `None` on garbage or overflow.
fn parse_duration(s: &str) -> Option<Duration> {
    const NANOS_PER_SEC: u128 = 1_000_000_000;
    if s.is_empty() {
        return None;
    }
    let mut rest = s;
    let mut total: u128 = 0;
    let mut last_rank: Option<usize> = None;
    while !rest.is_empty() {
        let digits_end = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits_end == 0 {
            return None;
        }
        let n: u64 = rest[..digits_end].parse().ok()?;
        rest = &rest[digits_end..];
        let unit_end = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let (rank, nanos_per_unit): (usize, u128) = match &rest[..unit_end] {
            "d" => (0, 86_400 * NANOS_PER_SEC),
            "h" => (1, 3_600 * NANOS_PER_SEC),
            "m" => (2, 60 * NANOS_PER_SEC),
            "s" => (3, NANOS_PER_SEC),
            "ms" => (4, 1_000_000),
            "us" => (5, 1_000),
            "ns" => (6, 1),
            _ => return None,
        };
        if last_rank.is_some_and(|last| rank <= last) {
            return None;
        }
        last_rank = Some(rank);
        total = total.checked_add(u128::from(n).checked_mul(nanos_per_unit)?)?;
        rest = &rest[unit_end..];
    }
    let secs = u64::try_from(total / NANOS_PER_SEC).ok()?;
    let nanos = u32::try_from(total % NANOS_PER_SEC).ok()?;
    Some(Duration::new(secs, nanos))
}

/// Formats a duration in the syntax accepted by [`parse_duration`]
/// (`"0s"`, `"5s"`, `"1h30m"`, ...).
fn format_duration(d: Duration) -> String {
    if d.is_zero() {
        return "0s".to_owned();
    }
    let mut out = String::new();
    let secs = d.as_secs();
    let sub = d.subsec_nanos();
    let parts = [
        (secs / 86_400, "d"),
        (secs % 86_400 / 3_600, "h"),
        (secs % 3_600 / 60, "m"),
        (secs % 60, "s"),
        (u64::from(sub / 1_000_000), "ms"),
        (u64::from(sub / 1_000 % 1_000), "us"),
        (u64::from(sub % 1_000), "ns"),
    ];
    for (n, unit) in parts {
        if n != 0 {
            out.push_str(&n.to_string());
            out.push_str(unit);
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Layering
// ---------------------------------------------------------------------------

/// A value together with the layer it came from.
#[derive(Debug, Clone)]
struct Slot<T> {
    value: T,
    origin: Origin,
}

/// Values set by the layers applied so far; `None` = not set by any layer.
#[derive(Debug, Default)]
struct Partial {
    data_dir: Option<Slot<PathBuf>>,
    shutdown_grace: Option<Slot<Duration>>,
    master_key_file: Option<Slot<PathBuf>>,
    database_url: Option<Slot<String>>,
    sweep_interval: Option<Slot<Duration>>,
    ticket_webhook_url: Option<Slot<String>>,
    require_reason: Option<Slot<bool>>,
    lockout_threshold: Option<Slot<u32>>,
    lockout_duration: Option<Slot<Duration>>,
    token_ttl: Option<Slot<Duration>>,
    min_password_length: Option<Slot<usize>>,
    deny_new_super_admins: Option<Slot<bool>>,
    web_listen: Option<Slot<SocketAddr>>,
    tls_cert: Option<Slot<PathBuf>>,
    tls_key: Option<Slot<PathBuf>>,
    web_session_idle_timeout: Option<Slot<Duration>>,
    web_ui_allow: Option<Slot<Vec<IpNet>>>,
    web_ui_deny: Option<Slot<Vec<IpNet>>>,
    web_api_allow: Option<Slot<Vec<IpNet>>>,
    web_api_deny: Option<Slot<Vec<IpNet>>>,
    ssh_listen: Option<Slot<SocketAddr>>,
    host_key_dir: Option<Slot<PathBuf>>,
    ssh_connect_timeout: Option<Slot<Duration>>,
    ssh_login_grace_time: Option<Slot<Duration>>,
    ssh_idle_timeout: Option<Slot<Duration>>,
    ssh_max_session_duration: Option<Slot<Duration>>,
    ssh_max_connections: Option<Slot<u32>>,
    accept_any_target_host_key: Option<Slot<bool>>,
    rdp_listen: Option<Slot<SocketAddr>>,
    rdp_ticket_ttl: Option<Slot<Duration>>,
    accept_any_target_certificate: Option<Slot<bool>>,
    record_input: Option<Slot<bool>>,
    retention_days: Option<Slot<u32>>,
    log_level: Option<Slot<String>>,
    log_format: Option<Slot<LogFormat>>,
}

fn slot<T>(value: T, origin: &Origin) -> Option<Slot<T>> {
    Some(Slot {
        value,
        origin: origin.clone(),
    })
}

fn value_or<T: Clone>(s: &Option<Slot<T>>, default: T) -> T {
    s.as_ref().map_or(default, |s| s.value.clone())
}

impl Partial {
    /// Parses `raw` as the value of `key` and records it (overriding any
    /// lower layer).
    fn set(&mut self, key: Setting, raw: Raw<'_>, origin: &Origin) -> Fallible<()> {
        let c = Ctx { key, origin, raw };
        match key {
            Setting::DataDir => self.data_dir = slot(c.path()?, origin),
            Setting::ShutdownGrace => self.shutdown_grace = slot(c.duration(true)?, origin),
            Setting::VaultMasterKeyFile => self.master_key_file = slot(c.path()?, origin),
            Setting::VaultDatabaseUrl => self.database_url = slot(c.database_url()?, origin),
            Setting::VaultSweepInterval => self.sweep_interval = slot(c.duration(false)?, origin),
            Setting::VaultTicketWebhookUrl => self.ticket_webhook_url = slot(c.webhook_url()?, origin),
            Setting::VaultRequireReason => self.require_reason = slot(c.boolean()?, origin),
            Setting::AuthDenyNewSuperAdmins => self.deny_new_super_admins = slot(c.boolean()?, origin),
            Setting::AuthLockoutThreshold => {
                let n = c.integer(1, u64::from(u32::MAX))?;
                self.lockout_threshold = slot(u32::try_from(n).unwrap_or(u32::MAX), origin);
            }
            Setting::AuthLockoutDuration => self.lockout_duration = slot(c.duration(false)?, origin),
            Setting::AuthTokenTtl => self.token_ttl = slot(c.duration(false)?, origin),
            Setting::AuthMinPasswordLength => {
                let max = u64::try_from(usize::MAX).unwrap_or(u64::MAX);
                let n = c.integer(8, max)?;
                self.min_password_length = slot(usize::try_from(n).unwrap_or(usize::MAX), origin);
            }
            Setting::WebListen => self.web_listen = slot(c.socket_addr()?, origin),
            Setting::WebTlsCert => self.tls_cert = slot(c.path()?, origin),
            Setting::WebTlsKey => self.tls_key = slot(c.path()?, origin),
            Setting::WebSessionIdleTimeout => self.web_session_idle_timeout = slot(c.duration(false)?, origin),
            Setting::WebUiAllow => self.web_ui_allow = slot(c.networks()?, origin),
            Setting::WebUiDeny => self.web_ui_deny = slot(c.networks()?, origin),
            Setting::WebApiAllow => self.web_api_allow = slot(c.networks()?, origin),
            Setting::WebApiDeny => self.web_api_deny = slot(c.networks()?, origin),
            Setting::SshListen => self.ssh_listen = slot(c.socket_addr()?, origin),
            Setting::SshHostKeyDir => self.host_key_dir = slot(c.path()?, origin),
            Setting::SshConnectTimeout => self.ssh_connect_timeout = slot(c.duration(false)?, origin),
            Setting::SshLoginGraceTime => self.ssh_login_grace_time = slot(c.duration(false)?, origin),
            Setting::SshIdleTimeout => self.ssh_idle_timeout = slot(c.duration(false)?, origin),
            Setting::SshMaxSessionDuration => {
                self.ssh_max_session_duration = slot(c.duration_or_bare_zero()?, origin);
            }
            Setting::SshMaxConnections => {
                let n = c.integer(1, u64::from(u32::MAX))?;
                self.ssh_max_connections = slot(u32::try_from(n).unwrap_or(u32::MAX), origin);
            }
            Setting::SshDangerousAcceptAnyTargetHostKey => self.accept_any_target_host_key = slot(c.boolean()?, origin),
            Setting::RdpListen => self.rdp_listen = slot(c.socket_addr()?, origin),
            Setting::RdpTicketTtl => {
                let d = c.duration(false)?;
                if d > Duration::from_secs(3600) {
                    return Err(c.invalid("a duration of at most 1h (a ticket is for connecting now)"));
                }
                self.rdp_ticket_ttl = slot(d, origin)
            }
            Setting::RdpDangerousAcceptAnyTargetCertificate => {
                self.accept_any_target_certificate = slot(c.boolean()?, origin);
            }
            Setting::RecordingRecordInput => self.record_input = slot(c.boolean()?, origin),
            Setting::RecordingRetentionDays => {
                let n = c.integer(0, 36_500)?;
                self.retention_days = slot(u32::try_from(n).unwrap_or(36_500), origin);
            }
            Setting::LogLevel => self.log_level = slot(c.log_level()?, origin),
            Setting::LogFormat => self.log_format = slot(c.log_format()?, origin),
        }
        Ok(())
    }

    /// Applies the config file at `path`.
    fn apply_file(&mut self, path: &Path, errors: &mut Vec<ConfigError>) {
        match std::fs::read_to_string(path) {
            Ok(text) => self.apply_file_text(path, &text, errors),
            Err(source) => errors.push(ConfigError::Io {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// Applies the TOML `text`, reporting positions against `path`.
    fn apply_file_text(&mut self, path: &Path, text: &str, errors: &mut Vec<ConfigError>) {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let doc = match ImDocument::parse(text) {
            Ok(doc) => doc,
            Err(e) => {
                let (line, col) = line_col(text, e.span().map_or(0, |r| r.start));
                let msg = one_line(
                    &e.message()
                        .lines()
                        .map(str::trim)
                        .filter(|l| !l.is_empty())
                        .collect::<Vec<_>>()
                        .join("; "),
                );
                errors.push(ConfigError::Syntax {
                    path: path.to_path_buf(),
                    line,
                    col,
                    msg,
                });
                return;
            }
        };
        let mut walker = FileWalker {
            path,
            text,
            partial: self,
            errors,
        };
        walker.walk(doc.as_table(), &mut Vec::new(), 0);
    }

    /// Applies `POSTERN_*` environment variables.
    fn apply_env(&mut self, env: &[(String, String)], errors: &mut Vec<ConfigError>) {
        for (name, value) in env {
            if !name.starts_with(ENV_PREFIX) || name == CONFIG_ENV_VAR || name == LOG_ENV_VAR {
                continue;
            }
            let origin = Origin::Env {
                var: truncated(name, MAX_KEY_ECHO),
            };
            match Setting::from_env_var(name) {
                Some(key) => {
                    if let Err(e) = self.set(key, Raw::Text(value), &origin) {
                        errors.push(*e);
                    }
                }
                None => errors.push(ConfigError::UnknownKey {
                    key: truncated(name, MAX_KEY_ECHO),
                    origin,
                }),
            }
        }
    }

    /// Applies command-line overrides.
    fn apply_cli(&mut self, cli: &[(String, String)], errors: &mut Vec<ConfigError>) {
        for (dotted, value) in cli {
            let origin = Origin::Cli {
                key: truncated(dotted, MAX_KEY_ECHO),
            };
            match Setting::from_dotted(dotted) {
                Some(key) => {
                    if let Err(e) = self.set(key, Raw::Text(value), &origin) {
                        errors.push(*e);
                    }
                }
                None => errors.push(ConfigError::UnknownKey {
                    key: truncated(dotted, MAX_KEY_ECHO),
                    origin,
                }),
            }
        }
    }

    /// Builds the final configuration: defaults for unset keys, derived
    /// paths from the final `data_dir`.
    fn finish(&self) -> Config {
        let data_dir = value_or(&self.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        let default_db = format!("sqlite://{}", data_dir.join("postern.db").display());
        Config {
            vault: VaultConfig {
                master_key_file: value_or(&self.master_key_file, data_dir.join("master.key")),
                database_url: value_or(&self.database_url, default_db),
                sweep_interval: value_or(&self.sweep_interval, Duration::from_secs(30)),
                ticket_webhook_url: value_or(&self.ticket_webhook_url, String::new()),
                require_reason: value_or(&self.require_reason, false),
            },
            auth: AuthConfig {
                lockout_threshold: value_or(&self.lockout_threshold, 5),
                lockout_duration: value_or(&self.lockout_duration, Duration::from_secs(15 * 60)),
                token_ttl: value_or(&self.token_ttl, Duration::from_secs(12 * 3600)),
                min_password_length: value_or(&self.min_password_length, 12),
                deny_new_super_admins: value_or(&self.deny_new_super_admins, false),
            },
            web: WebConfig {
                listen: value_or(&self.web_listen, SocketAddr::from(([127, 0, 0, 1], 8443))),
                tls_cert: value_or(&self.tls_cert, data_dir.join("tls").join("cert.pem")),
                tls_key: value_or(&self.tls_key, data_dir.join("tls").join("key.pem")),
                session_idle_timeout: value_or(&self.web_session_idle_timeout, Duration::from_secs(15 * 60)),
                ui_allow: value_or(&self.web_ui_allow, Vec::new()),
                ui_deny: value_or(&self.web_ui_deny, Vec::new()),
                api_allow: value_or(&self.web_api_allow, Vec::new()),
                api_deny: value_or(&self.web_api_deny, Vec::new()),
            },
            ssh: SshConfig {
                listen: value_or(&self.ssh_listen, SocketAddr::from(([127, 0, 0, 1], 2222))),
                host_key_dir: value_or(&self.host_key_dir, data_dir.join("ssh")),
                connect_timeout: value_or(&self.ssh_connect_timeout, Duration::from_secs(10)),
                login_grace_time: value_or(&self.ssh_login_grace_time, Duration::from_secs(30)),
                idle_timeout: value_or(&self.ssh_idle_timeout, Duration::from_secs(30 * 60)),
                max_session_duration: value_or(&self.ssh_max_session_duration, Duration::from_secs(12 * 3600)),
                max_connections: value_or(&self.ssh_max_connections, 1000),
                dangerous: SshDangerous {
                    accept_any_target_host_key: value_or(&self.accept_any_target_host_key, false),
                },
            },
            rdp: RdpConfig {
                listen: value_or(&self.rdp_listen, SocketAddr::from(([127, 0, 0, 1], 3389))),
                ticket_ttl: value_or(&self.rdp_ticket_ttl, Duration::from_secs(300)),
                dangerous: RdpDangerous {
                    accept_any_target_certificate: value_or(&self.accept_any_target_certificate, false),
                },
            },
            recording: RecordingConfig {
                record_input: value_or(&self.record_input, false),
                retention_days: value_or(&self.retention_days, 0),
            },
            log: LogConfig {
                level: value_or(&self.log_level, "info".to_owned()),
                format: value_or(&self.log_format, LogFormat::Text),
            },
            shutdown_grace: value_or(&self.shutdown_grace, Duration::from_secs(5)),
            data_dir,
        }
    }

    /// Cross-key checks on the final configuration.
    fn check(&self, config: &Config, errors: &mut Vec<ConfigError>) {
        let origin = |s: &Option<Slot<SocketAddr>>| {
            s.as_ref()
                .map_or(Origin::Default, |s: &Slot<SocketAddr>| s.origin.clone())
        };
        let listeners = [
            (Setting::WebListen, config.web.listen, origin(&self.web_listen)),
            (Setting::SshListen, config.ssh.listen, origin(&self.ssh_listen)),
            (Setting::RdpListen, config.rdp.listen, origin(&self.rdp_listen)),
        ];
        for (i, (second_key, addr, second_origin)) in listeners.iter().enumerate() {
            if addr.port() == 0 {
                continue;
            }
            if let Some((first_key, _, first_origin)) = listeners[..i].iter().find(|(_, a, _)| a == addr) {
                errors.push(ConfigError::ListenConflict {
                    addr: *addr,
                    first_key: first_key.dotted().to_owned(),
                    first_origin: first_origin.clone(),
                    second_key: second_key.dotted().to_owned(),
                    second_origin: second_origin.clone(),
                });
            }
        }
    }
}

/// 1-based (line, column in characters) of byte `offset` in `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().unwrap_or_default().chars().count() + 1;
    (line, col)
}

/// Walks the parsed TOML document, applying known keys and reporting the rest.
struct FileWalker<'a> {
    path: &'a Path,
    text: &'a str,
    partial: &'a mut Partial,
    errors: &'a mut Vec<ConfigError>,
}

impl FileWalker<'_> {
    fn origin(&self, offset: usize) -> Origin {
        let (line, col) = line_col(self.text, offset);
        Origin::File {
            path: self.path.to_path_buf(),
            line,
            col,
        }
    }

    /// `fallback` is the byte offset used when an item carries no span.
    fn walk(&mut self, table: &dyn TableLike, prefix: &mut Vec<String>, fallback: usize) {
        for (name, item) in table.iter() {
            let key_pos = table
                .get_key_value(name)
                .and_then(|(k, _)| k.span())
                .map_or(fallback, |r| r.start);
            prefix.push(name.to_owned());
            if let Some(key) = Setting::from_segments(prefix) {
                match item {
                    Item::Value(v) => {
                        let origin = self.origin(v.span().map_or(key_pos, |r| r.start));
                        if let Err(e) = self.partial.set(key, Raw::Toml(v), &origin) {
                            self.errors.push(*e);
                        }
                    }
                    Item::None => {}
                    other => {
                        let c = Ctx {
                            key,
                            origin: &self.origin(key_pos),
                            raw: Raw::Text(""),
                        };
                        let e = c.wrong_type("a value, not a table", other.type_name());
                        self.errors.push(*e);
                    }
                }
            } else if Setting::is_section(prefix) {
                match item.as_table_like() {
                    Some(sub) => self.walk(sub, prefix, key_pos),
                    None => self.errors.push(ConfigError::WrongType {
                        origin: self.origin(key_pos),
                        key: prefix.join("."),
                        expected: "a table (section)".to_owned(),
                        found: item.type_name().to_owned(),
                    }),
                }
            } else {
                self.errors.push(ConfigError::UnknownKey {
                    origin: self.origin(key_pos),
                    key: truncated(&prefix.join("."), MAX_KEY_ECHO),
                });
            }
            prefix.pop();
        }
    }
}

// ---------------------------------------------------------------------------
// Config API
// ---------------------------------------------------------------------------

impl Default for Config {
    /// The built-in defaults (same as loading with no file, env or cli).
    fn default() -> Self {
        Partial::default().finish()
    }
}

impl Config {
    /// Loads the configuration from `src` (defaults < file < env < cli).
    ///
    /// Returns every problem found in every layer at once. Never panics.
    pub fn load(src: &Sources) -> Result<Config, ConfigErrors> {
        let mut partial = Partial::default();
        let mut errors = Vec::new();
        if let Some(path) = src.file {
            partial.apply_file(path, &mut errors);
        }
        partial.apply_env(src.env, &mut errors);
        partial.apply_cli(src.cli, &mut errors);
        let config = partial.finish();
        partial.check(&config, &mut errors);
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(ConfigErrors(errors))
        }
    }

    /// Human summary for `postern check`: one line per key,
    /// `dotted.key = value` with TOML-quoted values, covering all keys with
    /// their effective values, top-level keys first, then sections sorted by
    /// name. Lines are separated by `\n`, without a trailing newline.
    pub fn summary(&self) -> String {
        let path = |p: &Path| toml_string(&p.display().to_string());
        let dur = |d: Duration| toml_string(&format_duration(d));
        let addr = |a: SocketAddr| toml_string(&a.to_string());
        let nets = |v: &[IpNet]| {
            format!(
                "[{}]",
                v.iter()
                    .map(|n| toml_string(&n.to_string()))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        let mut lines: Vec<(&str, String)> = ALL_KEYS
            .into_iter()
            .map(|key| {
                let value = match key {
                    Setting::DataDir => path(&self.data_dir),
                    Setting::ShutdownGrace => dur(self.shutdown_grace),
                    Setting::VaultMasterKeyFile => path(&self.vault.master_key_file),
                    Setting::VaultDatabaseUrl => toml_string(&self.vault.database_url),
                    Setting::VaultSweepInterval => dur(self.vault.sweep_interval),
                    Setting::VaultTicketWebhookUrl => toml_string(&self.vault.ticket_webhook_url),
                    Setting::VaultRequireReason => self.vault.require_reason.to_string(),
                    Setting::AuthLockoutThreshold => self.auth.lockout_threshold.to_string(),
                    Setting::AuthLockoutDuration => dur(self.auth.lockout_duration),
                    Setting::AuthTokenTtl => dur(self.auth.token_ttl),
                    Setting::AuthMinPasswordLength => self.auth.min_password_length.to_string(),
                    Setting::AuthDenyNewSuperAdmins => self.auth.deny_new_super_admins.to_string(),
                    Setting::WebListen => addr(self.web.listen),
                    Setting::WebTlsCert => path(&self.web.tls_cert),
                    Setting::WebTlsKey => path(&self.web.tls_key),
                    Setting::WebSessionIdleTimeout => dur(self.web.session_idle_timeout),
                    Setting::WebUiAllow => nets(&self.web.ui_allow),
                    Setting::WebUiDeny => nets(&self.web.ui_deny),
                    Setting::WebApiAllow => nets(&self.web.api_allow),
                    Setting::WebApiDeny => nets(&self.web.api_deny),
                    Setting::SshListen => addr(self.ssh.listen),
                    Setting::SshHostKeyDir => path(&self.ssh.host_key_dir),
                    Setting::SshConnectTimeout => dur(self.ssh.connect_timeout),
                    Setting::SshLoginGraceTime => dur(self.ssh.login_grace_time),
                    Setting::SshIdleTimeout => dur(self.ssh.idle_timeout),
                    Setting::SshMaxSessionDuration => dur(self.ssh.max_session_duration),
                    Setting::SshMaxConnections => self.ssh.max_connections.to_string(),
                    Setting::SshDangerousAcceptAnyTargetHostKey => {
                        self.ssh.dangerous.accept_any_target_host_key.to_string()
                    }
                    Setting::RdpListen => addr(self.rdp.listen),
                    Setting::RdpTicketTtl => dur(self.rdp.ticket_ttl),
                    Setting::RdpDangerousAcceptAnyTargetCertificate => {
                        self.rdp.dangerous.accept_any_target_certificate.to_string()
                    }
                    Setting::RecordingRecordInput => self.recording.record_input.to_string(),
                    Setting::RecordingRetentionDays => self.recording.retention_days.to_string(),
                    Setting::LogLevel => toml_string(&self.log.level),
                    Setting::LogFormat => toml_string(self.log.format.as_str()),
                };
                (key.dotted(), value)
            })
            .collect();
        let section = |k: &str| k.rsplit_once('.').map_or("", |(s, _)| s).to_owned();
        lines.sort_by(|(a, _), (b, _)| (section(a), *a).cmp(&(section(b), *b)));
        lines
            .into_iter()
            .map(|(k, v)| format!("{k} = {v}"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// A TOML basic string literal (quoted and escaped, single line).
fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const EXAMPLE: &str = include_str!("../conf/postern.example.toml");

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().expect("temp file");
        f.write_all(text.as_bytes()).expect("write temp file");
        f
    }

    fn load(file: Option<&Path>, env: &[(&str, &str)], cli: &[(&str, &str)]) -> Result<Config, ConfigErrors> {
        let env = pairs(env);
        let cli = pairs(cli);
        Config::load(&Sources {
            file,
            env: &env,
            cli: &cli,
        })
    }

    fn load_text(text: &str) -> (tempfile::NamedTempFile, Result<Config, ConfigErrors>) {
        let f = file(text);
        let r = load(Some(f.path()), &[], &[]);
        (f, r)
    }

    fn errs(r: Result<Config, ConfigErrors>) -> Vec<ConfigError> {
        match r {
            Ok(c) => panic!("expected errors, got {c:?}"),
            Err(e) => e.0,
        }
    }

    #[test]
    fn defaults() {
        let c = load(None, &[], &[]).unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.data_dir, PathBuf::from("./postern-data"));
        assert_eq!(c.shutdown_grace, Duration::from_secs(5));
        assert_eq!(c.vault.master_key_file, PathBuf::from("./postern-data/master.key"));
        assert_eq!(c.vault.database_url, "sqlite://./postern-data/postern.db");
        assert_eq!(c.auth.lockout_threshold, 5);
        assert_eq!(c.auth.lockout_duration, Duration::from_secs(900));
        assert_eq!(c.auth.token_ttl, Duration::from_secs(12 * 3600));
        assert_eq!(c.auth.min_password_length, 12);
        assert_eq!(c.web.listen, "127.0.0.1:8443".parse().unwrap());
        assert_eq!(c.web.tls_cert, PathBuf::from("./postern-data/tls/cert.pem"));
        assert_eq!(c.web.tls_key, PathBuf::from("./postern-data/tls/key.pem"));
        assert_eq!(c.ssh.listen, "127.0.0.1:2222".parse().unwrap());
        assert_eq!(c.ssh.host_key_dir, PathBuf::from("./postern-data/ssh"));
        assert_eq!(c.ssh.connect_timeout, Duration::from_secs(10));
        assert_eq!(c.ssh.login_grace_time, Duration::from_secs(30));
        assert_eq!(c.ssh.idle_timeout, Duration::from_secs(30 * 60));
        assert_eq!(c.ssh.max_session_duration, Duration::from_secs(12 * 3600));
        assert_eq!(c.ssh.max_connections, 1000);
        assert!(!c.ssh.dangerous.accept_any_target_host_key);
        assert_eq!(c.rdp.listen, "127.0.0.1:3389".parse().unwrap());
        assert_eq!(c.rdp.ticket_ttl, Duration::from_secs(300));
        assert!(!c.rdp.dangerous.accept_any_target_certificate);
        assert!(!c.recording.record_input);
        assert_eq!(c.recording.retention_days, 0);
        assert_eq!(c.log.level, "info");
        assert_eq!(c.log.format, LogFormat::Text);
    }

    #[test]
    fn file_values() {
        let (_f, r) = load_text(
            r#"
data_dir = "/srv/postern"
shutdown_grace = "1m30s"

[vault]
database_url = "sqlite::memory:"

[auth]
lockout_threshold = 3
lockout_duration = "1h"
token_ttl = "500ms"
min_password_length = 16

[web]
listen = "0.0.0.0:443"
tls_cert = "certs/c.pem"

[ssh]
listen = "[::1]:22"
connect_timeout = "5s"
login_grace_time = "1m"
idle_timeout = "2h"
max_session_duration = "1d"
max_connections = 50
dangerous = { accept_any_target_host_key = true }

[rdp]
listen = "127.0.0.1:0"
dangerous = { accept_any_target_certificate = true }

[recording]
record_input = true
retention_days = 90

[log]
level = "postern=debug,info"
format = "json"
"#,
        );
        let c = r.unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/srv/postern"));
        assert_eq!(c.shutdown_grace, Duration::from_secs(90));
        assert_eq!(c.vault.database_url, "sqlite::memory:");
        assert_eq!(c.vault.master_key_file, PathBuf::from("/srv/postern/master.key"));
        assert_eq!(c.auth.lockout_threshold, 3);
        assert_eq!(c.auth.lockout_duration, Duration::from_secs(3600));
        assert_eq!(c.auth.token_ttl, Duration::from_millis(500));
        assert_eq!(c.auth.min_password_length, 16);
        assert_eq!(c.web.listen, "0.0.0.0:443".parse().unwrap());
        assert_eq!(c.web.tls_cert, PathBuf::from("certs/c.pem"));
        assert_eq!(c.web.tls_key, PathBuf::from("/srv/postern/tls/key.pem"));
        assert_eq!(c.ssh.listen, "[::1]:22".parse().unwrap());
        assert_eq!(c.ssh.host_key_dir, PathBuf::from("/srv/postern/ssh"));
        assert_eq!(c.ssh.connect_timeout, Duration::from_secs(5));
        assert_eq!(c.ssh.login_grace_time, Duration::from_secs(60));
        assert_eq!(c.ssh.idle_timeout, Duration::from_secs(7200));
        assert_eq!(c.ssh.max_session_duration, Duration::from_secs(86_400));
        assert_eq!(c.ssh.max_connections, 50);
        assert!(c.ssh.dangerous.accept_any_target_host_key);
        assert_eq!(c.rdp.listen, "127.0.0.1:0".parse().unwrap());
        assert!(c.rdp.dangerous.accept_any_target_certificate);
        assert_eq!(c.log.level, "postern=debug,info");
        assert_eq!(c.log.format, LogFormat::Json);
        assert!(c.recording.record_input);
        assert_eq!(c.recording.retention_days, 90);
    }

    #[test]
    fn dotted_keys_and_nested_headers_in_file() {
        let (_f, r) = load_text("web.listen = \"127.0.0.1:1\"\n[ssh.dangerous]\naccept_any_target_host_key = true\n");
        let c = r.unwrap();
        assert_eq!(c.web.listen, "127.0.0.1:1".parse().unwrap());
        assert!(c.ssh.dangerous.accept_any_target_host_key);
        assert!(!c.rdp.dangerous.accept_any_target_certificate);
        let (_f, r) = load_text("[rdp.dangerous]\naccept_any_target_certificate = true\n");
        let c = r.unwrap();
        assert!(c.rdp.dangerous.accept_any_target_certificate);
        assert!(!c.ssh.dangerous.accept_any_target_host_key);
        let c = load(
            None,
            &[("POSTERN_RDP_DANGEROUS_ACCEPT_ANY_TARGET_CERTIFICATE", "1")],
            &[],
        )
        .unwrap();
        assert!(c.rdp.dangerous.accept_any_target_certificate);
        assert_eq!(
            errs(load(
                None,
                &[],
                &[("rdp.dangerous.accept_any_target_certificate", "yes")]
            ))
            .len(),
            1
        );
    }

    #[test]
    fn env_beats_file() {
        let f = file("[web]\nlisten = \"127.0.0.1:1000\"\n[log]\nlevel = \"warn\"\n");
        let c = load(
            Some(f.path()),
            &[
                ("POSTERN_WEB_LISTEN", "127.0.0.1:2000"),
                ("POSTERN_SSH_DANGEROUS_ACCEPT_ANY_TARGET_HOST_KEY", "1"),
                ("POSTERN_SHUTDOWN_GRACE", "0s"),
                ("POSTERN_SSH_IDLE_TIMEOUT", "5m"),
                ("HOME", "/root"),
            ],
            &[],
        )
        .unwrap();
        assert_eq!(c.ssh.idle_timeout, Duration::from_secs(300));
        assert_eq!(c.web.listen, "127.0.0.1:2000".parse().unwrap());
        assert_eq!(c.log.level, "warn");
        assert!(c.ssh.dangerous.accept_any_target_host_key);
        assert_eq!(c.shutdown_grace, Duration::ZERO);
    }

    #[test]
    fn cli_beats_env() {
        let f = file("[web]\nlisten = \"127.0.0.1:1000\"\n");
        let c = load(
            Some(f.path()),
            &[
                ("POSTERN_WEB_LISTEN", "127.0.0.1:2000"),
                ("POSTERN_AUTH_LOCKOUT_THRESHOLD", "7"),
            ],
            &[
                ("web.listen", "127.0.0.1:0"),
                ("log.format", "json"),
                ("ssh.dangerous.accept_any_target_host_key", "false"),
            ],
        )
        .unwrap();
        assert_eq!(c.web.listen, "127.0.0.1:0".parse().unwrap());
        assert_eq!(c.auth.lockout_threshold, 7);
        assert_eq!(c.log.format, LogFormat::Json);
    }

    #[test]
    fn unknown_key_in_file_reports_line() {
        let (f, r) = load_text("data_dir = \"/x\"\n\n[web]\n  lisen = \"127.0.0.1:1\"\n");
        let e = errs(r);
        assert_eq!(e.len(), 1, "{e:?}");
        match &e[0] {
            ConfigError::UnknownKey {
                origin: Origin::File { path, line, col },
                key,
            } => {
                assert_eq!(path, f.path());
                assert_eq!((*line, *col), (4, 3));
                assert_eq!(key, "web.lisen");
            }
            other => panic!("unexpected {other:?}"),
        }
        let msg = e[0].to_string();
        assert!(msg.ends_with(":4:3: unknown key `web.lisen`"), "{msg}");
    }

    #[test]
    fn unknown_top_level_section_and_nested_keys() {
        let (_f, r) = load_text("bogus = 1\n[ssh.dangerous]\nyolo = true\n[nope]\nx = 1\n[web]\nlisten = { a = 1 }\n");
        let e = errs(r);
        let keys: Vec<String> = e
            .iter()
            .map(|e| match e {
                ConfigError::UnknownKey { key, .. } => key.clone(),
                ConfigError::WrongType { key, .. } => format!("type:{key}"),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(keys, ["bogus", "ssh.dangerous.yolo", "nope", "type:web.listen"]);
    }

    #[test]
    fn wrong_types_are_errors() {
        let (_f, r) = load_text(
            "data_dir = 3\nweb = \"x\"\n[auth]\nlockout_threshold = \"5\"\n[ssh.dangerous]\naccept_any_target_host_key = \"true\"\n",
        );
        let e = errs(r);
        assert_eq!(e.len(), 4, "{e:?}");
        assert!(e.iter().all(|e| matches!(e, ConfigError::WrongType { .. })));
        assert!(e[0].to_string().contains(":1:12: `data_dir` must be a string"));
    }

    #[test]
    fn several_errors_reported_at_once() {
        let f = file("[auth]\nlockout_threshold = 0\nmin_password_length = 4\n");
        let e = errs(load(
            Some(f.path()),
            &[("POSTERN_WEB_LISTEN", "localhost")],
            &[("log.format", "xml")],
        ));
        assert_eq!(e.len(), 4, "{e:?}");
        let origins: Vec<String> = e
            .iter()
            .map(|e| match e {
                ConfigError::InvalidValue { origin, .. } => origin.to_string(),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        let p = f.path().display().to_string();
        assert_eq!(
            origins,
            [
                format!("{p}:2:21"),
                format!("{p}:3:23"),
                "environment variable POSTERN_WEB_LISTEN".to_owned(),
                "command-line override `log.format`".to_owned(),
            ]
        );
        let all = ConfigErrors(e).to_string();
        assert_eq!(all.lines().count(), 4, "{all}");
    }

    #[test]
    fn three_bad_values_three_errors() {
        let e = errs(load(
            None,
            &[],
            &[
                ("auth.token_ttl", "soon"),
                ("rdp.listen", "1.2.3.4"),
                ("auth.lockout_threshold", "-1"),
            ],
        ));
        assert_eq!(e.len(), 3, "{e:?}");
    }

    #[test]
    fn bad_duration() {
        for bad in [
            "",
            "5",
            "-5s",
            "5 s",
            "1.5h",
            "s",
            "5x",
            "1m1h",
            "1h1h",
            "1d2",
            "99999999999999999999d",
            "36501d",
            "+5s",
        ] {
            let e = errs(load(None, &[], &[("shutdown_grace", bad)]));
            assert_eq!(e.len(), 1, "{bad:?}: {e:?}");
            let msg = e[0].to_string();
            assert!(msg.contains("expected a duration such as"), "{msg}");
        }
        let e = errs(load(None, &[("POSTERN_AUTH_TOKEN_TTL", "0s")], &[]));
        assert!(e[0].to_string().contains("non-zero duration"), "{}", e[0]);
        let (_f, r) = load_text("shutdown_grace = 5\n");
        assert!(matches!(errs(r)[0], ConfigError::WrongType { .. }));
    }

    #[test]
    fn ssh_timeouts_and_limits() {
        // Zero means unlimited for max_session_duration, in every spelling.
        for (env, cli) in [("0s", "0"), ("0", "0s")] {
            let c = load(None, &[("POSTERN_SSH_MAX_SESSION_DURATION", env)], &[]).unwrap();
            assert_eq!(c.ssh.max_session_duration, Duration::ZERO);
            let c = load(None, &[], &[("ssh.max_session_duration", cli)]).unwrap();
            assert_eq!(c.ssh.max_session_duration, Duration::ZERO);
        }
        for text in [
            "[ssh]\nmax_session_duration = \"0s\"\n",
            "[ssh]\nmax_session_duration = \"0\"\n",
            "[ssh]\nmax_session_duration = 0\n",
        ] {
            let (_f, r) = load_text(text);
            assert_eq!(r.unwrap().ssh.max_session_duration, Duration::ZERO, "{text}");
        }
        // Zero summarizes as "0s" and loads back.
        let c = load(None, &[], &[("ssh.max_session_duration", "0s")]).unwrap();
        assert!(c.summary().contains("ssh.max_session_duration = \"0s\""));
        let (_f, r) = load_text(&c.summary());
        assert_eq!(r.unwrap(), c);
        // Other bare numbers are still rejected.
        assert_eq!(errs(load(None, &[], &[("ssh.max_session_duration", "5")])).len(), 1);
        let (_f, r) = load_text("[ssh]\nmax_session_duration = 5\n");
        assert!(matches!(errs(r)[0], ConfigError::WrongType { .. }));

        // The other SSH timeouts must be non-zero.
        for key in ["ssh.connect_timeout", "ssh.login_grace_time", "ssh.idle_timeout"] {
            for zero in ["0s", "0"] {
                let e = errs(load(None, &[], &[(key, zero)]));
                assert_eq!(e.len(), 1, "{key}={zero}: {e:?}");
                assert!(matches!(e[0], ConfigError::InvalidValue { .. }), "{e:?}");
            }
        }

        // max_connections must be at least 1.
        let e = errs(load(None, &[("POSTERN_SSH_MAX_CONNECTIONS", "0")], &[]));
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].to_string().contains("an integer between 1 and 4294967295"),
            "{}",
            e[0]
        );
        let (_f, r) = load_text("[ssh]\nmax_connections = 0\n");
        assert!(matches!(errs(r)[0], ConfigError::InvalidValue { .. }));
        let c = load(None, &[], &[("ssh.max_connections", "1")]).unwrap();
        assert_eq!(c.ssh.max_connections, 1);
    }

    #[test]
    fn duration_parse_and_format() {
        let cases = [
            ("500ms", Duration::from_millis(500)),
            ("30s", Duration::from_secs(30)),
            ("15m", Duration::from_secs(900)),
            ("12h", Duration::from_secs(43_200)),
            ("7d", Duration::from_secs(7 * 86_400)),
            ("1h30m", Duration::from_secs(5_400)),
            ("1d2h3m4s5ms6us7ns", Duration::new(93_784, 5_006_007)),
            ("0s", Duration::ZERO),
        ];
        for (s, d) in cases {
            assert_eq!(parse_duration(s), Some(d), "{s}");
            assert_eq!(format_duration(d), s);
        }
        assert_eq!(parse_duration("90s"), Some(Duration::from_secs(90)));
        assert_eq!(format_duration(Duration::from_secs(90)), "1m30s");
    }

    #[test]
    fn unknown_postern_env_var() {
        let e = errs(load(
            None,
            &[
                ("POSTERN_WEB_LISTN", "127.0.0.1:1"),
                ("POSTERN_CONFIG", "/etc/postern.toml"),
                ("POSTERN_LOG", "debug"),
                ("OTHER_THING", "x"),
                ("postern_web_listen", "garbage"),
            ],
            &[],
        ));
        assert_eq!(e.len(), 1, "{e:?}");
        match &e[0] {
            ConfigError::UnknownKey {
                origin: Origin::Env { var },
                key,
            } => {
                assert_eq!(var, "POSTERN_WEB_LISTN");
                assert_eq!(key, "POSTERN_WEB_LISTN");
            }
            other => panic!("unexpected {other:?}"),
        }
        // The value of an unknown variable is never echoed.
        assert!(!e[0].to_string().contains("127.0.0.1"));
    }

    #[test]
    fn unknown_cli_key() {
        let e = errs(load(None, &[], &[("web", "x"), ("web.port", "1")]));
        assert_eq!(e.len(), 2);
        assert!(e.iter().all(|e| matches!(
            e,
            ConfigError::UnknownKey {
                origin: Origin::Cli { .. },
                ..
            }
        )));
    }

    #[test]
    fn derived_defaults_follow_data_dir_from_env() {
        let f = file("data_dir = \"/from/file\"\n[web]\ntls_key = \"explicit/key.pem\"\n");
        let c = load(Some(f.path()), &[("POSTERN_DATA_DIR", "/from/env")], &[]).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/from/env"));
        assert_eq!(c.vault.master_key_file, PathBuf::from("/from/env/master.key"));
        assert_eq!(c.vault.database_url, "sqlite:///from/env/postern.db");
        assert_eq!(c.web.tls_cert, PathBuf::from("/from/env/tls/cert.pem"));
        assert_eq!(c.web.tls_key, PathBuf::from("explicit/key.pem"));
        assert_eq!(c.ssh.host_key_dir, PathBuf::from("/from/env/ssh"));

        let c = load(None, &[("POSTERN_DATA_DIR", "/from/env")], &[("data_dir", "rel")]).unwrap();
        assert_eq!(c.vault.master_key_file, PathBuf::from("rel/master.key"));
        assert_eq!(c.vault.database_url, "sqlite://rel/postern.db");
    }

    #[test]
    fn recording_keys() {
        let c = load(
            None,
            &[("POSTERN_RECORDING_RECORD_INPUT", "true")],
            &[("recording.retention_days", "30")],
        )
        .unwrap();
        assert!(c.recording.record_input);
        assert_eq!(c.recording.retention_days, 30);
        let e = errs(load(
            None,
            &[("POSTERN_RECORDING_RETENTION_DAYS", "-1")],
            &[
                ("recording.retention_days", "36501"),
                ("recording.record_input", "maybe"),
            ],
        ));
        assert_eq!(e.len(), 3, "{e:?}");
        assert!(e[0].to_string().contains("between 0 and 36500"), "{}", e[0]);
        let (_f, r) = load_text("[recording]\nretention_days = \"7\"\n");
        assert!(errs(r)[0].to_string().contains("must be an integer"));
    }

    #[test]
    fn env_var_names() {
        let names: Vec<String> = ALL_KEYS.iter().map(|k| k.env_var()).collect();
        assert!(names.contains(&"POSTERN_WEB_LISTEN".to_owned()));
        assert!(names.contains(&"POSTERN_SSH_LISTEN".to_owned()));
        assert!(names.contains(&"POSTERN_DATA_DIR".to_owned()));
        assert!(names.contains(&"POSTERN_SHUTDOWN_GRACE".to_owned()));
        assert!(names.contains(&"POSTERN_SSH_DANGEROUS_ACCEPT_ANY_TARGET_HOST_KEY".to_owned()));
        for var in [
            "POSTERN_SSH_CONNECT_TIMEOUT",
            "POSTERN_SSH_LOGIN_GRACE_TIME",
            "POSTERN_SSH_IDLE_TIMEOUT",
            "POSTERN_SSH_MAX_SESSION_DURATION",
            "POSTERN_SSH_MAX_CONNECTIONS",
            "POSTERN_RECORDING_RECORD_INPUT",
            "POSTERN_RECORDING_RETENTION_DAYS",
        ] {
            assert!(names.contains(&var.to_owned()), "{var}");
        }
        let mut dedup = names.clone();
        dedup.sort();
        dedup.dedup();
        assert_eq!(dedup.len(), names.len());
    }

    #[test]
    fn bool_and_integer_text_forms() {
        for (raw, want) in [("true", true), ("1", true), ("false", false), ("0", false)] {
            let c = load(None, &[("POSTERN_SSH_DANGEROUS_ACCEPT_ANY_TARGET_HOST_KEY", raw)], &[]).unwrap();
            assert_eq!(c.ssh.dangerous.accept_any_target_host_key, want);
        }
        for bad in ["yes", "TRUE", "", "2"] {
            assert_eq!(
                errs(load(None, &[], &[("ssh.dangerous.accept_any_target_host_key", bad)])).len(),
                1
            );
        }
        assert_eq!(
            errs(load(None, &[], &[("auth.lockout_threshold", "4294967296")])).len(),
            1
        );
        let c = load(None, &[], &[("auth.lockout_threshold", "4294967295")]).unwrap();
        assert_eq!(c.auth.lockout_threshold, u32::MAX);
    }

    #[test]
    fn missing_file_and_syntax_error() {
        let e = errs(load(Some(Path::new("/nonexistent/postern.toml")), &[], &[]));
        assert!(matches!(e[0], ConfigError::Io { .. }));

        let (_f, r) = load_text("[web]\nlisten = \"127.0.0.1:1\"\nthis is not toml\n");
        let e = errs(r);
        assert_eq!(e.len(), 1);
        match &e[0] {
            ConfigError::Syntax { line, msg, .. } => {
                assert_eq!(*line, 3);
                assert!(!msg.contains('\n'));
            }
            other => panic!("unexpected {other:?}"),
        }
        // Syntax errors still let env/cli errors through.
        let f = file("= =");
        let e = errs(load(Some(f.path()), &[("POSTERN_X", "1")], &[]));
        assert_eq!(e.len(), 2);
    }

    #[test]
    fn long_values_are_truncated_and_single_line() {
        let long = "x".repeat(500) + "\nsecond line";
        let e = errs(load(None, &[], &[("web.listen", &long)]));
        let msg = e[0].to_string();
        assert!(!msg.contains('\n'));
        assert!(msg.len() < 300, "{msg}");
        let (_f, r) = load_text(&format!("\"{}\" = 1\n", "k".repeat(500)));
        let msg = errs(r)[0].to_string();
        assert!(msg.len() < 300, "{msg}");
        let e = errs(load(None, &[(&format!("POSTERN_{}", "Z".repeat(500)), "v")], &[]));
        assert!(e[0].to_string().len() < 300);
    }

    #[test]
    fn quoted_dotted_key_is_not_a_path() {
        let (_f, r) = load_text("\"web.listen\" = \"127.0.0.1:1\"\n");
        let e = errs(r);
        assert!(matches!(e[0], ConfigError::UnknownKey { .. }), "{e:?}");
    }

    #[test]
    fn listen_conflict() {
        let e = errs(load(None, &[], &[("ssh.listen", "127.0.0.1:8443")]));
        assert_eq!(e.len(), 1);
        assert!(matches!(e[0], ConfigError::ListenConflict { .. }));
        // Port 0 never conflicts.
        load(
            None,
            &[],
            &[
                ("web.listen", "127.0.0.1:0"),
                ("ssh.listen", "127.0.0.1:0"),
                ("rdp.listen", "127.0.0.1:0"),
            ],
        )
        .unwrap();
    }

    #[test]
    fn no_panics_on_odd_input() {
        for text in [
            "",
            "\u{feff}",
            "[[web]]\nlisten = 1\n",
            "data_dir = []",
            "data_dir = 1979-05-27T07:32:00Z",
            "[auth]\nlockout_threshold = -9223372036854775808\n",
            "[auth]\nlockout_threshold = 1.5\n",
            "a = [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]",
            "é = 1\n[é.ü]\nx = 1\n",
            "\u{0}",
        ] {
            let _ = load_text(text).1;
        }
        let (_f, r) = load_text("\u{feff}data_dir = \"/bom\"\n");
        assert_eq!(r.unwrap().data_dir, PathBuf::from("/bom"));
    }

    #[test]
    fn summary_lists_every_key_sorted_by_section() {
        let s = Config::default().summary();
        let keys: Vec<&str> = s.lines().map(|l| l.split(" = ").next().unwrap()).collect();
        assert_eq!(keys.len(), ALL_KEYS.len());
        assert_eq!(
            keys,
            [
                "data_dir",
                "shutdown_grace",
                "auth.deny_new_super_admins",
                "auth.lockout_duration",
                "auth.lockout_threshold",
                "auth.min_password_length",
                "auth.token_ttl",
                "log.format",
                "log.level",
                "rdp.listen",
                "rdp.ticket_ttl",
                "rdp.dangerous.accept_any_target_certificate",
                "recording.record_input",
                "recording.retention_days",
                "ssh.connect_timeout",
                "ssh.host_key_dir",
                "ssh.idle_timeout",
                "ssh.listen",
                "ssh.login_grace_time",
                "ssh.max_connections",
                "ssh.max_session_duration",
                "ssh.dangerous.accept_any_target_host_key",
                "vault.database_url",
                "vault.master_key_file",
                "vault.require_reason",
                "vault.sweep_interval",
                "vault.ticket_webhook_url",
                "web.api_allow",
                "web.api_deny",
                "web.listen",
                "web.session_idle_timeout",
                "web.tls_cert",
                "web.tls_key",
                "web.ui_allow",
                "web.ui_deny",
            ]
        );
        assert!(s.contains("shutdown_grace = \"5s\""));
        assert!(s.contains("auth.token_ttl = \"12h\""));
        assert!(s.contains("web.listen = \"127.0.0.1:8443\""));
        assert!(s.contains("ssh.idle_timeout = \"30m\""));
        assert!(s.contains("ssh.max_connections = 1000"));
        // The summary is itself valid TOML that loads back to the same config.
        let (_f, r) = load_text(&s);
        assert_eq!(r.unwrap(), Config::default());
    }

    #[test]
    fn vault_workflow_keys() {
        let (_f, r) = load_text(
            "[vault]\nticket_webhook_url = \"https://tickets.example/check\"\nsweep_interval = \"5s\"\nrequire_reason = true\n",
        );
        let c = r.unwrap();
        assert_eq!(c.vault.ticket_webhook_url, "https://tickets.example/check");
        assert_eq!(c.vault.sweep_interval, Duration::from_secs(5));
        assert!(c.vault.require_reason);
        for bad in [
            "[vault]\nticket_webhook_url = \"ftp://x\"\n",
            "[vault]\nticket_webhook_url = \"https://a b\"\n",
            "[vault]\nsweep_interval = \"0s\"\n",
            "[vault]\nsweep_interval = 5\n",
        ] {
            let (_f, r) = load_text(bad);
            assert!(r.is_err(), "{bad}");
        }
    }

    #[test]
    fn example_file_parses_and_equals_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/postern.example.toml");
        let c = load(Some(&path), &[], &[]).unwrap();
        assert_eq!(c, Config::default());
    }

    #[test]
    fn example_file_commented_keys_are_the_derived_defaults() {
        // Uncommenting every commented-out `# key = value` line must still
        // give the defaults (documents the derived data_dir paths).
        let mut uncommented = 0;
        let text: String = EXAMPLE
            .lines()
            .map(|l| {
                let rest = l.strip_prefix("# ").unwrap_or("");
                let is_setting = ALL_KEYS.iter().any(|k| {
                    let leaf = k.dotted().rsplit('.').next().unwrap_or_default();
                    rest.starts_with(&format!("{leaf} = "))
                });
                if is_setting {
                    uncommented += 1;
                    format!("{rest}\n")
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
        assert_eq!(uncommented, 5, "{text}");
        let (_f, r) = load_text(&text);
        assert_eq!(r.unwrap(), Config::default());
    }

    #[test]
    fn example_file_documents_every_key() {
        let (_f, r) = load_text(EXAMPLE);
        r.unwrap();
        for key in ALL_KEYS {
            let leaf = key.dotted().rsplit('.').next().unwrap_or_default();
            assert!(
                EXAMPLE.lines().any(|l| {
                    let l = l.strip_prefix("# ").unwrap_or(l);
                    l.starts_with(&format!("{leaf} = "))
                }),
                "{leaf} missing from the example"
            );
            assert!(EXAMPLE.contains(&key.env_var()), "{} not documented", key.env_var());
        }
    }

    #[test]
    fn web_session_timeout_and_ip_lists() {
        let c = Config::default();
        assert_eq!(c.web.session_idle_timeout, Duration::from_secs(15 * 60));
        assert!(c.web.ui_allow.is_empty() && c.web.ui_deny.is_empty());
        assert!(c.web.api_allow.is_empty() && c.web.api_deny.is_empty());

        let f = file("[web]\nsession_idle_timeout = \"5m\"\nui_allow = [\"10.1.2.3/8\", \"::1\"]\napi_deny = []\n");
        let c = load(
            Some(f.path()),
            &[("POSTERN_WEB_API_ALLOW", "192.0.2.0/24, 198.51.100.7")],
            &[("web.ui_deny", "")],
        )
        .unwrap();
        assert_eq!(c.web.session_idle_timeout, Duration::from_secs(300));
        let nets = |v: &[&str]| v.iter().map(|s| s.parse::<IpNet>().unwrap()).collect::<Vec<_>>();
        assert_eq!(c.web.ui_allow, nets(&["10.0.0.0/8", "::1/128"]));
        assert_eq!(c.web.api_allow, nets(&["192.0.2.0/24", "198.51.100.7/32"]));
        assert!(c.web.ui_deny.is_empty() && c.web.api_deny.is_empty());
        let s = c.summary();
        assert!(s.contains("web.ui_allow = [\"10.0.0.0/8\", \"::1/128\"]"), "{s}");
        assert!(s.contains("web.session_idle_timeout = \"5m\""), "{s}");
        let (_f, r) = load_text(&s);
        assert_eq!(r.unwrap(), c, "the summary loads back");

        // Bad values: every one reported, with the key.
        let f = file("[web]\nui_allow = [\"10.0.0.0/33\"]\nui_deny = \"10.0.0.0/8\"\napi_allow = [1]\nsession_idle_timeout = \"0s\"\n");
        let e = errs(load(Some(f.path()), &[("POSTERN_WEB_API_DENY", "example.com")], &[]));
        assert_eq!(e.len(), 5, "{e:?}");
        let msg = e.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n");
        for k in [
            "web.ui_allow",
            "web.ui_deny",
            "web.api_allow",
            "web.session_idle_timeout",
            "POSTERN_WEB_API_DENY",
        ] {
            assert!(msg.contains(k), "{k} missing from: {msg}");
        }
        assert!(msg.contains("CIDR"), "{msg}");
    }
}
