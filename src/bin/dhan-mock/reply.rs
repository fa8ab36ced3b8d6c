//! Responses in exactly the four error shapes of docs/dhan-api.md §6, plus the outcome label that goes
//! into the call log. Handlers' core logic returns a `Reply` so unit tests can inspect status and
//! body without running an HTTP stack.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

pub use crate::kinds::DeadTokenStyle;

#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub body: Value,
    pub outcome: &'static str,
}

impl Reply {
    pub fn ok(body: Value, outcome: &'static str) -> Self {
        Reply {
            status: StatusCode::OK,
            body,
            outcome,
        }
    }

    /// Shape 3, the auth host's `{"status":"error","message":...}` — usually with HTTP 200 (§1).
    pub fn auth_error(status: StatusCode, message: &str, outcome: &'static str) -> Self {
        Reply {
            status,
            body: json!({"status": "error", "message": message}),
            outcome,
        }
    }

    /// Shape 1, api.dhan.co's `{"errorType","errorCode","errorMessage"}`.
    pub fn dh(
        status: StatusCode,
        error_type: &str,
        code: &str,
        message: &str,
        outcome: &'static str,
    ) -> Self {
        Reply {
            status,
            body: json!({"errorType": error_type, "errorCode": code, "errorMessage": message}),
            outcome,
        }
    }

    /// §2: what a POST to RenewToken (and any request missing required inputs) gets.
    pub fn dh905_bad_input(outcome: &'static str) -> Self {
        Reply::dh(
            StatusCode::BAD_REQUEST,
            "Input_Exception",
            "DH-905",
            "Missing required fields, bad values for parameters etc.",
            outcome,
        )
    }

    pub fn dh901(outcome: &'static str) -> Self {
        Reply::dh(
            StatusCode::UNAUTHORIZED,
            "Invalid_Authentication",
            "DH-901",
            "Client ID or user generated access token is invalid or expired.",
            outcome,
        )
    }

    /// §6.4: the gateway in front of Dhan answers malformed tokens itself.
    pub fn gateway_unauthorized(outcome: &'static str) -> Self {
        Reply {
            status: StatusCode::UNAUTHORIZED,
            body: json!({
                "errorCode": "UNAUTHORIZED",
                "httpStatus": "UNAUTHORIZED",
                "internalErrorCode": "RS-9005",
                "internalErrorMessage": "Token is invalid",
            }),
            outcome,
        }
    }

    /// How a dead (revoked/expired/unknown) token is answered on the data endpoints; several
    /// variants are seen in the wild (§4), so it is a per-account switch.
    pub fn dead_token(style: DeadTokenStyle) -> Self {
        let data = |code: &str, text: &str| Reply {
            // HTTP 200 on purpose: §4 lists the 8xx codes as a dead-token signal in their own
            // right, so a client must read the body, not just the status.
            status: StatusCode::OK,
            body: json!({"data": {code: text}, "status": "failed"}),
            outcome: "dead_token",
        };
        match style {
            DeadTokenStyle::Dh906 => Reply::dh(
                StatusCode::BAD_REQUEST,
                "Invalid_Authentication",
                "DH-906",
                "Invalid Token",
                "dead_token",
            ),
            DeadTokenStyle::Dh901 => Reply::dh901("dead_token"),
            DeadTokenStyle::Data807 => data("807", "Access token is expired"),
            DeadTokenStyle::Data808 => data("808", "Authentication Failed"),
            DeadTokenStyle::Data809 => data("809", "Access token is invalid"),
            DeadTokenStyle::Gateway => Reply::gateway_unauthorized("dead_token"),
        }
    }
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body)).into_response()
    }
}

/// §1: the per-client mint throttle, answered with HTTP 200.
pub const THROTTLE_MESSAGE: &str = "Token can be generated once every 2 minutes.";

/// §9: a refused PIN in Dhan's documented words.
pub const LOGIN_FAILED_MESSAGE: &str = "Login failed. Please retry with valid credentials.";

/// §9: a refused PIN in the words users report.
pub const VALIDATION_FAILED_MESSAGE: &str =
    "Validation failed. Please check your credentials and try again.";

/// Logs the call and turns the reply into a response.
pub fn finish(
    mock: &crate::state::Mock,
    endpoint: &str,
    method: &str,
    client_id: Option<&str>,
    reply: Reply,
) -> Response {
    mock.record(
        endpoint,
        method,
        client_id,
        reply.status.as_u16(),
        reply.outcome,
    );
    reply.into_response()
}

/// A non-empty header value. Header names are case-insensitive on the wire, so `dhanClientId`
/// matches `dhanclientid` — but `client-id` does not, which is the §2 quirk.
pub fn header<'a>(headers: &'a axum::http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}
