//! `kubectl-dhan`: the kubectl plugin for dhan-operator. Copy the binary onto PATH and kubectl
//! finds it as `kubectl dhan` (krew naming: plugin `dhan`, binary `kubectl-dhan`).
//!
//!   kubectl dhan status [-A] [-l SELECTOR] [-o table|json|yaml] [NAME]   who expires when
//!   kubectl dhan refresh (NAME | -l SELECTOR)   ask for new tokens and wait for the outcome
//!   kubectl dhan inspect secret NAME    what token a Secret holds, without printing it
//!   kubectl dhan completion SHELL       a completion script for bash, zsh, fish, …

mod inspect;
mod refresh;
mod status;
mod table;
mod when;

use anyhow::Context as _;
use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use dhan_operator::controller::output::ACCOUNT_ANNOTATION;
use dhan_operator::crd::DhanAccount;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config, ResourceExt};
use std::path::PathBuf;
use std::time::Duration;

/// dhan-operator's kubectl plugin: account status, forced refreshes, token inspection.
#[derive(Parser)]
#[command(name = "kubectl dhan", version)]
struct Cli {
    /// Path to the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config).
    #[arg(long, global = true)]
    kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long, global = true)]
    context: Option<String>,
    /// Namespace (default: the context's namespace, else "default").
    #[arg(short = 'n', long, global = true)]
    namespace: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Expiry, last and next refresh, method, Pods synced, consents used today and the last
    /// failure.
    Status {
        /// Accounts of every namespace.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
        /// Only accounts with these labels (as kubectl's -l).
        #[arg(short = 'l', long)]
        selector: Option<String>,
        /// `table` for people, `json` or `yaml` for programs (the same fields, times in RFC 3339).
        #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
        output: Output,
        /// Only this account.
        name: Option<String>,
    },
    /// Ask for a new token and report the outcome. During market hours (by the calendar
    /// shipped with the plugin) the operator holds the request until the close, because a new
    /// token kills the one running Pods hold; `--now` asks for one at once, after naming those
    /// Pods. Dhan's 2-minute limit applies either way.
    Refresh {
        /// The account; or every account `-l` selects.
        #[arg(required_unless_present = "selector", conflicts_with = "selector")]
        name: Option<String>,
        /// Every account with these labels, at once (as kubectl's -l).
        #[arg(short = 'l', long)]
        selector: Option<String>,
        /// Return once the request is recorded.
        #[arg(long)]
        no_wait: bool,
        /// How long to wait for the outcome, in seconds.
        #[arg(long, default_value_t = 300)]
        timeout: u64,
        /// During market hours too: the running Pods' token dies at once (asks first).
        #[arg(long)]
        now: bool,
        /// With --now: do not ask (for scripts).
        #[arg(long, short = 'y', requires = "now")]
        yes: bool,
        /// The trading calendar the operator runs with (its --trading-calendar file), to know
        /// when the market is open. Default: the calendar shipped with the plugin.
        #[arg(long, env = "DHAN_TRADING_CALENDAR")]
        trading_calendar: Option<PathBuf>,
    },
    /// Describe what a Secret holds without printing it.
    Inspect {
        #[command(subcommand)]
        what: Inspect,
    },
    /// Print a shell completion script: `source <(kubectl-dhan completion bash)`.
    Completion { shell: clap_complete::Shell },
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Table,
    Json,
    Yaml,
}

#[derive(Subcommand)]
enum Inspect {
    /// A token Secret: type, client, issue and expiry from the token's claims.
    Secret { name: String },
}

async fn client(cli: &Cli) -> anyhow::Result<(Client, String)> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let options = KubeConfigOptions {
        context: cli.context.clone(),
        ..Default::default()
    };
    let config = match &cli.kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path)
                .with_context(|| format!("cannot read kubeconfig {}", path.display()))?;
            Config::from_custom_kubeconfig(kubeconfig, &options).await?
        }
        None => Config::from_kubeconfig(&options)
            .await
            .context("no usable kubeconfig (set KUBECONFIG or --kubeconfig)")?,
    };
    let namespace = cli
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    Ok((Client::try_from(config)?, namespace))
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => std::process::exit(code),
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::exit(1);
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<i32> {
    if let Command::Completion { shell } = cli.command {
        clap_complete::generate(
            shell,
            &mut Cli::command(),
            "kubectl-dhan",
            &mut std::io::stdout(),
        );
        return Ok(0);
    }
    let (client, namespace) = client(&cli).await?;
    let now = chrono::Utc::now();
    match cli.command {
        Command::Status {
            all_namespaces,
            selector,
            output,
            name,
        } => {
            let api: Api<DhanAccount> = if all_namespaces {
                Api::all(client.clone())
            } else {
                Api::namespaced(client.clone(), &namespace)
            };
            // One account, as a table: what explains its line too.
            if let (Some(name), Output::Table, false) = (&name, output, all_namespaces) {
                let account = api
                    .get(name)
                    .await
                    .with_context(|| format!("dhanaccount {name:?} in namespace {namespace:?}"))?;
                let events = last_events(client, &namespace, name).await;
                print!("{}", status::details(&account, &events, now));
                return Ok(0);
            }
            let accounts =
                match name {
                    Some(name) => vec![api.get(&name).await.with_context(|| {
                        format!("dhanaccount {name:?} in namespace {namespace:?}")
                    })?],
                    None => api.list(&list_params(selector.as_deref())).await?.items,
                };
            match output {
                Output::Table if accounts.is_empty() => {
                    eprintln!("No DhanAccounts found in namespace {namespace}.");
                }
                Output::Table => print!("{}", status::table(&accounts, now, all_namespaces)),
                Output::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&status::summaries(&accounts, now))?
                ),
                Output::Yaml => print!(
                    "{}",
                    serde_yaml::to_string(&status::summaries(&accounts, now))?
                ),
            }
            Ok(0)
        }
        Command::Refresh {
            name,
            selector,
            no_wait,
            timeout,
            now: at_once,
            yes,
            trading_calendar,
        } => {
            let api: Api<DhanAccount> = Api::namespaced(client.clone(), &namespace);
            let names = match name {
                Some(name) => vec![name],
                None => {
                    let selected = api.list(&list_params(selector.as_deref())).await?.items;
                    if selected.is_empty() {
                        eprintln!("No DhanAccounts match in namespace {namespace}.");
                        return Ok(1);
                    }
                    selected.iter().map(|a| a.name_any()).collect()
                }
            };
            let mut accounts = Vec::new();
            for name in &names {
                accounts.push(refresh::refreshable(&api, name).await?);
            }
            let calendar = match trading_calendar {
                Some(path) => {
                    let text = std::fs::read_to_string(&path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    let parsed = dhan_operator::decision::calendar::TradingCalendar::parse(&text)
                        .with_context(|| {
                        format!("{} is not a trading calendar", path.display())
                    })?;
                    std::sync::Arc::new(parsed)
                }
                None => dhan_operator::decision::calendar::TradingCalendar::builtin(),
            };
            let close = refresh::session_close(&calendar, chrono::Utc::now());
            match close {
                Some(close) if at_once => {
                    let pods = Api::<Pod>::namespaced(client, &namespace);
                    let mut holding = Vec::new();
                    for account in &accounts {
                        for pod in refresh::pods_holding_token(&pods, account).await? {
                            holding.push(format!("pod/{pod} (dhanaccount/{})", account.name_any()));
                        }
                    }
                    println!(
                        "The market is open until {}. A new token now kills the one running Pods hold{}",
                        when::ist_time(close),
                        if holding.is_empty() {
                            ": none in this namespace reads it.".to_string()
                        } else {
                            format!(":\n  {}", holding.join("\n  "))
                        }
                    );
                    if !yes && !confirm("Refresh now?")? {
                        eprintln!("Nothing requested.");
                        return Ok(1);
                    }
                }
                Some(close) => println!("{}", refresh::market_note(close, chrono::Utc::now())),
                None => {}
            }
            let close = close.filter(|_| !at_once);
            let wait = (!no_wait).then(|| Duration::from_secs(timeout));
            // All at once: each account's refresh is its own, and Dhan's limit is per client.
            let outcomes = futures::future::join_all(
                accounts
                    .iter()
                    .map(|account| refresh::run(&api, account, at_once, close, wait)),
            )
            .await;
            let mut code = 0;
            for (name, outcome) in names.iter().zip(outcomes) {
                match outcome? {
                    refresh::Outcome::Refreshed(text) | refresh::Outcome::Held(text) => {
                        println!("dhanaccount/{name}: {text}")
                    }
                    refresh::Outcome::Failed(text) | refresh::Outcome::TimedOut(text) => {
                        eprintln!("dhanaccount/{name}: {text}");
                        code = 1;
                    }
                }
            }
            Ok(code)
        }
        Command::Inspect {
            what: Inspect::Secret { name },
        } => inspect_secret(client, &namespace, &name, now).await,
        Command::Completion { .. } => unreachable!("answered before connecting"),
    }
}

/// The last five events about DhanAccount `name`, oldest first (none when they cannot be read:
/// the rest of the view stands without them).
async fn last_events(client: Client, namespace: &str, name: &str) -> Vec<status::EventLine> {
    use k8s_openapi::api::core::v1::Event;
    let api: Api<Event> = Api::namespaced(client, namespace);
    let fields = format!("involvedObject.kind=DhanAccount,involvedObject.name={name}");
    let Ok(list) = api
        .list(&kube::api::ListParams::default().fields(&fields))
        .await
    else {
        return Vec::new();
    };
    let mut events: Vec<status::EventLine> = list
        .items
        .into_iter()
        .map(|e| status::EventLine {
            at: e
                .event_time
                .map(|t| t.0)
                .or(e.last_timestamp.map(|t| t.0))
                .or(e.metadata.creation_timestamp.map(|t| t.0))
                .and_then(|t| chrono::DateTime::from_timestamp(t.as_second(), 0)),
            type_: e.type_.unwrap_or_default(),
            reason: e.reason.unwrap_or_default(),
            message: e.message.unwrap_or_default(),
        })
        .collect();
    events.sort_by_key(|e| e.at);
    let skip = events.len().saturating_sub(5);
    events.split_off(skip)
}

/// Asks `question` on the terminal; anything but y/yes is no. Refuses without a terminal.
fn confirm(question: &str) -> anyhow::Result<bool> {
    use std::io::{BufRead, IsTerminal, Write};
    anyhow::ensure!(
        std::io::stdin().is_terminal(),
        "not asking without a terminal: add --yes to refresh now"
    );
    print!("{question} [y/N] ");
    std::io::stdout().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim().to_lowercase().as_str(), "y" | "yes"))
}

fn list_params(selector: Option<&str>) -> kube::api::ListParams {
    let params = kube::api::ListParams::default();
    match selector {
        Some(selector) => params.labels(selector),
        None => params,
    }
}

async fn inspect_secret(
    client: Client,
    namespace: &str,
    name: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<i32> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret = secrets
        .get(name)
        .await
        .with_context(|| format!("secret {name:?} in namespace {namespace:?}"))?;
    let accounts: Api<DhanAccount> = Api::namespaced(client, namespace);
    // The operator names the account on its Secret (an owner reference only exists with
    // deletionPolicy: Delete).
    let account_name = secret
        .annotations()
        .get(ACCOUNT_ANNOTATION)
        .cloned()
        .or_else(|| {
            secret
                .owner_references()
                .iter()
                .find(|o| o.kind == "DhanAccount")
                .map(|o| o.name.clone())
        });
    let owner = match account_name {
        Some(name) => accounts.get_opt(&name).await?,
        None => None,
    };
    match inspect::describe(&secret, owner.as_ref(), now) {
        Ok(text) => {
            print!("{text}");
            Ok(0)
        }
        Err(problem) => {
            eprintln!("error: {problem}");
            Ok(1)
        }
    }
}
