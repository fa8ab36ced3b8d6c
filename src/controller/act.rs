//! Performing a round's steps: the calls to Dhan, each through the global rate limit and
//! counted in the metrics. What to call is the round's decision; this only calls and reports.

use super::Context;
use super::credentials::CredentialKey;
use super::gather::Gathered;
use super::login;
use super::output;
use crate::claims::{Answer, ClaimError, Refused as ClaimRefused, Submission};
use crate::crd::DhanAccount;
use crate::decision::{
    Failure, FailureKind, Held, Method, Outcome, ProbeVerdict, Step, Stored, Token,
};
use crate::dhan::{CodePlan, DhanError, Endpoint, ErrorKind, IssuedToken, TotpKey, outcome_label};
use kube::ResourceExt;
use std::time::Duration;

/// The reconcile must stop: this process may no longer be the leader.
#[derive(Debug, thiserror::Error)]
#[error("leadership may have passed to another replica; not calling Dhan")]
pub struct NotLeader;

/// Why a step that would mint was not performed.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error(transparent)]
    NotLeader(#[from] NotLeader),
    /// The client-ID claim is someone else's, or cannot be read or taken.
    #[error(transparent)]
    Claim(#[from] ClaimError),
}

/// Performs `step` (not [`Step::Finish`]).
pub async fn perform(
    ctx: &Context,
    account: &DhanAccount,
    facts: &Gathered,
    step: &Step,
) -> Result<Outcome, Refused> {
    let round = &facts.round;
    let client_id = round.inputs.policy.client_id.as_str();
    let outcome = match step {
        Step::Consume => {
            let token_id = facts.token_id.as_ref().expect("consume only a tokenId");
            let app = (
                facts.credentials.get(CredentialKey::ApiKey),
                facts.credentials.get(CredentialKey::ApiSecret),
            );
            let (Ok(app_id), Ok(app_secret)) = app else {
                let error = DhanError::InvalidConfig {
                    detail: "the app's apiKey/apiSecret disappeared during the login".into(),
                };
                return Ok(issued(ctx, account, Method::Browser, Err(error), None));
            };
            ctx.limiter.acquire().await;
            if let Err(failure) = guard(ctx, account, facts, None).await? {
                return Ok(failed(Method::Browser, failure, None));
            }
            let result = counted(ctx, Endpoint::ConsumeConsent, || {
                ctx.dhan
                    .consume_consent(token_id.expose(), app_id.expose(), app_secret.expose())
            })
            .await;
            record_answer(ctx, account, &result, None).await;
            issued(ctx, account, Method::Browser, result, None)
        }
        Step::Try(Method::Renew) => {
            let token = round
                .renewable(ctx.clock.now())
                .expect("renew only a renewable token")
                .value
                .clone();
            ctx.limiter.acquire().await;
            if let Err(failure) = guard(ctx, account, facts, None).await? {
                return Ok(failed(Method::Renew, failure, None));
            }
            let result = counted(ctx, Endpoint::RenewToken, || {
                ctx.dhan.renew_token(client_id, &token)
            })
            .await;
            record_answer(ctx, account, &result, None).await;
            issued(ctx, account, Method::Renew, result, None)
        }
        Step::Try(Method::Totp) => mint_with_totp(ctx, account, facts).await?,
        Step::Try(Method::Browser) => start_login(ctx, account, facts).await?,
        Step::Probe => probe(ctx, round).await,
        Step::ReadStaticIp => {
            let held = round.token.as_ref().expect("a new token");
            let result = call(ctx, Endpoint::IpInfo, || {
                ctx.dhan.ip_info(&held.token.value)
            })
            .await;
            Outcome::StaticIp(result.ok())
        }
        Step::Finish => unreachable!("Finish is not performed"),
    };
    Ok(outcome)
}

/// Right before a call to Dhan that mints or submits credentials — after every wait (the rate
/// limit, a TOTP step), so nothing stands between the check and the call: this process still
/// leads, and the account holds the client's claim, with the call recorded on it and within
/// the day's cap on refused credentials (`credentials`: the hash of what is submitted).
/// `Ok(Err(_))`: the call must not be made, as a failure of the method.
async fn guard(
    ctx: &Context,
    account: &DhanAccount,
    facts: &Gathered,
    credentials: Option<String>,
) -> Result<Result<(), Failure>, Refused> {
    if let Some(leadership) = &ctx.leadership {
        // A mint in flight must end before any other replica could take over.
        if !leadership.holds_for(ctx.dhan_timeout).await {
            return Err(NotLeader.into());
        }
    }
    let Some(claims) = &ctx.claims else {
        return Ok(Ok(()));
    };
    let round = &facts.round;
    let submission = Submission {
        credentials,
        last_token: round
            .token_facts()
            .map(|t| t.obtained_at)
            .max(round.memory.last_mint),
        cap: ctx.limits.max_failed_logins,
        midnight_margin: ctx.limits.midnight_margin,
    };
    let uid = account.uid().unwrap_or_default();
    let client_id = round.inputs.policy.client_id.as_str();
    // Another install's account may mint for this client too (docs/dhan-api.md §1).
    match claims.secure(&uid, client_id, &submission).await {
        Ok(()) => Ok(Ok(())),
        Err(ClaimError::Refused(refused)) => {
            let kind = match refused {
                ClaimRefused::Capped { .. } => FailureKind::LoginLockout,
                ClaimRefused::RefusedToday => FailureKind::CredentialsRefusedToday,
                ClaimRefused::NearMidnight { .. } => {
                    return Ok(Err(Failure::new(
                        FailureKind::NearIstMidnight,
                        refused.to_string(),
                    )));
                }
            };
            let message = format!(
                "{refused}; stopped so that Dhan does not lock the account — check the PIN, \
                 TOTP key and mobile number in the credentials"
            );
            Ok(Err(Failure::new(kind, message)))
        }
        Err(error) => Err(error.into()),
    }
}

/// Records on the claim what Dhan answered to the call the guard let through: a refusal of
/// the credentials counts toward the day's cap wherever the account is re-created.
async fn record_answer<T>(
    ctx: &Context,
    account: &DhanAccount,
    result: &Result<T, DhanError>,
    credentials: Option<&str>,
) {
    let (Some(claims), Err(error)) = (&ctx.claims, result) else {
        // A token is its own record: the claim's mint in flight is older than it.
        return;
    };
    let kind = FailureKind::from(error);
    let answer = match credentials {
        // "Invalid TOTP" also answers a correct code made by a clock that is off or used
        // elsewhere in its step (docs/dhan-api.md §1): it counts toward the cap, but the PIN
        // and TOTP key are not known to be wrong.
        Some(_) if kind == FailureKind::InvalidTotp => Answer::MaybeRefused,
        Some(credentials) if kind.refuses_credentials() => Answer::Refused(credentials.into()),
        _ if kind.outcome_unknown() => Answer::Unknown,
        _ => Answer::Heard,
    };
    claims
        .answered(&account.uid().unwrap_or_default(), &answer)
        .await;
}

fn failed(method: Method, failure: Failure, totp_step: Option<u64>) -> Outcome {
    Outcome::Failed {
        method,
        failure,
        totp_step,
    }
}

/// Asks Dhan whether the current token still works (docs/dhan-api.md §4). A regular probe
/// gives way when the rate limit is busy with calls that obtain tokens.
async fn probe(ctx: &Context, round: &crate::decision::Round) -> Outcome {
    let held = round.token.as_ref().expect("probe only a token");
    if round.probe_may_wait() {
        if ctx.limiter.acquire_spare().await.is_err() {
            return Outcome::ProbeSkipped;
        }
    } else {
        ctx.limiter.acquire().await;
    }
    let result = ctx.dhan.profile(&held.token.value).await;
    ctx.metrics
        .dhan_call(Endpoint::Profile, outcome_label(&result));
    Outcome::Probed(match &result {
        Ok(_) => ProbeVerdict::Alive,
        Err(e) if e.kind() == ErrorKind::TokenDead => ProbeVerdict::Dead,
        Err(_) => ProbeVerdict::Unknown,
    })
}

/// One Dhan call: waits for the rate limit, counts the outcome.
async fn call<'a, T>(
    ctx: &'a Context,
    endpoint: Endpoint,
    f: impl FnOnce() -> crate::dhan::api::Call<'a, T>,
) -> Result<T, DhanError> {
    ctx.limiter.acquire().await;
    counted(ctx, endpoint, f).await
}

/// One Dhan call whose rate-limit slot is taken: counts the outcome.
async fn counted<'a, T>(
    ctx: &'a Context,
    endpoint: Endpoint,
    f: impl FnOnce() -> crate::dhan::api::Call<'a, T>,
) -> Result<T, DhanError> {
    let result = f().await;
    ctx.metrics.dhan_call(endpoint, outcome_label(&result));
    result
}

/// The outcome of a method that returns a token. A new token is kept in memory at once: Dhan
/// has just revoked the previous one (docs/dhan-api.md §1, §2), so until it is written to the
/// Secret it is the only live token (the write-ahead).
fn issued(
    ctx: &Context,
    account: &DhanAccount,
    method: Method,
    result: Result<IssuedToken, DhanError>,
    totp_step: Option<u64>,
) -> Outcome {
    match result {
        Ok(issued) => {
            let token = token_of(ctx, account, issued);
            let held = Held {
                token: token.clone(),
                method: Some(method.as_str().into()),
                stored: Stored::Unwritten {
                    refusals: 0,
                    last_error: None,
                },
            };
            ctx.memos
                .keep_unwritten(&account.uid().unwrap_or_default(), &held);
            Outcome::Issued {
                method,
                token,
                totp_step,
            }
        }
        Err(error) => Outcome::Failed {
            method,
            failure: Failure::from(&error),
            totp_step,
        },
    }
}

/// The facts of a token Dhan just issued: from its JWT, or from Dhan's answer when the JWT
/// cannot be read (the expiry is then recorded in the Secret, so it is read back the same way).
fn token_of(ctx: &Context, account: &DhanAccount, issued: IssuedToken) -> Token {
    let now = ctx.clock.now();
    let key = output::hash_key(account);
    let facts = output::token_facts(&key, &issued.token, Some(now), Some(issued.expires_at))
        .expect("an issued token always has an expiry");
    Token {
        value: issued.token,
        facts,
    }
}

/// How long a mint may wait for a usable TOTP step. A step lasts 30 s and a code is never sent
/// with < 5 s left, so a wait is at most 35 s; longer means the clock moved (or a recorded step
/// lies in the future), and the attempt fails instead of waiting without end.
const TOTP_WAIT_LIMIT: Duration = Duration::from_secs(90);

/// generateAccessToken with a fresh code: never with < 5 s left in its step and never a step
/// used before for this client (docs/dhan-api.md §1). No retry here: any refusal re-arms
/// Dhan's 2-minute lock (§9), so even "Invalid TOTP" is retried by the round, after the lock.
async fn mint_with_totp(
    ctx: &Context,
    account: &DhanAccount,
    facts: &Gathered,
) -> Result<Outcome, Refused> {
    let round = &facts.round;
    let pin = facts.credentials.get(CredentialKey::Pin).expect("usable");
    let raw_key = facts
        .credentials
        .get(CredentialKey::TotpSecret)
        .expect("usable");
    let key = TotpKey::parse(raw_key.expose()).expect("usable");
    let client_id = round.inputs.policy.client_id.as_str();
    let credentials = facts.credentials.submission_hash(client_id, Method::Totp);
    let last_step = round.memory.last_totp_step;
    loop {
        let Some((code, step)) = next_code(ctx, &key, last_step).await else {
            let failure = Failure::new(
                FailureKind::Timeout,
                format!(
                    "no usable TOTP step within {}s (the clock moved, or the recorded last step \
                     lies ahead); retrying later",
                    TOTP_WAIT_LIMIT.as_secs()
                ),
            );
            return Ok(failed(Method::Totp, failure, last_step));
        };
        ctx.limiter.acquire().await;
        if let Err(failure) = guard(ctx, account, facts, credentials.clone()).await? {
            return Ok(failed(Method::Totp, failure, last_step));
        }
        // The rate limit and the guard took time: the code must still have 5 s left (§1).
        let still = matches!(key.plan(ctx.clock.now(), last_step), CodePlan::Send { step: s, .. } if s == step);
        if !still {
            // Nothing was sent: the claim must not count it as a refusal.
            if let Some(claims) = &ctx.claims {
                let uid = account.uid().unwrap_or_default();
                claims.answered(&uid, &Answer::Heard).await;
            }
            continue;
        }
        let result = counted(ctx, Endpoint::GenerateAccessToken, || {
            ctx.dhan
                .generate_access_token(client_id, pin.expose(), &code)
        })
        .await;
        record_answer(ctx, account, &result, credentials.as_deref()).await;
        return Ok(issued(ctx, account, Method::Totp, result, Some(step)));
    }
}

/// The next code to send and its step, after waiting for it; `None` when none comes within
/// [`TOTP_WAIT_LIMIT`].
async fn next_code(ctx: &Context, key: &TotpKey, last_step: Option<u64>) -> Option<(String, u64)> {
    let deadline = ctx.clock.now() + chrono::Duration::from_std(TOTP_WAIT_LIMIT).ok()?;
    loop {
        let now = ctx.clock.now();
        match key.plan(now, last_step) {
            CodePlan::Send { code, step } => return Some((code, step)),
            CodePlan::WaitUntil(at) if at <= deadline => {
                let wait = (at - now).to_std().unwrap_or_default();
                tokio::time::sleep(wait + Duration::from_millis(50)).await;
            }
            CodePlan::WaitUntil(_) => return None,
        }
    }
}

/// The `browser` method: a free login slot, then a consent; the Job is created by apply. The
/// login it starts submits the credentials: the claim records it before the consent.
async fn start_login(
    ctx: &Context,
    account: &DhanAccount,
    facts: &Gathered,
) -> Result<Outcome, Refused> {
    let uid = account.uid().unwrap_or_default();
    if let Err(running) = ctx.logins.try_reserve(&uid, ctx.index.recorded_logins()) {
        return Ok(Outcome::LoginQueued(format!(
            "waiting for a free login slot ({running} login Jobs running, at most {})",
            ctx.login.max_concurrent
        )));
    }
    let app = (
        facts.credentials.get(CredentialKey::ApiKey),
        facts.credentials.get(CredentialKey::ApiSecret),
    );
    let (Ok(app_id), Ok(app_secret)) = app else {
        ctx.logins.release(&uid);
        let failure = Failure::new(
            FailureKind::NoUsableMethod,
            "the app's apiKey/apiSecret are missing",
        );
        return Ok(failed(Method::Browser, failure, None));
    };
    let client_id = facts.round.inputs.policy.client_id.as_str();
    let credentials = facts
        .credentials
        .submission_hash(client_id, Method::Browser);
    ctx.limiter.acquire().await;
    let allowed = match guard(ctx, account, facts, credentials).await {
        Ok(allowed) => allowed,
        Err(refused) => {
            ctx.logins.release(&uid);
            return Err(refused);
        }
    };
    if let Err(failure) = allowed {
        ctx.logins.release(&uid);
        return Ok(failed(Method::Browser, failure, None));
    }
    let result = counted(ctx, Endpoint::GenerateConsent, || {
        ctx.dhan
            .generate_consent(client_id, app_id.expose(), app_secret.expose())
    })
    .await;
    // The login's own answer is recorded when its Job ends.
    record_answer(ctx, account, &result, None).await;
    Ok(match result {
        Ok(consent_id) => Outcome::LoginStarted {
            job_name: login::job_name(account, &consent_id),
            consent_id,
        },
        Err(error) => {
            ctx.logins.release(&uid);
            failed(Method::Browser, Failure::from(&error), None)
        }
    })
}
