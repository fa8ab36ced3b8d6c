//! Fault injection (`POST /__control/faults`): the next N calls to an endpoint fail in a chosen
//! way. Faults replace the endpoint's logic entirely, so a faulted call has no side effects
//! (no mint, no revocation, no TOTP step consumed).

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::kinds::{FaultKind, FaultSpec};
use crate::reply::{self, Reply};
use crate::state::Shared;

/// Endpoints served by api.dhan.co answer in shape 1 of §6; the auth host in shape 3.
fn on_api_host(endpoint: &str) -> bool {
    matches!(endpoint, "RenewToken" | "profile" | "fundlimit" | "getIP")
}

fn take(mock: &Shared, endpoint: &str) -> Option<FaultSpec> {
    let mut inner = mock.lock();
    let idx = inner
        .faults
        .iter()
        .position(|f| f.remaining > 0 && (f.spec.endpoint == endpoint || f.spec.endpoint == "*"))?;
    let fault = &mut inner.faults[idx];
    fault.remaining -= 1;
    let spec = fault.spec.clone();
    if fault.remaining == 0 {
        inner.faults.remove(idx);
    }
    Some(spec)
}

/// Called first by every mock endpoint. `Some` means the call was faulted (and already logged).
pub async fn intercept(
    mock: &Shared,
    endpoint: &str,
    method: &str,
    client_id: Option<&str>,
) -> Option<Response> {
    let spec = take(mock, endpoint)?;
    let default_latency = if spec.kind == FaultKind::Latency {
        1000
    } else {
        0
    };
    let latency = spec.latency_ms.unwrap_or(default_latency);
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    let api = on_api_host(endpoint);
    let (status, response) = match spec.kind {
        FaultKind::Latency => return None,
        FaultKind::Http500 if api => reply_parts(Reply::dh(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal_Server_Error",
            "DH-908",
            "Internal Server Error",
            "fault",
        )),
        FaultKind::Http500 => reply_parts(Reply::auth_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal Server Error",
            "fault",
        )),
        // A load balancer's 502 is an HTML page, not a Dhan body: clients must classify by
        // status (5xx = "unknown, retry", §4) and survive a non-JSON body.
        FaultKind::Http502 => (
            502,
            (
                StatusCode::BAD_GATEWAY,
                [(header::CONTENT_TYPE, "text/html")],
                "<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center></body></html>\n",
            )
                .into_response(),
        ),
        FaultKind::Http429 => reply_parts(Reply::dh(
            StatusCode::TOO_MANY_REQUESTS,
            "Rate_Limit",
            "DH-904",
            "Too many requests on server from single user breaching rate limits. Try throttling API calls.",
            "fault",
        )),
        FaultKind::Throttle => reply_parts(Reply::auth_error(
            StatusCode::OK,
            reply::THROTTLE_MESSAGE,
            "fault",
        )),
        FaultKind::Error200 => reply_parts(Reply::auth_error(
            StatusCode::OK,
            spec.message.as_deref().unwrap_or("Something went wrong"),
            "fault",
        )),
        // Status 0 in the call log: no response was sent.
        FaultKind::Drop => (0, dropped_connection()),
    };
    mock.record(endpoint, method, client_id, status, "fault");
    Some(response)
}

fn reply_parts(r: Reply) -> (u16, Response) {
    (r.status.as_u16(), r.into_response())
}

/// A body that fails before its first byte: hyper then closes the connection without writing
/// a response, which is what a client sees when a proxy drops it.
fn dropped_connection() -> Response {
    let stream = futures::stream::once(async {
        Err::<Bytes, std::io::Error>(std::io::Error::other("fault injection: drop"))
    });
    Response::new(Body::from_stream(stream))
}
