//! Typing a value into a field with real key events: the page's inputs are React-style controlled
//! inputs that ignore assigned values and synthetic events (docs/dhan-api.md §3). Nothing is typed
//! on a page whose origin is not an allowed login host.

use std::time::Duration;

use chromiumoxide::{Element, Page};
use tokio::time::sleep;
use tracing::{debug, info};

use crate::clock::Clock;
use crate::dhan::{CodePlan, TotpKey};

use super::config::LoginConfig;
use super::error::{LoginFailure, Step};
use super::steps::{Field, INPUT_SELECTOR, Layout};

/// The page's address right now, from the page itself (not a cached one).
pub async fn current_url(page: &Page) -> Option<String> {
    page.evaluate_expression("location.href")
        .await
        .ok()?
        .into_value::<String>()
        .ok()
}

/// Refuses to go on unless the page is on an allowed login host.
pub async fn ensure_allowed(
    page: &Page,
    config: &LoginConfig,
    step: Step,
) -> Result<(), LoginFailure> {
    let url = current_url(page)
        .await
        .ok_or_else(|| LoginFailure::unexpected(step, "the page's address could not be read"))?;
    config
        .allowed_hosts
        .check(&url)
        .map_err(|origin| LoginFailure::origin_refused(step, &origin))
}

/// Types the value `field` asks for.
pub async fn fill(
    page: &Page,
    config: &LoginConfig,
    clock: &dyn Clock,
    field: &Field,
) -> Result<(), LoginFailure> {
    let step = field.step;
    let value = match step {
        Step::Mobile => config.mobile_for_field(),
        Step::Pin => config.pin.clone(),
        Step::Password => config
            .password
            .clone()
            .ok_or_else(LoginFailure::password_not_configured)?,
        // Last, so the code is as fresh as possible when it is submitted.
        _ => fresh_code(&config.totp, config.totp_after_step, clock).await,
    };
    ensure_allowed(page, config, step).await?;
    let inputs = page
        .find_elements(INPUT_SELECTOR)
        .await
        .map_err(|e| LoginFailure::browser(step, format!("finding the inputs: {e}")))?;
    let input = |index: usize| -> Result<&Element, LoginFailure> {
        inputs
            .get(index)
            .ok_or_else(|| LoginFailure::unexpected(step, "the field disappeared while typing"))
    };
    let failed = || LoginFailure::browser(step, format!("typing the {step} failed"));
    match &field.layout {
        Layout::Single(index) => {
            let element = input(*index)?;
            element.focus().await.map_err(|_| failed())?;
            if field.prefilled.contains(index) {
                element
                    .call_js_fn("function() { this.select(); }", false)
                    .await
                    .map_err(|_| failed())?;
                element.press_key("Backspace").await.map_err(|_| failed())?;
            }
            element.type_str(&value).await.map_err(|_| failed())?;
        }
        Layout::Boxes(boxes) => {
            if boxes.len() != value.chars().count() {
                return Err(LoginFailure::unexpected(
                    step,
                    format!(
                        "the page shows {} boxes, which does not match the configured value",
                        boxes.len()
                    ),
                ));
            }
            for (index, digit) in boxes.iter().zip(value.chars()) {
                let element = input(*index)?;
                element.focus().await.map_err(|_| failed())?;
                if field.prefilled.contains(index) {
                    element.press_key("Backspace").await.map_err(|_| failed())?;
                }
                element
                    .type_str(digit.to_string())
                    .await
                    .map_err(|_| failed())?;
            }
        }
    }
    info!(step = %step, "entered");
    Ok(())
}

/// A code with at least `MIN_REMAINING_SECONDS` left in its step, from a step after
/// `after_step`, waiting for the next step when the current one is nearly over or already used
/// (docs/dhan-api.md §1, §8).
async fn fresh_code(totp: &TotpKey, after_step: Option<u64>, clock: &dyn Clock) -> String {
    loop {
        match totp.plan(clock.now(), after_step) {
            CodePlan::Send { code, .. } => return code,
            CodePlan::WaitUntil(at) => {
                let wait = (at - clock.now()).to_std().unwrap_or_default();
                debug!(?wait, "waiting for a fresh TOTP step");
                sleep(wait + Duration::from_millis(50)).await;
            }
        }
    }
}
