//! Every setting, once: its command-line flag, its TOML key, its default and its validation.
//!
//! A setting named `snake_case` in the API is the TOML key `snake_case` and the flag
//! `--kebab-case`. Flags win over the file. Bad values are refused at startup with a
//! message naming the setting.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;

/// Most workers one process runs (sets of workers are bitmaps of this size).
pub const MAX_WORKERS: usize = 256;

/// Largest `max_pending_bytes`: a connection's queue is counted in 32 bits.
pub const MAX_PENDING_LIMIT: usize = 1 << 30;

/// What `herald --version` prints: version, git revision, target, linking, io drivers (build.rs).
pub const VERSION: &str = include_str!(concat!(env!("OUT_DIR"), "/version.txt"));

/// Which io driver the workers run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    /// io_uring when it can be set up, else epoll.
    Auto,
    Uring,
    Epoll,
}

/// herald — an event fanout server: publish over HTTP, deliver over SSE, WebSocket and long-poll.
#[derive(Debug, Parser, Default)]
#[command(name = "herald", version = VERSION.lines().next(), long_version = VERSION, about, long_about = None, allow_negative_numbers = true)]
pub struct Flags {
    /// TOML file with any of the settings below (keys in snake_case); flags win over it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address(es) to listen on, comma-separated [default: 127.0.0.1:8080].
    #[arg(long, value_name = "ADDR[,ADDR]", env = "HERALD_LISTEN")]
    pub listen: Option<String>,
    /// Worker threads, each pinned to a core [default: one per CPU].
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
    /// I/O driver: auto (io_uring, else epoll), uring or epoll [default: auto].
    #[arg(long, value_name = "DRIVER")]
    pub driver: Option<String>,
    /// Events kept per topic for resuming [default: 1000].
    #[arg(long, value_name = "N")]
    pub history: Option<usize>,
    /// Seconds an event stays in history [default: 300].
    #[arg(long, value_name = "SECS")]
    pub history_ttl: Option<f64>,
    /// Memory all history may take, in bytes; past it the oldest events of the largest topics go first [default: a quarter of physical memory].
    #[arg(long, value_name = "BYTES")]
    pub max_history_bytes: Option<u64>,
    /// Seconds of silence before a stream gets a heartbeat [default: 15].
    #[arg(long, value_name = "SECS")]
    pub heartbeat: Option<f64>,
    /// Least seconds between two events of an `$occupancy:` topic [default: 1].
    #[arg(long, value_name = "SECS")]
    pub occupancy_interval: Option<f64>,
    /// Topic prefixes whose subscribers' JWT `sub`s are kept as presence, comma-separated [default: none].
    #[arg(long, value_name = "PREFIXES")]
    pub presence_prefixes: Option<String>,
    /// Seconds a user stays present after their last subscription ends [default: 5].
    #[arg(long, value_name = "SECS")]
    pub presence_linger: Option<f64>,
    /// Seconds a publish's Idempotency-Key is remembered: a retry within it is not published again [default: 300].
    #[arg(long, value_name = "SECS")]
    pub idempotency_ttl: Option<f64>,
    /// Idempotency keys remembered at once across the node, each worker its share; past it the oldest of the topic holding the most go first [default: 1000000].
    #[arg(long, value_name = "N")]
    pub max_idempotency_keys: Option<usize>,
    /// Largest event data in bytes [default: 65536].
    #[arg(long, value_name = "BYTES")]
    pub max_event_bytes: Option<usize>,
    /// Largest batch-publish body in bytes [default: 4194304].
    #[arg(long, value_name = "BYTES")]
    pub max_batch_bytes: Option<usize>,
    /// Output queued for one connection before it is cut as a slow consumer [default: 1048576].
    #[arg(long, value_name = "BYTES")]
    pub max_pending_bytes: Option<usize>,
    /// Open connections accepted before new ones get 503 [default: 100000, capped by the open-files limit].
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,
    /// Topics kept at once (with history or subscribers); past it new topics are refused with 503 [default: 1000000].
    #[arg(long, value_name = "N")]
    pub max_topics: Option<usize>,
    /// Seconds a request head may take to arrive [default: 10].
    #[arg(long, value_name = "SECS")]
    pub head_timeout: Option<f64>,
    /// Seconds a request body may take to arrive, plus one per 64 KiB it may hold [default: 30].
    #[arg(long, value_name = "SECS")]
    pub body_timeout: Option<f64>,
    /// Memory request bodies being read may take at once, in bytes; past it new bodies get 503 [default: 64 MiB].
    #[arg(long, value_name = "BYTES")]
    pub max_body_memory: Option<u64>,
    /// Reconnect delay sent to SSE clients as `retry:`, in seconds [default: 3].
    #[arg(long, value_name = "SECS")]
    pub sse_retry: Option<f64>,
    /// Key publishers must send as `Authorization: Bearer <key>` [default: none; loopback may publish].
    #[arg(long, value_name = "KEY", env = "HERALD_PUBLISH_KEY", hide_env_values = true)]
    pub publish_key: Option<String>,
    /// File holding the publish key (a flag's value shows in `ps`; the file's does not).
    #[arg(long, value_name = "FILE")]
    pub publish_key_file: Option<PathBuf>,
    /// HS256 secret for subscriber JWTs [default: none].
    #[arg(long, value_name = "SECRET", env = "HERALD_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// File holding the JWT secret.
    #[arg(long, value_name = "FILE")]
    pub jwt_secret_file: Option<PathBuf>,
    /// Allowed CORS origins, comma-separated, or * [default: none].
    #[arg(long, value_name = "ORIGINS")]
    pub cors_origins: Option<String>,
    /// Log level: error, warn, info, debug or trace [default: info].
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// Serve `GET /ws/echo`, a WebSocket that echoes every message (for conformance suites).
    #[arg(long)]
    pub ws_echo: bool,
    /// Another path prefix for the member-events routes, e.g. /api (besides /events and /notification/events).
    #[arg(long, value_name = "PATH")]
    pub member_events_prefix: Option<String>,
    /// Trust the Member-ID header on GET /events even with a jwt_secret (only behind a gateway that sets it).
    #[arg(long)]
    pub member_events_trust_header: bool,
}

/// The TOML file: the same settings, by their snake_case keys.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct File {
    listen: Option<StringOrList>,
    workers: Option<usize>,
    driver: Option<String>,
    history: Option<usize>,
    history_ttl: Option<f64>,
    max_history_bytes: Option<u64>,
    heartbeat: Option<f64>,
    occupancy_interval: Option<f64>,
    presence_prefixes: Option<StringOrList>,
    presence_linger: Option<f64>,
    idempotency_ttl: Option<f64>,
    max_idempotency_keys: Option<usize>,
    max_event_bytes: Option<usize>,
    max_batch_bytes: Option<usize>,
    max_pending_bytes: Option<usize>,
    max_connections: Option<usize>,
    max_topics: Option<usize>,
    head_timeout: Option<f64>,
    body_timeout: Option<f64>,
    max_body_memory: Option<u64>,
    sse_retry: Option<f64>,
    publish_key: Option<String>,
    publish_key_file: Option<PathBuf>,
    jwt_secret: Option<String>,
    jwt_secret_file: Option<PathBuf>,
    cors_origins: Option<StringOrList>,
    log_level: Option<String>,
    ws_echo: Option<bool>,
    member_events_prefix: Option<String>,
    member_events_trust_header: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum StringOrList {
    One(String),
    Many(Vec<String>),
}

impl StringOrList {
    fn joined(self) -> String {
        match self {
            StringOrList::One(s) => s,
            StringOrList::Many(v) => v.join(","),
        }
    }
}

/// The validated settings the server runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: Vec<SocketAddr>,
    pub workers: usize,
    pub driver: Driver,
    pub history: usize,
    pub history_ttl: Duration,
    /// Memory all topics' history may take (split evenly between the owners).
    pub max_history_bytes: u64,
    pub heartbeat: Duration,
    /// Least time between two events of an `$occupancy:` topic, and how often watched topics
    /// are counted.
    pub occupancy_interval: Duration,
    /// Topic prefixes under which presence is kept (`Config::keeps_presence`).
    pub presence_prefixes: Vec<String>,
    /// How long a user stays present after their last subscription to a topic ends: a
    /// reconnect within it is no leave and join.
    pub presence_linger: Duration,
    /// How long a publish's `Idempotency-Key` is remembered, and how many are at once across
    /// the node (split evenly between the owners).
    pub idempotency_ttl: Duration,
    pub max_idempotency_keys: usize,
    pub max_event_bytes: usize,
    pub max_batch_bytes: usize,
    pub max_pending_bytes: usize,
    pub max_connections: usize,
    /// Topics kept at once across the node; a new one past it is refused.
    pub max_topics: usize,
    pub head_timeout: Duration,
    /// How long a request body may take: this plus a second per 64 KiB it may hold.
    pub body_timeout: Duration,
    /// Memory request bodies being read may take at once (split evenly between workers).
    pub max_body_memory: u64,
    pub sse_retry: Duration,
    pub publish_key: Option<String>,
    pub jwt_secret: Option<String>,
    pub cors_origins: Vec<String>,
    pub log_level: String,
    pub ws_echo: bool,
    pub member_events_prefix: Option<String>,
    /// `GET /events` trusts `Member-ID` even with `jwt_secret` set (a gateway sets it).
    pub member_events_trust_header: bool,
}

impl Config {
    /// Whether presence is kept for `topic`: it is under one of `presence_prefixes`.
    pub fn keeps_presence(&self, topic: &str) -> bool {
        self.presence_prefixes.iter().any(|p| topic.starts_with(p.as_str()))
    }
}

impl Default for Config {
    fn default() -> Self {
        Config::resolve(Flags::default()).expect("defaults are valid")
    }
}

/// A setting that was refused, with the reason.
#[derive(Debug, thiserror::Error)]
#[error("invalid setting `{setting}`: {reason}")]
pub struct ConfigError {
    pub setting: &'static str,
    pub reason: String,
}

fn bad(setting: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError { setting, reason: reason.into() }
}

/// A secret from, in order: its flag (or environment variable), the file its flag names, its
/// key in the config file, the file that key names. A file's content is taken without its
/// trailing newline.
fn secret(
    name: &'static str,
    flag: Option<String>,
    flag_file: Option<PathBuf>,
    key: Option<String>,
    key_file: Option<PathBuf>,
) -> Result<Option<String>, ConfigError> {
    let read = |path: PathBuf| {
        std::fs::read_to_string(&path)
            .map(|s| s.trim_end_matches(['\r', '\n']).to_string())
            .map_err(|e| bad(name, format!("cannot read {}: {e}", path.display())))
    };
    if let Some(v) = flag {
        return Ok(Some(v));
    }
    if let Some(p) = flag_file {
        return read(p).map(Some);
    }
    if let Some(v) = key {
        return Ok(Some(v));
    }
    key_file.map(read).transpose()
}

/// Shortest secrets not warned about at startup: an HS256 key shorter than its hash (32
/// bytes) can be guessed offline from any token; a publish key is guessed online.
const SHORT_JWT_SECRET: usize = 32;
const SHORT_PUBLISH_KEY: usize = 16;

impl Config {
    /// What an operator should hear about these settings at startup.
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        if self.jwt_secret.as_ref().is_some_and(|s| s.len() < SHORT_JWT_SECRET) {
            w.push(format!(
                "jwt_secret is shorter than {SHORT_JWT_SECRET} bytes: tokens can be forged by guessing it offline"
            ));
        }
        if self.publish_key.as_ref().is_some_and(|k| k.len() < SHORT_PUBLISH_KEY) {
            w.push(format!("publish_key is shorter than {SHORT_PUBLISH_KEY} bytes"));
        }
        let exposed = self.listen.iter().any(|a| !a.ip().is_loopback());
        if exposed && self.member_events_trust_header {
            w.push(
                "member_events_trust_header is set and herald listens beyond loopback: GET /events trusts \
                 Member-ID, which is safe only behind a gateway that sets it (and strips it from clients)"
                    .into(),
            );
        }
        if exposed && self.jwt_secret.is_none() {
            w.push(
                "listening beyond loopback with no jwt_secret: GET /events trusts the Member-ID header, so anyone \
                 who can guess a member id reads that member's events (set jwt_secret, or put herald behind a \
                 gateway that sets Member-ID)"
                    .into(),
            );
        }
        w
    }

    /// Parses the command line (and the `--config` file it names).
    pub fn from_args() -> Result<Config, ConfigError> {
        Config::resolve(Flags::parse())
    }

    /// Merges flags over the file over the defaults, and validates the result.
    pub fn resolve(flags: Flags) -> Result<Config, ConfigError> {
        let file = match &flags.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| bad("config", format!("cannot read {}: {e}", path.display())))?;
                toml::from_str::<File>(&text).map_err(|e| bad("config", format!("{}: {e}", path.display())))?
            }
            None => File::default(),
        };
        let listen = flags.listen.or(file.listen.map(StringOrList::joined)).unwrap_or_else(|| "127.0.0.1:8080".into());
        let listen = listen
            .split(',')
            .map(|a| {
                a.trim()
                    .parse::<SocketAddr>()
                    .map_err(|e| bad("listen", format!("{a:?}: {e} (from --listen, HERALD_LISTEN or the file)")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let workers = flags.workers.or(file.workers).unwrap_or(cpus);
        if !(1..=MAX_WORKERS).contains(&workers) {
            return Err(bad("workers", format!("must be 1 to {MAX_WORKERS}")));
        }
        let driver = match flags.driver.or(file.driver).as_deref().unwrap_or("auto") {
            "auto" => Driver::Auto,
            "uring" | "io_uring" => Driver::Uring,
            "epoll" | "legacy" => Driver::Epoll,
            other => return Err(bad("driver", format!("{other:?} is not one of auto, uring, epoll"))),
        };
        let secs = |name: &'static str, v: Option<f64>, default: f64, min: f64| -> Result<Duration, ConfigError> {
            let v = v.unwrap_or(default);
            if !v.is_finite() || v < min || v > 1.0e7 {
                return Err(bad(name, format!("{v} is not a number of seconds ≥ {min}")));
            }
            Ok(Duration::from_secs_f64(v))
        };
        let positive = |name: &'static str, v: Option<usize>, default: usize| -> Result<usize, ConfigError> {
            let v = v.unwrap_or(default);
            if v == 0 {
                return Err(bad(name, "must be greater than 0"));
            }
            Ok(v)
        };
        let history = flags.history.or(file.history).unwrap_or(1000);
        if history > 10_000_000 {
            return Err(bad("history", "at most 10000000"));
        }
        let history_ttl = secs("history_ttl", flags.history_ttl.or(file.history_ttl), 300.0, 0.001)?;
        let max_history_bytes = match flags.max_history_bytes.or(file.max_history_bytes) {
            Some(0) => return Err(bad("max_history_bytes", "must be greater than 0")),
            Some(n) => n,
            // A quarter of what herald may use (a container's limit when it has one), with
            // no floor: a floor would pass a small container's limit.
            None => match crate::sys::physical_memory() {
                0 => 64 << 20,
                memory => memory / 4,
            },
        };
        let heartbeat = secs("heartbeat", flags.heartbeat.or(file.heartbeat), 15.0, 0.01)?;
        let occupancy_interval =
            secs("occupancy_interval", flags.occupancy_interval.or(file.occupancy_interval), 1.0, 0.01)?;
        if occupancy_interval > Duration::from_secs(3600) {
            return Err(bad("occupancy_interval", "at most 3600 seconds"));
        }
        // Connection stamps measure spans of up to 24 days (`shard::clock`); the liveness
        // check spans two heartbeats.
        if heartbeat > Duration::from_secs(86_400) {
            return Err(bad("heartbeat", format!("{} s is more than a day", heartbeat.as_secs())));
        }
        let max_event_bytes = positive("max_event_bytes", flags.max_event_bytes.or(file.max_event_bytes), 65536)?;
        if max_event_bytes > 64 << 20 {
            return Err(bad("max_event_bytes", "at most 67108864"));
        }
        let max_batch_bytes = positive("max_batch_bytes", flags.max_batch_bytes.or(file.max_batch_bytes), 4 << 20)?;
        if max_batch_bytes > 1 << 30 {
            return Err(bad("max_batch_bytes", "at most 1073741824"));
        }
        let max_pending_bytes =
            positive("max_pending_bytes", flags.max_pending_bytes.or(file.max_pending_bytes), 1 << 20)?;
        if max_pending_bytes > MAX_PENDING_LIMIT {
            return Err(bad("max_pending_bytes", format!("at most {MAX_PENDING_LIMIT}")));
        }
        let max_connections = positive("max_connections", flags.max_connections.or(file.max_connections), 100_000)?;
        let max_topics = positive("max_topics", flags.max_topics.or(file.max_topics), 1_000_000)?;
        let head_timeout = secs("head_timeout", flags.head_timeout.or(file.head_timeout), 10.0, 0.01)?;
        let body_timeout = secs("body_timeout", flags.body_timeout.or(file.body_timeout), 30.0, 0.01)?;
        // Each worker must have room for at least one largest body.
        let least_body_memory = (workers * max_batch_bytes) as u64;
        let max_body_memory = match flags.max_body_memory.or(file.max_body_memory) {
            Some(n) if n < least_body_memory => {
                return Err(bad(
                    "max_body_memory",
                    format!(
                        "at least workers × max_batch_bytes = {least_body_memory}, so each worker can take the largest body"
                    ),
                ));
            }
            Some(n) => n,
            None => (64u64 << 20).max(2 * least_body_memory),
        };
        let sse_retry = secs("sse_retry", flags.sse_retry.or(file.sse_retry), 3.0, 0.0)?;
        let cors_origins = flags
            .cors_origins
            .or(file.cors_origins.map(StringOrList::joined))
            .map(|s| s.split(',').map(|o| o.trim().to_string()).filter(|o| !o.is_empty()).collect())
            .unwrap_or_default();
        let presence_given = flags.presence_prefixes.or(file.presence_prefixes.map(StringOrList::joined));
        let presence_prefixes: Vec<String> = presence_given
            .as_deref()
            .map(|s| s.split(',').map(|p| p.trim().to_string()).filter(|p| !p.is_empty()).collect())
            .unwrap_or_default();
        // Given but naming nothing (`","`, `" "`): a typo, not a wish to turn presence off.
        if presence_given.is_some_and(|s| !s.is_empty()) && presence_prefixes.is_empty() {
            return Err(bad("presence_prefixes", "names no prefix (leave it unset for no presence)"));
        }
        // The start of a topic name (API.md §1).
        let topic_start =
            |p: &str| p.len() <= 128 && p.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.:@-".contains(&b));
        if let Some(p) = presence_prefixes.iter().find(|p| !topic_start(p)) {
            return Err(bad("presence_prefixes", format!("{p:?} is not the start of a topic name")));
        }
        let presence_linger = secs("presence_linger", flags.presence_linger.or(file.presence_linger), 5.0, 0.0)?;
        if presence_linger > Duration::from_secs(3600) {
            return Err(bad("presence_linger", "at most 3600 seconds"));
        }
        let idempotency_ttl = secs("idempotency_ttl", flags.idempotency_ttl.or(file.idempotency_ttl), 300.0, 0.1)?;
        if idempotency_ttl > Duration::from_secs(86_400) {
            return Err(bad("idempotency_ttl", "at most 86400 seconds"));
        }
        let max_idempotency_keys =
            positive("max_idempotency_keys", flags.max_idempotency_keys.or(file.max_idempotency_keys), 1_000_000)?;
        // Each worker's owner keeps its share, for the topics it owns.
        if max_idempotency_keys < workers {
            return Err(bad("max_idempotency_keys", format!("at least one per worker ({workers})")));
        }
        let log_level = flags.log_level.or(file.log_level).unwrap_or_else(|| "info".into());
        if !["error", "warn", "info", "debug", "trace"].contains(&log_level.as_str()) {
            return Err(bad("log_level", format!("{log_level:?} is not one of error, warn, info, debug, trace")));
        }
        let member_events_prefix = match flags.member_events_prefix.or(file.member_events_prefix) {
            None => None,
            Some(p) if p.starts_with('/') && !p.ends_with('/') && !p.contains(['?', '#', ' ']) => Some(p),
            Some(p) => {
                return Err(bad("member_events_prefix", format!("{p:?} must be a path like /api (no trailing /)")));
            }
        };
        let nonempty = |name: &'static str, v: Option<String>| -> Result<Option<String>, ConfigError> {
            match v {
                Some(s) if s.is_empty() => Err(bad(name, "must not be empty")),
                other => Ok(other),
            }
        };
        Ok(Config {
            listen,
            workers,
            driver,
            history,
            history_ttl,
            max_history_bytes,
            heartbeat,
            occupancy_interval,
            presence_prefixes,
            presence_linger,
            idempotency_ttl,
            max_idempotency_keys,
            max_event_bytes,
            max_batch_bytes,
            max_pending_bytes,
            max_connections,
            max_topics,
            head_timeout,
            body_timeout,
            max_body_memory,
            sse_retry,
            publish_key: nonempty(
                "publish_key",
                secret(
                    "publish_key",
                    flags.publish_key,
                    flags.publish_key_file,
                    file.publish_key,
                    file.publish_key_file,
                )?,
            )?,
            jwt_secret: nonempty(
                "jwt_secret",
                secret("jwt_secret", flags.jwt_secret, flags.jwt_secret_file, file.jwt_secret, file.jwt_secret_file)?,
            )?,
            cors_origins,
            log_level,
            ws_echo: flags.ws_echo || file.ws_echo.unwrap_or(false),
            member_events_prefix,
            member_events_trust_header: flags.member_events_trust_header
                || file.member_events_trust_header.unwrap_or(false),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(args: &[&str]) -> Flags {
        let mut all = vec!["herald"];
        all.extend_from_slice(args);
        Flags::try_parse_from(all).expect("flags parse")
    }

    #[test]
    fn defaults_follow_the_api() {
        let c = Config::resolve(flags(&[])).unwrap();
        assert_eq!(c.listen, vec!["127.0.0.1:8080".parse().unwrap()]);
        assert_eq!(c.history, 1000);
        assert_eq!(c.history_ttl, Duration::from_secs(300));
        assert_eq!(c.heartbeat, Duration::from_secs(15));
        assert_eq!(c.max_event_bytes, 65536);
        assert_eq!(c.max_pending_bytes, 1 << 20);
        assert_eq!(c.max_connections, 100_000);
        assert_eq!(c.driver, Driver::Auto);
    }

    #[test]
    fn flags_win_over_the_file() {
        let dir = std::env::temp_dir().join(format!("herald-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("h.toml");
        std::fs::write(&path, "history = 5\nheartbeat = 2.5\nlisten = \"127.0.0.1:9000\"\ncors_origins = [\"https://a.example\", \"*\"]\n").unwrap();
        let p = path.to_str().unwrap();
        let c = Config::resolve(flags(&["--config", p, "--history", "7"])).unwrap();
        assert_eq!(c.history, 7);
        assert_eq!(c.heartbeat, Duration::from_millis(2500));
        assert_eq!(c.listen, vec!["127.0.0.1:9000".parse().unwrap()]);
        assert_eq!(c.cors_origins, vec!["https://a.example".to_string(), "*".to_string()]);
    }

    #[test]
    fn bad_values_name_the_setting() {
        for (args, setting) in [
            (&["--driver", "kqueue"][..], "driver"),
            (&["--workers", "0"][..], "workers"),
            (&["--heartbeat", "-1"][..], "heartbeat"),
            (&["--heartbeat", "NaN"][..], "heartbeat"),
            (&["--heartbeat", "100000"][..], "heartbeat"),
            (&["--occupancy-interval", "0"][..], "occupancy_interval"),
            (&["--occupancy-interval", "7200"][..], "occupancy_interval"),
            (&["--presence-prefixes", "room/"][..], "presence_prefixes"),
            (&["--presence-linger", "-1"][..], "presence_linger"),
            (&["--idempotency-ttl", "0"][..], "idempotency_ttl"),
            (&["--idempotency-ttl", "90000"][..], "idempotency_ttl"),
            (&["--max-idempotency-keys", "0"][..], "max_idempotency_keys"),
            (&["--presence-prefixes", ","][..], "presence_prefixes"),
            (&["--workers", "4", "--max-idempotency-keys", "3"][..], "max_idempotency_keys"),
            (&["--listen", "nowhere"][..], "listen"),
            (&["--max-event-bytes", "0"][..], "max_event_bytes"),
            (&["--log-level", "loud"][..], "log_level"),
        ] {
            let err = Config::resolve(flags(args)).unwrap_err();
            assert_eq!(err.setting, setting, "{args:?}");
        }
    }

    #[test]
    fn secrets_from_files_and_warnings() {
        let dir = std::env::temp_dir().join(format!("herald-cfg3-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("secret");
        std::fs::write(&path, "a-secret-long-enough-for-hs256-keys!\n").unwrap();
        let p = path.to_str().unwrap();
        let c = Config::resolve(flags(&["--jwt-secret-file", p, "--publish-key", "short"])).unwrap();
        assert_eq!(c.jwt_secret.as_deref(), Some("a-secret-long-enough-for-hs256-keys!"));
        assert_eq!(c.warnings().len(), 1, "{:?}", c.warnings());
        let c = Config::resolve(flags(&["--jwt-secret", "x", "--listen", "0.0.0.0:0"])).unwrap();
        assert_eq!(c.warnings().len(), 1, "{:?}", c.warnings());
        let c = Config::resolve(flags(&["--listen", "0.0.0.0:0"])).unwrap();
        assert!(c.warnings()[0].contains("Member-ID"));
        let err = Config::resolve(flags(&["--publish-key-file", "/nonexistent/key"])).unwrap_err();
        assert_eq!(err.setting, "publish_key");
    }

    #[test]
    fn unknown_file_keys_are_refused() {
        let dir = std::env::temp_dir().join(format!("herald-cfg2-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("h.toml");
        std::fs::write(&path, "histroy = 5\n").unwrap();
        let err = Config::resolve(flags(&["--config", path.to_str().unwrap()])).unwrap_err();
        assert_eq!(err.setting, "config");
        assert!(err.reason.contains("histroy"), "{}", err.reason);
    }
}
