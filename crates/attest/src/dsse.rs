//! DSSE envelopes (github.com/secure-systems-lab/dsse, protocol v1): the
//! signature covers PAE(payloadType, payload), never the JSON around it.

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::keys::{PrivateKey, PublicKey};
use crate::{Error, Result};

/// The payload type of an in-toto Statement.
pub const INTOTO_PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";

/// Pre-Authentication Encoding:
/// `"DSSEv1" SP LEN(type) SP type SP LEN(body) SP body`, lengths in ASCII
/// decimal bytes without leading zeros.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + payload_type.len() + 32);
    out.extend_from_slice(b"DSSEv1 ");
    out.extend_from_slice(payload_type.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload_type.as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload);
    out
}

/// The JSON envelope: `payload` and `sig` in standard base64.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope {
    pub payload: String,
    pub payload_type: String,
    pub signatures: Vec<Signature>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    /// An unauthenticated hint at the key (SHA-256 of its SPKI DER).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub keyid: String,
    pub sig: String,
}

impl Envelope {
    /// Signs `payload` of `payload_type` with `key`.
    pub fn sign(payload_type: &str, payload: &[u8], key: &PrivateKey) -> Envelope {
        let sig = key.sign(&pae(payload_type, payload));
        let b64 = base64::engine::general_purpose::STANDARD;
        Envelope {
            payload: b64.encode(payload),
            payload_type: payload_type.to_string(),
            signatures: vec![Signature {
                keyid: key.public().key_id(),
                sig: b64.encode(sig),
            }],
        }
    }

    pub fn from_json(shown: &str, bytes: &[u8]) -> Result<Envelope> {
        // A `.intoto.jsonl` holds one envelope per line; farm writes one.
        let text = String::from_utf8_lossy(bytes);
        let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or_default();
        serde_json::from_str(first)
            .or_else(|_| serde_json::from_slice(bytes))
            .map_err(|e| {
                Error::invalid(
                    shown,
                    format!("not a DSSE envelope (expected JSON with payload, payloadType, signatures): {e}"),
                )
            })
    }

    /// One line of JSON and a newline (`.intoto.jsonl`).
    pub fn to_line(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec(self).expect("serialises");
        v.push(b'\n');
        v
    }

    pub fn payload_bytes(&self) -> Option<Vec<u8>> {
        crate::keys::b64_decode(&self.payload)
    }

    /// The payload, when at least one signature is `key`'s over its PAE;
    /// Err says why not.
    pub fn verify(&self, key: &PublicKey) -> Result<Vec<u8>, String> {
        let payload = self.payload_bytes().ok_or("the payload is not base64")?;
        if self.signatures.is_empty() {
            return Err("the envelope has no signatures".into());
        }
        let message = pae(&self.payload_type, &payload);
        let ok = self
            .signatures
            .iter()
            .filter_map(|s| crate::keys::b64_decode(&s.sig))
            .any(|sig| key.verify(&message, &sig));
        if !ok {
            return Err(format!(
                "no signature verifies with the {} key {} (signed with another key, or the payload or its type was changed after signing)",
                key.key_type().name(),
                &key.key_id()[..16]
            ));
        }
        Ok(payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the DSSE protocol document ("Test Vectors"): the PAE
    /// bytes are exactly the spec's, and the spec's ECDSA P-256 signature
    /// (raw r‖s, RFC 6979) verifies under the spec's public key with farm's
    /// verifier; signing with the spec's private key gives the same r‖s,
    /// since P-256 signing here is deterministic (RFC 6979) too.
    #[test]
    fn pae_and_signature_match_the_dsse_spec_example() {
        let payload_type = "http://example.com/HelloWorld";
        assert_eq!(
            pae(payload_type, b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
        );

        let dec = |s: &str| {
            let n = num_to_be32(s);
            p256::FieldBytes::from(n)
        };
        let x = dec("46950820868899156662930047687818585632848591499744589407958293238635476079160");
        let y = dec("5640078356564379163099075877009565129882514886557779369047442380624545832820");
        let d = dec("97358161215184420915383655311931858321456579547487070936769975997791359926199");
        let point = p256::EncodedPoint::from_affine_coordinates(&x, &y, false);
        let public = PublicKey::P256(p256::ecdsa::VerifyingKey::from_encoded_point(&point).unwrap());
        let envelope = Envelope {
            payload: "aGVsbG8gd29ybGQ=".into(),
            payload_type: payload_type.into(),
            signatures: vec![Signature {
                keyid: String::new(),
                sig: "A3JqsQGtVsJ2O2xqrI5IcnXip5GToJ3F+FnZ+O88SjtR6rDAajabZKciJTfUiHqJPcIAriEGAHTVeCUjW2JIZA==".into(),
            }],
        };
        assert_eq!(envelope.verify(&public).unwrap(), b"hello world");

        let private = PrivateKey::P256(p256::ecdsa::SigningKey::from_bytes(&d).unwrap());
        assert_eq!(private.public(), public);
        let ours = private.sign(&pae(payload_type, b"hello world"));
        let raw = p256::ecdsa::Signature::from_der(&ours).unwrap().to_bytes();
        let theirs = crate::keys::b64_decode(&envelope.signatures[0].sig).unwrap();
        assert_eq!(raw.as_slice(), theirs.as_slice(), "RFC 6979 gives the spec's signature");

        let mut tampered = envelope.clone();
        tampered.payload_type = "http://example.com/Other".into();
        assert!(
            tampered.verify(&public).is_err(),
            "the type is covered by the signature"
        );
    }

    /// Decimal string → 32 big-endian bytes (test helper for the spec's key).
    fn num_to_be32(s: &str) -> [u8; 32] {
        let mut out = [0u8; 32];
        for c in s.bytes() {
            let mut carry = (c - b'0') as u32;
            for b in out.iter_mut().rev() {
                let v = *b as u32 * 10 + carry;
                *b = v as u8;
                carry = v >> 8;
            }
        }
        out
    }

    /// Ed25519 over PAE with RFC 8032's TEST 1 key (deterministic), the
    /// in-toto payload type: PAE bytes spelled out, the signature equal to
    /// the DSSE test vector's, and another payload type does not verify.
    #[test]
    fn ed25519_over_pae() {
        let seed = hex::decode("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60").unwrap();
        let key = PrivateKey::Ed25519(ed25519_dalek::SigningKey::from_bytes(&seed.try_into().unwrap()));
        let body = br#"{"_type":"https://in-toto.io/Statement/v1"}"#;
        assert_eq!(
            pae(INTOTO_PAYLOAD_TYPE, body),
            [b"DSSEv1 28 application/vnd.in-toto+json 43 ".as_slice(), body].concat()
        );
        let env = Envelope::sign(INTOTO_PAYLOAD_TYPE, body, &key);
        assert_eq!(env.verify(&key.public()).unwrap(), body);
        // The DSSE repository's test vector `single-signature` (testvectors/vectors.json).
        assert_eq!(
            env.payload,
            "eyJfdHlwZSI6Imh0dHBzOi8vaW4tdG90by5pby9TdGF0ZW1lbnQvdjEifQ=="
        );
        assert_eq!(
            env.signatures[0].sig,
            "2WAfaHm5jluo0w+0rk8uVkluELJYWjSmU9x7EUzx+AyteDGJ4/nqyJXfmAUVFIAoQafWm7AxBZNw5M9ixNHiCA=="
        );
        let mut other = env.clone();
        other.payload_type = "application/vnd.example.other+json".into();
        assert!(other.verify(&key.public()).is_err());
        assert_eq!(
            pae(INTOTO_PAYLOAD_TYPE, b""),
            b"DSSEv1 28 application/vnd.in-toto+json 0 "
        );
    }
}
