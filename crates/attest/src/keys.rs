//! Signing keys: ECDSA P-256 (SHA-256; cosign's default) and Ed25519.
//!
//! Private keys are read from PKCS#8 PEM (`PRIVATE KEY`), SEC1 PEM (`EC
//! PRIVATE KEY`, what `openssl ecparam -genkey` writes) and cosign's
//! encrypted file (`ENCRYPTED SIGSTORE PRIVATE KEY`, or the older `ENCRYPTED
//! COSIGN PRIVATE KEY`): JSON holding a NaCl secretbox whose key is scrypt of
//! the password, sealing the PKCS#8 DER, the format go-securesystemslib's
//! `encrypted` package writes. Public keys are SPKI PEM (`PUBLIC KEY`).
//!
//! ECDSA signatures are ASN.1 DER, as cosign and securesystemslib write
//! them; verification also takes the raw 64-byte `r‖s` form.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use p256::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding};
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The environment variables a key's password comes from, in order.
pub const PASSWORD_VARS: [&str; 2] = ["FARM_SIGNING_PASSWORD", "COSIGN_PASSWORD"];
pub const SIGSTORE_LABEL: &str = "ENCRYPTED SIGSTORE PRIVATE KEY";
const COSIGN_LABEL: &str = "ENCRYPTED COSIGN PRIVATE KEY";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum KeyType {
    P256,
    Ed25519,
}

impl KeyType {
    pub fn name(self) -> &'static str {
        match self {
            KeyType::P256 => "ecdsa-p256",
            KeyType::Ed25519 => "ed25519",
        }
    }
}

pub enum PrivateKey {
    P256(p256::ecdsa::SigningKey),
    Ed25519(ed25519_dalek::SigningKey),
}

/// Shows the kind and the public key's id, never the secret.
impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PrivateKey({}, {})", self.key_type().name(), self.public().key_id())
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PublicKey {
    P256(p256::ecdsa::VerifyingKey),
    Ed25519(ed25519_dalek::VerifyingKey),
}

/// The password for an encrypted key, from the environment.
pub fn password_from_env() -> Option<String> {
    PASSWORD_VARS.iter().find_map(|v| std::env::var(v).ok())
}

fn pem_blocks(shown: &str, text: &str) -> Result<(String, Vec<u8>)> {
    let start = text.find("-----BEGIN ").ok_or_else(|| {
        Error::invalid(
            shown,
            "not a key: expected a PEM block (`-----BEGIN PRIVATE KEY-----`, `-----BEGIN PUBLIC KEY-----`, `-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----`); hint: `farm keygen --output PREFIX` writes a key pair",
        )
    })?;
    let block = &text[start..];
    let decode = |bytes: &[u8]| pem_rfc7468::decode_vec(bytes).map(|(label, der)| (label.to_string(), der));
    let (label, der) = decode(block.trim_end().as_bytes())
        .or_else(|_| {
            // Tolerate what RFC 7468's strict reading refuses (CRLF, text after the END line).
            let end = block
                .find("-----END ")
                .and_then(|e| block[e + 9..].find("-----").map(|x| e + 9 + x + 5));
            let cut = end.map_or(block, |e| &block[..e]).replace("\r\n", "\n");
            decode(cut.as_bytes())
        })
        .map_err(|e| Error::invalid(shown, format!("not a key: its PEM block does not decode ({e})")))?;
    Ok((label, der))
}

impl PrivateKey {
    pub fn generate(ty: KeyType) -> PrivateKey {
        match ty {
            KeyType::P256 => PrivateKey::P256(p256::ecdsa::SigningKey::random(&mut OsRng)),
            KeyType::Ed25519 => PrivateKey::Ed25519(ed25519_dalek::SigningKey::generate(&mut OsRng)),
        }
    }

    /// Reads a private key file; `password` opens an encrypted one (an
    /// unset password is tried as the empty one, as cosign allows).
    pub fn read(path: &Path, password: Option<&str>) -> Result<PrivateKey> {
        let text = std::fs::read(path).map_err(Error::io(path))?;
        PrivateKey::from_pem(&path.display().to_string(), &String::from_utf8_lossy(&text), password)
    }

    pub fn from_pem(shown: &str, text: &str, password: Option<&str>) -> Result<PrivateKey> {
        let (label, der) = pem_blocks(shown, text)?;
        match label.as_str() {
            "PRIVATE KEY" => from_pkcs8(shown, &der),
            "EC PRIVATE KEY" => p256::SecretKey::from_sec1_der(&der)
                .map(|k| PrivateKey::P256(k.into()))
                .map_err(|e| Error::invalid(shown, format!("not a P-256 EC private key ({e}); farm signs with P-256 or Ed25519 keys"))),
            SIGSTORE_LABEL | COSIGN_LABEL => {
                let der = decrypt(shown, &der, password)?;
                from_pkcs8(shown, &der)
            }
            "ENCRYPTED PRIVATE KEY" => Err(Error::invalid(
                shown,
                "a PKCS#8 key encrypted with PBES2, which farm does not read; hint: decrypt it with `openssl pkcs8 -in KEY -out PLAIN`, or use a cosign key (`ENCRYPTED SIGSTORE PRIVATE KEY`)",
            )),
            "PUBLIC KEY" => Err(Error::invalid(shown, "a public key, where a private key is needed (the `.key` file of the pair)")),
            other => Err(Error::invalid(shown, format!("a PEM block labelled {other:?}, not a private key"))),
        }
    }

    pub fn public(&self) -> PublicKey {
        match self {
            PrivateKey::P256(k) => PublicKey::P256(*k.verifying_key()),
            PrivateKey::Ed25519(k) => PublicKey::Ed25519(k.verifying_key()),
        }
    }

    pub fn key_type(&self) -> KeyType {
        match self {
            PrivateKey::P256(_) => KeyType::P256,
            PrivateKey::Ed25519(_) => KeyType::Ed25519,
        }
    }

    /// Signs `message`: ECDSA over SHA-256 (DER), or pure Ed25519.
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        use p256::ecdsa::signature::Signer as _;
        match self {
            PrivateKey::P256(k) => {
                let sig: p256::ecdsa::Signature = k.sign(message);
                sig.to_der().as_bytes().to_vec()
            }
            PrivateKey::Ed25519(k) => k.sign(message).to_bytes().to_vec(),
        }
    }

    fn pkcs8_der(&self) -> p256::pkcs8::SecretDocument {
        match self {
            PrivateKey::P256(k) => k.to_pkcs8_der(),
            PrivateKey::Ed25519(k) => k.to_pkcs8_der(),
        }
        .expect("a valid key encodes")
    }

    /// PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`).
    pub fn to_pkcs8_pem(&self) -> String {
        self.pkcs8_der()
            .to_pem("PRIVATE KEY", LineEnding::LF)
            .expect("DER encodes as PEM")
            .to_string()
    }

    /// cosign's encrypted file (`ENCRYPTED SIGSTORE PRIVATE KEY`), scrypt N=2^16, r=8, p=1.
    pub fn to_sigstore_pem(&self, password: &str) -> String {
        let sealed = encrypt(self.pkcs8_der().as_bytes(), password.as_bytes());
        pem_rfc7468::encode_string(SIGSTORE_LABEL, pem_rfc7468::LineEnding::LF, &sealed).expect("bytes encode as PEM")
    }
}

fn from_pkcs8(shown: &str, der: &[u8]) -> Result<PrivateKey> {
    if let Ok(k) = p256::ecdsa::SigningKey::from_pkcs8_der(der) {
        return Ok(PrivateKey::P256(k));
    }
    if let Ok(k) = ed25519_dalek::SigningKey::from_pkcs8_der(der) {
        return Ok(PrivateKey::Ed25519(k));
    }
    Err(Error::invalid(
        shown,
        "a PKCS#8 private key of a kind farm does not sign with; expected ECDSA P-256 or Ed25519 (RSA and other curves are not supported)",
    ))
}

impl PublicKey {
    pub fn read(path: &Path) -> Result<PublicKey> {
        let text = std::fs::read(path).map_err(Error::io(path))?;
        PublicKey::from_pem(&path.display().to_string(), &String::from_utf8_lossy(&text))
    }

    pub fn from_pem(shown: &str, text: &str) -> Result<PublicKey> {
        let (label, der) = pem_blocks(shown, text)?;
        match label.as_str() {
            "PUBLIC KEY" => {
                if let Ok(k) = p256::ecdsa::VerifyingKey::from_public_key_der(&der) {
                    return Ok(PublicKey::P256(k));
                }
                if let Ok(k) = ed25519_dalek::VerifyingKey::from_public_key_der(&der) {
                    return Ok(PublicKey::Ed25519(k));
                }
                Err(Error::invalid(shown, "a public key of a kind farm does not verify; expected ECDSA P-256 or Ed25519"))
            }
            l if l.contains("PRIVATE KEY") => Err(Error::invalid(
                shown,
                "a private key, where the public key is needed (the `.pub` file of the pair); never hand a private key to a verifier",
            )),
            other => Err(Error::invalid(shown, format!("a PEM block labelled {other:?}, not a public key"))),
        }
    }

    pub fn spki_der(&self) -> Vec<u8> {
        match self {
            PublicKey::P256(k) => k.to_public_key_der(),
            PublicKey::Ed25519(k) => k.to_public_key_der(),
        }
        .expect("a valid key encodes")
        .into_vec()
    }

    /// SPKI PEM (`-----BEGIN PUBLIC KEY-----`), as cosign writes `cosign.pub`.
    pub fn to_pem(&self) -> String {
        match self {
            PublicKey::P256(k) => k.to_public_key_pem(LineEnding::LF),
            PublicKey::Ed25519(k) => k.to_public_key_pem(LineEnding::LF),
        }
        .expect("a valid key encodes")
    }

    /// A hint naming the key in envelopes: SHA-256 of its SPKI DER, hex.
    /// Unauthenticated (DSSE), so never trusted: only used to say which key.
    pub fn key_id(&self) -> String {
        crate::sha256_hex(&self.spki_der())
    }

    pub fn key_type(&self) -> KeyType {
        match self {
            PublicKey::P256(_) => KeyType::P256,
            PublicKey::Ed25519(_) => KeyType::Ed25519,
        }
    }

    /// Whether `signature` is this key's over `message`.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        use p256::ecdsa::signature::Verifier as _;
        match self {
            PublicKey::P256(k) => {
                let sig = p256::ecdsa::Signature::from_der(signature)
                    .or_else(|_| p256::ecdsa::Signature::from_slice(signature));
                sig.is_ok_and(|s| k.verify(message, &s).is_ok())
            }
            PublicKey::Ed25519(k) => {
                ed25519_dalek::Signature::from_slice(signature).is_ok_and(|s| k.verify_strict(message, &s).is_ok())
            }
        }
    }
}

/// go-securesystemslib `encrypted`'s JSON.
#[derive(Serialize, Deserialize)]
struct Sealed {
    kdf: Kdf,
    cipher: Cipher,
    #[serde(with = "b64")]
    ciphertext: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct Kdf {
    name: String,
    params: ScryptParams,
    #[serde(with = "b64")]
    salt: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct ScryptParams {
    #[serde(rename = "N")]
    n: u64,
    r: u32,
    p: u32,
}

#[derive(Serialize, Deserialize)]
struct Cipher {
    name: String,
    #[serde(with = "b64")]
    nonce: Vec<u8>,
}

mod b64 {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .map_err(serde::de::Error::custom)
    }
}

/// The scrypt settings go-securesystemslib writes (legacy, standard, OWASP);
/// anything else is refused, as there: a key file must not make farm spend
/// unbounded memory.
const SCRYPT_ALLOWED: [(u64, u32, u32); 3] = [(1 << 15, 8, 1), (1 << 16, 8, 1), (1 << 17, 8, 1)];

fn secretbox_key(password: &[u8], salt: &[u8], n: u64, r: u32, p: u32) -> Option<[u8; 32]> {
    let params = scrypt::Params::new(n.trailing_zeros() as u8, r, p, 32).ok()?;
    let mut key = [0u8; 32];
    scrypt::scrypt(password, salt, &params, &mut key).ok()?;
    Some(key)
}

/// Seals `plaintext` as go-securesystemslib's `encrypted.Encrypt` does.
pub fn encrypt(plaintext: &[u8], password: &[u8]) -> Vec<u8> {
    use crypto_secretbox::aead::{Aead, KeyInit};
    let mut salt = [0u8; 32];
    let mut nonce = [0u8; 24];
    OsRng.fill_bytes(&mut salt);
    OsRng.fill_bytes(&mut nonce);
    let (n, r, p) = (1 << 16, 8, 1);
    let key = secretbox_key(password, &salt, n, r, p).expect("valid scrypt settings");
    let cipher = crypto_secretbox::XSalsa20Poly1305::new(&key.into());
    let ciphertext = cipher
        .encrypt(&nonce.into(), plaintext)
        .expect("secretbox seals any length");
    let sealed = Sealed {
        kdf: Kdf {
            name: "scrypt".into(),
            params: ScryptParams { n, r, p },
            salt: salt.to_vec(),
        },
        cipher: Cipher {
            name: "nacl/secretbox".into(),
            nonce: nonce.to_vec(),
        },
        ciphertext,
    };
    serde_json::to_vec(&sealed).expect("serialises")
}

/// Opens go-securesystemslib `encrypted` JSON with `password` (or the empty
/// password when none is set).
pub fn decrypt(shown: &str, sealed: &[u8], password: Option<&str>) -> Result<Vec<u8>> {
    use crypto_secretbox::aead::{Aead, KeyInit};
    let s: Sealed = serde_json::from_slice(sealed).map_err(|e| {
        Error::invalid(
            shown,
            format!("an encrypted key whose contents are not the expected JSON ({e})"),
        )
    })?;
    if s.kdf.name != "scrypt" || s.cipher.name != "nacl/secretbox" {
        return Err(Error::invalid(
            shown,
            format!(
                "an encrypted key using {} and {}; expected scrypt and nacl/secretbox",
                s.kdf.name, s.cipher.name
            ),
        ));
    }
    let (n, r, p) = (s.kdf.params.n, s.kdf.params.r, s.kdf.params.p);
    if !SCRYPT_ALLOWED.contains(&(n, r, p)) {
        return Err(Error::invalid(
            shown,
            format!("unsupported scrypt parameters N={n} r={r} p={p}"),
        ));
    }
    if s.cipher.nonce.len() != 24 {
        return Err(Error::invalid(shown, "the secretbox nonce is not 24 bytes"));
    }
    let pw = password.unwrap_or("");
    let key =
        secretbox_key(pw.as_bytes(), &s.kdf.salt, n, r, p).ok_or_else(|| Error::invalid(shown, "scrypt failed"))?;
    let cipher = crypto_secretbox::XSalsa20Poly1305::new(&key.into());
    let nonce = crypto_secretbox::Nonce::from_slice(&s.cipher.nonce);
    cipher.decrypt(nonce, s.ciphertext.as_slice()).map_err(|_| {
        let hint = match password {
            Some(_) => "the password is wrong",
            None => "it needs a password: set FARM_SIGNING_PASSWORD (or COSIGN_PASSWORD)",
        };
        Error::invalid(shown, format!("cannot decrypt the key: {hint}"))
    })
}

/// Writes `PREFIX.key` (PKCS#8 PEM, or cosign's encrypted file when a
/// password is given; mode 0600) and `PREFIX.pub` (SPKI PEM). Refuses to
/// replace either file; nothing is left behind when a write fails.
pub fn write_key_pair(key: &PrivateKey, prefix: &Path, password: Option<&str>) -> Result<(PathBuf, PathBuf)> {
    let with_ext = |ext: &str| {
        let mut p = prefix.as_os_str().to_owned();
        p.push(ext);
        PathBuf::from(p)
    };
    let (private, public) = (with_ext(".key"), with_ext(".pub"));
    for p in [&private, &public] {
        if p.symlink_metadata().is_ok() {
            return Err(Error::invalid(
                p.display(),
                "already exists; farm keygen never replaces a key (move it away or choose another --output)",
            ));
        }
    }
    let dir = private
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let secret = match password {
        Some(pw) => key.to_sigstore_pem(pw),
        None => key.to_pkcs8_pem(),
    };
    // NamedTempFile is created 0600: the key is never readable by others, not even briefly.
    let write = |path: &Path, text: &str, public: bool| -> Result<()> {
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(Error::io(dir))?;
        std::io::Write::write_all(&mut tmp, text.as_bytes()).map_err(Error::io(path))?;
        tmp.as_file().sync_all().map_err(Error::io(path))?;
        if public {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o644)).map_err(Error::io(path))?;
        }
        tmp.persist_noclobber(path).map_err(|e| Error::io(path)(e.error))?;
        Ok(())
    };
    write(&private, &secret, false)?;
    if let Err(e) = write(&public, &key.public().to_pem(), true) {
        let _ = std::fs::remove_file(&private);
        return Err(e);
    }
    Ok((private, public))
}

/// Base64 as DSSE allows it: standard or URL-safe alphabet, padded or not.
pub fn b64_decode(s: &str) -> Option<Vec<u8>> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    [STANDARD, URL_SAFE, STANDARD_NO_PAD, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|e| e.decode(s).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// go-securesystemslib's own test vectors (encrypted/encrypted_test.go):
    /// "reallyimportant" sealed with the password "supersecret" at each of
    /// its scrypt strengths. Written by independent code; farm must open them.
    #[test]
    fn opens_what_go_securesystemslib_sealed() {
        let vectors = [
            r#"{"kdf":{"name":"scrypt","params":{"N":32768,"r":8,"p":1},"salt":"WO3mVvyTwJ9vwT5/Tk5OW5WPIBUofMjcpEfrLnfY4uA="},"cipher":{"name":"nacl/secretbox","nonce":"tCy7HcTFr4uxv4Nrg/DWmncuZ148U1MX"},"ciphertext":"08n43p5G5yviPEZpO7tPPF4aZQkWiWjkv4taFdhDBA0tamKH4nw="}"#,
            r#"{"kdf":{"name":"scrypt","params":{"N":65536,"r":8,"p":1},"salt":"FhzPOt9/bJG4PTq6lQ6ecG6GzaOuOy/ynG5+yRiFlNs="},"cipher":{"name":"nacl/secretbox","nonce":"aw1ng1jHaDz/tQ7V2gR9O2+IGQ8xJEuE"},"ciphertext":"HycvuLZL4sYH0BrYTh4E/H20VtAW6u5zL5Pr+IBjYLYnCPzDkq8="}"#,
        ];
        for v in vectors {
            // These were written by `encrypted.Marshal`, which seals the JSON of
            // the bytes (a base64 string); cosign's keys use `Encrypt` on raw DER.
            let opened = decrypt("v", v.as_bytes(), Some("supersecret")).unwrap();
            let inner: String = serde_json::from_slice(&opened).unwrap();
            assert_eq!(b64_decode(&inner).unwrap(), b"reallyimportant");
        }
        let err = decrypt("cosign.key", vectors[0].as_bytes(), Some("wrong"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("cosign.key") && err.contains("password is wrong"), "{err}");
        let huge = r#"{"kdf":{"name":"scrypt","params":{"N":99,"r":99,"p":99},"salt":"cZFcQJdwPhPyhU1R4qkl0qVOIjZd4V/7LYYAavq166k="},"cipher":{"name":"nacl/secretbox","nonce":"7vhRS7j0hEPBWV05skAdgLj81AkGeE7U"},"ciphertext":"6WYU/YSXVbYzl/NzaeAzmjLyfFhOOjLc0d8/GFV0aBFdJvyCcXc="}"#;
        let err = decrypt("k", huge.as_bytes(), Some("supersecret"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unsupported scrypt parameters"), "{err}");
    }

    /// Keys round-trip through every file format farm writes, and a
    /// signature made by one verifies with its public key only.
    #[test]
    fn keys_round_trip_and_sign() {
        for ty in [KeyType::P256, KeyType::Ed25519] {
            let k = PrivateKey::generate(ty);
            let pem = k.to_pkcs8_pem();
            assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{pem}");
            let back = PrivateKey::from_pem("k", &pem, None).unwrap();
            assert_eq!(back.public(), k.public());
            if ty == KeyType::Ed25519 {
                // One scrypt round trip (slow in unoptimised builds); the P-256
                // case is the cosign fixture's, in tests/keys.rs.
                let sealed = k.to_sigstore_pem("pw");
                assert!(sealed.starts_with("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n"));
                let opened = PrivateKey::from_pem("k", &sealed, Some("pw")).unwrap();
                assert_eq!(opened.public(), k.public());
            }
            let public = PublicKey::from_pem("p", &k.public().to_pem()).unwrap();
            let sig = k.sign(b"message");
            assert!(public.verify(b"message", &sig));
            assert!(!public.verify(b"massage", &sig));
            let other = PrivateKey::generate(ty).public();
            assert!(!other.verify(b"message", &sig));
        }
    }

    #[test]
    fn files_that_are_not_keys_are_named() {
        let err = PrivateKey::from_pem("notes.txt", "hello\n", None)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("notes.txt: not a key"), "{err}");
        let pubpem = PrivateKey::generate(KeyType::P256).public().to_pem();
        let err = PrivateKey::from_pem("cosign.pub", &pubpem, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("a public key, where a private key is needed"), "{err}");
        let err = PublicKey::from_pem("k", &PrivateKey::generate(KeyType::Ed25519).to_pkcs8_pem())
            .unwrap_err()
            .to_string();
        assert!(err.contains("never hand a private key"), "{err}");
    }
}
