//! Workload API response messages built from the cache for one caller's
//! selectors. Every message is complete (never a diff), as the Workload
//! API requires, so a stream sends a new one whenever it differs from the
//! last one sent.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::SystemTime;

use tessera_proto::workload::{
    JwtBundlesResponse, X509BundlesResponse, X509svid, X509svidResponse,
};
use tessera_registration::{RegistrationEntry, SelectorSet};
use tessera_spiffe::rustls_pki_types::CertificateDer;
use tessera_spiffe::{TrustBundle, TrustDomain};
use tonic::Status;

use crate::cache::CacheState;
use crate::svid::unix_to_system_time;

/// Message for a caller that no entry matches.
pub const NO_IDENTITY: &str = "no identity issued";

/// An X.509-SVID response, if one can be sent yet, and the time at which
/// it changes without any cache change because an SVID or entry expires.
#[derive(Debug)]
pub struct X509View {
    /// The response; `None` when entries match but none has a usable SVID yet.
    pub response: Option<X509svidResponse>,
    /// The earliest expiry of an SVID or entry in the response.
    pub next_expiry: Option<SystemTime>,
}

/// Returns the caller's matching entries, or `PermissionDenied` when there
/// are none and `Unavailable` before the first sync.
///
/// # Errors
///
/// Returns the status the RPC ends with.
pub fn caller_entries<'a>(
    state: &'a CacheState,
    selectors: &SelectorSet,
    now: SystemTime,
) -> Result<Vec<&'a RegistrationEntry>, Status> {
    if !state.is_synced() {
        return Err(not_synced());
    }
    let entries = state.matching_entries(selectors, now);
    if entries.is_empty() {
        return Err(Status::permission_denied(NO_IDENTITY));
    }
    Ok(entries)
}

/// Builds the `FetchX509SVID` response for a caller with `selectors`.
///
/// # Errors
///
/// Returns `PermissionDenied` when no entry matches the caller, and
/// `Unavailable` before the first sync or without a trust bundle.
pub fn x509_svid_view(
    state: &CacheState,
    selectors: &SelectorSet,
    now: SystemTime,
) -> Result<X509View, Status> {
    let entries = caller_entries(state, selectors, now)?;
    let bundle = own_bundle(state)?.x509_authorities_der();

    let mut next_expiry = None;
    let mut note_expiry = |time: SystemTime| {
        next_expiry = Some(next_expiry.map_or(time, |t: SystemTime| t.min(time)));
    };
    let mut hints = HashSet::new();
    let mut svids = Vec::new();
    for entry in &entries {
        let Some(signed) = state.svid(&entry.id) else {
            continue;
        };
        if signed.not_after <= now || signed.params.spiffe_id != entry.spiffe_id {
            continue;
        }
        // A hint must be unique within one response; the older entry keeps it.
        if !entry.hint.is_empty() && !hints.insert(entry.hint.as_str()) {
            tracing::debug!(entry_id = %entry.id, hint = %entry.hint, "leaving out an SVID whose hint another entry already uses");
            continue;
        }
        note_expiry(signed.not_after);
        if let Some(expires_at) = entry.expires_at {
            note_expiry(unix_to_system_time(expires_at));
        }
        svids.push(X509svid {
            spiffe_id: entry.spiffe_id.to_string(),
            x509_svid: concat_der(signed.svid.cert_chain()),
            x509_svid_key: signed.svid.private_key().pkcs8_der().to_vec(),
            bundle: bundle.clone(),
            hint: entry.hint.clone(),
        });
    }
    if svids.is_empty() {
        return Ok(X509View {
            response: None,
            next_expiry,
        });
    }

    let federated_bundles = federated_bundles(state, &entries)
        .into_iter()
        .map(|(td, b)| (td.id_string(), b.x509_authorities_der()))
        .collect();
    Ok(X509View {
        response: Some(X509svidResponse {
            svids,
            crl: Vec::new(),
            federated_bundles,
        }),
        next_expiry,
    })
}

/// Builds the `FetchX509Bundles` response: the agent's own trust domain
/// bundle, and the bundles of the trust domains the caller's entries
/// federate with.
///
/// # Errors
///
/// Returns `Unavailable` when the agent has no bundle.
pub fn x509_bundles_response(
    state: &CacheState,
    selectors: &SelectorSet,
    now: SystemTime,
) -> Result<X509BundlesResponse, Status> {
    let bundles = caller_bundles(state, selectors, now)?
        .into_iter()
        .map(|(td, b)| (td.id_string(), b.x509_authorities_der()))
        .collect();
    Ok(X509BundlesResponse {
        crl: Vec::new(),
        bundles,
    })
}

/// Builds the `FetchJWTBundles` response: the JWT signing keys of the same
/// trust domains as [`x509_bundles_response`], as JWK Sets.
///
/// # Errors
///
/// Returns `Unavailable` when the agent has no bundle.
pub fn jwt_bundles_response(
    state: &CacheState,
    selectors: &SelectorSet,
    now: SystemTime,
) -> Result<JwtBundlesResponse, Status> {
    let bundles = caller_bundles(state, selectors, now)?
        .into_iter()
        .map(|(td, b)| (td.id_string(), b.jwt_jwks()))
        .collect();
    Ok(JwtBundlesResponse { bundles })
}

fn caller_bundles<'a>(
    state: &'a CacheState,
    selectors: &SelectorSet,
    now: SystemTime,
) -> Result<BTreeMap<&'a TrustDomain, &'a TrustBundle>, Status> {
    let own = own_bundle(state)?;
    let entries = state.matching_entries(selectors, now);
    let mut bundles = federated_bundles(state, &entries);
    bundles.insert(own.trust_domain(), own);
    Ok(bundles)
}

/// Returns copies of the bundles a caller may validate JWT-SVIDs with:
/// the agent's own trust domain and those its entries federate with.
///
/// # Errors
///
/// Returns `Unavailable` when the agent has no bundle.
pub fn caller_bundle_source(
    state: &CacheState,
    selectors: &SelectorSet,
    now: SystemTime,
) -> Result<BTreeMap<TrustDomain, TrustBundle>, Status> {
    let bundles = caller_bundles(state, selectors, now)?;
    Ok(bundles
        .into_iter()
        .map(|(td, bundle)| (td.clone(), bundle.clone()))
        .collect())
}

fn own_bundle(state: &CacheState) -> Result<&TrustBundle, Status> {
    state
        .bundle()
        .map(AsRef::as_ref)
        .ok_or_else(|| Status::unavailable("the agent has no trust bundle yet; retry"))
}

/// Returns the known bundles of the trust domains that `entries` federate with.
fn federated_bundles<'a>(
    state: &'a CacheState,
    entries: &[&RegistrationEntry],
) -> BTreeMap<&'a TrustDomain, &'a TrustBundle> {
    let mut bundles = BTreeMap::new();
    let mut missing: HashMap<&TrustDomain, usize> = HashMap::new();
    for entry in entries {
        for td in &entry.federates_with {
            match state.federated_bundles().get_key_value(td) {
                Some((td, bundle)) => {
                    bundles.insert(td, bundle.as_ref());
                }
                None => *missing.entry(td).or_default() += 1,
            }
        }
    }
    for td in missing.keys() {
        tracing::debug!(trust_domain = %td, "no bundle known for a federated trust domain");
    }
    bundles
}

/// Concatenates DER certificates, leaf first, as the Workload API sends
/// a chain in one `bytes` field.
fn concat_der(chain: &[CertificateDer<'_>]) -> Vec<u8> {
    let mut der = Vec::with_capacity(chain.iter().map(|c| c.len()).sum());
    for cert in chain {
        der.extend_from_slice(cert);
    }
    der
}

/// Returns the status for calls that arrive before the first entry sync.
pub fn not_synced() -> Status {
    Status::unavailable("the agent has not received its entries from the server yet; retry")
}

#[cfg(test)]
mod tests {
    use tessera_registration::Selector;

    use super::*;
    use crate::cache::{Cache, EntryUpdate};
    use crate::testing::{self, TestCa};

    fn selectors(values: &[&str]) -> SelectorSet {
        values
            .iter()
            .map(|s| Selector::parse(s).expect("selector"))
            .collect()
    }

    fn setup(entries: Vec<RegistrationEntry>, federated: Vec<TrustBundle>) -> (Cache, TestCa) {
        let td = TrustDomain::new("example.org").expect("td");
        let ca = TestCa::new(&td);
        let cache = Cache::new(td, None);
        cache.apply(EntryUpdate {
            snapshot: true,
            revision: 1,
            upserted: entries.clone(),
            bundle: Some(ca.bundle()),
            federated_upserted: federated,
            ..EntryUpdate::default()
        });
        let signed = entries
            .iter()
            .map(|e| (e.id.clone(), ca.workload_svid(e)))
            .collect();
        cache.store_svids(signed);
        (cache, ca)
    }

    #[test]
    fn x509_view_has_svid_key_and_bundle() {
        let entry = testing::entry("/web", &["unix:uid:1000"]);
        let (cache, ca) = setup(vec![entry.clone()], Vec::new());

        let view = cache
            .read(|s| x509_svid_view(s, &selectors(&["unix:uid:1000"]), SystemTime::now()))
            .expect("view");
        let response = view.response.expect("response");
        assert_eq!(response.svids.len(), 1);
        let svid = &response.svids[0];
        assert_eq!(svid.spiffe_id, "spiffe://example.org/web");
        assert_eq!(svid.bundle, ca.certificate().to_vec());
        assert!(!svid.x509_svid.is_empty());
        assert!(!svid.x509_svid_key.is_empty());
        assert!(view.next_expiry.is_some());
    }

    #[test]
    fn x509_view_denies_unmatched_caller() {
        let entry = testing::entry("/web", &["unix:uid:1000"]);
        let (cache, _ca) = setup(vec![entry], Vec::new());
        let result =
            cache.read(|s| x509_svid_view(s, &selectors(&["unix:uid:0"]), SystemTime::now()));
        let code = result.err().map(|s| s.code());
        assert_eq!(code, Some(tonic::Code::PermissionDenied));
    }

    #[test]
    fn x509_view_unavailable_before_sync() {
        let td = TrustDomain::new("example.org").expect("td");
        let cache = Cache::new(td, None);
        let result =
            cache.read(|s| x509_svid_view(s, &selectors(&["unix:uid:0"]), SystemTime::now()));
        let code = result.err().map(|s| s.code());
        assert_eq!(code, Some(tonic::Code::Unavailable));
    }

    #[test]
    fn x509_view_keeps_hints_unique() {
        let mut first = testing::entry("/first", &["unix:uid:1"]);
        first.hint = "internal".into();
        first.created_at = 1;
        let mut second = testing::entry("/second", &["unix:uid:1"]);
        second.hint = "internal".into();
        second.created_at = 2;
        let third = testing::entry("/third", &["unix:uid:1"]);
        let (cache, _ca) = setup(vec![first, second, third], Vec::new());

        let response = cache
            .read(|s| x509_svid_view(s, &selectors(&["unix:uid:1"]), SystemTime::now()))
            .expect("view")
            .response
            .expect("response");
        let ids: Vec<&str> = response
            .svids
            .iter()
            .map(|s| s.spiffe_id.as_str())
            .collect();
        assert_eq!(
            ids,
            vec!["spiffe://example.org/first", "spiffe://example.org/third"]
        );
    }

    #[test]
    fn x509_view_waits_for_unsigned_svids() {
        let td = TrustDomain::new("example.org").expect("td");
        let ca = TestCa::new(&td);
        let cache = Cache::new(td, None);
        cache.apply(EntryUpdate {
            snapshot: true,
            revision: 1,
            upserted: vec![testing::entry("/web", &["unix:uid:1"])],
            bundle: Some(ca.bundle()),
            ..EntryUpdate::default()
        });
        let view = cache
            .read(|s| x509_svid_view(s, &selectors(&["unix:uid:1"]), SystemTime::now()))
            .expect("view");
        assert!(view.response.is_none());
    }

    #[test]
    fn federated_bundles_follow_entries() {
        let partner = TrustDomain::new("partner.org").expect("td");
        let partner_ca = TestCa::new(&partner);
        let unrelated = TrustDomain::new("unrelated.org").expect("td");
        let mut entry = testing::entry("/web", &["unix:uid:1"]);
        entry.federates_with = vec![
            partner.clone(),
            TrustDomain::new("unknown.org").expect("td"),
        ];
        let (cache, _ca) = setup(
            vec![entry],
            vec![partner_ca.bundle(), TrustBundle::new(unrelated)],
        );
        let caller = selectors(&["unix:uid:1"]);

        let svid_response = cache
            .read(|s| x509_svid_view(s, &caller, SystemTime::now()))
            .expect("view")
            .response
            .expect("response");
        let keys: Vec<&String> = svid_response.federated_bundles.keys().collect();
        assert_eq!(keys, vec!["spiffe://partner.org"]);

        let bundles = cache
            .read(|s| x509_bundles_response(s, &caller, SystemTime::now()))
            .expect("bundles");
        let mut keys: Vec<&String> = bundles.bundles.keys().collect();
        keys.sort();
        assert_eq!(keys, vec!["spiffe://example.org", "spiffe://partner.org"]);

        let jwt = cache
            .read(|s| jwt_bundles_response(s, &caller, SystemTime::now()))
            .expect("JWT bundles");
        assert_eq!(jwt.bundles.len(), 2);
    }

    #[test]
    fn bundles_served_to_unmatched_caller() {
        let (cache, _ca) = setup(vec![testing::entry("/web", &["unix:uid:1"])], Vec::new());
        let bundles = cache
            .read(|s| x509_bundles_response(s, &selectors(&["unix:uid:2"]), SystemTime::now()))
            .expect("bundles");
        let keys: Vec<&String> = bundles.bundles.keys().collect();
        assert_eq!(keys, vec!["spiffe://example.org"]);
    }
}
