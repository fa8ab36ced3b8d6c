//! The DevTools session with the Chromium sidecar: connecting while the sidecar starts, opening the
//! login tab under network watch, and `Browser.close` so the sidecar exits.

use std::time::Duration;

use chromiumoxide::Browser;
use futures::StreamExt;
use tokio::task::JoinHandle;
use tokio::time::{sleep, timeout};
use tracing::{debug, info, warn};

use crate::clock::Clock;

use super::config::LoginConfig;
use super::error::{LoginFailure, Step};
use super::network::Network;
use super::progress::Progress;
use super::report::TokenId;
use super::walk::walk;

/// Time for Chromium to answer `Browser.close`.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

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

    /// Walks the login page until the redirect hands over a `tokenId`.
    pub async fn log_in(
        &self,
        config: &LoginConfig,
        clock: &dyn Clock,
        progress: &Progress,
    ) -> Result<TokenId, LoginFailure> {
        progress.set(Step::LoginPage);
        let page =
            self.browser.new_page("about:blank").await.map_err(|e| {
                LoginFailure::browser(Step::LoginPage, format!("opening a tab: {e}"))
            })?;
        let mut network = Network::watch(
            &page,
            config.allowed_hosts.clone(),
            config.redirect_prefix.clone(),
        )
        .await?;
        walk(&page, config, clock, &mut network, progress).await
    }
}
