//! PEM encoding with LF line endings and 64-column lines, written into a
//! caller's buffer so that key material can go into a zeroizing one.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use zeroize::Zeroize;

/// Returns the length of the PEM block that [`write_pem`] writes.
pub(crate) fn pem_len(label: &str, der_len: usize) -> usize {
    let base64_len = der_len.div_ceil(3) * 4;
    let lines = base64_len.div_ceil(64);
    let armor = "-----BEGIN -----\n".len() + "-----END -----\n".len() + 2 * label.len();
    base64_len + lines + armor
}

/// Appends `der` to `out` as a PEM block labeled `label`.
pub(crate) fn write_pem(out: &mut String, label: &str, der: &[u8]) {
    out.push_str("-----BEGIN ");
    out.push_str(label);
    out.push_str("-----\n");

    let mut line = [0u8; 64];
    for chunk in der.chunks(48) {
        // 48 input bytes encode to exactly 64 characters, so the buffer fits.
        let written = STANDARD.encode_slice(chunk, &mut line).unwrap_or(0);
        out.extend(line[..written].iter().map(|b| char::from(*b)));
        out.push('\n');
    }
    line.zeroize();

    out.push_str("-----END ");
    out.push_str(label);
    out.push_str("-----\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_len_matches_output() {
        for len in [0, 1, 47, 48, 49, 96, 1000] {
            let der = vec![0xab; len];
            let mut out = String::new();
            write_pem(&mut out, "CERTIFICATE", &der);
            assert_eq!(out.len(), pem_len("CERTIFICATE", len), "{len}");
            let parsed = pem::parse(&out).expect("pem crate parses the output");
            assert_eq!(parsed.contents(), der.as_slice());
        }
    }
}
