//! An in-memory Kubernetes API server for reconciler tests: enough of GET, LIST (with label
//! selectors), POST, PUT (with its resource version checked), PATCH (server-side apply and
//! merge) and DELETE (with preconditions) to serve the objects a reconcile touches, a log of
//! every request, and refusals on demand (a quota, a policy).

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A request as the log shows it: `"PATCH /api/v1/namespaces/t/secrets/alice-token"`.
pub type Seen = String;

#[derive(Default)]
struct State {
    objects: BTreeMap<String, Value>,
    version: u64,
    log: Vec<Seen>,
    /// No log kept (a long simulation).
    unlogged: bool,
    /// (method, path substring, HTTP status, message): matching requests are refused.
    refusals: Vec<(Method, String, u16, String)>,
    /// (path substring, delay, carried out past the timeout): matching requests are slow.
    slow: Vec<(String, Duration, bool)>,
}

/// The API server's own limit on a request (`--request-timeout`): past it, a 504.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Clone, Default)]
pub struct FakeApi(Arc<Mutex<State>>);

impl FakeApi {
    pub fn client(&self) -> kube::Client {
        let api = self.clone();
        let service = tower::service_fn(move |request: Request<kube::client::Body>| {
            let api = api.clone();
            async move {
                let (parts, body) = request.into_parts();
                let body = body.collect().await.map_err(Box::new)?.to_bytes();
                let slow = api.slowness(parts.uri.path());
                let response = match slow {
                    None => api.handle(&parts, &body),
                    Some((delay, _)) if delay < REQUEST_TIMEOUT => {
                        tokio::time::sleep(delay).await;
                        api.handle(&parts, &body)
                    }
                    Some((_, carried_out)) => {
                        tokio::time::sleep(REQUEST_TIMEOUT).await;
                        if carried_out {
                            api.handle(&parts, &body);
                        }
                        status(
                            504,
                            "Timeout: request did not complete within requested timeout",
                        )
                    }
                };
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(response)
            }
        });
        kube::Client::new(service, "default")
    }

    /// Keeps no log of requests (a month of simulation makes millions).
    pub fn unlogged(self) -> FakeApi {
        self.0.lock().unwrap().unlogged = true;
        self
    }

    /// Changes with every change of any object (a creation, an update, a deletion).
    pub fn revision(&self) -> u64 {
        self.0.lock().unwrap().version
    }

    /// The resource version of the object at `path`, without copying the object.
    pub fn version_of(&self, path: &str) -> Option<String> {
        let state = self.0.lock().unwrap();
        let object = state.objects.get(path)?;
        Some(
            object["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or("")
                .to_string(),
        )
    }

    /// Stores an object at `path` (e.g. `/api/v1/namespaces/t/secrets/a`).
    pub fn put(&self, path: &str, mut object: Value) {
        let mut state = self.0.lock().unwrap();
        state.version += 1;
        let version = state.version;
        let meta = &mut object["metadata"];
        meta["resourceVersion"] = version.to_string().into();
        if meta["uid"].is_null() {
            meta["uid"] = format!("uid-{version}").into();
        }
        if meta["creationTimestamp"].is_null() {
            meta["creationTimestamp"] = "2026-11-01T00:00:00Z".into();
        }
        state.objects.insert(path.to_string(), object);
    }

    pub fn get(&self, path: &str) -> Option<Value> {
        self.0.lock().unwrap().objects.get(path).cloned()
    }

    /// The objects stored under `prefix` (e.g. a namespace's events).
    pub fn under(&self, prefix: &str) -> Vec<Value> {
        let state = self.0.lock().unwrap();
        state
            .objects
            .iter()
            .filter(|(path, _)| path.starts_with(prefix))
            .map(|(_, object)| object.clone())
            .collect()
    }

    pub fn remove(&self, path: &str) {
        let mut state = self.0.lock().unwrap();
        if state.objects.remove(path).is_some() {
            state.version += 1;
        }
    }

    /// Every request so far.
    pub fn log(&self) -> Vec<Seen> {
        self.0.lock().unwrap().log.clone()
    }

    /// Requests that change something (not GET), events left out.
    pub fn writes(&self) -> Vec<Seen> {
        self.log()
            .into_iter()
            .filter(|r| !r.starts_with("GET ") && !r.contains("/events"))
            .collect()
    }

    pub fn clear_log(&self) {
        self.0.lock().unwrap().log.clear();
    }

    /// Refuses `method` requests whose path contains `path` with `status` until
    /// [`FakeApi::allow`].
    pub fn refuse(&self, method: Method, path: &str, status: u16, message: &str) {
        self.0
            .lock()
            .unwrap()
            .refusals
            .push((method, path.into(), status, message.into()));
    }

    /// Ends the refusals of requests whose path contains `path`.
    pub fn allow_path(&self, path: &str) {
        self.0
            .lock()
            .unwrap()
            .refusals
            .retain(|(_, p, _, _)| p != path);
    }

    /// Answers requests whose path contains `path` after `delay`; from [`REQUEST_TIMEOUT`] on,
    /// with a 504 at the timeout, the request carried out or not (`carried_out`).
    pub fn slow(&self, path: &str, delay: Duration, carried_out: bool) {
        self.0
            .lock()
            .unwrap()
            .slow
            .push((path.into(), delay, carried_out));
    }

    /// Ends the slowness of requests whose path contains `path`.
    pub fn fast(&self, path: &str) {
        self.0.lock().unwrap().slow.retain(|(p, _, _)| p != path);
    }

    fn slowness(&self, path: &str) -> Option<(Duration, bool)> {
        let state = self.0.lock().unwrap();
        state
            .slow
            .iter()
            .find(|(p, _, _)| path.contains(p.as_str()))
            .map(|(_, delay, carried_out)| (*delay, *carried_out))
    }

    pub fn allow(&self) {
        self.0.lock().unwrap().refusals.clear();
    }

    fn handle(&self, parts: &http::request::Parts, body: &Bytes) -> Response<Full<Bytes>> {
        let path = parts.uri.path().to_string();
        let query = parts.uri.query().unwrap_or_default().to_string();
        let mut state = self.0.lock().unwrap();
        if !state.unlogged {
            state.log.push(format!("{} {path}", parts.method));
        }
        let refused = state
            .refusals
            .iter()
            .find(|(m, p, _, _)| *m == parts.method && path.contains(p.as_str()))
            .cloned();
        if let Some((_, _, code, message)) = refused {
            return status(code, &message);
        }
        let body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        match parts.method {
            Method::GET => match state.objects.get(&path) {
                Some(object) => ok(object),
                None if is_collection(&path) => ok(&list(&state, &path, &query)),
                None => status(404, "not found"),
            },
            Method::POST => {
                let mut object = body;
                let name = object["metadata"]["name"]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| {
                        let prefix = object["metadata"]["generateName"].as_str().unwrap_or("x-");
                        format!("{prefix}{}", state.version + 1)
                    });
                object["metadata"]["name"] = name.clone().into();
                let key = format!("{path}/{name}");
                if state.objects.contains_key(&key) && !path.contains("/events") {
                    return status(409, "already exists");
                }
                drop(state);
                self.put(&key, object);
                ok(&self.get(&key).unwrap())
            }
            Method::PATCH => self.patch(state, &path, body, parts),
            Method::PUT => {
                let Some(existing) = state.objects.get(&path) else {
                    return status(404, "not found");
                };
                let version = &body["metadata"]["resourceVersion"];
                if !version.is_null() && *version != existing["metadata"]["resourceVersion"] {
                    return status(409, "the object has been modified");
                }
                drop(state);
                self.put(&path, body);
                ok(&self.get(&path).unwrap())
            }
            Method::DELETE => {
                let Some(existing) = state.objects.get(&path) else {
                    return status(404, "not found");
                };
                let expected = body["preconditions"]["uid"].as_str();
                if expected.is_some_and(|uid| existing["metadata"]["uid"] != uid) {
                    return status(409, "precondition failed: UID");
                }
                let version = body["preconditions"]["resourceVersion"].as_str();
                if version.is_some_and(|v| existing["metadata"]["resourceVersion"] != v) {
                    return status(409, "precondition failed: resourceVersion");
                }
                state.objects.remove(&path);
                state.version += 1;
                ok(&json!({"kind": "Status", "status": "Success"}))
            }
            _ => status(405, "method not allowed"),
        }
    }

    fn patch(
        &self,
        state: std::sync::MutexGuard<'_, State>,
        path: &str,
        patch: Value,
        parts: &http::request::Parts,
    ) -> Response<Full<Bytes>> {
        let apply = parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|c| c.as_bytes().starts_with(b"application/apply-patch"));
        let (object_path, subresource) = match path.strip_suffix("/status") {
            Some(object) => (object.to_string(), true),
            None => (path.to_string(), false),
        };
        let existing = state.objects.get(&object_path).cloned();
        drop(state);
        // A resource version in the patch is a precondition, as the API server makes it.
        let wanted = &patch["metadata"]["resourceVersion"];
        if !wanted.is_null()
            && existing
                .as_ref()
                .is_none_or(|o| o["metadata"]["resourceVersion"] != *wanted)
        {
            return status(409, "the object has been modified");
        }
        let merged = match (existing, subresource, apply) {
            (None, true, _) => return status(404, "not found"),
            (None, false, false) => return status(404, "not found"),
            (None, false, _) => patch,
            (Some(mut object), true, _) => {
                object["status"] = patch["status"].clone();
                object
            }
            (Some(mut object), false, true) => {
                // Server-side apply by the one field manager: what it applies replaces what it
                // applied before.
                for key in ["labels", "annotations", "ownerReferences"] {
                    object["metadata"][key] = patch["metadata"][key].clone();
                }
                for (key, value) in patch.as_object().into_iter().flatten() {
                    if key != "metadata" {
                        object[key] = value.clone();
                    }
                }
                object
            }
            (Some(mut object), false, false) => {
                merge(&mut object, &patch);
                object
            }
        };
        self.put(&object_path, merged);
        ok(&self.get(&object_path).unwrap())
    }
}

/// Whether `path` names a collection: `/api/v1/{plural}`, `/apis/{group}/{version}/{plural}`,
/// or either with `namespaces/{ns}/` before the plural.
fn is_collection(path: &str) -> bool {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let rest = match parts.first() {
        Some(&"api") => &parts[2.min(parts.len())..],
        Some(&"apis") => &parts[3.min(parts.len())..],
        _ => return false,
    };
    matches!(rest, [_] | ["namespaces", _, _])
}

fn list(state: &State, path: &str, query: &str) -> Value {
    let selector: Vec<(String, Option<String>)> = url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "labelSelector")
        .map(|(_, v)| {
            v.split(',')
                .map(|term| match term.split_once('=') {
                    Some((k, v)) => (k.to_string(), Some(v.to_string())),
                    None => (term.to_string(), None),
                })
                .collect()
        })
        .unwrap_or_default();
    let prefix = format!("{path}/");
    let items: Vec<Value> = state
        .objects
        .iter()
        .filter(|(p, _)| p.starts_with(&prefix) && !p[prefix.len()..].contains('/'))
        .map(|(_, o)| o.clone())
        .filter(|o| {
            selector.iter().all(|(k, v)| match v {
                Some(v) => o["metadata"]["labels"][k] == v.as_str(),
                None => !o["metadata"]["labels"][k].is_null(),
            })
        })
        .collect();
    json!({"metadata": {"resourceVersion": state.version.to_string()}, "items": items})
}

fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

fn ok(object: &Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(StatusCode::OK)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(object.to_string())))
        .unwrap()
}

fn status(code: u16, message: &str) -> Response<Full<Bytes>> {
    let reason = match code {
        403 => "Forbidden",
        404 => "NotFound",
        409 => "Conflict",
        422 => "Invalid",
        _ => "InternalError",
    };
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "status": "Failure",
        "message": message, "reason": reason, "code": code,
    });
    Response::builder()
        .status(code)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}
