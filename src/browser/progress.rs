//! Where a login stands, shared by the driver and the page walk.

use super::error::Step;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// Where the login stands, readable after the login's future was dropped on timeout.
#[derive(Debug)]
pub struct Progress {
    step: Mutex<Step>,
    credential_sent: AtomicBool,
}

impl Progress {
    pub fn new(step: Step) -> Progress {
        Progress {
            step: Mutex::new(step),
            credential_sent: AtomicBool::new(false),
        }
    }

    /// The step in progress.
    pub fn get(&self) -> Step {
        *self.step.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set(&self, step: Step) {
        *self.step.lock().unwrap_or_else(|e| e.into_inner()) = step;
    }

    /// Records that a PIN, TOTP code or password was typed and (by the page or by us) submitted.
    pub fn credential_sent(&self) {
        self.credential_sent.store(true, Ordering::SeqCst);
    }

    /// Whether this login spent one of the account's attempts at Dhan.
    pub fn reached_credential_step(&self) -> bool {
        self.credential_sent.load(Ordering::SeqCst)
    }
}
