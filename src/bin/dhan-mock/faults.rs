//! Fault injection (`POST /__control/faults`): the next N calls to an endpoint (of one client,
//! optionally) fail in a chosen way. Most faults replace the endpoint's logic entirely, so a
//! faulted call has no side effects (no mint, no revocation, no TOTP step consumed, no throttle
//! re-armed). The `…AfterMint` faults are the exception: the call is carried out and only its
//! answer (or the new token's first probe) is spoilt — what a client sees when Dhan minted and
//! the answer was lost (§1, §9).

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::kinds::{Fault, FaultKind, FaultSpec};
use crate::reply::{self, Reply};
use crate::state::Shared;

/// Endpoints served by api.dhan.co answer in shape 1 of §6; the auth host in shape 3.
fn on_api_host(endpoint: &str) -> bool {
    matches!(endpoint, "RenewToken" | "profile" | "fundlimit" | "getIP")
}

/// Takes one use of the first pending fault `wanted` accepts.
pub fn take_from(
    faults: &mut Vec<Fault>,
    wanted: impl Fn(&FaultSpec) -> bool,
) -> Option<FaultSpec> {
    let idx = faults
        .iter()
        .position(|f| f.remaining > 0 && wanted(&f.spec))?;
    let fault = &mut faults[idx];
    fault.remaining -= 1;
    let spec = fault.spec.clone();
    if fault.remaining == 0 {
        faults.remove(idx);
    }
    Some(spec)
}

/// Whether `spec` applies to a call of `endpoint` for `client_id`.
pub fn applies(spec: &FaultSpec, endpoint: &str, client_id: Option<&str>) -> bool {
    (spec.endpoint == endpoint || spec.endpoint == "*")
        && spec
            .client_id
            .as_deref()
            .is_none_or(|only| Some(only) == client_id)
}

fn take(
    mock: &Shared,
    endpoint: &str,
    client_id: Option<&str>,
    kinds: impl Fn(FaultKind) -> bool,
) -> Option<FaultSpec> {
    take_from(&mut mock.lock().faults, |spec| {
        kinds(spec.kind) && applies(spec, endpoint, client_id)
    })
}

async fn delay(spec: &FaultSpec, default_ms: u64) {
    let latency = spec.latency_ms.unwrap_or(default_ms);
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
}

/// Called first by every mock endpoint. `Some` means the call was faulted (and already logged).
pub async fn intercept(
    mock: &Shared,
    endpoint: &str,
    method: &str,
    client_id: Option<&str>,
) -> Option<Response> {
    let spec = take(mock, endpoint, client_id, |kind| !kind.after_mint())?;
    let default_latency = if spec.kind == FaultKind::Latency {
        1000
    } else {
        0
    };
    delay(&spec, default_latency).await;
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
        FaultKind::LoginFailed => reply_parts(Reply::auth_error(
            StatusCode::OK,
            reply::LOGIN_FAILED_MESSAGE,
            "fault",
        )),
        FaultKind::ValidationFailed => reply_parts(Reply::auth_error(
            StatusCode::OK,
            reply::VALIDATION_FAILED_MESSAGE,
            "fault",
        )),
        // Status 0 in the call log: no response was sent.
        FaultKind::Drop => (0, dropped_connection()),
        FaultKind::ResetAfterMint
        | FaultKind::MalformedAfterMint
        | FaultKind::UnauthorizedAfterMint => unreachable!("not taken before the call"),
    };
    mock.record(endpoint, method, client_id, status, "fault");
    Some(response)
}

/// Called by the endpoints that mint, with the reply of the work they did: a pending
/// `resetAfterMint` or `malformedAfterMint` fault spoils the answer of a call that minted.
pub async fn answer_after_mint(
    mock: &Shared,
    endpoint: &str,
    method: &str,
    client_id: Option<&str>,
    reply: Reply,
) -> Response {
    let spoilt = |kind| {
        matches!(
            kind,
            FaultKind::ResetAfterMint | FaultKind::MalformedAfterMint
        )
    };
    let spec = match reply.outcome {
        "success" => take(mock, endpoint, client_id, spoilt),
        _ => None,
    };
    let Some(spec) = spec else {
        return reply::finish(mock, endpoint, method, client_id, reply);
    };
    delay(&spec, 0).await;
    if spec.kind == FaultKind::ResetAfterMint {
        mock.record(endpoint, method, client_id, 0, "fault_after_mint");
        return dropped_connection();
    }
    let mut body = reply.body;
    if let Some(fields) = body.as_object_mut() {
        fields.remove("accessToken");
    }
    let malformed = Reply {
        body,
        outcome: "fault_after_mint",
        ..reply
    };
    reply::finish(mock, endpoint, method, client_id, malformed)
}

/// The first call to `endpoint` with a token an `unauthorizedAfterMint` fault marked at its
/// issue answers HTTP 401 DH-901; later calls with it go through.
pub fn unauthorized_once(
    mock: &Shared,
    endpoint: &str,
    method: &str,
    token: Option<&str>,
) -> Option<Response> {
    let token = token?;
    let mut inner = mock.lock();
    let marked = inner
        .unauthorized_once
        .iter()
        .position(|(t, e)| t == token && (e == endpoint || e == "*"))?;
    inner.unauthorized_once.remove(marked);
    drop(inner);
    let r = Reply::dh901("fault_after_mint");
    Some(reply::finish(mock, endpoint, method, None, r))
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
