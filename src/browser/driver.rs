//! The DevTools session with the Chromium sidecar and the walk through the login page.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chromiumoxide::cdp::browser_protocol::fetch::{
    ContinueRequestParams, EnableParams, EventRequestPaused, FailRequestParams, RequestPattern,
    RequestStage,
};
use chromiumoxide::cdp::browser_protocol::network::{ErrorReason, ResourceType};
use chromiumoxide::{Browser, Element, Page};
use chrono::Utc;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, timeout};
use tracing::{debug, info, warn};

use crate::dhan::{CodePlan, TotpKey};

use super::config::LoginConfig;
use super::error::{LoginError, Step};
use super::steps::{
    BUTTON_SELECTOR, Field, INPUT_SELECTOR, Layout, PageFacts, Redirect, SNAPSHOT_JS, Submit,
    blame, error_text, expected_next, fields, interception_pattern, redirect_target, resolve,
    steps_of, submit_for,
};

/// How often the page is looked at while waiting.
const POLL: Duration = Duration::from_millis(150);
/// How long a page may show no field at all before the login gives up on it.
const FIELD_GRACE: Duration = Duration::from_secs(15);
/// Time for a page that submits by itself (on the last digit) to do so before we click.
const SETTLE: Duration = Duration::from_millis(300);
/// An error text that was already shown before submitting only counts if it stays this long.
const STALE_ERROR: Duration = Duration::from_secs(3);
/// Time for Chromium to answer `Browser.close`.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

fn cdp(context: &str) -> impl FnOnce(chromiumoxide::error::CdpError) -> LoginError + '_ {
    move |e| LoginError::Cdp(format!("{context}: {e}"))
}

/// The step in progress, readable after the login's future was dropped on timeout.
#[derive(Debug)]
pub struct Progress(Mutex<Step>);

impl Progress {
    pub fn new(step: Step) -> Progress {
        Progress(Mutex::new(step))
    }

    pub fn get(&self) -> Step {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set(&self, step: Step) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = step;
    }
}

/// A connection to Chromium and the task that pumps its websocket.
pub struct Session {
    browser: Browser,
    handler: JoinHandle<()>,
}

impl Session {
    /// Connects to `cdp_url`, retrying until Chromium listens: the sidecar starts alongside this
    /// container, in no particular order. The caller bounds the wait.
    pub async fn connect(cdp_url: &str) -> Session {
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            match timeout(Duration::from_secs(5), Browser::connect(cdp_url)).await {
                Ok(Ok((browser, mut events))) => {
                    info!(cdp_url, attempts, "connected to Chromium");
                    // chromiumoxide only makes progress while its handler stream is polled.
                    let handler = tokio::spawn(async move {
                        while let Some(event) = events.next().await {
                            if let Err(e) = event {
                                debug!(error = %e, "DevTools connection ended");
                                break;
                            }
                        }
                    });
                    return Session { browser, handler };
                }
                Ok(Err(e)) if attempts % 10 == 1 => {
                    info!(cdp_url, error = %e, "Chromium not reachable yet; retrying")
                }
                Err(_) if attempts % 10 == 1 => {
                    info!(cdp_url, "Chromium did not answer; retrying")
                }
                _ => {}
            }
            sleep(Duration::from_millis(500)).await;
        }
    }

    /// Sends CDP `Browser.close`, so the sidecar exits and the Job can complete.
    pub async fn close(mut self) {
        match timeout(CLOSE_TIMEOUT, self.browser.close()).await {
            Ok(Ok(_)) => info!("closed Chromium"),
            // Chromium may drop the socket before it answers; it is closing either way.
            Ok(Err(e)) => debug!(error = %e, "Browser.close got no clean answer"),
            Err(_) => warn!("Chromium did not answer Browser.close in time"),
        }
        if timeout(Duration::from_secs(2), &mut self.handler)
            .await
            .is_err()
        {
            self.handler.abort();
        }
    }

    /// Walks the login page until the redirect hands over a `tokenId`. `progress` names the step
    /// in progress, for the caller's timeout message.
    pub async fn log_in(
        &self,
        config: &LoginConfig,
        progress: &Progress,
    ) -> Result<String, LoginError> {
        progress.set(Step::LoginPage);
        let page = self
            .browser
            .new_page("about:blank")
            .await
            .map_err(cdp("opening a tab"))?;
        let mut redirects = Redirects::intercept(&page, config.redirect_prefix.clone()).await?;
        let result = walk(&page, config, &mut redirects, progress).await;
        redirects.task.abort();
        result
    }
}

/// Requests to the redirect URL, paused by the Fetch domain before they leave the browser.
struct Redirects {
    seen: mpsc::UnboundedReceiver<Redirect>,
    task: JoinHandle<()>,
}

impl Redirects {
    /// Enables interception before the login page is opened, so the final 302's target is never
    /// requested: its `tokenId` is single-use, and the redirect host may not even resolve.
    async fn intercept(page: &Page, prefix: Option<String>) -> Result<Redirects, LoginError> {
        let mut paused = page
            .event_listener::<EventRequestPaused>()
            .await
            .map_err(cdp("listening for paused requests"))?;
        let pattern = RequestPattern::builder()
            .url_pattern(interception_pattern(prefix.as_deref()))
            .request_stage(RequestStage::Request)
            .build();
        page.execute(EnableParams::builder().pattern(pattern).build())
            .await
            .map_err(cdp("enabling request interception"))?;
        let (tx, seen) = mpsc::unbounded_channel();
        let page = page.clone();
        let task = tokio::spawn(async move {
            while let Some(event) = paused.next().await {
                let event: Arc<EventRequestPaused> = event;
                let is_document = event.resource_type == ResourceType::Document;
                let target = redirect_target(&event.request.url, prefix.as_deref(), is_document);
                let id = event.request_id.clone();
                let answered = if target == Redirect::NotOurs {
                    page.execute(ContinueRequestParams::new(id)).await.err()
                } else {
                    info!("intercepted the redirect; aborting it");
                    let _ = tx.send(target);
                    page.execute(FailRequestParams::new(id, ErrorReason::Aborted))
                        .await
                        .err()
                };
                if let Some(e) = answered {
                    debug!(error = %e, "answering a paused request failed");
                }
            }
        });
        Ok(Redirects { seen, task })
    }

    fn take(&mut self) -> Option<Result<String, LoginError>> {
        self.seen.try_recv().ok().map(|redirect| match redirect {
            Redirect::Token(token) => Ok(token),
            _ => Err(LoginError::NoTokenId),
        })
    }
}

async fn snapshot(page: &Page) -> Result<PageFacts, String> {
    let json: String = page
        .evaluate_expression(SNAPSHOT_JS)
        .await
        .map_err(|e| e.to_string())?
        .into_value()
        .map_err(|e| e.to_string())?;
    serde_json::from_str(&json).map_err(|e| e.to_string())
}

/// What became of a submitted screen.
enum Outcome {
    Token(String),
    Advanced,
}

async fn walk(
    page: &Page,
    config: &LoginConfig,
    redirects: &mut Redirects,
    progress: &Progress,
) -> Result<String, LoginError> {
    info!("opening the login page");
    if let Err(e) = page.goto(config.login_url.as_str()).await {
        // A consent that needs no login redirects at once, and aborting that aborts the load.
        sleep(Duration::from_secs(1)).await;
        if let Some(result) = redirects.take() {
            return result;
        }
        return Err(LoginError::Cdp(format!("opening the login page: {e}")));
    }
    let mut done: Vec<Step> = Vec::new();
    let mut screen_since = Instant::now();
    loop {
        if let Some(result) = redirects.take() {
            return result;
        }
        let facts = match snapshot(page).await {
            Ok(facts) => facts,
            Err(e) => {
                debug!(error = %e, "page not readable yet");
                sleep(POLL).await;
                continue;
            }
        };
        let mut shown = fields(&facts);
        if shown.is_empty() {
            if let Some(message) = error_text(&facts) {
                return Err(LoginError::Rejected {
                    step: progress.get(),
                    page_message: message,
                });
            }
            if screen_since.elapsed() > FIELD_GRACE {
                return Err(LoginError::NoField {
                    step: expected_next(&done),
                });
            }
            if expected_next(&done) == Step::Redirect {
                progress.set(Step::Redirect);
            }
            sleep(POLL).await;
            continue;
        }
        for field in &mut shown {
            field.step = resolve(field.step, &done);
        }
        if shown.iter().any(|f| f.step == Step::TotpOrPin) {
            return Err(LoginError::UnexpectedPage {
                step: Step::TotpOrPin,
                detail: "the page does not say whether it asks for the TOTP or the PIN".into(),
            });
        }
        if let Some(again) = shown.iter().find(|f| done.contains(&f.step)) {
            return Err(LoginError::UnexpectedPage {
                step: again.step,
                detail: format!("the page asked for the {} again", again.step),
            });
        }
        let submitted = steps_of(&shown);
        progress.set(*submitted.last().expect("fields are not empty"));
        let baseline = error_text(&facts);
        for field in &shown {
            fill(page, config, field).await?;
        }
        submit(page, &submitted, &done).await?;
        match wait_outcome(page, redirects, &submitted, &done, baseline).await? {
            Outcome::Token(token) => return Ok(token),
            Outcome::Advanced => {
                done.extend(&submitted);
                screen_since = Instant::now();
            }
        }
    }
}

/// Types a field's value with real key events: the page's inputs are React-style controlled
/// inputs that ignore assigned values and synthetic events (docs/dhan-api.md §3).
async fn fill(page: &Page, config: &LoginConfig, field: &Field) -> Result<(), LoginError> {
    let step = field.step;
    let inputs = page
        .find_elements(INPUT_SELECTOR)
        .await
        .map_err(cdp("finding the inputs"))?;
    let input = |index: usize| -> Result<&Element, LoginError> {
        inputs.get(index).ok_or_else(|| LoginError::UnexpectedPage {
            step,
            detail: "the field disappeared while typing".into(),
        })
    };
    let value = match step {
        Step::Mobile => config.mobile_for_field(),
        Step::Pin => config.pin.clone(),
        // Last, so the code is as fresh as possible when it is submitted.
        _ => fresh_code(&config.totp, config.totp_after_step).await,
    };
    let typing_failed = || LoginError::Cdp(format!("typing the {step} failed"));
    match &field.layout {
        Layout::Single(index) => {
            let element = input(*index)?;
            element.focus().await.map_err(|_| typing_failed())?;
            if field.prefilled.contains(index) {
                element
                    .call_js_fn("function() { this.select(); }", false)
                    .await
                    .map_err(|_| typing_failed())?;
                element
                    .press_key("Backspace")
                    .await
                    .map_err(|_| typing_failed())?;
            }
            element
                .type_str(&value)
                .await
                .map_err(|_| typing_failed())?;
        }
        Layout::Boxes(boxes) => {
            if boxes.len() != value.chars().count() {
                return Err(LoginError::UnexpectedPage {
                    step,
                    detail: format!(
                        "the page shows {} boxes, which does not match the configured value",
                        boxes.len()
                    ),
                });
            }
            for (index, digit) in boxes.iter().zip(value.chars()) {
                let element = input(*index)?;
                element.focus().await.map_err(|_| typing_failed())?;
                if field.prefilled.contains(index) {
                    element
                        .press_key("Backspace")
                        .await
                        .map_err(|_| typing_failed())?;
                }
                element
                    .type_str(digit.to_string())
                    .await
                    .map_err(|_| typing_failed())?;
            }
        }
    }
    info!(step = %step, "entered");
    Ok(())
}

/// A code with at least `MIN_REMAINING_SECONDS` left in its step, from a step after
/// `after_step`, waiting for the next step when the current one is nearly over or already used
/// (docs/dhan-api.md §1, §8).
async fn fresh_code(totp: &TotpKey, after_step: Option<u64>) -> String {
    loop {
        match totp.plan(Utc::now(), after_step) {
            CodePlan::Send { code, .. } => return code,
            CodePlan::WaitUntil(at) => {
                let wait = (at - Utc::now()).to_std().unwrap_or_default();
                debug!(?wait, "waiting for a fresh TOTP step");
                sleep(wait + Duration::from_millis(50)).await;
            }
        }
    }
}

/// Clicks the submit button, or presses Enter when there is none; leaves a page alone that
/// already submitted by itself.
async fn submit(page: &Page, submitted: &[Step], done: &[Step]) -> Result<(), LoginError> {
    sleep(SETTLE).await;
    let Ok(facts) = snapshot(page).await else {
        return Ok(()); // navigating: the page submitted by itself
    };
    let shown: Vec<Field> = fields(&facts)
        .into_iter()
        .map(|mut f| {
            f.step = resolve(f.step, done);
            f
        })
        .collect();
    if steps_of(&shown) != submitted {
        return Ok(());
    }
    match submit_for(&facts, &shown) {
        Submit::Click(index) => {
            let buttons = page
                .find_elements(BUTTON_SELECTOR)
                .await
                .map_err(cdp("finding the submit button"))?;
            let button = buttons
                .get(index)
                .ok_or_else(|| LoginError::UnexpectedPage {
                    step: *submitted.last().unwrap_or(&Step::LoginPage),
                    detail: "the submit button disappeared".into(),
                })?;
            button.click().await.map_err(cdp("clicking submit"))?;
        }
        Submit::Enter => {
            let last = shown.last().and_then(|f| f.inputs().last().copied());
            let inputs = page
                .find_elements(INPUT_SELECTOR)
                .await
                .map_err(cdp("finding the inputs"))?;
            if let Some(input) = last.and_then(|i| inputs.get(i)) {
                input
                    .press_key("Enter")
                    .await
                    .map_err(cdp("pressing Enter"))?;
            }
        }
        Submit::Wait => debug!("submit button disabled; waiting for the page"),
    }
    Ok(())
}

/// Waits until the page shows an error, moves on to other fields, or redirects.
async fn wait_outcome(
    page: &Page,
    redirects: &mut Redirects,
    submitted: &[Step],
    done: &[Step],
    baseline: Option<String>,
) -> Result<Outcome, LoginError> {
    let started = Instant::now();
    loop {
        if let Some(result) = redirects.take() {
            return result.map(Outcome::Token);
        }
        if let Ok(facts) = snapshot(page).await {
            if let Some(message) = error_text(&facts)
                && (baseline.as_ref() != Some(&message) || started.elapsed() > STALE_ERROR)
            {
                return Err(LoginError::Rejected {
                    step: blame(submitted, &facts, &message),
                    page_message: message,
                });
            }
            let shown = fields(&facts);
            let now: Vec<Step> = shown.iter().map(|f| resolve(f.step, done)).collect();
            if !now.is_empty() && now != submitted {
                return Ok(Outcome::Advanced);
            }
        }
        sleep(POLL).await;
    }
}
