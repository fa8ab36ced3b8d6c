//! A short keyed hash of a token: it tells a real token change from a rewrite of the same
//! token (status, rollout annotations), and reveals nothing about the token.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// HMAC-SHA256 keyed by the account's UID, first 16 hex digits. Keying by UID keeps hashes of
/// the same token in different accounts unrelated.
pub fn token_hash(account_uid: &str, token: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(format!("dhan-operator/{account_uid}").as_bytes())
        .expect("HMAC takes any key length");
    mac.update(token.as_bytes());
    mac.finalize().into_bytes()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_short_and_keyed() {
        let a = token_hash("uid-1", "eyJ.token.sig");
        assert_eq!(a, token_hash("uid-1", "eyJ.token.sig"));
        assert_eq!(a.len(), 16);
        assert_ne!(a, token_hash("uid-2", "eyJ.token.sig"));
        assert_ne!(a, token_hash("uid-1", "eyJ.other.sig"));
        assert!(!a.contains("token"));
    }
}
