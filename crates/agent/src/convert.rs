//! Conversions from agent API messages to SPIFFE types.

use std::time::Duration;

use tessera_proto::types;
use tessera_spiffe::rustls_pki_types::CertificateDer;
use tessera_spiffe::{JwtAuthority, TrustBundle, TrustDomain};

use crate::svid::unix_to_system_time;

/// Builds a trust bundle from its agent API message.
///
/// # Errors
///
/// Returns a message naming the invalid trust domain or authority.
pub fn bundle_from_proto(proto: &types::Bundle) -> Result<TrustBundle, String> {
    let trust_domain = TrustDomain::new(&proto.trust_domain)
        .map_err(|e| format!("invalid trust domain {:?}: {e}", proto.trust_domain))?;
    let mut bundle = TrustBundle::new(trust_domain);
    for der in &proto.x509_authorities {
        bundle
            .add_x509_authority(CertificateDer::from(der.clone()))
            .map_err(|e| format!("invalid X.509 authority: {e}"))?;
    }
    for key in &proto.jwt_authorities {
        let authority = JwtAuthority {
            key_id: key.key_id.clone(),
            public_key: key.public_key.clone(),
            expires_at: (key.expires_at > 0).then(|| unix_to_system_time(key.expires_at)),
        };
        bundle
            .add_jwt_authority(authority)
            .map_err(|e| format!("invalid JWT authority {:?}: {e}", key.key_id))?;
    }
    let refresh_hint = u64::try_from(proto.refresh_hint)
        .ok()
        .filter(|&seconds| seconds > 0)
        .map(Duration::from_secs);
    bundle.set_refresh_hint(refresh_hint);
    bundle.set_sequence_number(Some(proto.sequence_number));
    Ok(bundle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestCa;

    #[test]
    fn bundle_from_proto_keeps_authorities() {
        let td = TrustDomain::new("example.org").expect("td");
        let ca = TestCa::new(&td);
        let expected = ca.bundle();
        let proto = types::Bundle {
            trust_domain: "example.org".into(),
            x509_authorities: vec![ca.certificate().to_vec()],
            jwt_authorities: expected
                .jwt_authorities()
                .iter()
                .map(|a| types::JwtKey {
                    key_id: a.key_id.clone(),
                    public_key: a.public_key.clone(),
                    expires_at: 0,
                })
                .collect(),
            refresh_hint: 300,
            sequence_number: 4,
        };

        let bundle = bundle_from_proto(&proto).expect("convert");
        assert_eq!(bundle.x509_authorities(), expected.x509_authorities());
        assert_eq!(bundle.jwt_authorities(), expected.jwt_authorities());
        assert_eq!(bundle.refresh_hint(), Some(Duration::from_secs(300)));
        assert_eq!(bundle.sequence_number(), Some(4));
    }

    #[test]
    fn bundle_from_proto_rejects_bad_input() {
        let cases = [
            types::Bundle {
                trust_domain: "Not A Domain".into(),
                ..types::Bundle::default()
            },
            types::Bundle {
                trust_domain: "example.org".into(),
                x509_authorities: vec![b"not a certificate".to_vec()],
                ..types::Bundle::default()
            },
        ];
        for proto in cases {
            assert!(bundle_from_proto(&proto).is_err(), "{proto:?}");
        }
    }
}
