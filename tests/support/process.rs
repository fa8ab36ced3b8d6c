//! Child processes whose whole output is kept, killed with SIGKILL when dropped.

use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;

pub struct ChildProcess {
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl ChildProcess {
    /// Starts `program ARGS...` with `env` added to this process's environment, in its own
    /// process group (so a kill also reaches its children), stdout and stderr going to one file.
    pub fn spawn(program: impl AsRef<OsStr>, args: &[&str], env: &[(&str, &str)]) -> ChildProcess {
        let program = program.as_ref();
        let dir = tempfile::Builder::new()
            .prefix("dhan-child-")
            .tempdir()
            .expect("temp dir");
        let log = dir.path().join("output.log");
        let out = File::create(&log).expect("create output file");
        let child = Command::new(program)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup output file"))
            .stderr(out)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {}: {e}", program.to_string_lossy()));
        ChildProcess {
            child,
            log,
            _dir: dir,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the process wrote to stdout and stderr so far.
    pub fn output(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log).expect("read output file")).into_owned()
    }

    /// The exit status, if the process has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }

    /// SIGTERMs the process (an operator then stops cleanly: its install's next process acts
    /// at once) and waits up to 30 s for it to exit.
    pub fn terminate(&mut self) -> Option<ExitStatus> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        None
    }

    /// SIGKILLs the process and its process group, and reaps it.
    pub fn kill_9(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let group = format!("-{}", self.child.id());
            let _ = Command::new("kill")
                .args(["-KILL", "--", &group])
                .stderr(Stdio::null())
                .status();
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        self.kill_9();
        if std::thread::panicking() {
            eprintln!(
                "----- output of pid {} -----\n{}-----",
                self.child.id(),
                self.output()
            );
        }
    }
}

/// A trading calendar in which today and tomorrow (IST) are holidays, for operators whose test
/// names no calendar of its own: a requested or scheduled refresh during market hours waits for
/// the 15:30 IST close (docs/design.md), so with the real calendar every test that refreshes an
/// account would fail while NSE trades. The hold itself is tested in virtual time
/// (`src/controller/tests/`, `src/decision/`), and `tests/calendar.rs` runs with real calendars.
pub fn holiday_calendar() -> &'static str {
    static CALENDAR: OnceLock<tempfile::TempPath> = OnceLock::new();
    let path = CALENDAR.get_or_init(|| {
        let today = (chrono::Utc::now() + chrono::Duration::minutes(330)).date_naive();
        let tomorrow = today + chrono::Duration::days(1);
        let text = format!(
            "validThrough: {}\nregularSession: {{open: \"09:00\", close: \"15:30\"}}\n\
             holidays:\n  - {{date: {today}, name: test}}\n  - {{date: {tomorrow}, name: test}}\n",
            tomorrow + chrono::Duration::days(1)
        );
        let mut file = tempfile::NamedTempFile::new().expect("calendar file");
        std::io::Write::write_all(&mut file, text.as_bytes()).expect("write calendar");
        file.into_temp_path()
    });
    path.to_str().expect("UTF-8 temp path")
}

/// Starts `dhan-operator run EXTRA_ARGS...` against the test control plane as the Helm chart's
/// ServiceAccount, with the rights the chart grants for these flags (see [`super::chart_identity`]),
/// `POD_NAMESPACE` the release namespace and `RUST_LOG=info,dhan_operator=debug`; `env` entries
/// override these. With `KUBECONFIG` in `env` the operator runs as that identity and no chart is
/// installed. Without `--trading-calendar` it gets [`holiday_calendar`]. The binary is
/// [`super::operator_bin`], and [`super::operator_extra_args`] come last.
pub fn start_operator(extra_args: &[&str], env: &[(&str, &str)]) -> ChildProcess {
    let mut install_id: Option<String> = None;
    let mut args = vec!["run"];
    args.extend_from_slice(extra_args);
    if !extra_args
        .iter()
        .any(|a| a.starts_with("--trading-calendar"))
    {
        args.extend(["--trading-calendar", holiday_calendar()]);
    }
    // The mock Dhan shares this machine's clock: no margin at IST midnight, so that no test
    // depends on the time of day it runs at.
    let mut full_env: Vec<(String, String)> = vec![
        ("RUST_LOG".into(), "info,dhan_operator=debug".into()),
        ("MIDNIGHT_MARGIN".into(), "0s".into()),
    ];
    if !env.iter().any(|(name, _)| *name == "KUBECONFIG") {
        let identity = super::chart_identity::for_operator(extra_args, env);
        full_env.push((
            "KUBECONFIG".into(),
            identity.kubeconfig.to_str().unwrap().into(),
        ));
        full_env.push(("POD_NAMESPACE".into(), identity.release_namespace));
        if !extra_args.iter().any(|a| a.starts_with("--install-id")) {
            install_id = Some(identity.install_id);
        }
    }
    if let Some(id) = &install_id {
        args.extend(["--install-id", id.as_str()]);
    }
    let more = super::operator_extra_args();
    args.extend(more.iter().map(String::as_str));
    full_env.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let full_env: Vec<(&str, &str)> = full_env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    ChildProcess::spawn(super::operator_bin(), &args, &full_env)
}
