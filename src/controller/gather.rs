//! Gathering the facts of one account: its validated spec, the token in its output Secret (or
//! in a Secret it moved from, or kept unwritten in memory), its credentials, its login Job,
//! and what the status remembers. Reads only: nothing here writes or decides.

use super::Context;
use super::credentials::{CredentialKey, Credentials};
use super::login::{self, LoginFound};
use super::output::{self, Found};
use super::spec::{self, Spec};
use super::status::memory_from;
use crate::claims::Answer;
use crate::crd::{DhanAccount, DhanAccountStatus};
use crate::decision::failure::FailureKind;
use crate::decision::round::Inputs;
use crate::decision::{Held, LoginSeen, Memory, Method, Phase, Round, Stored, Token, TokenFacts};
use crate::dhan::AccessToken;
use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, ResourceExt};
use std::time::Duration;

/// Why an account needs no Dhan call at all.
pub struct Blocked {
    pub phase: Phase,
    pub reason: &'static str,
    pub message: String,
    pub requeue: Option<Duration>,
}

/// Everything a round needs, and what apply needs besides.
pub struct Gathered {
    pub spec: Spec,
    pub credentials: Credentials,
    pub round: Round,
    /// The Secret the token was found in when it is not the one the spec names (a rename):
    /// its name and UID, deleted once the token is written to the new one.
    pub moved_from: Option<(String, String)>,
    /// The output Secret's resource version as read: the token is written on it.
    pub secret_version: Option<String>,
    /// The finished login's `tokenId`, for the consume step.
    pub token_id: Option<login::TokenId>,
    /// Login Jobs whose result was taken in before they completed.
    pub finished_jobs: FinishedJobs,
    /// How the browser login recorded on the client's claim ended, when it did in this round.
    pub login_answer: Option<Answer>,
}

/// Login Jobs whose result was taken in before they completed.
#[derive(Default)]
pub struct FinishedJobs {
    /// To remove now.
    pub done: Vec<String>,
    /// When one still running is due for removal (a reconcile must run then).
    pub reap_at: Option<chrono::DateTime<chrono::Utc>>,
}

pub enum Facts {
    Blocked(Blocked),
    Gathered(Box<Gathered>),
}

fn blocked(phase: Phase, reason: &'static str, message: String) -> Facts {
    Facts::Blocked(Blocked {
        phase,
        reason,
        message,
        requeue: None,
    })
}

/// The longest an account in `Conflict` waits without news before it looks again.
pub const CONFLICT_FALLBACK: Duration = Duration::from_secs(600);

/// When an account that lost the verdict on `client_id` looks again without news: when a claim
/// stops holding or a token expires, at the latest after [`CONFLICT_FALLBACK`].
fn conflict_recheck(ctx: &Context, client_id: &str, now: DateTime<Utc>) -> Duration {
    ctx.index
        .next_verdict_change(client_id, now)
        .and_then(|t| (t - now).to_std().ok())
        .map_or(CONFLICT_FALLBACK, |d| {
            (d + Duration::from_secs(1)).min(CONFLICT_FALLBACK)
        })
}

pub async fn gather(ctx: &Context, account: &DhanAccount) -> Result<Facts, kube::Error> {
    let now = ctx.clock.now();
    let uid = account.uid().unwrap_or_default();
    let status = account.status.clone().unwrap_or_default();
    let spec = match spec::validate(account) {
        Ok(spec) => spec,
        Err(error) => return Ok(blocked(Phase::Failed, "InvalidSpec", error.to_string())),
    };
    // A suspended account calls nothing and says so, whoever holds its client ID (a change of
    // the winner's claim wakes it too).
    let suspended = account.spec.suspend == Some(true);
    if !suspended && let Some(winner) = ctx.index.winner_over(account, now) {
        return Ok(Facts::Blocked(Blocked {
            phase: Phase::Conflict,
            reason: "Conflict",
            message: format!(
                "client ID {} is already managed by {}; only one account may mint for a client \
                 ID (a new token invalidates the previous one)",
                spec.policy.client_id,
                describe_winner(account, &winner)
            ),
            // The winner's changes wake this account (`AccountIndex::wakes`); time alone
            // changes the verdict when a claim stops holding. The fallback covers a lost wake.
            requeue: Some(conflict_recheck(ctx, &spec.policy.client_id, now)),
        }));
    }

    let secrets: Api<Secret> =
        Api::namespaced(ctx.client.clone(), &account.namespace().unwrap_or_default());
    // Independent reads, sent together: a reconcile waits for one round trip, not two.
    let (found, credentials) = tokio::try_join!(
        find_token(ctx, account, &secrets, &spec, &status),
        Credentials::load(&secrets, &account.spec),
    )?;
    let TokenFound {
        token,
        moved_from,
        version: secret_version,
        answered_request,
    } = match found {
        Ok(found) => found,
        Err(blocked) => return Ok(Facts::Blocked(blocked)),
    };
    let web_token = credentials
        .get(CredentialKey::AccessToken)
        .ok()
        .map(|v| AccessToken::from(v.expose().to_string()))
        .and_then(|value| {
            let facts = output::token_facts(&output::hash_key(account), &value, None, None)?;
            Some(Token { value, facts })
        });
    let facts = token.as_ref().map(|h| &h.token.facts);
    let mut memory = memory_from(&status, facts, now);
    // The request the token in the Secret answered, when the status could not say so.
    let request = account
        .annotations()
        .get(crate::crd::REFRESH_REQUESTED_ANNOTATION);
    if answered_request.is_some() && answered_request.as_ref() == request {
        memory.refresh_request_handled = answered_request;
    }
    let client_id = &spec.policy.client_id;
    if let Some(at) = lost_mint(ctx, &uid, &status, facts, client_id, &memory) {
        memory.mint_unconfirmed = memory.mint_unconfirmed.max(Some(at));
    }
    let probe = ctx.memos.probe(&uid, facts.map(|f| f.hash.as_str()));
    let last_token = memory.last_mint;

    let mut finished_jobs = FinishedJobs::default();
    let found = find_login(
        ctx,
        account,
        &spec,
        &credentials,
        &mut memory,
        &mut finished_jobs,
    )
    .await?;
    let client_id = &spec.policy.client_id;
    let login_answer = match &found.seen {
        LoginSeen::Succeeded { .. } => Some(Answer::Heard),
        LoginSeen::Failed {
            counts: true,
            failure,
        } if failure.kind.refuses_credentials() && failure.kind != FailureKind::InvalidTotp => {
            credentials
                .submission_hash(client_id, Method::Browser)
                .map(Answer::Refused)
        }
        // Cut short (deleted, timed out) after it may have typed the PIN: counted, not refused.
        LoginSeen::Failed { counts: true, .. } => Some(Answer::MaybeRefused),
        LoginSeen::Failed { .. } => Some(Answer::Heard),
        LoginSeen::None | LoginSeen::Running => None,
    };
    let refused_today = ctx
        .claims
        .as_ref()
        .map_or(0, |claims| claims.refused_today(client_id, last_token));
    let inputs = Inputs {
        policy: spec.policy.clone(),
        limits: ctx.limits.clone(),
        calendar: ctx.calendar.snapshot(),
        usable: credentials.offered(ctx.login.enabled).usable(),
        // Turning browser logins on lifts a hold for want of a usable method.
        fingerprint: format!(
            "{}{}",
            credentials.fingerprint,
            if ctx.login.enabled { "+b" } else { "" }
        ),
        refused_today,
        web_token,
        refresh_request: account
            .annotations()
            .get(crate::crd::REFRESH_REQUESTED_ANNOTATION)
            .cloned(),
    };
    let round = Round::new(inputs, token, probe, memory, found.seen, now);
    Ok(Facts::Gathered(Box::new(Gathered {
        spec,
        credentials,
        round,
        moved_from,
        secret_version,
        token_id: found.token_id,
        finished_jobs,
        login_answer,
    })))
}

/// When the Secret's token may have been revoked by a mint this process never heard the end of:
/// one recorded in flight on the client's claim by a process that died during the call (or
/// heard nothing definite), or a newer token in the status than in the Secret (a process that
/// died before its kept token was written). The token is then probed at once, before any
/// probe slot (docs/dhan-api.md §1: a mint kills the previous token).
fn lost_mint(
    ctx: &Context,
    uid: &str,
    status: &DhanAccountStatus,
    token: Option<&TokenFacts>,
    client_id: &str,
    memory: &Memory,
) -> Option<chrono::DateTime<chrono::Utc>> {
    let known = [
        memory.last_mint,
        memory.mint_unconfirmed,
        memory.last_failure.as_ref().map(|f| f.at),
    ]
    .into_iter()
    .flatten()
    .max();
    let in_flight = ctx
        .claims
        .as_ref()
        .and_then(|claims| claims.unconfirmed_mint(uid, client_id))
        .filter(|at| known.is_none_or(|known| *at > known));
    let token = token?;
    let newer_in_status = status
        .token_hash
        .as_ref()
        .filter(|hash| **hash != token.hash)
        .and(status.issued_at)
        .filter(|issued| *issued > token.issued_at)
        .and(status.last_refresh_time);
    in_flight.max(newer_in_status)
}

/// The current token: in the output Secret, in the Secret it moved from (a renamed
/// `secretName`), or obtained and not yet written (kept in memory). `Err` when the output
/// Secret belongs to someone else.
async fn find_token(
    ctx: &Context,
    account: &DhanAccount,
    secrets: &Api<Secret>,
    spec: &Spec,
    status: &DhanAccountStatus,
) -> Result<Result<TokenFound, Blocked>, kube::Error> {
    let uid = account.uid().unwrap_or_default();
    let out = &spec.output;
    let (mut token, mut moved_from, version, answered_request) =
        match output::read(secrets, account, &out.name, out).await? {
            Found::Foreign => {
                return Ok(Err(Blocked {
                    phase: Phase::Failed,
                    reason: "SecretNotOwned",
                    message: format!(
                        "Secret {:?} exists and is not owned by this DhanAccount; it is left \
                     untouched — delete it or choose another spec.secretName",
                        out.name
                    ),
                    requeue: None,
                }));
            }
            Found::Ours {
                token: Some(token),
                method,
                shaped,
                version,
                answered_request,
                ..
            } => (
                Some(held(token, method.or(status.method.clone()), shaped)),
                None,
                version,
                answered_request,
            ),
            Found::Ours {
                token: None,
                version,
                ..
            } => (None, None, version, None),
            Found::Absent => (None, None, None, None),
        };
    if token.is_none()
        && let Some(previous) = status.secret_name.as_ref().filter(|n| **n != out.name)
        && let Found::Ours {
            uid: from_uid,
            token: Some(found),
            method,
            ..
        } = output::read(secrets, account, previous, out).await?
    {
        token = Some(held(found, method.or(status.method.clone()), false));
        moved_from = Some((previous.clone(), from_uid));
    }
    if let Some(kept) = ctx.memos.unwritten(&uid) {
        let landed = token
            .as_ref()
            .is_some_and(|t| t.token.facts.hash == kept.token.facts.hash);
        // A token written since (another replica's, a later mint's) is newer: Dhan revoked
        // the kept one when it issued it (docs/dhan-api.md §1), and the kept one never
        // replaces it.
        let superseded = token
            .as_ref()
            .is_some_and(|t| t.token.facts.obtained_at > kept.token.facts.obtained_at);
        if landed || superseded {
            ctx.memos.written_token(&uid, &kept.token.facts.hash);
        } else if kept.token.facts.is_live(ctx.clock.now()) {
            token = Some(kept);
            moved_from = None;
        }
    }
    Ok(Ok(TokenFound {
        token,
        moved_from,
        version,
        answered_request,
    }))
}

/// Where the current token is.
struct TokenFound {
    token: Option<Held>,
    /// The Secret it moved from (name, UID).
    moved_from: Option<(String, String)>,
    /// The output Secret's resource version, when it exists.
    version: Option<String>,
    /// The refresh request its token answered.
    answered_request: Option<String>,
}

/// What became of the recorded browser login; a running login Job the status does not name
/// (created just before a crash) is adopted into the memory.
async fn find_login(
    ctx: &Context,
    account: &DhanAccount,
    spec: &Spec,
    credentials: &Credentials,
    memory: &mut Memory,
    finished_jobs: &mut FinishedJobs,
) -> Result<LoginFound, kube::Error> {
    let nothing = LoginFound {
        seen: LoginSeen::None,
        token_id: None,
    };
    if let Some(record) = &memory.login {
        let namespace = account.namespace().unwrap_or_default();
        return login::progress(ctx, &namespace, record, credentials).await;
    }
    if !ctx.login.enabled || !spec.policy.methods.contains(&Method::Browser) {
        return Ok(nothing);
    }
    let handled = [memory.last_failure.as_ref().map(|f| f.at), memory.last_mint]
        .into_iter()
        .flatten()
        .max();
    // Only a login that produced a token has its still-running Job removed: a failed one is
    // left for `kubectl describe` and its deadline.
    let succeeded_last = memory.last_mint > memory.last_failure.as_ref().map(|f| f.at);
    let jobs = login::unrecorded(ctx, account, handled, succeeded_last).await?;
    finished_jobs.done = jobs.completed;
    finished_jobs.reap_at = jobs.reap_at;
    let Some(record) = jobs.running else {
        return Ok(nothing);
    };
    ctx.logins.hold(&account.uid().unwrap_or_default());
    memory.login = Some(record);
    Ok(LoginFound {
        seen: LoginSeen::Running,
        token_id: None,
    })
}

/// The winner as the loser may know it: by name in its own namespace, which the loser's owner
/// sees anyway; only as "another namespace" elsewhere, which may be another tenant's.
fn describe_winner(account: &DhanAccount, winner: &str) -> String {
    let namespace = account.namespace().unwrap_or_default();
    match winner.split_once('/') {
        Some((ns, name)) if ns == namespace => format!("DhanAccount {name} in this namespace"),
        _ => "a DhanAccount in another namespace".into(),
    }
}

fn held(token: Token, method: Option<String>, shaped: bool) -> Held {
    Held {
        token,
        method,
        stored: if shaped {
            Stored::Current
        } else {
            Stored::Reshape
        },
    }
}

#[cfg(test)]
mod tests {
    use super::describe_winner;
    use crate::crd::DhanAccount;

    fn account(namespace: &str) -> DhanAccount {
        let mut account = DhanAccount::new("alice-copy", Default::default());
        account.metadata.namespace = Some(namespace.into());
        account
    }

    #[test]
    fn a_winner_in_another_namespace_is_not_named() {
        assert_eq!(
            describe_winner(&account("team-b"), "team-a/alice"),
            "a DhanAccount in another namespace"
        );
        assert_eq!(
            describe_winner(&account("team-a"), "team-a/alice"),
            "DhanAccount alice in this namespace"
        );
    }
}
