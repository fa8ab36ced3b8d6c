//! What a message on the login page means. Dhan's page shows errors as plain text in whatever
//! element (docs/dhan-api.md §3), so this reads words, not markup: pure functions, table-tested.

use super::error::{FailureClass, Step};

/// Phrases that mean Dhan stopped accepting attempts; checked first, since such a message often
/// names the PIN too ("Too many wrong PIN attempts").
const TOO_MANY: &[&str] = &[
    "too many",
    "attempts exceeded",
    "maximum attempts",
    "maximum number of attempts",
    "max attempts",
    "account is locked",
    "account locked",
    "has been locked",
    "is blocked",
    "been blocked",
    "temporarily disabled",
    "temporarily blocked",
    "try again after",
];

/// Phrases that mean the consent or the session is gone and a new one is needed.
const SESSION: &[&str] = &[
    "session expired",
    "session has expired",
    "session timed out",
    "session timeout",
    "expired consent",
    "consent expired",
    "invalid consent",
    "invalid or expired",
    "already been used",
    "link has expired",
    "login again",
    "log in again",
];

/// Words of a refusal.
const REFUSAL: &[&str] = &[
    "invalid",
    "incorrect",
    "wrong",
    "failed",
    "not valid",
    "does not match",
    "doesn't match",
    "didn't match",
    "mismatch",
    "not registered",
    "not found",
    "unable",
    "error",
    "try again",
    "declined",
    "denied",
    "not allowed",
    "expired",
];

/// Words of a page that is busy, not refusing.
const PROGRESS: &[&str] = &[
    "loading",
    "please wait",
    "verifying",
    "processing",
    "sending",
    "signing in",
    "logging in",
    "redirecting",
];

/// Lower-case words of a text, splitting camelCase (`mobileNumber` → `mobile`, `number`) so that
/// ids and names count like labels, while `typing` or `spinner` never count as "pin".
pub fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut previous_lower = false;
    for c in text.chars() {
        if !c.is_alphanumeric() {
            if !current.is_empty() {
                out.push(std::mem::take(&mut current));
            }
            previous_lower = false;
            continue;
        }
        if c.is_uppercase() && previous_lower && !current.is_empty() {
            out.push(std::mem::take(&mut current));
        }
        previous_lower = c.is_lowercase() || c.is_ascii_digit();
        current.extend(c.to_lowercase());
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// Which fields a text names.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Mentions {
    pub mobile: bool,
    pub password: bool,
    pub totp: bool,
    pub pin: bool,
}

impl Mentions {
    fn names(&self, step: Step) -> bool {
        match step {
            Step::Mobile => self.mobile,
            Step::Password => self.password,
            Step::Totp => self.totp && !self.pin,
            Step::Pin => self.pin && !self.totp,
            _ => false,
        }
    }
}

/// The fields `text` talks about, by whole words (`spinner` is not a PIN).
pub fn mentions(text: &str) -> Mentions {
    let mut m = Mentions::default();
    for word in words(text) {
        match word.as_str() {
            "mobile" | "phone" | "mobileno" | "mobilenumber" => m.mobile = true,
            "password" | "passcode" | "passwd" => m.password = true,
            "totp" | "otp" | "2fa" => m.totp = true,
            w if w.starts_with("authenticator") => m.totp = true,
            "pin" | "mpin" | "tpin" => m.pin = true,
            _ => {}
        }
    }
    m
}

fn contains_any(text: &str, phrases: &[&str]) -> bool {
    let lower = text.to_lowercase();
    phrases.iter().any(|p| lower.contains(p))
}

/// Whether a text that appeared after a submit reads as a failure: a refusal, an expired
/// session, or a lock-out. Texts that do not (progress, hints) count only once the page is idle.
pub fn reads_as_failure(text: &str) -> bool {
    contains_any(text, TOO_MANY) || contains_any(text, SESSION) || contains_any(text, REFUSAL)
}

/// Whether a text only says the page is busy ("Verifying…", "Please wait").
pub fn reads_as_progress(text: &str) -> bool {
    !reads_as_failure(text) && contains_any(text, PROGRESS)
}

/// Which step a page `message` is about, and what kind of failure it is. `submitted` are the
/// steps whose values were just submitted (page order); the blamed step is one the message names,
/// else the last submitted.
pub fn classify(message: &str, submitted: &[Step]) -> (Step, FailureClass) {
    let named = mentions(message);
    let last = submitted.last().copied().unwrap_or(Step::LoginPage);
    let step = submitted
        .iter()
        .copied()
        .find(|s| named.names(*s))
        .unwrap_or(last);
    let class = if contains_any(message, TOO_MANY) {
        FailureClass::TooManyAttempts
    } else if contains_any(message, SESSION) {
        FailureClass::SessionExpired
    } else if let Some(class) = field_class(named, submitted) {
        class
    } else if contains_any(message, REFUSAL) {
        step_class(step).unwrap_or(FailureClass::Unknown)
    } else {
        FailureClass::Unknown
    };
    (step, class)
}

/// The class of a message that names exactly one field among those submitted (or, with nothing
/// submitted yet, any one field).
fn field_class(named: Mentions, submitted: &[Step]) -> Option<FailureClass> {
    let candidates = [Step::Mobile, Step::Password, Step::Totp, Step::Pin];
    let hits: Vec<Step> = candidates
        .into_iter()
        .filter(|s| named.names(*s))
        .filter(|s| {
            submitted.is_empty() || submitted.contains(s) || submitted.contains(&Step::TotpOrPin)
        })
        .collect();
    match hits.as_slice() {
        [one] => step_class(*one),
        _ => None,
    }
}

fn step_class(step: Step) -> Option<FailureClass> {
    match step {
        Step::Mobile => Some(FailureClass::Mobile),
        Step::Password => Some(FailureClass::Password),
        Step::Totp => Some(FailureClass::Totp),
        Step::Pin => Some(FailureClass::Pin),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use FailureClass as C;

    #[test]
    fn page_messages_are_classified_by_what_they_say() {
        let pin = [Step::Pin];
        let totp = [Step::Totp];
        let mobile = [Step::Mobile];
        let cases: &[(&str, &[Step], Step, FailureClass)] = &[
            ("Invalid PIN", &pin, Step::Pin, C::Pin),
            ("Incorrect MPIN. 2 attempts left", &pin, Step::Pin, C::Pin),
            ("The PIN you entered is wrong", &pin, Step::Pin, C::Pin),
            ("Invalid TOTP", &totp, Step::Totp, C::Totp),
            ("OTP does not match", &totp, Step::Totp, C::Totp),
            ("Wrong authenticator code", &totp, Step::Totp, C::Totp),
            ("Invalid mobile number", &mobile, Step::Mobile, C::Mobile),
            (
                "Mobile number not registered with Dhan",
                &mobile,
                Step::Mobile,
                C::Mobile,
            ),
            (
                "Incorrect password",
                &[Step::Password],
                Step::Password,
                C::Password,
            ),
            // Unnamed refusals are about what was just submitted.
            ("Invalid credentials", &pin, Step::Pin, C::Pin),
            ("Verification failed. Try again", &totp, Step::Totp, C::Totp),
            // Lock-outs and expiry win over the field they mention.
            (
                "Too many incorrect PIN attempts. Try again after 24 hours",
                &pin,
                Step::Pin,
                C::TooManyAttempts,
            ),
            (
                "Your account is locked",
                &totp,
                Step::Totp,
                C::TooManyAttempts,
            ),
            (
                "Your session has expired, please login again",
                &totp,
                Step::Totp,
                C::SessionExpired,
            ),
            (
                "Invalid or expired consent",
                &[],
                Step::LoginPage,
                C::SessionExpired,
            ),
            (
                "This consent has already been used",
                &[],
                Step::LoginPage,
                C::SessionExpired,
            ),
            // Nothing recognisable.
            ("Something happened", &pin, Step::Pin, C::Unknown),
        ];
        for (message, submitted, step, class) in cases {
            assert_eq!(
                classify(message, submitted),
                (*step, *class),
                "{message:?} after {submitted:?}"
            );
        }
    }

    #[test]
    fn a_message_naming_one_of_two_submitted_fields_blames_that_field() {
        let both = [Step::Pin, Step::Totp];
        assert_eq!(classify("Invalid PIN", &both), (Step::Pin, C::Pin));
        assert_eq!(classify("Invalid TOTP", &both), (Step::Totp, C::Totp));
        assert_eq!(
            classify("Invalid credentials", &both),
            (Step::Totp, C::Totp)
        );
        let unnamed = [Step::TotpOrPin];
        assert_eq!(classify("Invalid PIN", &unnamed), (Step::TotpOrPin, C::Pin));
    }

    #[test]
    fn busy_texts_are_not_failures() {
        for busy in ["Verifying…", "Please wait", "Loading", "Signing in to Dhan"] {
            assert!(reads_as_progress(busy), "{busy}");
            assert!(!reads_as_failure(busy), "{busy}");
        }
        for failure in ["Invalid PIN", "Session expired", "Too many attempts"] {
            assert!(reads_as_failure(failure), "{failure}");
            assert!(!reads_as_progress(failure), "{failure}");
        }
        assert!(!reads_as_failure(
            "Enter the 6-digit code from your authenticator app"
        ));
    }

    #[test]
    fn field_names_are_whole_words() {
        assert_eq!(mentions("typing spinner"), Mentions::default());
        assert!(mentions("Enter MPIN").pin);
        assert!(mentions("mobileNumber").mobile);
        assert!(mentions("Verify with TOTP").totp);
    }
}
