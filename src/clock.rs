//! The operator's only clock. The controller reads time through it, so the reconciler runs in
//! virtual time in tests.

use chrono::{DateTime, Utc};

/// A source of the current time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> DateTime<Utc>;
}

/// The system's wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// Wall-clock time that follows tokio's clock from a fixed start: with tokio's time paused,
/// sleeps advance it instantly, so code that waits for a TOTP step runs in virtual time.
#[derive(Clone, Debug)]
pub struct TokioClock {
    start: DateTime<Utc>,
    origin: tokio::time::Instant,
}

impl TokioClock {
    pub fn starting_at(start: DateTime<Utc>) -> TokioClock {
        TokioClock {
            start,
            origin: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> DateTime<Utc> {
        let elapsed = tokio::time::Instant::now() - self.origin;
        self.start + chrono::Duration::from_std(elapsed).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    /// Reads of the wall clock that bypass [`super::Clock`].
    const FORBIDDEN: [&str; 4] = [
        "Utc::now",
        "Local::now",
        "SystemTime::now",
        "std::time::Instant",
    ];

    /// Where the wall clock may be read directly: the clock itself, and the binaries that are
    /// not the operator (a CLI, and the mock Dhan that plays the other side).
    const ALLOWED: [&str; 3] = ["clock.rs", "bin/kubectl-dhan", "bin/dhan-mock"];

    fn rust_files(dir: &Path, files: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                rust_files(&path, files);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }

    fn is_test_file(relative: &str) -> bool {
        let name = relative.rsplit('/').next().unwrap_or(relative);
        name == "tests.rs" || name.ends_with("_tests.rs") || relative.contains("/tests/")
    }

    /// `text` without the items marked `#[cfg(test)]`: each is cut from the attribute to the
    /// brace that closes its body (or to the `;` of `mod tests;`).
    fn without_test_items(text: &str) -> String {
        let mut kept = String::new();
        let mut rest = text;
        while let Some(at) = rest.find("#[cfg(test)]") {
            kept.push_str(&rest[..at]);
            let item = &rest[at..];
            let mut depth = 0usize;
            let mut end = item.len();
            for (i, c) in item.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 1 => {
                        end = i + 1;
                        break;
                    }
                    '}' => depth = depth.saturating_sub(1),
                    ';' if depth == 0 => {
                        end = i + 1;
                        break;
                    }
                    _ => {}
                }
            }
            rest = &item[end..];
        }
        kept.push_str(rest);
        kept
    }

    /// Whether `text` imports `std::time::Instant` through a `use std::time::{…}` list.
    fn imports_std_instant(text: &str) -> bool {
        text.match_indices("use std::time::{").any(|(at, _)| {
            let list = &text[at..];
            let list = &list[..list.find('}').unwrap_or(list.len())];
            list.split(|c: char| !c.is_alphanumeric() && c != '_')
                .any(|word| word == "Instant")
        })
    }

    /// A deterministic simulation replaces the operator's clock; a read that bypasses it would
    /// make a replayed run differ from the first. tokio's `Instant` is allowed: it follows
    /// tokio's clock, which a simulation pauses and advances.
    #[test]
    fn the_wall_clock_is_read_only_through_the_injected_clock() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        rust_files(&src, &mut files);
        let mut offenders = Vec::new();
        for path in files {
            let relative = path
                .strip_prefix(&src)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if ALLOWED.iter().any(|a| relative.starts_with(a)) || is_test_file(&relative) {
                continue;
            }
            let code = without_test_items(&std::fs::read_to_string(&path).unwrap());
            for pattern in FORBIDDEN {
                if code.contains(pattern) {
                    offenders.push(format!("{relative}: {pattern}"));
                }
            }
            if imports_std_instant(&code) {
                offenders.push(format!("{relative}: std::time::Instant"));
            }
        }
        assert_eq!(offenders, Vec::<String>::new());
    }

    #[test]
    fn the_scan_skips_test_items_and_sees_imports() {
        let text = "fn a() {}\n#[cfg(test)]\nimpl X { fn t() { Utc::now(); } }\nfn b() { Utc::now(); }\n\
                    #[cfg(test)]\nmod tests;\nuse std::time::{\n    Duration,\n    Instant,\n};\n";
        let code = without_test_items(text);
        assert_eq!(code.matches("Utc::now").count(), 1, "{code}");
        assert!(code.contains("fn b()"));
        assert!(imports_std_instant(&code));
        assert!(!imports_std_instant(
            "use std::time::{Duration};\nuse tokio::time::Instant;"
        ));
    }
}
