//! The walk through the login page: read the screen, type what it asks for, submit once (or let a
//! page that submits itself do so), then watch what the page does: move on, redirect, or stay and
//! show a text — read as the page's answer and classified (docs/dhan-api.md §3).
//!
//! A refused value is never typed again: the first refusal ends the login, whatever the step.

use std::time::Duration;

use chromiumoxide::Page;
// tokio's `Instant` times how long a screen has shown: it follows tokio's clock, which a test
// pauses and advances; the wall clock is read only through `Clock`, for TOTP codes.
use tokio::time::{Instant, sleep};
use tracing::{debug, info};

use crate::clock::Clock;

use super::classify::{classify, reads_as_failure, reads_as_progress};
use super::config::LoginConfig;
use super::error::{LoginFailure, Step};
use super::network::{Network, Verdict};
use super::progress::Progress;
use super::report::TokenId;
use super::steps::{
    BUTTON_SELECTOR, Field, INPUT_SELECTOR, PageFacts, SNAPSHOT_JS, Submit, appeared,
    expected_next, fields, resolve, steps_of, submit_for, visible_texts,
};
use super::typing::fill;

/// How often the page is looked at while waiting.
const POLL: Duration = Duration::from_millis(150);
/// How long a page may show no field at all before the login gives up on it.
const FIELD_GRACE: Duration = Duration::from_secs(15);
/// A page without fields whose text reads as a failure is taken at its word after this long
/// (at once when it arrived with an HTTP error or in an error-marked element).
const SETTLED_PAGE: Duration = Duration::from_secs(3);
/// Time for a page that submits by itself (on the last digit) to do so before we would click.
const SETTLE: Duration = Duration::from_millis(600);
/// A page that neither moves on nor shows a recognisable refusal this long after a submit, and
/// has no request in flight, is reported with whatever text it shows.
const STUCK: Duration = Duration::from_secs(20);
/// No request in flight for this long counts as idle.
const QUIET: Duration = Duration::from_millis(1500);

/// What became of a submitted screen.
enum Outcome {
    Token(TokenId),
    Advanced,
}

async fn read(page: &Page) -> Option<PageFacts> {
    let json: String = match page.evaluate_expression(SNAPSHOT_JS).await {
        Ok(result) => result.into_value().ok()?,
        Err(e) => {
            debug!(error = %e, "page not readable yet");
            return None;
        }
    };
    serde_json::from_str(&json).ok()
}

fn resolved_fields(facts: &PageFacts, done: &[Step]) -> Vec<Field> {
    fields(facts)
        .into_iter()
        .map(|mut f| {
            f.step = resolve(f.step, done);
            f
        })
        .collect()
}

fn verdict(verdict: Verdict, step: Step) -> Result<TokenId, LoginFailure> {
    match verdict {
        Verdict::Redirect(Some(token_id)) => Ok(token_id),
        Verdict::Redirect(None) => Err(LoginFailure::no_token_id()),
        Verdict::OriginRefused(origin) => Err(LoginFailure::origin_refused(step, &origin)),
    }
}

/// Whether the tab shows a web page at all: `about:blank` before the first navigation commits and
/// Chromium's own error page after an aborted one (the intercepted redirect) are not pages to
/// read or to judge by their host.
fn is_web_page(facts: &PageFacts) -> bool {
    facts.url.starts_with("https://") || facts.url.starts_with("http://")
}

/// Refuses a web page on a host where nothing may be typed.
fn on_allowed_host(
    config: &LoginConfig,
    facts: &PageFacts,
    step: Step,
) -> Result<(), LoginFailure> {
    match config.allowed_hosts.check(&facts.url) {
        Err(origin) if is_web_page(facts) => Err(LoginFailure::origin_refused(step, &origin)),
        _ => Ok(()),
    }
}

pub async fn walk(
    page: &Page,
    config: &LoginConfig,
    clock: &dyn Clock,
    network: &mut Network,
    progress: &Progress,
) -> Result<TokenId, LoginFailure> {
    let result = walk_screens(page, config, clock, network, progress).await;
    result.map_err(|mut failure| {
        failure.reached_credential_step = progress.reached_credential_step();
        failure
    })
}

async fn walk_screens(
    page: &Page,
    config: &LoginConfig,
    clock: &dyn Clock,
    network: &mut Network,
    progress: &Progress,
) -> Result<TokenId, LoginFailure> {
    info!("opening the login page");
    if let Err(e) = page.goto(config.login_url.as_str()).await {
        // A blocked or intercepted navigation makes the load fail; the network side says why.
        sleep(Duration::from_secs(1)).await;
        if let Some(v) = network.verdict() {
            return verdict(v, Step::LoginPage);
        }
        return Err(LoginFailure::browser(
            Step::LoginPage,
            format!("opening the login page: {e}"),
        ));
    }
    let mut done: Vec<Step> = Vec::new();
    let mut last_submitted: Vec<Step> = Vec::new();
    let mut screen_since = Instant::now();
    loop {
        if let Some(v) = network.verdict() {
            return verdict(v, progress.get());
        }
        let Some(facts) = read(page).await else {
            sleep(POLL).await;
            continue;
        };
        if !is_web_page(&facts) {
            if screen_since.elapsed() > FIELD_GRACE {
                return Err(LoginFailure::unexpected(
                    expected_next(&done),
                    "the browser shows no page: the last navigation failed",
                ));
            }
            sleep(POLL).await;
            continue;
        }
        on_allowed_host(config, &facts, progress.get())?;
        let shown = resolved_fields(&facts, &done);
        if shown.is_empty() {
            let settled = screen_since.elapsed() > SETTLED_PAGE;
            if let Some(failure) =
                refusal_without_fields(&facts, network.document_status(), &last_submitted, settled)
            {
                return Err(failure);
            }
            if screen_since.elapsed() > FIELD_GRACE {
                return Err(LoginFailure::no_field(expected_next(&done)));
            }
            if expected_next(&done) == Step::Redirect {
                progress.set(Step::Redirect);
            }
            sleep(POLL).await;
            continue;
        }
        check_screen(&shown, &done, config)?;
        let submitted = steps_of(&shown);
        progress.set(*submitted.last().expect("fields are not empty"));
        let baseline = visible_texts(&facts);
        let mark = network.mark();
        for field in &shown {
            fill(page, config, clock, field).await?;
        }
        if submitted.iter().any(|s| s.is_credential()) {
            progress.credential_sent();
        }
        submit(page, network, mark, &submitted, &done).await?;
        match wait_outcome(page, config, network, &submitted, &done, &baseline).await? {
            Outcome::Token(token_id) => return Ok(token_id),
            Outcome::Advanced => {
                done.extend(&submitted);
                last_submitted = submitted;
                screen_since = Instant::now();
            }
        }
    }
}

/// A page with no fields that says why: an HTTP error page ("Invalid or expired consent", a
/// gateway's 502) or a refusal shown in place of the next step.
fn refusal_without_fields(
    facts: &PageFacts,
    status: Option<u16>,
    last_submitted: &[Step],
    settled: bool,
) -> Option<LoginFailure> {
    let texts = visible_texts(facts);
    let http_error = status.filter(|s| *s >= 400);
    let failure = texts.iter().find(|t| {
        reads_as_failure(t) && (settled || http_error.is_some() || facts.errors.contains(t))
    });
    match (failure, http_error) {
        (Some(text), _) => {
            let (step, class) = classify(text, last_submitted);
            Some(LoginFailure::rejected(step, class, text.as_str()))
        }
        (None, Some(status)) => Some(LoginFailure::page_unavailable(status, texts.join(" "))),
        (None, None) => None,
    }
}

/// Screens the login cannot or must not fill.
fn check_screen(shown: &[Field], done: &[Step], config: &LoginConfig) -> Result<(), LoginFailure> {
    if shown.iter().any(|f| f.step == Step::TotpOrPin) {
        return Err(LoginFailure::unexpected(
            Step::TotpOrPin,
            "the page does not say whether it asks for the TOTP or the PIN",
        ));
    }
    if let Some(again) = shown.iter().find(|f| done.contains(&f.step)) {
        return Err(LoginFailure::unexpected(
            again.step,
            format!("the page asked for the {} again", again.step),
        ));
    }
    if shown.iter().any(|f| f.step == Step::Password) && config.password.is_none() {
        return Err(LoginFailure::password_not_configured());
    }
    Ok(())
}

/// Submits the screen once: leaves a page alone that already submitted itself (a second submit
/// would replay the TOTP code and read as "TOTP rejected", docs/dhan-api.md §3), else clicks its
/// submit button, or presses Enter when there is none.
async fn submit(
    page: &Page,
    network: &Network,
    mark: u64,
    submitted: &[Step],
    done: &[Step],
) -> Result<(), LoginFailure> {
    sleep(SETTLE).await;
    let step = *submitted.last().unwrap_or(&Step::LoginPage);
    if network.submitted_since(mark) {
        debug!(step = %step, "the page submitted by itself");
        return Ok(());
    }
    let Some(facts) = read(page).await else {
        return Ok(()); // navigating: the page submitted by itself
    };
    let shown = resolved_fields(&facts, done);
    if steps_of(&shown) != submitted {
        return Ok(());
    }
    let browser = |what: &str, e: chromiumoxide::error::CdpError| {
        LoginFailure::browser(step, format!("{what}: {e}"))
    };
    match submit_for(&facts, &shown) {
        Submit::Click(index) => {
            let buttons = page
                .find_elements(BUTTON_SELECTOR)
                .await
                .map_err(|e| browser("finding the submit button", e))?;
            let button = buttons
                .get(index)
                .ok_or_else(|| LoginFailure::unexpected(step, "the submit button disappeared"))?;
            button
                .click()
                .await
                .map_err(|e| browser("clicking submit", e))?;
        }
        Submit::Enter => {
            let last = shown.last().and_then(|f| f.inputs().last().copied());
            let inputs = page
                .find_elements(INPUT_SELECTOR)
                .await
                .map_err(|e| browser("finding the inputs", e))?;
            if let Some(input) = last.and_then(|i| inputs.get(i)) {
                input
                    .press_key("Enter")
                    .await
                    .map_err(|e| browser("pressing Enter", e))?;
            }
        }
        Submit::Wait => debug!("submit button disabled; waiting for the page"),
    }
    Ok(())
}

/// Waits until the page moves on to other fields, redirects, or stays and shows a text that
/// says why: a refusal (confirmed on two reads, so a flicker is not one), or — once the page is
/// idle and has been stuck for a while — whatever new text it shows.
async fn wait_outcome(
    page: &Page,
    config: &LoginConfig,
    network: &mut Network,
    submitted: &[Step],
    done: &[Step],
    baseline: &[String],
) -> Result<Outcome, LoginFailure> {
    let started = Instant::now();
    let step = *submitted.last().unwrap_or(&Step::LoginPage);
    let mut candidate: Option<String> = None;
    loop {
        if let Some(v) = network.verdict() {
            return verdict(v, step).map(Outcome::Token);
        }
        if let Some(facts) = read(page).await.filter(is_web_page) {
            on_allowed_host(config, &facts, step)?;
            let now = resolved_fields(&facts, done);
            if !now.is_empty() && steps_of(&now) != submitted {
                return Ok(Outcome::Advanced);
            }
            let texts: Vec<String> = appeared(baseline, &facts)
                .into_iter()
                .filter(|t| !reads_as_progress(t))
                .collect();
            let failure = texts.iter().find(|t| reads_as_failure(t)).cloned();
            if let Some(text) = &failure
                && candidate.as_ref() == Some(text)
            {
                let (step, class) = classify(text, submitted);
                return Err(LoginFailure::rejected(step, class, text.as_str()));
            }
            candidate = failure;
            if candidate.is_none() && started.elapsed() > STUCK && network.idle_for(QUIET) {
                return Err(match texts.first() {
                    Some(text) => {
                        let (step, class) = classify(text, submitted);
                        LoginFailure::rejected(step, class, text.as_str())
                    }
                    None => LoginFailure::unexpected(
                        step,
                        format!("the page did not move on after the {step} and showed no message"),
                    ),
                });
            }
        }
        sleep(POLL).await;
    }
}
