//! Performing a round's steps: the calls to Dhan, each through the global rate limit and
//! counted in the metrics. What to call is the round's decision; this only calls and reports.

use super::Context;
use super::credentials::CredentialKey;
use super::gather::Gathered;
use super::login;
use super::output;
use crate::claims::ClaimError;
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
    // A consent is spent only towards a mint: it needs the same right.
    let mints = matches!(step, Step::Consume | Step::Try(_));
    if mints && let Some(leadership) = &ctx.leadership {
        // A mint in flight must end before any other replica could take over.
        if !leadership.holds_for(ctx.dhan_timeout).await {
            return Err(NotLeader.into());
        }
    }
    if mints && let Some(claims) = &ctx.claims {
        // Another install's account may mint for this client too (docs/dhan-api.md §1).
        let uid = account.uid().unwrap_or_default();
        claims.secure(&uid, client_id, ctx.dhan_timeout).await?;
    }
    let outcome = match step {
        Step::Consume => {
            let token_id = facts.token_id.as_ref().expect("consume only a tokenId");
            let app = (
                facts.credentials.get(CredentialKey::ApiKey),
                facts.credentials.get(CredentialKey::ApiSecret),
            );
            let result = match app {
                (Ok(app_id), Ok(app_secret)) => {
                    call(ctx, Endpoint::ConsumeConsent, || {
                        ctx.dhan.consume_consent(
                            token_id.expose(),
                            app_id.expose(),
                            app_secret.expose(),
                        )
                    })
                    .await
                }
                _ => Err(DhanError::InvalidConfig {
                    detail: "the app's apiKey/apiSecret disappeared during the login".into(),
                }),
            };
            issued(ctx, account, Method::Browser, result, None)
        }
        Step::Try(Method::Renew) => {
            let token = round
                .renewable(ctx.clock.now())
                .expect("renew only a renewable token")
                .value
                .clone();
            let result = call(ctx, Endpoint::RenewToken, || {
                ctx.dhan.renew_token(client_id, &token)
            })
            .await;
            issued(ctx, account, Method::Renew, result, None)
        }
        Step::Try(Method::Totp) => {
            let (result, step) = mint_with_totp(ctx, facts).await;
            issued(ctx, account, Method::Totp, result, Some(step))
        }
        Step::Try(Method::Browser) => start_login(ctx, account, facts).await,
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

/// generateAccessToken with a fresh code: never with < 5 s left in its step, never a step used
/// before for this client (docs/dhan-api.md §1). No retry here: any refusal re-arms Dhan's
/// 2-minute lock (§9), so even "Invalid TOTP" is retried by the round, after the lock.
/// Returns the step sent.
async fn mint_with_totp(ctx: &Context, facts: &Gathered) -> (Result<IssuedToken, DhanError>, u64) {
    let round = &facts.round;
    let pin = facts.credentials.get(CredentialKey::Pin).expect("usable");
    let raw_key = facts
        .credentials
        .get(CredentialKey::TotpSecret)
        .expect("usable");
    let key = TotpKey::parse(raw_key.expose()).expect("usable");
    let client_id = round.inputs.policy.client_id.as_str();
    let (code, step) = loop {
        match key.plan(ctx.clock.now(), round.memory.last_totp_step) {
            CodePlan::Send { code, step } => break (code, step),
            CodePlan::WaitUntil(at) => {
                let wait = (at - ctx.clock.now()).to_std().unwrap_or_default();
                tokio::time::sleep(wait + Duration::from_millis(50)).await;
            }
        }
    };
    let result = call(ctx, Endpoint::GenerateAccessToken, || {
        ctx.dhan
            .generate_access_token(client_id, pin.expose(), &code)
    })
    .await;
    (result, step)
}

/// The `browser` method: a free login slot, then a consent; the Job is created by apply.
async fn start_login(ctx: &Context, account: &DhanAccount, facts: &Gathered) -> Outcome {
    let uid = account.uid().unwrap_or_default();
    if let Err(running) = ctx.logins.try_reserve(&uid, ctx.index.recorded_logins()) {
        return Outcome::LoginQueued(format!(
            "waiting for a free login slot ({running} login Jobs running, at most {})",
            ctx.login.max_concurrent
        ));
    }
    let app = (
        facts.credentials.get(CredentialKey::ApiKey),
        facts.credentials.get(CredentialKey::ApiSecret),
    );
    let (Ok(app_id), Ok(app_secret)) = app else {
        ctx.logins.release(&uid);
        return Outcome::Failed {
            method: Method::Browser,
            failure: Failure::new(
                FailureKind::NoUsableMethod,
                "the app's apiKey/apiSecret are missing",
            ),
            totp_step: None,
        };
    };
    let client_id = facts.round.inputs.policy.client_id.as_str();
    let result = call(ctx, Endpoint::GenerateConsent, || {
        ctx.dhan
            .generate_consent(client_id, app_id.expose(), app_secret.expose())
    })
    .await;
    match result {
        Ok(consent_id) => Outcome::LoginStarted {
            job_name: login::job_name(account, &consent_id),
            consent_id,
        },
        Err(error) => {
            ctx.logins.release(&uid);
            Outcome::Failed {
                method: Method::Browser,
                failure: Failure::from(&error),
                totp_step: None,
            }
        }
    }
}
