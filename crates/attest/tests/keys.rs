//! Keys and signatures against code farm's authors did not write: cosign's
//! encrypted key files, and OpenSSL verifying farm's DSSE signatures (and
//! farm reading keys OpenSSL generated). No cosign binary exists for
//! Debian 12, so cosign interop is tested through its key format.

use std::path::{Path, PathBuf};
use std::process::Command;

use farm_attest::dsse::{pae, Envelope, INTOTO_PAYLOAD_TYPE};
use farm_attest::{KeyType, PrivateKey, PublicKey};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/cosign")
        .join(name)
}

/// A key cosign wrote with the empty password opens without one (as
/// `COSIGN_PASSWORD=""` does), a password-protected one opens with its
/// password, and each one's public key is the one independent code derived.
#[test]
fn reads_cosign_encrypted_keys() {
    let key = PrivateKey::read(&fixture("empty-password.key"), None).unwrap();
    assert_eq!(key.key_type(), KeyType::P256);
    assert_eq!(key.public(), PublicKey::read(&fixture("empty-password.pub")).unwrap());

    let key = PrivateKey::read(&fixture("farm-test-password.key"), Some("farm-test")).unwrap();
    assert_eq!(
        key.public(),
        PublicKey::read(&fixture("farm-test-password.pub")).unwrap()
    );
    let shown = fixture("farm-test-password.key").display().to_string();
    let err = PrivateKey::read(&fixture("farm-test-password.key"), Some("wrong"))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(&shown) && err.contains("the password is wrong"),
        "{err}"
    );
    let err = PrivateKey::read(&fixture("farm-test-password.key"), None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("FARM_SIGNING_PASSWORD"), "{err}");
}

fn openssl(args: &[&str]) -> std::process::Output {
    Command::new("openssl").args(args).output().expect("openssl runs")
}

/// farm's envelopes verify with OpenSSL: the PAE is rebuilt here from the
/// DSSE spec's definition, the public key is farm's SPKI PEM, the signature
/// is ECDSA-SHA256 DER or Ed25519 as farm wrote it.
#[test]
fn openssl_verifies_farm_signatures() {
    if !farm_testkit::require_tool("openssl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let payload = br#"{"_type":"https://in-toto.io/Statement/v1","subject":[]}"#;
    for ty in [KeyType::P256, KeyType::Ed25519] {
        let key = PrivateKey::generate(ty);
        let env = Envelope::sign(INTOTO_PAYLOAD_TYPE, payload, &key);
        let d = dir.path();
        std::fs::write(d.join("pub.pem"), key.public().to_pem()).unwrap();
        let sig = farm_attest::keys::b64_decode(&env.signatures[0].sig).unwrap();
        std::fs::write(d.join("sig"), &sig).unwrap();
        let pae_bytes = [
            b"DSSEv1 ".as_slice(),
            INTOTO_PAYLOAD_TYPE.len().to_string().as_bytes(),
            b" ",
            INTOTO_PAYLOAD_TYPE.as_bytes(),
            b" ",
            payload.len().to_string().as_bytes(),
            b" ",
            payload,
        ]
        .concat();
        assert_eq!(pae_bytes, pae(INTOTO_PAYLOAD_TYPE, payload));
        std::fs::write(d.join("pae"), &pae_bytes).unwrap();
        let p = |n: &str| d.join(n).display().to_string();
        let out = match ty {
            KeyType::P256 => openssl(&[
                "dgst",
                "-sha256",
                "-verify",
                &p("pub.pem"),
                "-signature",
                &p("sig"),
                &p("pae"),
            ]),
            KeyType::Ed25519 => openssl(&[
                "pkeyutl",
                "-verify",
                "-pubin",
                "-inkey",
                &p("pub.pem"),
                "-rawin",
                "-in",
                &p("pae"),
                "-sigfile",
                &p("sig"),
            ]),
        };
        assert!(
            out.status.success(),
            "{ty:?}: openssl says {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // And a changed message does not verify.
        std::fs::write(d.join("pae"), [&pae_bytes[..], b" "].concat()).unwrap();
        let out = match ty {
            KeyType::P256 => openssl(&[
                "dgst",
                "-sha256",
                "-verify",
                &p("pub.pem"),
                "-signature",
                &p("sig"),
                &p("pae"),
            ]),
            KeyType::Ed25519 => openssl(&[
                "pkeyutl",
                "-verify",
                "-pubin",
                "-inkey",
                &p("pub.pem"),
                "-rawin",
                "-in",
                &p("pae"),
                "-sigfile",
                &p("sig"),
            ]),
        };
        assert!(!out.status.success(), "{ty:?}: openssl must reject a changed message");
    }
}

/// Keys OpenSSL generated (PKCS#8 and SEC1 P-256, PKCS#8 Ed25519) sign
/// with farm, and farm verifies with OpenSSL's public key file.
#[test]
fn farm_signs_with_keys_openssl_made() {
    if !farm_testkit::require_tool("openssl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).display().to_string();
    let make: [(&str, &[&str]); 3] = [
        (
            "ec-pkcs8",
            &[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
            ],
        ),
        (
            "ec-sec1",
            &["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out"],
        ),
        ("ed25519", &["genpkey", "-algorithm", "ed25519", "-out"]),
    ];
    for (name, generate) in make {
        let key_path = p(&format!("{name}.key"));
        let args = [generate, &[key_path.as_str()]].concat();
        assert!(openssl(&args).status.success(), "openssl {args:?}");
        let pub_path = p(&format!("{name}.pub"));
        let out = openssl(&["pkey", "-in", &key_path, "-pubout", "-out", &pub_path]);
        assert!(out.status.success());
        let key = PrivateKey::read(Path::new(&key_path), None).unwrap_or_else(|e| panic!("{name}: {e}"));
        let public = PublicKey::read(Path::new(&pub_path)).unwrap();
        assert_eq!(key.public(), public, "{name}");
        let env = Envelope::sign(INTOTO_PAYLOAD_TYPE, b"{}", &key);
        assert_eq!(env.verify(&public).unwrap(), b"{}");
    }
}

/// A file that is not a key is refused with its name and what was expected.
#[test]
fn a_file_that_is_not_a_key_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.txt");
    std::fs::write(&path, "remember the milk\n").unwrap();
    let err = PrivateKey::read(&path, None).unwrap_err().to_string();
    assert!(
        err.starts_with(&path.display().to_string()) && err.contains("not a key") && err.contains("farm keygen"),
        "{err}"
    );
    let err = PublicKey::read(&path).unwrap_err().to_string();
    assert!(err.contains("not a key"), "{err}");
}
