//! The trust domain's certificate authority: signs X.509-SVIDs and mints
//! JWT-SVIDs with the active authority and rotates authorities on schedule.
//!
//! Signers read an immutable snapshot of the slots through an `ArcSwap`, so
//! they never wait for a rotation. Rotations are serialized by a mutex around
//! the storage, and each publishes a new snapshot once it is durable.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls_pki_types::CertificateDer;
use tessera_spiffe::bundle::TrustBundle;
use tessera_spiffe::id::{SpiffeId, TrustDomain};

use crate::authority::{BACKDATE, SigningAuthority};
use crate::config::{CaConfig, KeyStorage};
use crate::error::CaError;
use crate::jwt::{self, MintedJwt};
use crate::rotation::{Draft, Finished, RotationEvent, Slots};
use crate::schedule::Lifetime;
use crate::storage::Storage;
use crate::times::{rfc3339, whole_seconds};
use crate::x509::{self, LeafPublicKey};

/// The slot an authority occupies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    /// Signs SVIDs.
    Active,
    /// Published in the bundle; signs after the next activation.
    Prepared,
    /// Replaced, but published in the bundle until it expires.
    Retired,
}

/// Public facts about one authority, for status output and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthorityInfo {
    /// Identifier of the authority, also the stem of its file names on disk.
    pub id: String,
    /// The slot it occupies.
    pub slot: Slot,
    /// The `kid` of its JWT signing key.
    pub jwt_key_id: String,
    /// Start of validity of its CA certificate and JWT key.
    pub not_before: SystemTime,
    /// End of validity of its CA certificate and JWT key.
    pub not_after: SystemTime,
    /// The self-signed CA certificate.
    pub certificate: CertificateDer<'static>,
}

/// The trust domain's certificate authority.
///
/// It is `Send + Sync` and meant to be shared (in an `Arc`) by every request
/// handler; signing takes no lock.
pub struct CertificateAuthority {
    config: CaConfig,
    slots: ArcSwap<Slots>,
    storage: Mutex<Storage>,
}

impl CertificateAuthority {
    /// Loads the CA from `storage`, or creates a new one when nothing is stored,
    /// then applies the rotation steps due at `now`.
    ///
    /// A stored CA keeps its key algorithm and lifetime; changes of
    /// `config.key_algorithm` and `config.ca_ttl` apply to the authorities
    /// created by later rotations.
    ///
    /// # Errors
    ///
    /// Invalid settings, unreadable or inconsistent key files (the error names
    /// the file and how to recover), and key generation or storage failures.
    pub fn load_or_create(
        config: CaConfig,
        storage: KeyStorage,
        now: SystemTime,
    ) -> Result<Self, CaError> {
        config.validate()?;
        let storage = Storage::open(&storage)?;

        let mut draft = match storage.load(&config.trust_domain)? {
            Some(loaded) => {
                tracing::info!(
                    trust_domain = %config.trust_domain,
                    active = %loaded.state.active.id,
                    "loaded CA from key storage"
                );
                Draft::from_loaded(loaded)
            }
            None => Draft::new_ca(&config, now)?,
        };
        draft.advance(&config, now)?;

        let changed = draft.is_changed();
        let finished = draft.finish(&config.trust_domain)?;
        if changed {
            commit(&storage, &finished)?;
            log_event(&config.trust_domain, &finished.event, &finished.slots);
        }

        Ok(Self {
            config,
            slots: ArcSwap::from_pointee(finished.slots),
            storage: Mutex::new(storage),
        })
    }

    /// Applies the rotation steps due at `now`: prepares a new authority at 1/2 of
    /// the active one's lifetime, activates it at 5/6 (at once if the active one
    /// has expired), and removes expired authorities from the bundle.
    ///
    /// # Errors
    ///
    /// Key generation or storage failures; the CA then keeps its previous state
    /// and the next call tries again.
    pub fn rotate(&self, now: SystemTime) -> Result<RotationEvent, CaError> {
        self.update(|draft| draft.advance(&self.config, now))
    }

    /// Prepares a new authority now and publishes it in the bundle, ahead of the
    /// schedule.
    ///
    /// # Errors
    ///
    /// [`CaError::AlreadyPrepared`] when an authority is already prepared, and
    /// key generation or storage failures.
    pub fn prepare(&self, now: SystemTime) -> Result<RotationEvent, CaError> {
        self.update(|draft| draft.prepare_now(&self.config, now))
    }

    /// Activates the prepared authority now, ahead of the schedule.
    ///
    /// # Errors
    ///
    /// [`CaError::NothingPrepared`] when no unexpired authority is prepared, and
    /// storage failures.
    pub fn activate(&self, now: SystemTime) -> Result<RotationEvent, CaError> {
        self.update(|draft| draft.activate_now(&self.config, now))
    }

    fn update(
        &self,
        change: impl FnOnce(&mut Draft) -> Result<(), CaError>,
    ) -> Result<RotationEvent, CaError> {
        let storage = self.storage.lock().unwrap_or_else(PoisonError::into_inner);

        let mut draft = Draft::from_slots(&self.slots.load());
        change(&mut draft)?;
        if !draft.is_changed() {
            return Ok(RotationEvent::default());
        }

        let finished = draft.finish(&self.config.trust_domain)?;
        commit(&storage, &finished)?;
        log_event(&self.config.trust_domain, &finished.event, &finished.slots);

        self.slots.store(Arc::new(finished.slots));
        Ok(finished.event)
    }

    /// Returns the time at which [`rotate`](Self::rotate) next has work to do.
    pub fn next_rotation_at(&self) -> SystemTime {
        self.slots.load().next_rotation_at()
    }

    /// Returns the trust bundle: the CA certificate and JWT key of every
    /// authority not yet pruned (active, prepared and retired), with a
    /// sequence number that grows with each change.
    pub fn bundle(&self) -> TrustBundle {
        self.slots.load().bundle.clone()
    }

    /// Returns the trust domain the CA serves.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.config.trust_domain
    }

    /// Lists the authorities in the bundle with their slots, oldest first.
    pub fn authorities(&self) -> Vec<AuthorityInfo> {
        let slots = self.slots.load();
        let retired = slots.retired.iter().map(|a| (a, Slot::Retired));
        let active = std::iter::once((slots.active.published(), Slot::Active));
        let prepared = slots
            .prepared
            .iter()
            .map(|p| (p.published(), Slot::Prepared));

        retired
            .chain(active)
            .chain(prepared)
            .map(|(a, slot)| AuthorityInfo {
                id: a.id.clone(),
                slot,
                jwt_key_id: a.jwt_key_id.clone(),
                not_before: a.lifetime.not_before,
                not_after: a.lifetime.not_after,
                certificate: a.certificate.clone(),
            })
            .collect()
    }

    /// Signs an X.509-SVID for `id` and a public key the caller generated.
    ///
    /// `public_key_der` is a DER SubjectPublicKeyInfo of an EC P-256, EC P-384
    /// or RSA (2048 to 8192 bits) key. The certificate is valid from `now`
    /// (backdated a few seconds for clock skew) for `ttl`, but never past the
    /// active CA's expiry. The returned chain is the leaf alone, because the
    /// CA is self-signed and lives in the bundle.
    ///
    /// # Errors
    ///
    /// An ID outside the trust domain or without a path, a TTL under one second,
    /// an invalid or unsupported public key, a non-ASCII DNS name, or an active
    /// CA that is expired or not yet valid at `now`.
    pub fn sign_x509_svid(
        &self,
        id: &SpiffeId,
        public_key_der: &[u8],
        dns_names: &[String],
        ttl: Duration,
        now: SystemTime,
    ) -> Result<Vec<CertificateDer<'static>>, CaError> {
        self.check_request(id, ttl)?;
        let public_key = LeafPublicKey::parse(public_key_der)?;

        let slots = self.slots.load();
        let lifetime = svid_lifetime(slots.active.lifetime(), ttl, now)?;
        let leaf = x509::sign_leaf(slots.active.issuer(), id, &public_key, dns_names, lifetime)?;
        Ok(vec![leaf])
    }

    /// Mints a JWT-SVID for `id` and `audience`, valid from `now` for `ttl` but
    /// never past the active JWT key's expiry. It carries `iss` when the
    /// configuration sets a JWT issuer.
    ///
    /// # Errors
    ///
    /// An ID outside the trust domain or without a path, a TTL under one second,
    /// an empty audience, or an expired active key.
    pub fn mint_jwt_svid(
        &self,
        id: &SpiffeId,
        audience: &[String],
        ttl: Duration,
        now: SystemTime,
    ) -> Result<MintedJwt, CaError> {
        self.check_request(id, ttl)?;
        if audience.is_empty() || audience.iter().any(String::is_empty) {
            return Err(CaError::InvalidAudience {
                spiffe_id: id.clone(),
                audience: audience.to_vec(),
            });
        }

        let slots = self.slots.load();
        let issuer = self.config.jwt_issuer.as_deref();
        jwt::mint(&slots.active, id, audience, issuer, ttl, now)
    }

    fn check_request(&self, id: &SpiffeId, ttl: Duration) -> Result<(), CaError> {
        if id.trust_domain() != &self.config.trust_domain {
            return Err(CaError::ForeignTrustDomain {
                spiffe_id: id.clone(),
                trust_domain: self.config.trust_domain.clone(),
            });
        }
        if id.path().is_empty() {
            return Err(CaError::RootSpiffeId {
                spiffe_id: id.clone(),
            });
        }
        if ttl < Duration::from_secs(1) {
            return Err(CaError::SvidTtlTooShort {
                spiffe_id: id.clone(),
                ttl,
            });
        }
        Ok(())
    }
}

/// Returns the validity of a leaf signed at `now` for `ttl` by a CA valid for
/// `ca`: backdated by [`BACKDATE`], and nested in the CA's validity.
fn svid_lifetime(ca: Lifetime, ttl: Duration, now: SystemTime) -> Result<Lifetime, CaError> {
    let now = whole_seconds(now);
    if ca.is_expired(now) {
        return Err(CaError::ActiveExpired {
            not_after: ca.not_after,
        });
    }

    if now < ca.not_before {
        return Err(CaError::ActiveNotYetValid {
            not_before: ca.not_before,
        });
    }

    let not_before = now.checked_sub(BACKDATE).unwrap_or(now).max(ca.not_before);
    let not_after = now
        .checked_add(ttl)
        .map_or(ca.not_after, |t| whole_seconds(t).min(ca.not_after));
    Ok(Lifetime {
        not_before,
        not_after,
    })
}

fn commit(storage: &Storage, finished: &Finished) -> Result<(), CaError> {
    let created: Vec<&SigningAuthority> = finished.created.iter().map(Arc::as_ref).collect();
    storage.commit(&finished.state, &created)
}

fn log_event(trust_domain: &TrustDomain, event: &RotationEvent, slots: &Slots) {
    let active = slots.active.published();
    tracing::info!(
        %trust_domain,
        created = ?event.created,
        activated = ?event.activated,
        pruned = ?event.pruned,
        active = %active.id,
        active_not_after = %rfc3339(active.lifetime.not_after),
        bundle_sequence = slots.bundle_sequence(),
        next_rotation_at = %rfc3339(slots.next_rotation_at()),
        "CA authorities rotated"
    );
}

impl fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let slots = self.slots.load();
        f.debug_struct("CertificateAuthority")
            .field("trust_domain", &self.config.trust_domain)
            .field("active", &slots.active)
            .field("prepared", &slots.prepared)
            .field("retired", &slots.retired)
            .finish_non_exhaustive()
    }
}
