//! A throwaway certificate authority for TLS tests, made with the
//! `openssl` command: a CA, a server certificate for 127.0.0.1/localhost
//! and a client certificate for mutual TLS, all PEM, in a temp dir.
//! Callers check `require_tool("openssl")` first.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The files of one test PKI.
pub struct Pki {
    dir: tempfile::TempDir,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs (scripts/install-deps installs it)");
    assert!(
        out.status.success(),
        "openssl {}:\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Pki {
    /// A CA named `name` with a server and a client certificate it signed.
    pub fn generate(name: &str) -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
        let ca_subj = format!("/CN={name}");
        let mut ca = vec!["req", "-x509"];
        ca.extend(key);
        ca.extend(["-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", &ca_subj]);
        ca.extend([
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign",
        ]);
        openssl(d, &ca);
        for (who, ext) in [
            (
                "server",
                "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
            ),
            ("client", "extendedKeyUsage=clientAuth\n"),
        ] {
            fs::write(d.join(format!("{who}.ext")), ext).unwrap();
            let subj = format!("/CN=farm-test-{who}");
            let (k, csr, pem, extf) = (
                format!("{who}.key"),
                format!("{who}.csr"),
                format!("{who}.pem"),
                format!("{who}.ext"),
            );
            let mut req = vec!["req"];
            req.extend(key);
            req.extend(["-keyout", &k, "-out", &csr, "-subj", &subj]);
            openssl(d, &req);
            openssl(
                d,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &csr,
                    "-CA",
                    "ca.pem",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-out",
                    &pem,
                    "-days",
                    "2",
                    "-extfile",
                    &extf,
                ],
            );
        }
        Pki { dir }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The CA certificate (what clients trust, and what the server checks clients against).
    pub fn ca_cert(&self) -> PathBuf {
        self.file("ca.pem")
    }
    pub fn server_cert(&self) -> PathBuf {
        self.file("server.pem")
    }
    pub fn server_key(&self) -> PathBuf {
        self.file("server.key")
    }
    pub fn client_cert(&self) -> PathBuf {
        self.file("client.pem")
    }
    pub fn client_key(&self) -> PathBuf {
        self.file("client.key")
    }
}
