//! What a claim says, and how one changes around a mint: plain values, no API calls.

use super::resource::{DhanClientClaimSpec, DhanOperatorInstallSpec, InFlight, Refusals};
use crate::decision::memory::ist_day;
use crate::leader::SKEW_MARGIN;
use chrono::{DateTime, SubsecRound, Utc};
use sha2::{Digest, Sha256};
use std::time::Duration;

/// Who holds a claim, as a would-be holder sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Holding<'a> {
    /// No claim object yet.
    Absent,
    /// This install's account already holds it.
    Ours,
    /// Nobody holds it, or an account of this install that no longer wins it (deleted, or
    /// behind another in this install's own conflict rule, which decided before asking).
    Free,
    /// Another install holds it: it is free only once that install stopped renewing its
    /// heartbeat.
    Install(&'a str),
}

pub fn holding<'a>(
    claim: Option<&'a DhanClientClaimSpec>,
    install: &str,
    account: &str,
) -> Holding<'a> {
    let Some(claim) = claim else {
        return Holding::Absent;
    };
    match &claim.holder {
        None => Holding::Free,
        Some(h) if h.install == install && h.account == account => Holding::Ours,
        Some(h) if h.install == install => Holding::Free,
        Some(h) => Holding::Install(&h.install),
    }
}

/// Whether the claim records a mint by another account than `account` whose answer was never
/// heard (or said nothing), less than a token's life (24 h, dhan-api.md §1) before `now` — and
/// not answered by the token `account` keeps (`token_obtained`): a token minted since killed
/// whatever that mint made (simulation seed 20: a holder replaced with `kubectl replace
/// --force` could not take its own claim back, and another install minted over its token).
pub fn mint_pending_for_another(
    claim: Option<&DhanClientClaimSpec>,
    account: &str,
    now: DateTime<Utc>,
    token_obtained: Option<DateTime<Utc>>,
) -> bool {
    let Some(claim) = claim else {
        return false;
    };
    let other = claim.holder.as_ref().is_some_and(|h| h.account != account);
    let day = chrono::Duration::hours(24);
    let pending = |at: DateTime<Utc>| now < at + day && token_obtained.is_none_or(|t| t < at);
    other
        && (claim
            .in_flight
            .as_ref()
            .is_some_and(|f| may_have_minted(f) && pending(f.at))
            || claim.unconfirmed_mint.is_some_and(pending))
}

/// Whether Dhan may have carried the mint out without its answer being heard.
fn may_have_minted(flight: &InFlight) -> bool {
    !flight.answered || flight.unknown
}

/// Whether an install's claims still hold at `now` by this clock: for its claim duration after
/// its last heartbeat, and the skew margin on top (see `crate::leader` for the clock
/// assumption). A missing heartbeat holds nothing.
pub fn install_alive(heartbeat: Option<&DhanOperatorInstallSpec>, now: DateTime<Utc>) -> bool {
    heartbeat.is_some_and(|h| {
        let duration = Duration::from_secs(u64::from(h.claim_duration_seconds));
        now <= after(h.renew_time, duration + SKEW_MARGIN)
    })
}

/// Why a mint may not go ahead.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Dhan refused this very set of credentials today: the same values are not sent again.
    #[error("Dhan refused these credentials for this client ID earlier today (IST)")]
    RefusedToday,
    /// The day's cap on refused credential submissions for the client is reached.
    #[error(
        "{refused} credential submissions for this client ID were refused today (IST), the most \
         this operator sends in a day"
    )]
    Capped { refused: u32 },
    /// Within [`crate::dhan::ist::MIDNIGHT_MARGIN`] of IST midnight: a submission then could be
    /// counted in the other day by Dhan's clock (found by the simulation, seed 25 with a
    /// cluster clock a few minutes fast: four refusals in one IST day of Dhan's).
    #[error(
        "no credentials are sent this close to midnight IST (Dhan counts refused logins per IST \
         day by its own clock, and this one may be off: --midnight-margin); not before {until}"
    )]
    NearMidnight { until: DateTime<Utc> },
}

/// What a mint submits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Submission {
    /// A keyed hash of the credentials sent (PIN and TOTP key, or a browser login's); `None`
    /// for a call that submits none (RenewToken, consuming a login's tokenId).
    pub credentials: Option<String>,
    /// When the account's newest known token was obtained: an earlier mint in flight that
    /// predates it was answered.
    pub last_token: Option<DateTime<Utc>>,
    /// `--max-failed-logins`.
    pub cap: u32,
    /// `--midnight-margin`: no credentials within this long of IST midnight.
    pub midnight_margin: std::time::Duration,
}

/// The refused submissions of the IST day of `now`: those recorded, plus a credential
/// submission whose answer nobody heard (its process died) and that no later token answers.
pub fn refused_today(
    claim: &DhanClientClaimSpec,
    now: DateTime<Utc>,
    last_token: Option<DateTime<Utc>>,
) -> u32 {
    let day = ist_day(now);
    let recorded = claim
        .refusals
        .as_ref()
        .filter(|r| r.day == day)
        .map_or(0, |r| r.count);
    let unheard = claim
        .in_flight
        .as_ref()
        .is_some_and(|f| unanswered(f, last_token) && ist_day(f.at) == day);
    recorded + u32::from(unheard)
}

fn unanswered(flight: &InFlight, last_token: Option<DateTime<Utc>>) -> bool {
    flight.credentials && !flight.answered && last_token.is_none_or(|t| t < flight.at)
}

/// The claim as it must be written right before a mint at `now`: the previous unanswered
/// submission folded into the day's refusals, and this one in flight. `Err` when the
/// submission must not be sent.
pub fn before_mint(
    claim: &mut DhanClientClaimSpec,
    now: DateTime<Utc>,
    submission: &Submission,
) -> Result<(), Refused> {
    if let Some(flight) = claim.in_flight.take() {
        // A token obtained since the previous mint answers it; without one, that mint may have
        // made a token that lives for a day, whatever this call does (seed 65).
        let answered_by_token = submission.last_token.is_some_and(|t| t >= flight.at);
        if may_have_minted(&flight) && !answered_by_token {
            claim.unconfirmed_mint = claim.unconfirmed_mint.max(Some(flight.at));
        }
        if unanswered(&flight, submission.last_token) {
            count_refusal(claim, flight.at, None);
        }
    }
    let day = chrono::Duration::hours(24);
    if claim
        .unconfirmed_mint
        .is_some_and(|at| now >= at + day || submission.last_token.is_some_and(|t| t >= at))
    {
        claim.unconfirmed_mint = None;
    }
    if submission.credentials.is_some()
        && let Some(until) = crate::dhan::ist::near_midnight(now, submission.midnight_margin)
    {
        return Err(Refused::NearMidnight { until });
    }
    if let Some(credentials) = &submission.credentials {
        let today = todays(claim, now);
        if today.is_some_and(|r| r.credentials.contains(credentials)) {
            return Err(Refused::RefusedToday);
        }
        let refused = today.map_or(0, |r| r.count);
        if refused >= submission.cap {
            return Err(Refused::Capped { refused });
        }
    }
    claim.in_flight = Some(InFlight {
        // Whole seconds, as the status and the Secret record when a token was obtained: a
        // token obtained in the same second answers this mint.
        at: now.trunc_subsecs(0),
        credentials: submission.credentials.is_some(),
        answered: false,
        unknown: false,
    });
    Ok(())
}

/// What Dhan answered to a mint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// It refused these credentials (their hash).
    Refused(String),
    /// An attempt that may have submitted credentials and whose verdict is lost (a login Job
    /// deleted or timed out midway): it counts toward the day's cap, but these credentials
    /// are not known to be wrong and may be sent again.
    MaybeRefused,
    /// A definite answer that is no refusal of the credentials: a token, the throttle, a limit.
    Heard,
    /// Nothing definite (a timeout, a 5xx, a reset connection): Dhan may have minted.
    Unknown,
}

/// The claim once the answer to the mint in flight at `at` is known: a refusal is counted
/// once, on the day it was sent. A mint recorded since has folded this one, unanswered, into
/// the day's refusals already: then only the refused credentials are added.
pub fn answered(claim: &mut DhanClientClaimSpec, at: DateTime<Utc>, answer: &Answer) {
    let first = match claim.in_flight.as_mut().filter(|f| f.at == at) {
        Some(flight) => {
            let first = !flight.answered;
            flight.answered = true;
            flight.unknown = *answer == Answer::Unknown;
            first
        }
        None => false,
    };
    match answer {
        Answer::Refused(credentials) => record_refusal(claim, at, first, Some(credentials)),
        Answer::MaybeRefused if first => record_refusal(claim, at, true, None),
        _ => {}
    }
}

fn todays(claim: &DhanClientClaimSpec, now: DateTime<Utc>) -> Option<&Refusals> {
    let day = ist_day(now);
    claim.refusals.as_ref().filter(|r| r.day == day)
}

fn count_refusal(claim: &mut DhanClientClaimSpec, at: DateTime<Utc>, credentials: Option<&str>) {
    record_refusal(claim, at, true, credentials);
}

/// Adds a refusal of the IST day of `at` to the claim: one more in the count when `count`,
/// and the refused credentials.
fn record_refusal(
    claim: &mut DhanClientClaimSpec,
    at: DateTime<Utc>,
    count: bool,
    credentials: Option<&str>,
) {
    let day = ist_day(at);
    let refusals = claim.refusals.get_or_insert_with(Refusals::default);
    if refusals.day != day {
        // Only the current day counts; a refusal of an older day is forgotten.
        if refusals.day > day {
            return;
        }
        *refusals = Refusals {
            day,
            ..Refusals::default()
        };
    }
    if count {
        refusals.count = refusals.count.saturating_add(1);
    }
    if let Some(credentials) = credentials
        && !refusals.credentials.iter().any(|c| c == credentials)
    {
        refusals.credentials.push(credentials.to_string());
    }
}

/// Whether a claim nobody holds can go: it keeps no refusals of the IST day of `now`.
pub fn disposable(claim: &DhanClientClaimSpec, now: DateTime<Utc>) -> bool {
    claim.holder.is_none() && refused_today(claim, now, None) == 0
}

fn after(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    t + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// A short hash of a client ID: names its claim and, when asked, stands for it in metric
/// labels. Not a secret: client IDs are short digit strings anyone can hash through.
pub fn client_hash(client_id: &str) -> String {
    let digest = Sha256::digest(format!("dhan-client-id:{}", client_id.trim()));
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// The claim's name for `client_id`.
pub fn claim_name(client_id: &str) -> String {
    format!("dhan-client-{}", client_hash(client_id))
}

/// The heartbeat's name for install `install`.
pub fn install_name(install: &str) -> String {
    let digest = Sha256::digest(format!("dhan-operator-install:{install}"));
    let hash: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("install-{hash}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::claims::resource::ClaimHolder;

    /// Sunday 2026-11-22 05:30 IST.
    const NOW: &str = "2026-11-22T00:00:00Z";

    fn now() -> DateTime<Utc> {
        NOW.parse().unwrap()
    }

    fn held_by(install: &str, account: &str) -> DhanClientClaimSpec {
        DhanClientClaimSpec {
            holder: Some(ClaimHolder {
                install: install.into(),
                account: account.into(),
                since: now(),
            }),
            ..Default::default()
        }
    }

    /// Found by the simulation (seed 65, 30 days): the holder's mint whose answer never came (its
    /// leader froze the moment the call reached Dhan, and was deposed) was replaced on the claim
    /// by its next attempt, which Dhan refused; another account of the install then minted over
    /// the token the first may have made. A mint that may have been carried out keeps the client
    /// ID from other accounts for a token's life, whatever attempts of its holder follow, until
    /// a token obtained since answers it.
    #[test]
    fn an_unanswered_mint_outlives_the_holders_next_attempt() {
        let mut claim = held_by("a", "alice");
        let submission = Submission {
            credentials: Some("hash".into()),
            last_token: None,
            cap: 3,
            midnight_margin: crate::dhan::ist::MIDNIGHT_MARGIN,
        };
        before_mint(&mut claim, now(), &submission).unwrap();
        // No answer; the next attempt, two minutes later, gets "Invalid TOTP".
        let next = (now() + chrono::Duration::minutes(2)).trunc_subsecs(0);
        before_mint(&mut claim, next, &submission).unwrap();
        answered(&mut claim, next, &Answer::MaybeRefused);
        let hour = chrono::Duration::hours(1);
        assert!(mint_pending_for_another(
            Some(&claim),
            "bob",
            now() + hour,
            None
        ));
        assert!(!mint_pending_for_another(
            Some(&claim),
            "alice",
            now() + hour,
            None,
        ));
        assert!(!mint_pending_for_another(
            Some(&claim),
            "bob",
            now() + hour * 24,
            None,
        ));
        // A token the holder obtained since answers it.
        let later = next + hour;
        let with_token = Submission {
            last_token: Some(next + chrono::Duration::minutes(5)),
            ..submission
        };
        before_mint(&mut claim, later, &with_token).unwrap();
        assert_eq!(claim.unconfirmed_mint, None);
    }

    /// Found by the simulation (seed 25, 30 days, a cluster clock 66 s or more fast): a re-created
    /// account submitted credentials at 23:58 IST by Dhan's clock, the next day by its own, and
    /// Dhan counted a fourth refusal in its day. Nothing is submitted near IST midnight.
    #[test]
    fn no_credentials_are_submitted_within_ten_minutes_of_ist_midnight() {
        let submission = |credentials: Option<&str>| Submission {
            credentials: credentials.map(str::to_string),
            last_token: None,
            cap: 3,
            midnight_margin: crate::dhan::ist::MIDNIGHT_MARGIN,
        };
        // 23:55 IST, 00:05 IST, 00:11 IST (midnight IST is 18:30 UTC).
        for (at, refused) in [
            ("2026-11-22T18:25:00Z", true),
            ("2026-11-22T18:35:00Z", true),
            ("2026-11-22T18:41:00Z", false),
            ("2026-11-22T18:19:00Z", false),
        ] {
            let at: DateTime<Utc> = at.parse().unwrap();
            let mut claim = held_by("a", "alice");
            let result = before_mint(&mut claim, at, &submission(Some("hash")));
            assert_eq!(
                matches!(result, Err(Refused::NearMidnight { .. })),
                refused,
                "{at}: {result:?}"
            );
            // A call that submits no credentials (RenewToken) is not counted: it may go.
            let mut claim = held_by("a", "alice");
            assert_eq!(before_mint(&mut claim, at, &submission(None)), Ok(()));
        }
        let mut claim = held_by("a", "alice");
        let at: DateTime<Utc> = "2026-11-22T18:25:00Z".parse().unwrap();
        assert_eq!(
            before_mint(&mut claim, at, &submission(Some("hash"))),
            Err(Refused::NearMidnight {
                until: "2026-11-22T18:40:00Z".parse().unwrap()
            })
        );
    }

    /// A mint of the holder whose answer never came keeps other accounts of the install away
    /// for a token's life; an answered one, the holder itself and a released claim do not.
    #[test]
    fn an_unanswered_mint_of_another_account_holds_for_a_day() {
        let mut claim = held_by("a", "alice");
        claim.in_flight = Some(crate::claims::resource::InFlight {
            at: now(),
            credentials: true,
            answered: false,
            unknown: false,
        });
        let hour = chrono::Duration::hours(1);
        assert!(mint_pending_for_another(
            Some(&claim),
            "bob",
            now() + hour,
            None
        ));
        assert!(!mint_pending_for_another(
            Some(&claim),
            "alice",
            now() + hour,
            None,
        ));
        assert!(!mint_pending_for_another(
            Some(&claim),
            "bob",
            now() + hour * 24,
            None,
        ));
        let mut lost = claim.clone();
        lost.in_flight.as_mut().unwrap().answered = true;
        lost.in_flight.as_mut().unwrap().unknown = true;
        assert!(mint_pending_for_another(
            Some(&lost),
            "bob",
            now() + hour,
            None
        ));
        let mut heard = claim.clone();
        heard.in_flight.as_mut().unwrap().answered = true;
        assert!(!mint_pending_for_another(
            Some(&heard),
            "bob",
            now() + hour,
            None
        ));
        // A token "bob" keeps, minted after the pending mint, answers it.
        assert!(!mint_pending_for_another(
            Some(&claim),
            "bob",
            now() + hour,
            Some(now() + chrono::Duration::seconds(1))
        ));
        assert!(mint_pending_for_another(
            Some(&claim),
            "bob",
            now() + hour,
            Some(now() - chrono::Duration::seconds(1))
        ));
        claim.holder = None;
        assert!(!mint_pending_for_another(
            Some(&claim),
            "bob",
            now() + hour,
            None
        ));
    }

    fn submit(credentials: Option<&str>, last_token: Option<DateTime<Utc>>) -> Submission {
        Submission {
            credentials: credentials.map(str::to_string),
            last_token,
            cap: 3,
            midnight_margin: crate::dhan::ist::MIDNIGHT_MARGIN,
        }
    }

    #[test]
    fn who_holds_a_claim() {
        let claim = held_by("a", "uid-1");
        assert_eq!(holding(None, "a", "uid-1"), Holding::Absent);
        assert_eq!(holding(Some(&claim), "a", "uid-1"), Holding::Ours);
        assert_eq!(
            holding(Some(&claim), "a", "uid-2"),
            Holding::Free,
            "another account of the same install: the install's own rule decided"
        );
        assert_eq!(holding(Some(&claim), "b", "uid-9"), Holding::Install("a"));
        let released = DhanClientClaimSpec::default();
        assert_eq!(holding(Some(&released), "b", "uid-9"), Holding::Free);
    }

    #[test]
    fn an_install_holds_its_claims_for_their_duration_and_the_skew_margin() {
        let beat = |secs_ago: i64| DhanOperatorInstallSpec {
            install: "a".into(),
            holder_identity: Some("pod-1".into()),
            renew_time: now() - chrono::Duration::seconds(secs_ago),
            claim_duration_seconds: 1800,
        };
        let skew = SKEW_MARGIN.as_secs() as i64;
        assert!(install_alive(Some(&beat(0)), now()));
        assert!(install_alive(Some(&beat(1800 + skew)), now()));
        assert!(!install_alive(Some(&beat(1800 + skew + 1)), now()));
        assert!(!install_alive(None, now()));
    }

    #[test]
    fn the_cap_counts_refusals_of_the_ist_day_and_never_resends_refused_credentials() {
        let mut claim = held_by("a", "uid-1");
        for n in 0..3 {
            before_mint(
                &mut claim,
                now(),
                &submit(Some(&format!("creds-{n}")), None),
            )
            .unwrap();
            let at = claim.in_flight.as_ref().unwrap().at;
            answered(&mut claim, at, &Answer::Refused(format!("creds-{n}")));
        }
        assert_eq!(refused_today(&claim, now(), None), 3);
        assert_eq!(
            before_mint(&mut claim, now(), &submit(Some("creds-0"), None)),
            Err(Refused::RefusedToday)
        );
        assert_eq!(
            before_mint(&mut claim, now(), &submit(Some("creds-new"), None)),
            Err(Refused::Capped { refused: 3 })
        );
        // A renewal submits no credentials: not capped.
        assert_eq!(before_mint(&mut claim, now(), &submit(None, None)), Ok(()));
        // The next IST day (00:00 IST is 18:30 UTC) starts again, for submissions from 00:10.
        let tomorrow: DateTime<Utc> = "2026-11-22T18:40:00Z".parse().unwrap();
        assert_eq!(refused_today(&claim, tomorrow, None), 0);
        assert_eq!(
            before_mint(&mut claim, tomorrow, &submit(Some("creds-0"), None)),
            Ok(())
        );
    }

    #[test]
    fn a_submission_nobody_heard_back_about_counts_as_refused_until_a_later_token_answers_it() {
        let mut claim = held_by("a", "uid-1");
        before_mint(&mut claim, now(), &submit(Some("creds"), None)).unwrap();
        // The process died here.
        assert_eq!(refused_today(&claim, now(), None), 1);
        let earlier_token = now() - chrono::Duration::hours(1);
        assert_eq!(refused_today(&claim, now(), Some(earlier_token)), 1);
        let later_token = now() + chrono::Duration::seconds(1);
        assert_eq!(
            refused_today(&claim, now(), Some(later_token)),
            0,
            "the mint was carried out: the token it gave was kept"
        );
        // The next mint folds it in for good.
        let later = now() + chrono::Duration::minutes(5);
        before_mint(&mut claim, later, &submit(Some("creds"), None)).unwrap();
        answered(&mut claim, later, &Answer::Heard);
        assert_eq!(refused_today(&claim, later, None), 1);
    }

    #[test]
    fn an_answer_that_is_no_refusal_counts_nothing() {
        let mut claim = held_by("a", "uid-1");
        before_mint(&mut claim, now(), &submit(Some("creds"), None)).unwrap();
        answered(&mut claim, now(), &Answer::Unknown);
        assert_eq!(
            refused_today(&claim, now(), None),
            0,
            "a timeout or a 5xx is no refusal"
        );
        assert!(claim.in_flight.as_ref().unwrap().answered);
        assert!(!disposable(&claim, now()), "held");
        claim.holder = None;
        assert!(disposable(&claim, now()));
    }

    #[test]
    fn a_refusal_heard_twice_counts_once() {
        let mut claim = held_by("a", "uid-1");
        before_mint(&mut claim, now(), &submit(Some("creds"), None)).unwrap();
        let at = claim.in_flight.as_ref().unwrap().at;
        answered(&mut claim, at, &Answer::Refused("creds".into()));
        // The same failed login read again after a restart.
        answered(&mut claim, at, &Answer::Refused("creds".into()));
        assert_eq!(refused_today(&claim, now(), None), 1);
    }

    #[test]
    fn a_late_refusal_of_a_folded_mint_adds_its_credentials_not_a_count() {
        let mut claim = held_by("a", "uid-1");
        before_mint(&mut claim, now(), &submit(Some("creds"), None)).unwrap();
        let first = claim.in_flight.as_ref().unwrap().at;
        let later = now() + chrono::Duration::minutes(5);
        before_mint(&mut claim, later, &submit(Some("other"), None)).unwrap();
        assert_eq!(refused_today(&claim, later, None), 2, "folded + in flight");
        answered(&mut claim, first, &Answer::Refused("creds".into()));
        assert_eq!(refused_today(&claim, later, None), 2);
        assert_eq!(
            before_mint(&mut claim, later, &submit(Some("creds"), None)),
            Err(Refused::RefusedToday)
        );
    }

    #[test]
    fn an_attempt_cut_short_counts_toward_the_cap_without_refusing_the_credentials() {
        let mut claim = held_by("a", "uid-1");
        before_mint(&mut claim, now(), &submit(Some("creds"), None)).unwrap();
        let at = claim.in_flight.as_ref().unwrap().at;
        answered(&mut claim, at, &Answer::MaybeRefused);
        answered(&mut claim, at, &Answer::MaybeRefused);
        assert_eq!(refused_today(&claim, now(), None), 1);
        let later = now() + chrono::Duration::minutes(1);
        assert_eq!(
            before_mint(&mut claim, later, &submit(Some("creds"), None)),
            Ok(()),
            "the same credentials may be sent again"
        );
    }

    #[test]
    fn names_are_stable_hashes_that_do_not_show_the_client_id() {
        let name = claim_name("1000000001");
        assert_eq!(name, claim_name(" 1000000001 "), "spaces do not matter");
        assert_ne!(name, claim_name("1000000002"));
        assert!(!name.contains("1000000001"));
        assert!(name.len() <= 63, "a valid object name: {name}");
        assert_ne!(install_name("ns/a"), install_name("ns/b"));
        assert!(install_name("ns/a").len() <= 63);
    }
}
