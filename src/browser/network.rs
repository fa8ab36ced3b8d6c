//! What the page does on the network, seen through CDP: the redirect that carries the `tokenId`
//! (paused and aborted before it leaves the browser), top-level navigations to hosts that are not
//! allowed login hosts (blocked before the page loads), the status of the login page's own
//! response, and whether the page sent something since a moment (a box that submits itself on
//! its last digit, docs/dhan-api.md §3) or is idle.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chromiumoxide::Page;
use chromiumoxide::cdp::browser_protocol::fetch::{
    ContinueRequestParams, EnableParams, EventRequestPaused, FailRequestParams, RequestPattern,
    RequestStage,
};
use chromiumoxide::cdp::browser_protocol::network::{
    ErrorReason, EventLoadingFailed, EventLoadingFinished, EventRequestWillBeSent,
    EventResponseReceived, ResourceType,
};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
// tokio's `Instant` for how long the network has been quiet: it follows tokio's clock, which a
// test pauses and advances.
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::error::{LoginFailure, Step};
use super::origin::AllowedHosts;
use super::report::TokenId;
use super::steps::{Redirect, interception_pattern, redirect_target};

/// Something the network side decided on its own.
#[derive(Debug)]
pub enum Verdict {
    /// The redirect to the app's URL, with or without a usable `tokenId`.
    Redirect(Option<TokenId>),
    /// A top-level navigation to this origin was blocked.
    OriginRefused(String),
}

#[derive(Default)]
struct Activity {
    in_flight: HashSet<String>,
    /// Requests that can carry a submitted value: non-GET calls and page loads, to allowed hosts.
    submissions: u64,
    last_change: Option<Instant>,
    /// HTTP status of the newest top-level document response.
    document_status: Option<u16>,
}

/// Watches one page; dropping it stops the watching.
pub struct Network {
    verdicts: mpsc::UnboundedReceiver<Verdict>,
    activity: Arc<Mutex<Activity>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Network {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn cdp(context: &'static str) -> impl Fn(chromiumoxide::error::CdpError) -> LoginFailure {
    move |e| LoginFailure::browser(Step::LoginPage, format!("{context}: {e}"))
}

impl Network {
    /// Starts watching `page` before anything is loaded into it, so neither the final 302's target
    /// (its `tokenId` is single-use, and the redirect host may not even resolve) nor a page on a
    /// foreign host is ever requested.
    pub async fn watch(
        page: &Page,
        allowed: AllowedHosts,
        redirect_prefix: Option<String>,
    ) -> Result<Network, LoginFailure> {
        let main_frame = page
            .mainframe()
            .await
            .map_err(cdp("reading the main frame"))?;
        let paused = page
            .event_listener::<EventRequestPaused>()
            .await
            .map_err(cdp("listening for paused requests"))?;
        let patterns = vec![
            RequestPattern::builder()
                .url_pattern(interception_pattern(redirect_prefix.as_deref()))
                .request_stage(RequestStage::Request)
                .build(),
            RequestPattern::builder()
                .url_pattern("*")
                .resource_type(ResourceType::Document)
                .request_stage(RequestStage::Request)
                .build(),
        ];
        page.execute(EnableParams::builder().patterns(patterns).build())
            .await
            .map_err(cdp("enabling request interception"))?;
        let (tx, verdicts) = mpsc::unbounded_channel();
        let activity = Arc::new(Mutex::new(Activity::default()));
        let main_frame = main_frame.map(|f| f.inner().clone());
        let guard = tokio::spawn(guard(
            page.clone(),
            paused,
            main_frame.clone(),
            allowed.clone(),
            redirect_prefix,
            tx,
        ));
        let tracker = track(page, allowed, main_frame, activity.clone()).await?;
        Ok(Network {
            verdicts,
            activity,
            tasks: vec![guard, tracker],
        })
    }

    /// A verdict reached since the last call, if any.
    pub fn verdict(&mut self) -> Option<Verdict> {
        self.verdicts.try_recv().ok()
    }

    /// A mark to ask [`Network::submitted_since`] about.
    pub fn mark(&self) -> u64 {
        self.lock().submissions
    }

    /// Whether the page sent something that can carry a value since `mark`.
    pub fn submitted_since(&self, mark: u64) -> bool {
        self.lock().submissions > mark
    }

    /// Whether no request has been in flight for `quiet`.
    pub fn idle_for(&self, quiet: Duration) -> bool {
        let activity = self.lock();
        activity.in_flight.is_empty() && activity.last_change.is_none_or(|t| t.elapsed() >= quiet)
    }

    /// HTTP status of the page's newest top-level document.
    pub fn document_status(&self) -> Option<u16> {
        self.lock().document_status
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Activity> {
        self.activity.lock().unwrap_or_else(|e| e.into_inner())
    }
}

async fn guard(
    page: Page,
    mut paused: chromiumoxide::listeners::EventStream<EventRequestPaused>,
    main_frame: Option<String>,
    allowed: AllowedHosts,
    prefix: Option<String>,
    tx: mpsc::UnboundedSender<Verdict>,
) {
    while let Some(event) = paused.next().await {
        let is_document = event.resource_type == ResourceType::Document;
        let url = event.request.url.as_str();
        let id = event.request_id.clone();
        let top_level = main_frame
            .as_deref()
            .is_none_or(|f| f == event.frame_id.inner());
        let block = match redirect_target(url, prefix.as_deref(), is_document) {
            Redirect::Token(token) => {
                info!("intercepted the redirect; aborting it");
                let _ = tx.send(Verdict::Redirect(TokenId::new(&token)));
                true
            }
            Redirect::NoTokenId => {
                let _ = tx.send(Verdict::Redirect(None));
                true
            }
            Redirect::NotOurs if is_document && top_level => match allowed.check(url) {
                Ok(()) => false,
                Err(origin) => {
                    warn!(%origin, "blocked a navigation to a host that is not an allowed login host");
                    let _ = tx.send(Verdict::OriginRefused(origin));
                    true
                }
            },
            Redirect::NotOurs => false,
        };
        let answered = if block {
            page.execute(FailRequestParams::new(id, ErrorReason::BlockedByClient))
                .await
                .err()
        } else {
            page.execute(ContinueRequestParams::new(id)).await.err()
        };
        if let Some(e) = answered {
            debug!(error = %e, "answering a paused request failed");
        }
    }
}

/// Follows requests in flight and counts the ones that may carry a submitted value.
async fn track(
    page: &Page,
    allowed: AllowedHosts,
    main_frame: Option<String>,
    activity: Arc<Mutex<Activity>>,
) -> Result<JoinHandle<()>, LoginFailure> {
    let sent = page
        .event_listener::<EventRequestWillBeSent>()
        .await
        .map_err(cdp("listening for requests"))?;
    let received = page
        .event_listener::<EventResponseReceived>()
        .await
        .map_err(cdp("listening for responses"))?;
    let finished = page
        .event_listener::<EventLoadingFinished>()
        .await
        .map_err(cdp("listening for responses"))?;
    let failed = page
        .event_listener::<EventLoadingFailed>()
        .await
        .map_err(cdp("listening for responses"))?;
    enum Seen {
        Sent(Arc<EventRequestWillBeSent>),
        Received(Arc<EventResponseReceived>),
        Done(String),
    }
    let events = futures::stream::select_all([
        sent.map(Seen::Sent).boxed(),
        received.map(Seen::Received).boxed(),
        finished
            .map(|e| Seen::Done(e.request_id.inner().clone()))
            .boxed(),
        failed
            .map(|e| Seen::Done(e.request_id.inner().clone()))
            .boxed(),
    ]);
    Ok(tokio::spawn(events.for_each(move |seen| {
        let mut a = activity.lock().unwrap_or_else(|e| e.into_inner());
        a.last_change = Some(Instant::now());
        match seen {
            Seen::Sent(e) => {
                a.in_flight.insert(e.request_id.inner().clone());
                let carries_value =
                    e.request.method != "GET" || e.r#type == Some(ResourceType::Document);
                if carries_value && allowed.check(&e.request.url).is_ok() {
                    a.submissions += 1;
                }
            }
            Seen::Received(e) => {
                let top_level = match (&main_frame, &e.frame_id) {
                    (Some(main), Some(frame)) => main == frame.inner(),
                    _ => true,
                };
                if e.r#type == ResourceType::Document && top_level {
                    a.document_status = u16::try_from(e.response.status).ok();
                }
            }
            Seen::Done(id) => {
                a.in_flight.remove(&id);
            }
        }
        futures::future::ready(())
    })))
}
