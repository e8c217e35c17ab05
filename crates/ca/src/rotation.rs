//! Applying rotation steps to the authority slots.
//!
//! [`Slots`] is the immutable snapshot that signers read. Rotation copies it
//! into a [`Draft`], applies the steps that [`schedule::next_step`] returns,
//! prunes expired authorities, and builds the next snapshot and state file.

use std::sync::Arc;
use std::time::SystemTime;

use tessera_spiffe::bundle::TrustBundle;
use tessera_spiffe::id::TrustDomain;

use crate::authority::{PublishedAuthority, SigningAuthority};
use crate::config::CaConfig;
use crate::error::CaError;
use crate::schedule::{self, Step};
use crate::state::{STATE_VERSION, StateFile};
use crate::storage::Loaded;

/// Upper bound of steps per rotation. The longest sequence is three: after
/// downtime, activate the prepared authority, then prepare its successor.
const MAX_STEPS: usize = 4;

/// Changes made by one rotation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RotationEvent {
    /// Identifiers of authorities created and published in the bundle. One
    /// that is not also `activated` waits in the prepared slot.
    pub created: Vec<String>,
    /// Identifier of the authority that became active.
    pub activated: Option<String>,
    /// Identifiers of expired authorities removed from the bundle.
    pub pruned: Vec<String>,
}

impl RotationEvent {
    /// Reports whether the trust bundle changed, so it must be sent to peers again.
    pub fn bundle_changed(&self) -> bool {
        !self.created.is_empty() || !self.pruned.is_empty()
    }

    /// Reports whether nothing changed.
    pub fn is_empty(&self) -> bool {
        !self.bundle_changed() && self.activated.is_none()
    }
}

/// The authorities of each slot and the bundle that publishes them.
pub(crate) struct Slots {
    pub active: Arc<SigningAuthority>,
    pub prepared: Option<Arc<SigningAuthority>>,
    pub retired: Vec<PublishedAuthority>,
    pub bundle: TrustBundle,
}

impl Slots {
    /// Returns the time at which the next rotation step or pruning is due.
    pub fn next_rotation_at(&self) -> SystemTime {
        let active = self.active.lifetime();
        let prepared = self.prepared.as_ref().map(|p| p.lifetime());
        let next_step = schedule::next_step_at(&active, prepared.as_ref());

        self.retired
            .iter()
            .map(|r| r.lifetime.not_after)
            .fold(next_step, SystemTime::min)
    }

    /// Returns the sequence number of the bundle, which grows with each change.
    pub fn bundle_sequence(&self) -> u64 {
        self.bundle.sequence_number().unwrap_or(0)
    }
}

/// The result of a finished draft.
pub(crate) struct Finished {
    /// The next snapshot.
    pub slots: Slots,
    /// The state file to store.
    pub state: StateFile,
    /// Authorities created since the draft started, whose files must be written.
    pub created: Vec<Arc<SigningAuthority>>,
    /// The changes made.
    pub event: RotationEvent,
}

/// A mutable copy of the slots during a rotation.
pub(crate) struct Draft {
    active: Arc<SigningAuthority>,
    prepared: Option<Arc<SigningAuthority>>,
    retired: Vec<PublishedAuthority>,
    bundle_sequence: u64,
    created: Vec<Arc<SigningAuthority>>,
    event: RotationEvent,
}

impl Draft {
    /// Starts a draft for a new CA, with a new active authority.
    pub fn new_ca(config: &CaConfig, now: SystemTime) -> Result<Self, CaError> {
        let active = generate(config, now)?;
        let id = active.published().id.clone();
        Ok(Self {
            created: vec![Arc::clone(&active)],
            event: RotationEvent {
                created: vec![id.clone()],
                activated: Some(id),
                pruned: Vec::new(),
            },
            active,
            prepared: None,
            retired: Vec::new(),
            bundle_sequence: 0,
        })
    }

    /// Starts a draft from authorities read from storage.
    pub fn from_loaded(loaded: Loaded) -> Self {
        Self {
            active: Arc::new(loaded.active),
            prepared: loaded.prepared.map(Arc::new),
            retired: loaded.retired,
            bundle_sequence: loaded.state.bundle_sequence,
            created: Vec::new(),
            event: RotationEvent::default(),
        }
    }

    /// Starts a draft from the current snapshot.
    pub fn from_slots(slots: &Slots) -> Self {
        Self {
            active: Arc::clone(&slots.active),
            prepared: slots.prepared.clone(),
            retired: slots.retired.clone(),
            bundle_sequence: slots.bundle_sequence(),
            created: Vec::new(),
            event: RotationEvent::default(),
        }
    }

    /// Applies every step the schedule calls for at `now`, then prunes.
    pub fn advance(&mut self, config: &CaConfig, now: SystemTime) -> Result<(), CaError> {
        for _ in 0..MAX_STEPS {
            let active = self.active.lifetime();
            let prepared = self.prepared.as_ref().map(|p| p.lifetime());
            match schedule::next_step(Some(active), prepared, now) {
                Step::Wait => break,
                step => self.apply(step, config, now)?,
            }
        }
        self.prune(now);
        Ok(())
    }

    /// Prepares a new authority now, unless an unexpired one is already prepared.
    pub fn prepare_now(&mut self, config: &CaConfig, now: SystemTime) -> Result<(), CaError> {
        if let Some(prepared) = self
            .prepared
            .as_ref()
            .filter(|p| !p.lifetime().is_expired(now))
        {
            return Err(CaError::AlreadyPrepared {
                authority_id: prepared.published().id.clone(),
            });
        }
        self.apply(Step::Prepare, config, now)?;
        self.prune(now);
        Ok(())
    }

    /// Activates the prepared authority now.
    pub fn activate_now(&mut self, config: &CaConfig, now: SystemTime) -> Result<(), CaError> {
        if self
            .prepared
            .as_ref()
            .is_none_or(|p| p.lifetime().is_expired(now))
        {
            return Err(CaError::NothingPrepared);
        }
        self.apply(Step::Activate, config, now)?;
        self.prune(now);
        Ok(())
    }

    fn apply(&mut self, step: Step, config: &CaConfig, now: SystemTime) -> Result<(), CaError> {
        match step {
            Step::Wait => {}
            Step::CreateActive => {
                let created = self.create_authority(config, now)?;
                self.retire_prepared();
                self.make_active(created);
            }
            Step::Prepare => {
                let created = self.create_authority(config, now)?;
                self.retire_prepared();
                self.prepared = Some(created);
            }
            Step::Activate => {
                let prepared = self.prepared.take().ok_or(CaError::NothingPrepared)?;
                self.make_active(prepared);
            }
        }
        Ok(())
    }

    fn create_authority(
        &mut self,
        config: &CaConfig,
        now: SystemTime,
    ) -> Result<Arc<SigningAuthority>, CaError> {
        let authority = generate(config, now)?;
        self.event.created.push(authority.published().id.clone());
        self.created.push(Arc::clone(&authority));
        Ok(authority)
    }

    /// Puts `authority` in the active slot and retires the one it replaces.
    fn make_active(&mut self, authority: Arc<SigningAuthority>) {
        self.event.activated = Some(authority.published().id.clone());
        let previous = std::mem::replace(&mut self.active, authority);
        self.retired.push(previous.published().clone());
    }

    fn retire_prepared(&mut self) {
        if let Some(prepared) = self.prepared.take() {
            self.retired.push(prepared.published().clone());
        }
    }

    /// Removes expired authorities other than the active one. A prepared one
    /// can only expire in a state file edited by hand, but left in place it
    /// would make the next rotation time lie in the past.
    fn prune(&mut self, now: SystemTime) {
        if self
            .prepared
            .as_ref()
            .is_some_and(|p| p.lifetime().is_expired(now))
        {
            self.retire_prepared();
        }

        let pruned = &mut self.event.pruned;
        self.retired.retain(|authority| {
            let keep = !authority.lifetime.is_expired(now);
            if !keep {
                pruned.push(authority.id.clone());
            }
            keep
        });
    }

    /// Reports whether the draft differs from what it started from.
    pub fn is_changed(&self) -> bool {
        !self.event.is_empty()
    }

    /// Finishes the draft, building the next snapshot and state file.
    pub fn finish(mut self, trust_domain: &TrustDomain) -> Result<Finished, CaError> {
        let active = self.active;
        if self.event.bundle_changed() {
            self.bundle_sequence += 1;
        }

        let state = StateFile {
            version: STATE_VERSION,
            trust_domain: trust_domain.name().to_string(),
            bundle_sequence: self.bundle_sequence,
            active: active.published().record(),
            prepared: self.prepared.as_ref().map(|p| p.published().record()),
            retired: self
                .retired
                .iter()
                .map(PublishedAuthority::record)
                .collect(),
        };

        self.retired.sort_by_key(|r| r.lifetime.not_before);
        let mut bundle = TrustBundle::new(trust_domain.clone());
        let published = self
            .retired
            .iter()
            .chain(Some(active.published()))
            .chain(self.prepared.as_ref().map(|p| p.published()));
        for authority in published {
            add_to_bundle(&mut bundle, authority)?;
        }
        bundle.set_sequence_number(Some(self.bundle_sequence));

        let slots = Slots {
            active,
            prepared: self.prepared,
            retired: self.retired,
            bundle,
        };
        Ok(Finished {
            slots,
            state,
            created: self.created,
            event: self.event,
        })
    }
}

fn add_to_bundle(bundle: &mut TrustBundle, authority: &PublishedAuthority) -> Result<(), CaError> {
    let bundle_error = |source| CaError::Bundle {
        authority_id: authority.id.clone(),
        source,
    };
    bundle
        .add_x509_authority(authority.certificate.clone())
        .map_err(bundle_error)?;
    bundle
        .add_jwt_authority(authority.jwt_authority())
        .map_err(bundle_error)
}

fn generate(config: &CaConfig, now: SystemTime) -> Result<Arc<SigningAuthority>, CaError> {
    let authority = SigningAuthority::generate(
        &config.trust_domain,
        config.key_algorithm,
        config.ca_ttl,
        now,
    )?;
    Ok(Arc::new(authority))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tessera_spiffe::id::TrustDomain;

    use super::*;

    fn config(ttl: Duration) -> CaConfig {
        let mut config =
            CaConfig::new(TrustDomain::new("example.org").expect("valid trust domain"));
        config.ca_ttl = ttl;
        config
    }

    fn start() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    #[test]
    fn prune_drops_expired_prepared() {
        let day = config(Duration::from_secs(24 * 3600));
        let minute = config(Duration::from_secs(60));
        let mut draft = Draft::new_ca(&day, start()).expect("CA is created");
        draft
            .prepare_now(&minute, start())
            .expect("prepare succeeds");

        let now = start() + Duration::from_secs(300);
        draft.advance(&day, now).expect("rotation succeeds");
        let finished = draft.finish(&day.trust_domain).expect("draft finishes");

        assert!(finished.slots.prepared.is_none());
        assert_eq!(finished.event.pruned.len(), 1);
        assert!(finished.slots.next_rotation_at() > now);
    }

    #[test]
    fn advance_stops_at_wait() {
        let day = config(Duration::from_secs(24 * 3600));
        let mut draft = Draft::new_ca(&day, start()).expect("CA is created");
        draft
            .advance(&day, start() + Duration::from_secs(3600))
            .expect("rotation succeeds");
        let finished = draft.finish(&day.trust_domain).expect("draft finishes");

        assert_eq!(finished.event.created.len(), 1, "only the first authority");
        assert_eq!(finished.created.len(), 1);
        assert_eq!(finished.state.active.id, finished.event.created[0]);
        assert_eq!(finished.state.bundle_sequence, 1);
    }
}
