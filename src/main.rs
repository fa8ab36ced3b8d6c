/// jemalloc rather than glibc's allocator: an operator replaces every cached account on each
/// watch event, and glibc kept the freed memory (10,000 accounts: 109 MiB peak and 86 MiB steady
/// RSS with glibc, 83 and 74 with jemalloc; docs/performance.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use anyhow::Context as _;

use clap::{Parser, Subcommand, ValueEnum};
use dhan_operator::calendar_file::CalendarInForce;
use dhan_operator::claims::ClaimSettings;
use dhan_operator::clock::{Clock, SystemClock};
use dhan_operator::controller::login::LoginSettings;
use dhan_operator::controller::login_job::{self, LoginJobSettings};
use dhan_operator::controller::login_pod::LoginPodOptions;
use dhan_operator::controller::{self, Settings};
use dhan_operator::decision::Limits;
use dhan_operator::decision::duration::parse_duration;
use dhan_operator::dhan::DhanClient;
use dhan_operator::health::Health;
use dhan_operator::http::auth::MetricsAuth;
use dhan_operator::http::{router, tls};
use dhan_operator::leader::{self, ElectionSettings};
use dhan_operator::metrics::{ClientIdLabel, Metrics};
use dhan_operator::{calendar_file, notify};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tracing::info;

/// Keeps Dhan broker access tokens alive for DhanAccount resources.
#[derive(Parser)]
#[command(name = "dhan-operator", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once at start-up; boxing the big variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run the controller.
    Run(RunArgs),
    /// Print the CustomResourceDefinitions as YAML (all, or the one named by its plural).
    Crd {
        #[arg(value_parser = ["dhanaccounts", "dhannotifiers", "dhanclientclaims", "dhanoperatorinstalls"])]
        which: Option<String>,
    },
    /// Log in on Dhan's consent page through a Chromium sidecar (in a login Job) and write the
    /// redirect's tokenId to the termination log. Configured by environment only.
    BrowserLogin,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Dhan's auth host (token mint, consent).
    #[arg(long, env = "DHAN_AUTH_URL", default_value = "https://auth.dhan.co")]
    dhan_auth_url: String,
    /// Dhan's API host (RenewToken, profile); `/v2` is appended when missing.
    #[arg(long, env = "DHAN_API_URL", default_value = "https://api.dhan.co")]
    dhan_api_url: String,
    /// PEM certificates to trust for Dhan's hosts besides the system's: a TLS-inspecting
    /// proxy's CA, or a test server's certificate.
    #[arg(long, env = "DHAN_CA_FILE")]
    dhan_ca_file: Option<PathBuf>,
    /// Watch only these namespaces (comma-separated; default: all namespaces). With a list the
    /// operator needs rights in those namespaces only (a Role in each).
    #[arg(long, env = "WATCH_NAMESPACE", value_delimiter = ',')]
    namespace: Vec<String>,
    /// Address of the /metrics, /healthz and /readyz endpoints.
    #[arg(long, env = "METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: String,
    /// Serve that port with TLS, and /metrics only to callers whose bearer token the API server
    /// accepts (TokenReview) and who may `get` the URL /metrics (SubjectAccessReview). Needs
    /// the rights to create both reviews.
    #[arg(long, env = "METRICS_SECURE")]
    metrics_secure: bool,
    /// PEM certificate for the secure metrics port (with --metrics-tls-key; reread every 5
    /// minutes). Default: a self-signed certificate made at start.
    #[arg(long, env = "METRICS_TLS_CERT", requires = "metrics_tls_key")]
    metrics_tls_cert: Option<PathBuf>,
    /// PEM private key of --metrics-tls-cert.
    #[arg(long, env = "METRICS_TLS_KEY", requires = "metrics_tls_cert")]
    metrics_tls_key: Option<PathBuf>,
    /// How per-account metrics carry the client ID: `plain`, `hashed` or `omit`.
    #[arg(long, env = "METRICS_CLIENT_ID", value_enum, default_value = "plain")]
    metrics_client_id: ClientIdLabel,
    /// Restart the workloads listed in spec.rolloutRestartTargets after a new token — only
    /// those that name the account in their dhan-operator.dev/restart-on-refresh-of
    /// annotation. Needs get and patch rights on Deployments, StatefulSets and DaemonSets.
    #[arg(long, env = "ROLLOUT_RESTARTS")]
    rollout_restarts: bool,
    /// After a new token, tell the running Pods that mount the output Secret to sync at once
    /// (one annotation on each; the kubelet rewrites the volume within about a second instead
    /// of at its next periodic sync, up to a minute or more) — only Pods labelled
    /// dhan-operator.dev/sync-on-refresh that name the account in their
    /// dhan-operator.dev/sync-on-refresh-of annotation. Needs list and patch rights on Pods.
    #[arg(long, env = "SYNC_PODS")]
    sync_pods: bool,
    /// This install's name in client-ID claims (cluster-scoped DhanClientClaims, which every
    /// install meets at without configuration): the same for its replicas and across restarts,
    /// different from every other install's. Default: the leader Lease's namespace/name, and
    /// the watched namespace when there is one.
    #[arg(long, env = "INSTALL_ID")]
    install_id: Option<String>,
    /// How long an install's client-ID claims hold after its last heartbeat (renewed every 10 s):
    /// how long the accounts of an install that vanished keep their client IDs, and how long a
    /// restart or an upgrade may take without another install minting in between. At least 60s:
    /// a new process of the install keeps the claims only from its first heartbeat.
    #[arg(long, env = "CLIENT_CLAIM_DURATION", default_value = "30m", value_parser = duration_arg)]
    client_claim_duration: Duration,
    /// Calls per second to Dhan across all accounts; the rest queue.
    #[arg(long, env = "DHAN_CALLS_PER_SECOND", default_value_t = 5.0)]
    dhan_calls_per_second: f64,
    /// Minimum time between two new tokens for one client ID (Dhan allows one mint per 2 minutes).
    #[arg(long, env = "MIN_MINT_INTERVAL", default_value = "125s", value_parser = duration_arg)]
    min_mint_interval: Duration,
    /// Scheduled refreshes of different accounts start spread over this much time before
    /// `refresh.schedule` (each account at its own fixed point), so accounts sharing a schedule
    /// do not all call Dhan in the same second. 0 starts all at the schedule.
    #[arg(long, env = "REFRESH_SPREAD", default_value = "10m", value_parser = duration_arg)]
    refresh_spread: Duration,
    /// No credentials are sent this close to midnight IST, either side: Dhan counts a day's
    /// refused logins by its own clock, and this node's may be off by minutes. 0 only where
    /// the clock is known to be Dhan's (a test bed with a mock).
    #[arg(long, env = "MIDNIGHT_MARGIN", default_value = "10m", value_parser = duration_arg)]
    midnight_margin: Duration,
    /// Timeout of one call to Dhan.
    #[arg(long, env = "DHAN_TIMEOUT", default_value = "20s", value_parser = duration_arg)]
    dhan_timeout: Duration,
    /// Accounts reconciled at once.
    #[arg(long, env = "CONCURRENCY", default_value_t = 16)]
    concurrency: u16,
    /// Run several replicas safely: only the holder of a coordination.k8s.io Lease reconciles.
    #[arg(long, env = "LEADER_ELECT")]
    leader_elect: bool,
    /// Namespace of the leader Lease (default: the pod's namespace, else "default").
    #[arg(long, env = "POD_NAMESPACE")]
    leader_elect_namespace: Option<String>,
    /// Name of the leader Lease.
    #[arg(long, default_value = "dhan-operator-leader")]
    leader_elect_lease: String,
    /// How long the leader Lease stays valid without renewal: a standby takes over after that.
    /// Must exceed --dhan-timeout plus 10s, so a mint in flight always ends first.
    #[arg(long, env = "LEADER_ELECT_LEASE_DURATION", default_value = "45s", value_parser = duration_arg)]
    leader_elect_lease_duration: Duration,
    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Run browser logins (method `browser`) as Jobs in the accounts' namespaces. Needs rights
    /// to create, watch and delete Jobs and to read Pods.
    #[arg(long, env = "BROWSER_LOGINS")]
    browser_logins: bool,
    /// Image of the login Job's `login` container: this operator's image, whose
    /// `browser-login` subcommand drives the browser.
    #[arg(
        long,
        env = "LOGIN_IMAGE",
        default_value = concat!("ghcr.io/dhan-operator/dhan-operator:", env!("CARGO_PKG_VERSION"))
    )]
    login_image: String,
    /// Image of the login Job's Chromium sidecar: a headless Chromium serving the DevTools
    /// protocol on port 9222. Pinned by digest: a moving tag would change the browser under a
    /// working login.
    #[arg(long, env = "CHROMIUM_IMAGE", default_value = DEFAULT_CHROMIUM_IMAGE)]
    chromium_image: String,
    /// The Chromium binary in that image, run instead of the image's entrypoint; "" keeps the
    /// entrypoint (then the image must serve CDP on 127.0.0.1:9222 with the Job's arguments).
    #[arg(long, env = "CHROMIUM_COMMAND", default_value = login_job::DEFAULT_CHROMIUM_COMMAND)]
    chromium_command: String,
    /// A Localhost seccomp profile (relative to the kubelet's seccomp directory) that allows user
    /// namespaces; with it the sidecar keeps Chromium's own sandbox. Unset: RuntimeDefault and
    /// `--no-sandbox`.
    #[arg(long, env = "CHROMIUM_SECCOMP_PROFILE")]
    chromium_seccomp_profile: Option<String>,
    /// Hosts besides the login URL's own where the login may type credentials (comma-separated,
    /// `*.domain` for subdomains); a page elsewhere gets no keystrokes.
    #[arg(long, env = "LOGIN_ALLOWED_HOSTS", default_value = login_job::DEFAULT_ALLOWED_HOSTS)]
    login_allowed_hosts: String,
    /// Address ranges login Pods may not reach (their NetworkPolicy's exceptions to port 443
    /// egress): metadata, link-local, the cluster's pod and service ranges.
    #[arg(long, env = "LOGIN_EGRESS_BLOCKED_CIDRS", value_delimiter = ',',
          default_values_t = login_job::DEFAULT_EGRESS_BLOCKED_CIDRS.iter().map(|c| c.to_string()).collect::<Vec<_>>())]
    login_egress_blocked_cidrs: Vec<String>,
    /// A YAML file of what every login Pod gets: imagePullSecrets, nodeSelector, tolerations,
    /// affinity, priorityClassName, labels, annotations, resources.{login,chromium} and
    /// proxy.{url,noProxy,cidrs} (docs/browser-logins.md). Checked at start.
    #[arg(long, env = "LOGIN_POD_OPTIONS")]
    login_pod_options: Option<String>,
    /// Most login Jobs running at once; further logins wait for a free slot.
    #[arg(long, env = "MAX_CONCURRENT_LOGIN_JOBS", default_value_t = 4,
          value_parser = clap::value_parser!(u16).range(1..))]
    max_concurrent_login_jobs: u16,
    /// Refusals of the credentials per client and IST day (PIN+TOTP mints Dhan refuses, browser
    /// logins that fail after reaching its PIN/TOTP step) before the account stops (wrong PINs
    /// sent repeatedly can lock a Dhan account).
    #[arg(long, env = "MAX_FAILED_LOGINS", default_value_t = 3,
          value_parser = clap::value_parser!(u32).range(1..))]
    max_failed_logins: u32,
    /// How long one browser login may take (the Job's deadline adds a minute for Chromium).
    #[arg(long, env = "LOGIN_TIMEOUT", default_value = "120s", value_parser = duration_arg)]
    login_timeout: Duration,
    /// Trading calendar (YAML: holidays and special sessions) for market-hours protection and
    /// `refresh.tradingDaysOnly`; re-read when it changes. Default: the calendar shipped with
    /// this release.
    #[arg(long, env = "TRADING_CALENDAR")]
    trading_calendar: Option<std::path::PathBuf>,
    /// Send DhanNotifier alerts (Telegram, webhooks). Needs the DhanNotifier CRD and rights to
    /// watch DhanNotifiers and patch their status.
    #[arg(long, env = "NOTIFICATIONS")]
    notifications: bool,
    /// Telegram's Bot API server, for every DhanNotifier (a notifier's own spec.telegram.apiUrl
    /// may only repeat it).
    #[arg(long, env = "TELEGRAM_API_URL", default_value = notify::deliver::DEFAULT_TELEGRAM_API)]
    telegram_api_url: String,
    /// Let webhooks use plain http (default: https only).
    #[arg(long, env = "NOTIFY_ALLOW_HTTP")]
    notify_allow_http: bool,
    /// Let notifications go to loopback, private, link-local (cloud metadata) and other
    /// inside addresses — for receivers inside the cluster. Default: refused, whether the URL
    /// names the address or a name resolves to it; no redirect is ever followed.
    #[arg(long, env = "NOTIFY_ALLOW_PRIVATE_ADDRESSES")]
    notify_allow_private_addresses: bool,
}

/// `chromedp/headless-shell` (Chromium 151), by the digest published projects pin it at.
const DEFAULT_CHROMIUM_IMAGE: &str = "chromedp/headless-shell@sha256:2d349b544a1ea6b5b5fd7c0fe99215ff662339c57407ee2e8c0a11af93516b04";

fn duration_arg(text: &str) -> Result<Duration, String> {
    parse_duration(text)
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
        // chromiumoxide's debug/trace output carries raw DevTools traffic (typed keys, POST
        // bodies), and it warns about every event of a newer Chromium that it cannot parse.
        .add_directive("chromiumoxide=error".parse().expect("valid directive"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Crd { which } => {
            use dhan_operator::claims::resource::{claim_crd_yaml, install_crd_yaml};
            let all = [
                ("dhanaccounts", dhan_operator::crd::crd_yaml()),
                ("dhannotifiers", dhan_operator::notify::resource::crd_yaml()),
                ("dhanclientclaims", claim_crd_yaml()),
                ("dhanoperatorinstalls", install_crd_yaml()),
            ];
            let chosen: Vec<&str> = all
                .iter()
                .filter(|(plural, _)| which.as_deref().is_none_or(|w| w == *plural))
                .map(|(_, yaml)| yaml.as_str())
                .collect();
            print!("{}", chosen.join("---\n"));
            Ok(())
        }
        Command::Run(args) => run(args).await,
        Command::BrowserLogin => {
            init_logging(LogFormat::Text);
            std::process::exit(dhan_operator::browser::run_from_env(&SystemClock).await);
        }
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    init_logging(args.log_format);
    anyhow::ensure!(
        args.dhan_timeout <= dhan_operator::claims::MAX_CALL,
        "--dhan-timeout must be at most {}s: a mint must end while this process still acts for \
         its install (its heartbeat)",
        dhan_operator::claims::MAX_CALL.as_secs()
    );
    anyhow::ensure!(
        args.client_claim_duration >= dhan_operator::claims::MIN_CLAIM_DURATION,
        "--client-claim-duration must be at least {}s: after this operator dies, a new process of \
         its install keeps its claims only from its first heartbeat, up to that long after the \
         last one",
        dhan_operator::claims::MIN_CLAIM_DURATION.as_secs()
    );
    let login_pod_options = match &args.login_pod_options {
        Some(path) => LoginPodOptions::load(path).context("invalid --login-pod-options")?,
        None => LoginPodOptions::default(),
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    // The one clock of this operator: its reconciles, Dhan client, notifier, metrics and
    // calendar checks all read it.
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let extra_roots = match &args.dhan_ca_file {
        Some(path) => Some(
            std::fs::read(path)
                .with_context(|| format!("cannot read --dhan-ca-file {}", path.display()))?,
        ),
        None => None,
    };
    let dhan = DhanClient::with_roots(
        &args.dhan_auth_url,
        &args.dhan_api_url,
        args.dhan_timeout,
        clock.clone(),
        extra_roots.as_deref(),
    )
    .context("invalid Dhan settings")?;
    let client = kube::Client::try_default().await.context(
        "cannot reach the Kubernetes API (check KUBECONFIG or the in-cluster service account)",
    )?;

    let metrics = Arc::new(Metrics::new(args.metrics_client_id));
    let (calendar, calendar_text) =
        calendar_file::initial(args.trading_calendar.as_deref(), &metrics, clock.as_ref())?;
    if let (Some(path), Some(text)) = (args.trading_calendar.clone(), calendar_text) {
        tokio::spawn(calendar_file::watch(
            path,
            text,
            calendar.clone(),
            metrics.clone(),
            clock.clone(),
        ));
    }
    let health = Health::default();
    serve_http(&args, client.clone(), metrics.clone(), health.clone()).await?;

    let mut settings = controller_settings(
        &args,
        Arc::new(dhan),
        clock.clone(),
        calendar.clone(),
        health.clone(),
        login_pod_options,
    );
    // One cache of the accounts, for the controller and the notifier.
    let cache = controller::AccountCache::default();
    // Only the leader reconciles and notifies: the notifier runs beside the controller and
    // stops with it.
    let notifier = args.notifications.then(|| {
        let accounts = cache.reader();
        let shared = notify::Shared {
            metrics: metrics.clone(),
            clock: clock.clone(),
            calendar,
            egress: notify::egress::Egress {
                telegram_api: args.telegram_api_url.clone(),
                allow_http: args.notify_allow_http,
                allow_private: args.notify_allow_private_addresses,
            },
        };
        notify::run(
            client.clone(),
            controller::scope::parse(&args.namespace),
            shared,
            accounts,
            health,
        )
    });
    if !args.leader_elect {
        with_notifier(controller::run(client, settings, metrics, cache), notifier).await;
        info!("stopped");
        return Ok(());
    }
    let (mut is_leader, leadership) = become_leader(&client, &args, clock).await?;
    settings.leadership = Some(leadership);
    tokio::select! {
        _ = with_notifier(controller::run(client, settings, metrics, cache), notifier) => {
            info!("stopped");
            Ok(())
        }
        _ = async { while *is_leader.borrow_and_update() && is_leader.changed().await.is_ok() {} } => {
            // Dropping the controller cancels every reconcile in flight; a reconcile that
            // resumes before this is noticed is stopped by the Lease check before any mint.
            anyhow::bail!("lost leadership; exiting so that only the new leader reconciles")
        }
    }
}

/// The controller's settings from the flags.
fn controller_settings(
    args: &RunArgs,
    dhan: Arc<DhanClient>,
    clock: Arc<dyn Clock>,
    calendar: CalendarInForce,
    health: Health,
    login_pod_options: LoginPodOptions,
) -> Settings {
    let claims = ClaimSettings {
        install: install_id(args),
        identity: process_identity(),
        duration: args.client_claim_duration,
        leader_elected: args.leader_elect,
    };
    Settings {
        namespaces: controller::scope::parse(&args.namespace),
        dhan,
        clock,
        calendar,
        leadership: None,
        dhan_timeout: args.dhan_timeout,
        dhan_calls_per_second: args.dhan_calls_per_second,
        limits: Limits {
            min_mint_interval: args.min_mint_interval,
            max_failed_logins: args.max_failed_logins,
            refresh_spread: args.refresh_spread,
            midnight_margin: args.midnight_margin,
        },
        concurrency: args.concurrency,
        login: LoginSettings {
            enabled: args.browser_logins,
            job: LoginJobSettings {
                operator_image: args.login_image.clone(),
                chromium_image: args.chromium_image.clone(),
                chromium_command: args.chromium_command.clone(),
                chromium_seccomp_profile: args.chromium_seccomp_profile.clone(),
                login_timeout: args.login_timeout,
                allowed_hosts: args.login_allowed_hosts.clone(),
                egress_blocked_cidrs: args.login_egress_blocked_cidrs.clone(),
                pod: login_pod_options,
            },
            max_concurrent: usize::from(args.max_concurrent_login_jobs),
        },
        claims: Some(claims),
        rollouts: args.rollout_restarts,
        sync_pods: args.sync_pods,
        health,
    }
}

/// This install's name: as given, or the leader Lease's namespace/name plus the watched
/// namespace, so that two installs started with the defaults for two namespaces are two installs.
fn install_id(args: &RunArgs) -> String {
    args.install_id.clone().unwrap_or_else(|| {
        let lease = format!("{}/{}", leader_namespace(args), args.leader_elect_lease);
        match controller::scope::parse(&args.namespace).join(",") {
            watched if watched.is_empty() => lease,
            watched => format!("{lease}@{watched}"),
        }
    })
}

/// This process among the install's replicas and restarts.
fn process_identity() -> String {
    std::env::var("POD_NAME").unwrap_or_else(|_| format!("{}-{}", hostname(), std::process::id()))
}

/// The namespace of the leader Lease.
fn leader_namespace(args: &RunArgs) -> String {
    args.leader_elect_namespace
        .clone()
        .unwrap_or_else(|| "default".into())
}

/// Waits until this replica holds the leader Lease.
async fn become_leader(
    client: &kube::Client,
    args: &RunArgs,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<(tokio::sync::watch::Receiver<bool>, Arc<leader::Leadership>)> {
    let needed = args.dhan_timeout + leader::SKEW_MARGIN + leader::RENEW_EVERY;
    anyhow::ensure!(
        args.leader_elect_lease_duration > needed,
        "--leader-elect-lease-duration must be longer than --dhan-timeout plus {}s, so that a \
         mint in flight ends before another replica could take over",
        (leader::SKEW_MARGIN + leader::RENEW_EVERY).as_secs()
    );
    let election = ElectionSettings {
        namespace: leader_namespace(args),
        lease: args.leader_elect_lease.clone(),
        identity: process_identity(),
        duration: args.leader_elect_lease_duration,
    };
    let (mut is_leader, leadership) = leader::elect(client.clone(), election, clock).await?;
    info!("waiting to become leader");
    while !*is_leader.borrow_and_update() {
        is_leader.changed().await?;
    }
    info!("became leader");
    Ok((is_leader, leadership))
}

/// Serves /metrics, /healthz and /readyz: plain, or with TLS and /metrics behind the API
/// server's authentication and authorisation.
async fn serve_http(
    args: &RunArgs,
    client: kube::Client,
    metrics: Arc<Metrics>,
    health: Health,
) -> anyhow::Result<()> {
    let listener = std::net::TcpListener::bind(&args.metrics_addr)
        .with_context(|| format!("cannot listen on {}", args.metrics_addr))?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    if !args.metrics_secure {
        info!(%addr, "serving /metrics, /healthz and /readyz");
        let app = router(metrics, health, None);
        let listener = tokio::net::TcpListener::from_std(listener)?;
        tokio::spawn(async move { axum::serve(listener, app).await });
        return Ok(());
    }
    let files = args
        .metrics_tls_cert
        .clone()
        .zip(args.metrics_tls_key.clone())
        .map(|(cert, key)| tls::CertFiles { cert, key });
    let names = vec![hostname(), "localhost".into(), addr.ip().to_string()];
    let config = tls::config(files, names).await?;
    let auth = Arc::new(MetricsAuth::new(client));
    info!(%addr, "serving /metrics (TLS, authenticated), /healthz and /readyz");
    let app = router(metrics, health, Some(auth));
    let server = axum_server::from_tcp_rustls(listener, config)?;
    tokio::spawn(async move { server.serve(app.into_make_service()).await });
    Ok(())
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "dhan-operator".into())
}

/// Runs the controller and, when on, the notifier; returns when either stops.
async fn with_notifier(
    controller: impl std::future::Future<Output = ()>,
    notifier: Option<impl std::future::Future<Output = ()>>,
) {
    match notifier {
        Some(notifier) => {
            tokio::select! {
                _ = controller => {}
                _ = notifier => {}
            }
        }
        None => controller.await,
    }
}
