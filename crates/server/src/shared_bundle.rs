//! The trust bundle of servers that share one database. Each server has
//! its own CA key, so the bundle stored for the trust domain is the union
//! of every server's authorities. Each server merges its own current and
//! prepared authorities into the stored bundle and publishes the union.
//! Agents and servers then accept SVIDs signed by any of the servers.

use std::time::SystemTime;

use tessera_spiffe::{BundleError, JwtAuthority, TrustBundle};
use tessera_store::{Revision, Store, StoreError};

/// Merges `own` into the bundle stored for its trust domain and returns
/// the union, with the revision of the write when the stored bundle had to
/// change. A stored bundle that cannot be parsed, or whose union with
/// `own` is invalid (such as too large), is replaced by `own`.
///
/// NOTE: the read and the write are two transactions, so two servers that
/// merge at the same moment can drop each other's new authority. Each
/// server merges again when the feed reports the other's write, and finds
/// its own authority missing, so the stored bundle converges.
pub(crate) async fn merge_into_store(
    store: &Store,
    own: &TrustBundle,
    now: SystemTime,
) -> Result<(TrustBundle, Option<Revision>), StoreError> {
    let td = own.trust_domain();
    let stored = match store.get_bundle(td).await? {
        Some(jwks) => match TrustBundle::from_jwks(td, &jwks) {
            Ok(bundle) => Some(bundle),
            Err(e) => {
                tracing::warn!(trust_domain = %td, error = %e, "replacing an invalid stored trust bundle");
                None
            }
        },
        None => None,
    };

    let union = match union(own, stored.as_ref(), now) {
        Ok(union) => union,
        Err(e) => {
            tracing::warn!(trust_domain = %td, error = %e, "replacing a stored trust bundle that cannot be merged");
            own.clone()
        }
    };
    if stored
        .as_ref()
        .is_some_and(|stored| same_authorities(stored, &union))
    {
        return Ok((union, None));
    }

    let revision = store.set_bundle(td, &union.to_jwks()).await?;
    Ok((union, Some(revision)))
}

/// Returns `own` plus the unexpired authorities of `stored` that `own`
/// lacks. The sequence number is one above the higher of the two when the
/// union differs from `stored`.
pub(crate) fn union(
    own: &TrustBundle,
    stored: Option<&TrustBundle>,
    now: SystemTime,
) -> Result<TrustBundle, BundleError> {
    let mut union = own.clone();
    let Some(stored) = stored else {
        return Ok(union);
    };

    for der in stored.x509_authorities() {
        if !certificate_expired(der, now) {
            union.add_x509_authority(der.clone())?;
        }
    }
    for authority in stored.jwt_authorities() {
        let expired = authority.expires_at.is_some_and(|at| at <= now);
        if !expired && union.jwt_authority(&authority.key_id).is_none() {
            union.add_jwt_authority(JwtAuthority::clone(authority))?;
        }
    }

    let base = own
        .sequence_number()
        .unwrap_or(0)
        .max(stored.sequence_number().unwrap_or(0));
    let sequence = if same_authorities(stored, &union) {
        base
    } else {
        base + 1
    };
    union.set_sequence_number(Some(sequence));
    Ok(union)
}

/// Returns whether two bundles contain the same X.509 and JWT authorities,
/// in any order.
pub(crate) fn same_authorities(a: &TrustBundle, b: &TrustBundle) -> bool {
    let x509_same = a.x509_authorities().len() == b.x509_authorities().len()
        && a.x509_authorities()
            .iter()
            .all(|der| b.x509_authorities().contains(der));
    let jwt_same = a.jwt_authorities().len() == b.jwt_authorities().len()
        && a.jwt_authorities().iter().all(|authority| {
            b.jwt_authority(&authority.key_id)
                .is_some_and(|other| other.public_key == authority.public_key)
        });
    x509_same && jwt_same
}

/// Returns whether the certificate's `notAfter` is at or before `now`. A
/// certificate that cannot be parsed counts as expired, so it is dropped.
fn certificate_expired(der: &[u8], now: SystemTime) -> bool {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return true;
    };
    let not_after = cert.validity().not_after.timestamp();
    not_after <= crate::bundle::unix_seconds(now)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tessera_ca::{CaConfig, CertificateAuthority, KeyStorage};
    use tessera_spiffe::{KeyAlgorithm, TrustDomain};

    use super::*;

    fn ca_bundle(now: SystemTime, ttl: Duration) -> TrustBundle {
        let config = CaConfig {
            trust_domain: TrustDomain::new("example.org").unwrap(),
            key_algorithm: KeyAlgorithm::EcP256,
            ca_ttl: ttl,
            jwt_issuer: None,
        };
        CertificateAuthority::load_or_create(config, KeyStorage::Memory, now)
            .unwrap()
            .bundle()
    }

    #[test]
    fn union_contains_both_servers() {
        let now = SystemTime::now();
        let a = ca_bundle(now, Duration::from_secs(3600));
        let b = ca_bundle(now, Duration::from_secs(3600));
        let merged = union(&a, Some(&b), now).unwrap();

        for der in a.x509_authorities().iter().chain(b.x509_authorities()) {
            assert!(merged.x509_authorities().contains(der));
        }
        for key in a.jwt_authorities().iter().chain(b.jwt_authorities()) {
            assert!(merged.jwt_authority(&key.key_id).is_some());
        }
        assert!(!same_authorities(&merged, &b));
        assert!(same_authorities(
            &union(&b, Some(&merged), now).unwrap(),
            &merged
        ));
    }

    #[test]
    fn union_drops_expired_stored_authority() {
        let now = SystemTime::now();
        let own = ca_bundle(now, Duration::from_secs(3600));
        let old = ca_bundle(now, Duration::from_secs(60));
        let later = now + Duration::from_secs(120);
        let merged = union(&own, Some(&old), later).unwrap();

        for der in old.x509_authorities() {
            assert!(!merged.x509_authorities().contains(der));
        }
        assert_eq!(
            merged.x509_authorities().len(),
            own.x509_authorities().len()
        );
    }

    #[tokio::test]
    async fn merge_writes_only_when_changed() {
        let store = Store::open("sqlite::memory:").await.unwrap();
        let now = SystemTime::now();
        let a = ca_bundle(now, Duration::from_secs(3600));
        let b = ca_bundle(now, Duration::from_secs(3600));

        let (_, first) = merge_into_store(&store, &a, now).await.unwrap();
        let (merged, second) = merge_into_store(&store, &b, now).await.unwrap();
        let (again, third) = merge_into_store(&store, &a, now).await.unwrap();

        assert!(first.is_some());
        assert!(second.is_some());
        assert!(third.is_none());
        assert!(same_authorities(&merged, &again));
        assert_eq!(
            merged.x509_authorities().len(),
            a.x509_authorities().len() + b.x509_authorities().len()
        );
    }
}
