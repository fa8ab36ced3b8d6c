//! Dhan as the simulation plays it, per client ID and as `docs/dhan-api.md` describes it: a
//! mint kills the client's previous token (§1); calls to `generateAccessToken` less than two
//! minutes apart are refused, and a refused call re-arms the lock (§9); a TOTP step is accepted
//! once (§1); a wrong PIN is refused in one of Dhan's wordings (§9). Faults scheduled for a
//! client change the next mint's answer: a server error, an answer lost after the mint was
//! carried out (timeout, reset, a 200 without a token), a hang, a rate limit. It records who
//! minted what and when, so that the invariants can be checked against the truth.

use crate::clock::Clock;
use crate::dhan::api::{Call, DhanApi};
use crate::dhan::jwt::testing::jwt;
use crate::dhan::totp::{TotpKey, step_at};
use crate::dhan::{AccessToken, DhanError, IpInfo, IssuedToken, Profile};
use chrono::{DateTime, Utc};
use serde_json::json;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

tokio::task_local! {
    /// The account (`namespace/name`) and process incarnation a reconcile runs for: Dhan does
    /// not know it, the invariants do.
    pub static ACTING: Acting;
}

#[derive(Clone, Debug)]
pub struct Acting {
    pub account: String,
    /// The install and its incarnation (bumped at each restart).
    pub process: (usize, u32),
}

/// How long Dhan takes to answer.
const LATENCY: Duration = Duration::from_millis(300);
/// §1/§9: one mint per client every 2 minutes, re-armed by a refused call.
const MINT_INTERVAL: chrono::Duration = chrono::Duration::seconds(120);

/// The next mint's answer, when not the plain one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MintFault {
    /// A 5xx; nothing was minted.
    ServerError,
    /// Minted (the old token dies), then the answer is lost: a timeout, a reset connection or
    /// a 200 without a token.
    LostAnswer(LostAs),
    /// Minted, and the answer never comes (the reconcile's deadline cuts it off).
    Hang,
    /// A rate limit (429); nothing was minted.
    RateLimited,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LostAs {
    Timeout,
    Reset,
    Malformed,
}

/// One call that reached Dhan's mint endpoint.
#[derive(Clone, Debug)]
pub struct MintCall {
    pub client: String,
    pub at: DateTime<Utc>,
    pub acting: Option<Acting>,
    pub pin: String,
    pub result: MintResult,
    /// The live token this mint killed, if any.
    pub replaced: Option<Issued>,
    /// Its answer reached the operator.
    pub delivered: bool,
    /// The fault that changed its answer.
    pub fault: Option<MintFault>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MintResult {
    /// A token was minted (`serial`); `delivered` once its answer reached the operator.
    Minted { serial: u64 },
    /// The PIN was refused (its wording in the answer).
    Refused,
    /// The TOTP code was refused (a clock that is off): a refused credential submission, but
    /// the PIN was not.
    TotpRefused,
    /// Throttled, rate limited, a server error: nothing minted.
    NotMinted,
}

#[derive(Clone, Debug)]
pub struct Issued {
    pub client: String,
    pub serial: u64,
    pub at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub acting: Option<Acting>,
    /// The operator received it (the answer was neither lost nor cut off).
    pub delivered: bool,
}

#[derive(Default)]
struct ClientState {
    pin: String,
    live: Option<String>,
    last_call: Option<DateTime<Utc>>,
    last_step: Option<u64>,
    faults: VecDeque<MintFault>,
    /// The next profile call right after a mint answers 401 (§9).
    spurious_401: bool,
}

#[derive(Default)]
struct State {
    clients: BTreeMap<String, ClientState>,
    /// Every token issued, by value.
    tokens: HashMap<String, Issued>,
    calls: Vec<MintCall>,
    serial: u64,
    /// Which refusal wording comes next (cycled).
    wording: usize,
    hangs_started: u32,
    /// Bumped by every change the invariants could see (a call, a delivery, a revocation).
    changes: u64,
}

pub struct SimDhan {
    clock: Arc<dyn Clock>,
    totp: TotpKey,
    state: Mutex<State>,
    /// Freezes armed on a process's next mint call: set to the moment the call arrives.
    freezes: Mutex<Vec<Freeze>>,
}

/// A process (install, incarnation) and the trigger of its freeze.
type Freeze = ((usize, u32), watch::Sender<Option<Instant>>);

impl std::fmt::Debug for SimDhan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SimDhan")
    }
}

impl SimDhan {
    pub fn new(clock: Arc<dyn Clock>, totp_secret: &str) -> SimDhan {
        SimDhan {
            clock,
            totp: TotpKey::parse(totp_secret).expect("a valid TOTP key"),
            state: Mutex::default(),
            freezes: Mutex::default(),
        }
    }

    /// The process freezes the moment its next mint call arrives (see `world::Process`).
    pub fn freeze_on_mint(&self, process: (usize, u32), trigger: watch::Sender<Option<Instant>>) {
        self.freezes.lock().unwrap().push((process, trigger));
    }

    pub fn disarm(&self, process: (usize, u32)) {
        self.freezes.lock().unwrap().retain(|(p, _)| *p != process);
    }

    /// A Dhan client with its real PIN.
    pub fn register(&self, client: &str, pin: &str) {
        let mut state = self.state.lock().unwrap();
        state.clients.entry(client.into()).or_default().pin = pin.into();
    }

    pub fn schedule(&self, client: &str, fault: MintFault) {
        let mut state = self.state.lock().unwrap();
        state
            .clients
            .entry(client.into())
            .or_default()
            .faults
            .push_back(fault);
    }

    /// No more scheduled faults: the answers still to come are plain ones (a run's quiet end).
    pub fn calm(&self) {
        let mut state = self.state.lock().unwrap();
        for client in state.clients.values_mut() {
            client.faults.clear();
            client.spurious_401 = false;
        }
    }

    pub fn spurious_401(&self, client: &str) {
        let mut state = self.state.lock().unwrap();
        state.clients.entry(client.into()).or_default().spurious_401 = true;
    }

    /// The user logs into Dhan Web with the same app: the client's token dies.
    pub fn revoke(&self, client: &str) -> bool {
        let mut state = self.state.lock().unwrap();
        state.changes += 1;
        state
            .clients
            .get_mut(client)
            .and_then(|c| c.live.take())
            .is_some()
    }

    /// Changes whenever anything the invariants read from Dhan may have changed, but for the
    /// passing of time (a token expiring).
    pub fn revision(&self) -> u64 {
        self.state.lock().unwrap().changes
    }

    /// The client's live token, if any and not expired.
    pub fn live(&self, client: &str) -> Option<String> {
        let now = self.clock.now();
        let state = self.state.lock().unwrap();
        let token = state.clients.get(client)?.live.clone()?;
        (state.tokens.get(&token)?.expires_at > now).then_some(token)
    }

    pub fn issued(&self, token: &str) -> Option<Issued> {
        self.state.lock().unwrap().tokens.get(token).cloned()
    }

    pub fn calls_since(&self, from: usize) -> Vec<MintCall> {
        self.state.lock().unwrap().calls[from..].to_vec()
    }

    pub fn call_count(&self) -> usize {
        self.state.lock().unwrap().calls.len()
    }

    pub fn hangs_started(&self) -> u32 {
        self.state.lock().unwrap().hangs_started
    }

    /// Every token issued, the newest last.
    pub fn all_issued(&self) -> Vec<(String, Issued)> {
        let state = self.state.lock().unwrap();
        let mut all: Vec<_> = state
            .tokens
            .iter()
            .map(|(t, i)| (t.clone(), i.clone()))
            .collect();
        all.sort_by_key(|(_, i)| i.serial);
        all
    }

    /// Call `call`'s answer reached the operator (with `token`).
    fn delivered(&self, call: usize, token: Option<&str>) {
        let mut state = self.state.lock().unwrap();
        state.changes += 1;
        if let Some(c) = state.calls.get_mut(call) {
            c.delivered = true;
        }
        if let Some(issued) = token.and_then(|t| state.tokens.get_mut(t)) {
            issued.delivered = true;
        }
    }

    /// What Dhan does on receiving a mint request; the answer is sent after [`LATENCY`].
    fn mint_now(&self, client: &str, pin: &str, totp: &str) -> Answer {
        let now = self.clock.now();
        let acting = ACTING.try_with(Acting::clone).ok();
        if let Some(acting) = &acting {
            let mut freezes = self.freezes.lock().unwrap();
            if let Some(at) = freezes.iter().position(|(p, _)| *p == acting.process) {
                let (_, trigger) = freezes.remove(at);
                trigger.send_replace(Some(Instant::now()));
            }
        }
        let mut state = self.state.lock().unwrap();
        state.changes += 1;
        state.serial += 1;
        let serial = state.serial;
        let wording = state.wording;
        let Some(c) = state.clients.get_mut(client) else {
            return Answer {
                call: usize::MAX,
                kind: AnswerKind::Now(Err(DhanError::InvalidClientId {
                    message: "Invalid Client ID".into(),
                })),
            };
        };
        let before = c.live.clone();
        let mut fault = None;
        let throttled = c.last_call.is_some_and(|last| now - last < MINT_INTERVAL);
        c.last_call = Some(now);
        let step = step_at(now);
        let totp_ok = [step, step.saturating_sub(1)]
            .iter()
            .any(|s| self.totp.code_for_step(*s) == totp && c.last_step.is_none_or(|l| *s > l));
        let (result, answer) = if throttled {
            (
                MintResult::NotMinted,
                AnswerKind::Now(Err(DhanError::MintThrottled)),
            )
        } else if pin != c.pin {
            let message = [
                "Invalid Pin",
                "Login failed. Please retry with valid credentials.",
                "Validation failed. Please check your credentials.",
            ][wording % 3];
            let error = if wording.is_multiple_of(3) {
                DhanError::InvalidPin {
                    message: message.into(),
                }
            } else {
                DhanError::InvalidCredentials {
                    message: message.into(),
                }
            };
            (MintResult::Refused, AnswerKind::Now(Err(error)))
        } else if !totp_ok {
            (
                MintResult::TotpRefused,
                AnswerKind::Now(Err(DhanError::InvalidTotp {
                    message: "Invalid TOTP".into(),
                })),
            )
        } else {
            c.last_step = Some(step);
            fault = c.faults.pop_front();
            match fault.clone() {
                Some(MintFault::ServerError) => (
                    MintResult::NotMinted,
                    AnswerKind::Now(Err(DhanError::ServerError {
                        status: 502,
                        message: String::new(),
                    })),
                ),
                Some(MintFault::RateLimited) => (
                    MintResult::NotMinted,
                    AnswerKind::Now(Err(DhanError::RateLimited {
                        message: "Too many requests".into(),
                    })),
                ),
                fault => {
                    let expires_at =
                        DateTime::from_timestamp(now.timestamp() + 24 * 3600, 0).expect("in range");
                    let token = jwt(json!({
                        "iss": "dhan", "iat": now.timestamp(), "exp": expires_at.timestamp(),
                        "tokenConsumerType": "APP", "dhanClientId": client, "n": serial,
                    }));
                    c.live = Some(token.clone());
                    let issued = IssuedToken {
                        token: AccessToken::from(token.clone()),
                        expires_at,
                        issued_at: DateTime::from_timestamp(now.timestamp(), 0),
                        consumer_type: Some("APP".into()),
                        client_name: None,
                    };
                    let answer = match fault {
                        None => AnswerKind::Token(token.clone(), issued),
                        Some(MintFault::Hang) => AnswerKind::Hang,
                        Some(MintFault::LostAnswer(LostAs::Timeout)) => {
                            AnswerKind::Now(Err(DhanError::Timeout))
                        }
                        Some(MintFault::LostAnswer(LostAs::Reset)) => {
                            AnswerKind::Now(Err(DhanError::ConnectionLost {
                                detail: "connection reset by peer".into(),
                            }))
                        }
                        Some(MintFault::LostAnswer(LostAs::Malformed)) => {
                            AnswerKind::Now(Err(DhanError::UnexpectedResponse {
                                status: 200,
                                detail: "no accessToken in the answer".into(),
                            }))
                        }
                        Some(_) => unreachable!("handled above"),
                    };
                    state.tokens.insert(
                        token,
                        Issued {
                            client: client.into(),
                            serial,
                            at: now,
                            expires_at,
                            acting: acting.clone(),
                            delivered: false,
                        },
                    );
                    (MintResult::Minted { serial }, answer)
                }
            }
        };
        if result == MintResult::Refused {
            state.wording += 1;
        }
        let replaced = match result {
            MintResult::Minted { .. } => before
                .and_then(|t| state.tokens.get(&t).cloned())
                .filter(|i| i.expires_at > now),
            _ => None,
        };
        if matches!(answer, AnswerKind::Hang) {
            state.hangs_started += 1;
        }
        state.calls.push(MintCall {
            client: client.into(),
            at: now,
            acting,
            pin: pin.into(),
            result,
            replaced,
            delivered: false,
            fault,
        });
        Answer {
            call: state.calls.len() - 1,
            kind: answer,
        }
    }
}

struct Answer {
    call: usize,
    kind: AnswerKind,
}

enum AnswerKind {
    Now(Result<IssuedToken, DhanError>),
    Token(String, IssuedToken),
    Hang,
}

impl DhanApi for SimDhan {
    fn generate_access_token<'a>(
        &'a self,
        client_id: &'a str,
        pin: &'a str,
        totp: &'a str,
    ) -> Call<'a, IssuedToken> {
        Box::pin(async move {
            let answer = self.mint_now(client_id, pin, totp);
            tokio::time::sleep(LATENCY).await;
            match answer.kind {
                AnswerKind::Now(result) => {
                    self.delivered(answer.call, None);
                    result
                }
                AnswerKind::Token(token, issued) => {
                    self.delivered(answer.call, Some(&token));
                    Ok(issued)
                }
                AnswerKind::Hang => std::future::pending().await,
            }
        })
    }

    fn renew_token<'a>(&'a self, _: &'a str, _: &'a AccessToken) -> Call<'a, IssuedToken> {
        Box::pin(async { Err(DhanError::RenewNotAllowed) })
    }

    fn profile<'a>(&'a self, token: &'a AccessToken) -> Call<'a, Profile> {
        Box::pin(async move {
            tokio::time::sleep(LATENCY).await;
            let now = self.clock.now();
            let mut state = self.state.lock().unwrap();
            let Some(issued) = state.tokens.get(token.expose()).cloned() else {
                return Err(dead());
            };
            let c = state.clients.entry(issued.client.clone()).or_default();
            let live = c.live.as_deref() == Some(token.expose()) && issued.expires_at > now;
            if live && c.spurious_401 && now - issued.at < chrono::Duration::minutes(2) {
                // §9: a fresh token may answer 401 once.
                c.spurious_401 = false;
                return Err(dead());
            }
            if !live {
                return Err(dead());
            }
            Ok(Profile {
                client_id: Some(issued.client),
                token_validity: Some(issued.expires_at),
                ..Profile::default()
            })
        })
    }

    fn generate_consent<'a>(&'a self, _: &'a str, _: &'a str, _: &'a str) -> Call<'a, String> {
        Box::pin(async { Err(not_simulated()) })
    }

    fn consent_login_url(&self, consent_id: &str) -> String {
        format!("https://auth.example/login?consentAppId={consent_id}")
    }

    fn consume_consent<'a>(&'a self, _: &'a str, _: &'a str, _: &'a str) -> Call<'a, IssuedToken> {
        Box::pin(async { Err(not_simulated()) })
    }

    fn ip_info<'a>(&'a self, _: &'a AccessToken) -> Call<'a, IpInfo> {
        Box::pin(async { Ok(IpInfo::default()) })
    }
}

fn dead() -> DhanError {
    DhanError::TokenDead {
        signal: "HTTP 401".into(),
        message: "Invalid Token".into(),
    }
}

fn not_simulated() -> DhanError {
    DhanError::InvalidConfig {
        detail: "browser logins are not simulated".into(),
    }
}
