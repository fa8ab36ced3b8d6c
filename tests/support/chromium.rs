//! A real headless Chromium serving the DevTools protocol on a free loopback port, with a fresh
//! profile: what the login Job's sidecar is in a Pod.

use super::ChildProcess;
use std::net::TcpListener;

const CHROMIUM: &str = "/usr/bin/chromium";

pub struct Chromium {
    pub process: ChildProcess,
    /// `http://127.0.0.1:<port>`, for `CDP_URL`.
    pub cdp_url: String,
    _profile: tempfile::TempDir,
}

impl Chromium {
    /// Starts Chromium with the flags that work on a closed network and without a sandbox.
    pub fn start() -> Chromium {
        let profile = tempfile::Builder::new()
            .prefix("chromium-profile-")
            .tempdir()
            .expect("profile dir");
        let port = free_port();
        let user_data_dir = format!("--user-data-dir={}", profile.path().display());
        let debugging_port = format!("--remote-debugging-port={port}");
        let process = ChildProcess::spawn(
            CHROMIUM,
            &[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                &user_data_dir,
                "--remote-debugging-address=127.0.0.1",
                &debugging_port,
            ],
            &[],
        );
        Chromium {
            process,
            cdp_url: format!("http://127.0.0.1:{port}"),
            _profile: profile,
        }
    }
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}
