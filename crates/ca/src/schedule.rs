//! When to prepare, activate and retire CA authorities.
//!
//! A new authority is prepared at 1/2 of the active one's lifetime and
//! published in the bundle, then activated at 5/6, so peers already trust it
//! when the first SVID it signed reaches them. These functions are pure: the
//! caller passes the time and applies the returned step.

use std::time::{Duration, SystemTime};

/// Validity period of an authority (an X.509 CA and its JWT signing key).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lifetime {
    /// First instant at which the authority is valid.
    pub not_before: SystemTime,
    /// Instant from which the authority is no longer valid.
    pub not_after: SystemTime,
}

impl Lifetime {
    /// Length of the validity period, zero if `not_after` is not after `not_before`.
    pub fn duration(&self) -> Duration {
        self.not_after
            .duration_since(self.not_before)
            .unwrap_or(Duration::ZERO)
    }

    /// Reports whether the authority has expired at `now`.
    pub fn is_expired(&self, now: SystemTime) -> bool {
        now >= self.not_after
    }

    /// Time at which the successor of this authority is prepared: half of its lifetime.
    pub fn prepare_at(&self) -> SystemTime {
        self.not_before + self.duration() / 2
    }

    /// Earliest time at which a prepared successor is activated: 5/6 of its lifetime.
    pub fn activate_at(&self) -> SystemTime {
        self.not_before + self.duration() / 6 * 5
    }
}

/// The next change of the authority slots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing is due.
    Wait,
    /// No usable authority exists: create one and make it active at once.
    CreateActive,
    /// Create a new authority in the prepared slot and publish it in the bundle.
    Prepare,
    /// Move the prepared authority to the active slot and retire the active one.
    Activate,
}

/// Returns the step that is due at `now` for the given active and prepared authorities.
///
/// An expired prepared authority counts as absent. When the active authority has
/// expired (after downtime, for example), the prepared one is activated at once, or a
/// new one is created, because no SVID can be signed until then.
pub fn next_step(active: Option<Lifetime>, prepared: Option<Lifetime>, now: SystemTime) -> Step {
    let prepared = prepared.filter(|p| !p.is_expired(now));

    let Some(active) = active.filter(|a| !a.is_expired(now)) else {
        return match prepared {
            Some(_) => Step::Activate,
            None => Step::CreateActive,
        };
    };

    match prepared {
        None if now >= active.prepare_at() => Step::Prepare,
        None => Step::Wait,
        Some(p) if now >= activation_time(&active, &p) => Step::Activate,
        Some(_) => Step::Wait,
    }
}

/// Returns the time at which [`next_step`] next returns a step other than [`Step::Wait`],
/// assuming both authorities are unexpired.
pub fn next_step_at(active: &Lifetime, prepared: Option<&Lifetime>) -> SystemTime {
    match prepared {
        None => active.prepare_at(),
        Some(p) => activation_time(active, p),
    }
}

/// Returns when a prepared authority replaces the active one.
///
/// On schedule, the prepared authority is published for the third of the active
/// lifetime between 1/2 and 5/6. An authority prepared late (the server was down at
/// 1/2) waits for that third too, but at most half of the active one's remaining
/// time. The other half then remains for SVIDs signed by the new key.
fn activation_time(active: &Lifetime, prepared: &Lifetime) -> SystemTime {
    let propagation = active.duration() / 3;
    let remaining = active
        .not_after
        .duration_since(prepared.not_before)
        .unwrap_or(Duration::ZERO);
    let wait = propagation.min(remaining / 2);

    active.activate_at().max(prepared.not_before + wait)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn at(hours: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + HOUR * hours as u32
    }

    fn life(from: u64, to: u64) -> Lifetime {
        Lifetime {
            not_before: at(from),
            not_after: at(to),
        }
    }

    #[test]
    fn lifetime_fractions() {
        let l = life(0, 24);
        assert_eq!(l.duration(), HOUR * 24);
        assert_eq!(l.prepare_at(), at(12));
        assert_eq!(l.activate_at(), at(20));
        assert!(!l.is_expired(at(23)));
        assert!(l.is_expired(at(24)));
    }

    #[test]
    fn lifetime_inverted_is_empty() {
        let l = life(10, 5);
        assert_eq!(l.duration(), Duration::ZERO);
        assert_eq!(l.prepare_at(), at(10));
    }

    #[test]
    fn next_step_table() {
        // (case, active, prepared, now in hours, expected step)
        type Case = (&'static str, Option<Lifetime>, Option<Lifetime>, u64, Step);
        let cases: &[Case] = &[
            ("empty", None, None, 0, Step::CreateActive),
            ("fresh active", Some(life(0, 24)), None, 1, Step::Wait),
            ("just before half", Some(life(0, 24)), None, 11, Step::Wait),
            ("at half", Some(life(0, 24)), None, 12, Step::Prepare),
            ("after half", Some(life(0, 24)), None, 15, Step::Prepare),
            (
                "prepared waits",
                Some(life(0, 24)),
                Some(life(12, 36)),
                13,
                Step::Wait,
            ),
            (
                "before 5/6",
                Some(life(0, 24)),
                Some(life(12, 36)),
                19,
                Step::Wait,
            ),
            (
                "at 5/6",
                Some(life(0, 24)),
                Some(life(12, 36)),
                20,
                Step::Activate,
            ),
            (
                "after 5/6",
                Some(life(0, 24)),
                Some(life(12, 36)),
                23,
                Step::Activate,
            ),
            (
                "active expired",
                Some(life(0, 24)),
                None,
                30,
                Step::CreateActive,
            ),
            (
                "expired, prepared",
                Some(life(0, 24)),
                Some(life(12, 36)),
                30,
                Step::Activate,
            ),
            (
                "both expired",
                Some(life(0, 24)),
                Some(life(12, 36)),
                40,
                Step::CreateActive,
            ),
            (
                "no active, prepared",
                None,
                Some(life(12, 36)),
                13,
                Step::Activate,
            ),
            (
                "prepared expired",
                Some(life(0, 100)),
                Some(life(1, 2)),
                60,
                Step::Prepare,
            ),
            (
                "late prepare waits",
                Some(life(0, 24)),
                Some(life(20, 44)),
                21,
                Step::Wait,
            ),
            (
                "late prepare done",
                Some(life(0, 24)),
                Some(life(20, 44)),
                22,
                Step::Activate,
            ),
        ];

        for (case, active, prepared, now, expected) in cases {
            let step = next_step(*active, *prepared, at(*now));
            assert_eq!(step, *expected, "case {case:?}");
        }
    }

    #[test]
    fn next_step_at_table() {
        // (case, active, prepared, expected time in hours)
        type Case = (&'static str, Lifetime, Option<Lifetime>, u64);
        let cases: &[Case] = &[
            ("prepare at half", life(0, 24), None, 12),
            ("activate at 5/6", life(0, 24), Some(life(12, 36)), 20),
            ("prepared late", life(0, 24), Some(life(18, 42)), 21),
            ("prepared very late", life(0, 24), Some(life(22, 46)), 23),
        ];

        for (case, active, prepared, expected) in cases {
            let next = next_step_at(active, prepared.as_ref());
            assert_eq!(next, at(*expected), "case {case:?}");
        }
    }

    #[test]
    fn next_step_at_agrees_with_next_step() {
        let active = life(0, 24);
        let prepared = life(12, 36);
        let due = next_step_at(&active, Some(&prepared));

        let before = due - Duration::from_secs(1);
        assert_eq!(next_step(Some(active), Some(prepared), before), Step::Wait);
        assert_eq!(next_step(Some(active), Some(prepared), due), Step::Activate);
    }
}
