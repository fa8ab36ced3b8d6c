//! Logging in on each markup docs/dhan-api.md §3 reports, with real Chromium and real key events.

use std::time::Duration;

use serde_json::json;

use super::{MOBILE, PASSWORD, logs_in_on, logs_in_on_slow, submissions};

#[tokio::test]
async fn logs_in_with_boxes_totp_first() {
    logs_in_on(
        json!({"loginOrder": "totp-first", "loginInputs": "boxes"}),
        &[],
    )
    .await;
}

#[tokio::test]
async fn logs_in_with_boxes_pin_first() {
    logs_in_on(
        json!({"loginOrder": "pin-first", "loginInputs": "boxes"}),
        &[],
    )
    .await;
}

#[tokio::test]
async fn logs_in_with_single_fields_totp_first() {
    logs_in_on(
        json!({"loginOrder": "totp-first", "loginInputs": "single"}),
        &[],
    )
    .await;
}

/// An Angular-style page: generic ids, steps named only in text ("Verify with TOTP"), errors as
/// plain text, and a "Proceed" button outside any form.
#[tokio::test]
async fn logs_in_on_a_page_that_names_its_steps_only_in_text() {
    let page = json!({
        "loginOrder": "pin-first",
        "loginPage": {"labels": "text", "errors": "plain", "submit": "proceed"},
    });
    let bed = logs_in_on(page, &[]).await;
    for step in ["mobile", "pin", "totp"] {
        assert_eq!(submissions(&bed, step).await, 1, "{step} submitted once");
    }
}

/// Boxes that submit themselves on the last digit: a click on top would be a second submit.
#[tokio::test]
async fn boxes_that_submit_themselves_are_left_to_do_so() {
    let page = json!({"loginPage": {"labels": "text", "submit": "auto"}});
    let bed = logs_in_on(page, &[]).await;
    assert_eq!(submissions(&bed, "totp").await, 1);
    assert_eq!(submissions(&bed, "pin").await, 1);
}

/// The dangerous variant: boxes submit themselves and the page keeps an enabled button whose
/// click sends the code again — Dhan takes that as a replayed TOTP (docs/dhan-api.md §3). Dhan
/// answers slowly here, so the page still shows the boxes and the live button when a driver
/// that did not notice the submission would click.
#[tokio::test]
async fn self_submitting_boxes_with_a_live_button_are_never_submitted_twice() {
    let page = json!({"loginPage": {"errors": "plain", "submit": "auto-with-button"}});
    let bed = logs_in_on_slow(page, &["login-totp", "login-pin"]).await;
    // The mock logs a call when it answers: let a slow call that might be in flight land first.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        submissions(&bed, "totp").await,
        1,
        "the TOTP code went once"
    );
    assert_eq!(submissions(&bed, "pin").await, 1, "the PIN went once");
    let replays: Vec<_> = bed
        .mock
        .calls_to("login-totp", &bed.client_id)
        .await
        .into_iter()
        .filter(|c| c["outcome"] == "totp_replay")
        .collect();
    assert!(replays.is_empty(), "{replays:?}");
}

#[tokio::test]
async fn logs_in_through_a_password_step() {
    let page = json!({"password": PASSWORD, "loginPage": {"labels": "text"}});
    let bed = logs_in_on(page, &[("DHAN_PASSWORD", PASSWORD)]).await;
    assert_eq!(submissions(&bed, "password").await, 1);
}

/// The mobile box takes ten digits; a number kept with its country code must be typed without it.
#[tokio::test]
async fn a_mobile_number_with_plus_91_is_typed_as_ten_digits() {
    let written = format!("+91 {} {}", &MOBILE[..5], &MOBILE[5..]);
    let page = json!({"loginPage": {"labels": "text", "errors": "plain"}});
    let bed = logs_in_on(page, &[("DHAN_MOBILE", written.as_str())]).await;
    let mobile = bed.mock.calls_to("login-mobile", &bed.client_id).await;
    assert_eq!(mobile.len(), 1, "{mobile:?}");
    assert_eq!(mobile[0]["outcome"], "step_ok", "{mobile:?}");
}
