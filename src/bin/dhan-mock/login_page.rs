//! The browser half of the API-key flow (docs/dhan-api.md §3): the consent login page. It asks
//! for the mobile number, a password when the account has one, then TOTP and PIN (order per
//! account), in the markup variant the account's `loginPage` picks; each step is posted to
//! `login_verify`, whose final answer leads to the 302 carrying `tokenId`.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde_json::json;

use crate::faults;
use crate::state::{
    AccountConfig, LoginInputs, LoginOrder, LoginPage, PageErrors, PageLabels, PageRedirect,
    PageSubmit, Shared,
};

const SCRIPT: &str = include_str!("login_page.js");

/// The account's login steps, in the order its page asks for them.
pub fn steps(cfg: &AccountConfig) -> Vec<&'static str> {
    let mut steps = vec!["mobile"];
    if cfg.password.is_some() {
        steps.push("password");
    }
    steps.extend(match cfg.login_order {
        LoginOrder::TotpFirst => ["totp", "pin"],
        LoginOrder::PinFirst => ["pin", "totp"],
    });
    steps
}

fn variant_json(page: LoginPage) -> serde_json::Value {
    json!({
        "labels": match page.labels { PageLabels::Aria => "aria", PageLabels::Text => "text" },
        "errors": match page.errors { PageErrors::Alert => "alert", PageErrors::Plain => "plain" },
        "submit": match page.submit {
            PageSubmit::Button => "button",
            PageSubmit::Proceed => "proceed",
            PageSubmit::Auto => "auto",
            PageSubmit::AutoWithButton => "auto-with-button",
        },
    })
}

pub fn render(consent_id: &str, cfg: &AccountConfig) -> String {
    let config = json!({
        "consentAppId": consent_id,
        "steps": steps(cfg),
        "inputs": match cfg.login_inputs { LoginInputs::Boxes => "boxes", LoginInputs::Single => "single" },
        "page": variant_json(cfg.login_page),
    })
    .to_string()
    .replace('<', "\\u003c");
    format!(
        r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Login | Dhan</title>
<style>
body{{margin:0;font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;background:#f3f5fa;color:#1c2434}}
.card{{max-width:380px;margin:64px auto;background:#fff;border-radius:12px;box-shadow:0 2px 14px rgba(0,0,0,.08);padding:32px}}
.brand{{font-weight:700;font-size:18px;color:#4f46e5;margin-bottom:18px}}
.title{{font-size:22px;font-weight:600;margin:0 0 6px}}
.sub{{color:#667085;margin:0 0 22px;font-size:14px}}
.field{{width:100%;box-sizing:border-box;padding:12px;font-size:16px;border:1px solid #d0d5dd;border-radius:8px}}
.otp{{display:flex;gap:8px;justify-content:space-between}}
.otp input{{width:44px;height:50px;text-align:center;font-size:20px;border:1px solid #d0d5dd;border-radius:8px}}
button{{margin-top:18px;width:100%;padding:12px;font-size:16px;border:0;border-radius:8px;background:#4f46e5;color:#fff;cursor:pointer}}
button:disabled{{opacity:.6;cursor:default}}
.err,.m7{{color:#d92d20;font-size:14px;margin:12px 0 0;min-height:18px}}
</style>
</head>
<body>
<div id="root"><noscript>Please enable JavaScript to log in.</noscript></div>
<script type="application/json" id="login-config">{config}</script>
<script>
{SCRIPT}
</script>
</body>
</html>
"#
    )
}

/// An error page as Dhan's login host shows one: plain text, no markup a driver could key on.
pub fn html_error(status: StatusCode, text: &str) -> Response {
    let body = format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Login | Dhan</title></head>\
         <body><div class=\"card\"><p>{text}</p></div></body></html>"
    );
    (status, Html(body)).into_response()
}

type Params = HashMap<String, String>;

/// This mock under its other loopback name: a different origin on the same listener.
fn other_host(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    let (name, port) = host.rsplit_once(':').unwrap_or((host, ""));
    let other = if name == "localhost" {
        "127.0.0.1"
    } else {
        "localhost"
    };
    if port.is_empty() {
        other.to_owned()
    } else {
        format!("{other}:{port}")
    }
}

pub async fn page(
    State(mock): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<Params>,
) -> Response {
    const EP: &str = "consentApp-login";
    if let Some(resp) = faults::intercept(&mock, EP, "GET", None).await {
        return resp;
    }
    let id = q.get("consentAppId").map(String::as_str).unwrap_or("");
    let on_foreign_origin = q.get("via").map(String::as_str) == Some("foreign");
    let found = {
        let inner = mock.lock();
        inner.consents.get(id).map(|s| {
            let acct = inner.accounts.get(&s.client_id);
            (
                s.client_id.clone(),
                s.completion_code.is_some() || s.finished,
                acct.map(|a| a.cfg.clone()),
            )
        })
    };
    let (status, outcome, client, resp) = match found {
        None | Some((_, _, None)) => (
            400,
            "invalid_consent",
            None,
            html_error(StatusCode::BAD_REQUEST, "Invalid or expired consent"),
        ),
        Some((client, true, _)) => (
            400,
            "consent_used",
            Some(client),
            html_error(
                StatusCode::BAD_REQUEST,
                "This consent has already been used",
            ),
        ),
        Some((client, false, Some(cfg)))
            if cfg.login_page.redirect == PageRedirect::ForeignOrigin && !on_foreign_origin =>
        {
            let location = format!(
                "http://{}/login/consentApp-login?consentAppId={id}&via=foreign",
                other_host(&headers)
            );
            (
                302,
                "foreign_redirect",
                Some(client),
                (StatusCode::FOUND, [(header::LOCATION, location)]).into_response(),
            )
        }
        Some((client, false, Some(cfg))) => (
            200,
            if on_foreign_origin {
                "served_on_foreign_origin"
            } else {
                "success"
            },
            Some(client),
            Html(render(id, &cfg)).into_response(),
        ),
    };
    mock.record(EP, "GET", client.as_deref(), status, outcome);
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::test_support::account_json;

    fn config(extra: serde_json::Value) -> AccountConfig {
        let mut json = account_json("A");
        json.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn page_variants_render() {
        let html = render(
            "c-1",
            &config(json!({"loginOrder": "pin-first", "loginInputs": "single"})),
        );
        assert!(html.contains(r#""steps":["mobile","pin","totp"]"#));
        assert!(html.contains(r#""inputs":"single""#));
        for default in [
            r#""errors":"alert""#,
            r#""labels":"aria""#,
            r#""submit":"button""#,
        ] {
            assert!(html.contains(default), "{default}");
        }
        assert!(html.contains("isTrusted"));
        assert!(!html.contains("<script src"), "no external resources");
        let text_only = render(
            "c-1",
            &config(json!({
                "password": "hunter22",
                "loginPage": {"labels": "text", "errors": "plain", "submit": "auto-with-button"},
            })),
        );
        assert!(text_only.contains(r#""steps":["mobile","password","totp","pin"]"#));
        assert!(text_only.contains(r#""submit":"auto-with-button""#));
        assert!(
            !text_only.contains("hunter22"),
            "the page never carries the password"
        );
    }

    #[test]
    fn unknown_page_variants_are_refused() {
        let mut json = account_json("A");
        json["loginPage"] = json!({"submit": "telepathy"});
        assert!(serde_json::from_value::<AccountConfig>(json).is_err());
    }

    #[test]
    fn the_other_origin_swaps_the_loopback_name_and_keeps_the_port() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, "127.0.0.1:8585".parse().unwrap());
        assert_eq!(other_host(&headers), "localhost:8585");
        headers.insert(header::HOST, "localhost:8585".parse().unwrap());
        assert_eq!(other_host(&headers), "127.0.0.1:8585");
    }
}
