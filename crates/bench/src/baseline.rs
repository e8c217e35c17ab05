//! Bare ECDSA P-256 signing and verification with aws-lc-rs: the raw limit
//! that X.509-SVID issuance is compared with. Every loop stops after a
//! fixed time.

use std::time::{Duration, Instant};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair,
    UnparsedPublicKey,
};

/// Size of the message signed by the baselines, close to the to-be-signed
/// part of an X.509-SVID leaf. SHA-256 over it costs well under 1 µs.
pub const MESSAGE_LEN: usize = 400;

/// Signs this many messages between two reads of the clock.
const SIGNS_PER_CLOCK_READ: u64 = 32;

/// An ECDSA P-256 key ready to sign, with nothing around it.
pub struct BareSigner {
    key: EcdsaKeyPair,
    rng: SystemRandom,
    message: Vec<u8>,
}

impl BareSigner {
    /// Generates a new P-256 key.
    ///
    /// # Panics
    ///
    /// Panics when aws-lc-rs cannot generate a P-256 key, which only a
    /// broken build of the library does.
    pub fn generate() -> Self {
        #[expect(
            clippy::expect_used,
            reason = "P-256 key generation has no input to reject"
        )]
        let key = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_ASN1_SIGNING)
            .expect("aws-lc-rs generates a P-256 key");
        Self {
            key,
            rng: SystemRandom::new(),
            message: vec![0x30; MESSAGE_LEN],
        }
    }

    /// Signs the fixed message once and returns the DER signature.
    ///
    /// # Panics
    ///
    /// Panics when signing fails, which aws-lc-rs does only on a failure of
    /// its random number generator.
    pub fn sign(&self) -> Vec<u8> {
        #[expect(
            clippy::expect_used,
            reason = "ECDSA signing fails only without randomness"
        )]
        let signature = self
            .key
            .sign(&self.rng, &self.message)
            .expect("aws-lc-rs signs with a valid P-256 key");
        signature.as_ref().to_vec()
    }

    /// Signs in a loop until `deadline`, at least one batch, and returns
    /// the number of signatures made.
    fn sign_until(&self, deadline: Instant) -> u64 {
        let mut count = 0u64;
        loop {
            for _ in 0..SIGNS_PER_CLOCK_READ {
                std::hint::black_box(self.sign());
            }
            count += SIGNS_PER_CLOCK_READ;
            if Instant::now() >= deadline {
                return count;
            }
        }
    }

    /// Verifies `signature` over the fixed message with this key's public
    /// key; returns whether it is valid.
    pub fn verify(&self, signature: &[u8]) -> bool {
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, self.key.public_key().as_ref())
            .verify(&self.message, signature)
            .is_ok()
    }
}

/// Measures how many ECDSA P-256 signatures per second `threads` threads
/// make together, each with its own key, running for `duration`.
pub fn ecdsa_p256_sign_rate(threads: usize, duration: Duration) -> f64 {
    let signers: Vec<BareSigner> = (0..threads.max(1))
        .map(|_| BareSigner::generate())
        .collect();
    let start = Instant::now();
    let deadline = start + duration;
    let total: u64 = std::thread::scope(|scope| {
        let workers: Vec<_> = signers
            .iter()
            .map(|signer| scope.spawn(move || signer.sign_until(deadline)))
            .collect();
        workers
            .into_iter()
            .map(|worker| worker.join().unwrap_or(0))
            .sum()
    });
    total as f64 / start.elapsed().as_secs_f64()
}

/// Signs `count` messages on each of `threads` threads and returns the wall
/// time. Criterion's custom loops use it to price a multi-threaded rate.
pub fn ecdsa_p256_sign_parallel(threads: usize, count: u64) -> Duration {
    let threads = threads.max(1);
    let signers: Vec<BareSigner> = (0..threads).map(|_| BareSigner::generate()).collect();
    let start = Instant::now();
    std::thread::scope(|scope| {
        for signer in &signers {
            scope.spawn(move || {
                for _ in 0..count {
                    std::hint::black_box(signer.sign());
                }
            });
        }
    });
    start.elapsed()
}

/// Measures ECDSA P-256 verifications per second on one thread.
pub fn ecdsa_p256_verify_rate(duration: Duration) -> f64 {
    let signer = BareSigner::generate();
    let signature = signer.sign();
    let start = Instant::now();
    let mut count = 0u64;
    loop {
        for _ in 0..SIGNS_PER_CLOCK_READ {
            std::hint::black_box(signer.verify(&signature));
        }
        count += SIGNS_PER_CLOCK_READ;
        if start.elapsed() >= duration {
            break;
        }
    }
    count as f64 / start.elapsed().as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signer_signature_verifies() {
        let signer = BareSigner::generate();
        let signature = signer.sign();
        assert!(signer.verify(&signature));
    }

    #[test]
    fn signer_rejects_altered_signature() {
        let signer = BareSigner::generate();
        let mut signature = signer.sign();
        let last = signature.len() - 1;
        signature[last] ^= 1;
        assert!(!signer.verify(&signature));
    }

    #[test]
    fn sign_rate_is_positive() {
        let rate = ecdsa_p256_sign_rate(2, Duration::from_millis(20));
        assert!(rate > 0.0, "rate {rate}");
    }
}
