//! Removing credentials from text that leaves the operator (errors, statuses, events, login
//! reports): every occurrence of each secret becomes `<redacted>`.

/// Replaces each secret in `text` with `<redacted>`, longest first so a secret containing
/// another is replaced whole. Secrets shorter than 4 characters are ignored: no credential is
/// that short, and replacing them would mangle the text.
pub fn redact(text: &str, secrets: &[&str]) -> String {
    let mut secrets: Vec<&str> = secrets
        .iter()
        .map(|s| s.trim())
        .filter(|s| s.len() >= 4)
        .collect();
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    secrets.into_iter().fold(text.to_string(), |text, secret| {
        text.replace(secret, "<redacted>")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_occurrence_goes_longest_first() {
        assert_eq!(
            redact(
                "pin 482913, again 482913; key 4829131",
                &["482913", "4829131", "", "ab"]
            ),
            "pin <redacted>, again <redacted>; key <redacted>"
        );
        assert_eq!(redact("nothing here", &[]), "nothing here");
    }
}
