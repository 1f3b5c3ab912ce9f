//! Portable artifact URLs in farm.lock, in the spirit of Nix's `mirror://`.
//!
//! A lock written on one machine must fetch on another whose npm registry,
//! Debian mirror or Python index is a different host. So URLs under the
//! configured npm registry or Debian mirror are written as
//! `mirror://npm/<rest>` / `mirror://debian/<rest>`, wheels from the index as
//! `pypi://<project>/<filename>`, and each fetching machine maps them back
//! onto its own endpoints. Any other URL (an Ollama release on a file
//! server, a `file://` path) is locked as written.

use std::fmt;

use crate::http::Client;
use crate::pypi::{self, PypiError, PYPI_SCHEME};
use crate::redact::{redact_url, without_userinfo, RedactedUrl};

pub const MIRROR_SCHEME: &str = "mirror://";

/// The endpoints of one machine, as its npm/pip/apt configuration (or
/// farm.toml) names them. `None` means that ecosystem is not configured.
/// An endpoint may carry credentials (`https://user:token@host/`); `Debug`
/// shows them redacted.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Mirrors {
    /// npm registry base, e.g. `https://npm.example.invalid/`.
    pub npm: Option<String>,
    /// Debian archive root (the directory holding `dists/` and `pool/`).
    pub debian: Option<String>,
    /// Python simple-API index, e.g. `https://pi.example.invalid/simple`.
    pub pypi_index: Option<String>,
}

impl fmt::Debug for Mirrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = |u: &Option<String>| u.as_deref().map(redact_url);
        f.debug_struct("Mirrors")
            .field("npm", &shown(&self.npm))
            .field("debian", &shown(&self.debian))
            .field("pypi_index", &shown(&self.pypi_index))
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    #[error(
        "{url}: the lock names the `{registry}` mirror, but no {what} is configured on this machine; hint: {hint}"
    )]
    Unconfigured {
        url: RedactedUrl,
        registry: String,
        what: &'static str,
        hint: &'static str,
    },
    #[error("{url}: unknown mirror `{registry}`; farm.lock knows mirror://npm/ and mirror://debian/ (hint: was the lock written by a newer farm?)")]
    UnknownMirror { url: RedactedUrl, registry: String },
    #[error("{url}: a mirror:// URL needs a path after the mirror name, e.g. mirror://npm/react/-/react-19.0.0.tgz")]
    Malformed { url: RedactedUrl },
    #[error(transparent)]
    Pypi(#[from] PypiError),
}

/// One mirror kind: its name in `mirror://<name>/` and how to configure it.
struct Kind {
    name: &'static str,
    what: &'static str,
    hint: &'static str,
}

const NPM: Kind = Kind {
    name: "npm",
    what: "npm registry",
    hint: "set one with `npm config set registry <url>` or in farm.toml's registry settings",
};
const DEBIAN: Kind = Kind {
    name: "debian",
    what: "Debian mirror",
    hint: "add an apt source (/etc/apt/sources.list.d/*.sources `URIs:`) or set the Debian mirror in farm.toml",
};
const PYPI: Kind = Kind {
    name: "pypi",
    what: "Python package index",
    hint: "set one with `pip config set global.index-url <url>`, PIP_INDEX_URL, or in farm.toml",
};

/// `base` with exactly one trailing slash, so prefixes match whole path segments.
fn with_slash(base: &str) -> String {
    format!("{}/", base.trim_end_matches('/'))
}

impl Mirrors {
    /// The lock form of `url`: `mirror://<kind>/<rest>` when it lies under a
    /// configured npm registry or Debian mirror, otherwise `url` unchanged.
    /// Credentials in either URL are ignored when comparing, so a registry
    /// configured as `https://user:token@host/` still matches the tarball
    /// URLs it serves, and its token never reaches farm.lock.
    pub fn relativize(&self, url: &str) -> String {
        let bare = without_userinfo(url);
        for (kind, base) in [(&NPM, &self.npm), (&DEBIAN, &self.debian)] {
            let Some(base) = base.as_deref().filter(|b| !b.is_empty()) else {
                continue;
            };
            if let Some(rest) = bare.strip_prefix(&with_slash(&without_userinfo(base))) {
                if !rest.is_empty() {
                    return format!("{MIRROR_SCHEME}{}/{rest}", kind.name);
                }
            }
        }
        url.to_string()
    }

    /// The URL to download a lock URL from on this machine: the inverse of
    /// [`Mirrors::relativize`], plus `pypi://` wheels looked up in the index.
    pub async fn resolve(&self, client: &Client, url: &str) -> Result<String, MirrorError> {
        if url.starts_with(PYPI_SCHEME) {
            let (project, filename) = pypi::parse_lock_url(url)?;
            let index = self.configured(&PYPI, &self.pypi_index, url)?;
            return Ok(pypi::wheel_url(client, index, &project, &filename).await?);
        }
        let Some(rest) = url.strip_prefix(MIRROR_SCHEME) else {
            return Ok(url.to_string());
        };
        let (name, path) = rest
            .split_once('/')
            .ok_or_else(|| MirrorError::Malformed { url: url.into() })?;
        if path.is_empty() {
            return Err(MirrorError::Malformed { url: url.into() });
        }
        let (kind, base) = match name {
            "npm" => (&NPM, &self.npm),
            "debian" => (&DEBIAN, &self.debian),
            _ => {
                return Err(MirrorError::UnknownMirror {
                    url: url.into(),
                    registry: name.into(),
                })
            }
        };
        let base = self.configured(kind, base, url)?;
        Ok(format!("{}{path}", with_slash(base)))
    }

    fn configured<'a>(&self, kind: &Kind, base: &'a Option<String>, url: &str) -> Result<&'a str, MirrorError> {
        base.as_deref()
            .filter(|b| !b.is_empty())
            .ok_or(MirrorError::Unconfigured {
                url: url.into(),
                registry: kind.name.into(),
                what: kind.what,
                hint: kind.hint,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::ClientOptions;

    fn mirrors() -> Mirrors {
        Mirrors {
            npm: Some("https://npm.example.invalid/repository/npm/".into()),
            debian: Some("http://deb.example.invalid/debian".into()),
            pypi_index: None,
        }
    }

    #[test]
    fn urls_under_a_mirror_become_mirror_urls_and_others_stay() {
        let m = mirrors();
        assert_eq!(
            m.relativize("https://npm.example.invalid/repository/npm/@types/node/-/node-22.0.0.tgz"),
            "mirror://npm/@types/node/-/node-22.0.0.tgz"
        );
        assert_eq!(
            m.relativize("http://deb.example.invalid/debian/pool/main/g/glibc/libc6_2.36-9_amd64.deb"),
            "mirror://debian/pool/main/g/glibc/libc6_2.36-9_amd64.deb"
        );
        // Same host, but not under the configured path: a prefix must end at a segment.
        assert_eq!(
            m.relativize("http://deb.example.invalid/debian-security/pool/x.deb"),
            "http://deb.example.invalid/debian-security/pool/x.deb"
        );
        assert_eq!(m.relativize("file:///srv/ollama.tgz"), "file:///srv/ollama.tgz");
        assert_eq!(
            m.relativize("pypi://pip/pip-24.2-py3-none-any.whl"),
            "pypi://pip/pip-24.2-py3-none-any.whl"
        );
        assert_eq!(
            Mirrors::default().relativize("https://npm.example.invalid/x"),
            "https://npm.example.invalid/x"
        );
    }

    #[tokio::test]
    async fn registry_credentials_never_reach_the_lock_or_messages() {
        let m = Mirrors {
            npm: Some("https://ci:npm-secret@npm.example.invalid/npm/".into()),
            debian: Some("http://deb.example.invalid/debian".into()),
            pypi_index: Some("https://__token__:pypi-secret@pi.example.invalid/simple".into()),
        };
        // The registry serves tarball URLs without the credentials it was reached with.
        let lock_url = m.relativize("https://npm.example.invalid/npm/react/-/react-19.0.0.tgz");
        assert_eq!(lock_url, "mirror://npm/react/-/react-19.0.0.tgz");
        assert_eq!(
            m.relativize("https://ci:npm-secret@npm.example.invalid/npm/react/-/react-19.0.0.tgz"),
            lock_url
        );
        // Fetching maps it back onto the endpoint, credentials included.
        let client = Client::new(ClientOptions::default());
        assert_eq!(
            m.resolve(&client, &lock_url).await.unwrap(),
            "https://ci:npm-secret@npm.example.invalid/npm/react/-/react-19.0.0.tgz"
        );
        let debug = format!("{m:?}");
        assert!(
            !debug.contains("npm-secret") && !debug.contains("pypi-secret") && debug.contains("ci:***@"),
            "{debug}"
        );
        let err = Mirrors::default()
            .resolve(&client, "mirror://cran/x?token=abc")
            .await
            .unwrap_err();
        assert!(
            !err.to_string().contains("abc") && !format!("{err:?}").contains("abc"),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn mirror_urls_resolve_onto_this_machines_mirrors() {
        let client = Client::new(ClientOptions::default());
        let written = mirrors();
        let lock_url = written.relativize("https://npm.example.invalid/repository/npm/react/-/react-19.0.0.tgz");
        // Another machine with another registry (and no trailing slash) fetches from its own.
        let other = Mirrors {
            npm: Some("http://127.0.0.1:4873".into()),
            ..Default::default()
        };
        assert_eq!(
            other.resolve(&client, &lock_url).await.unwrap(),
            "http://127.0.0.1:4873/react/-/react-19.0.0.tgz"
        );
        let deb = written.relativize("http://deb.example.invalid/debian/pool/main/z/zlib/zlib1g.deb");
        assert_eq!(
            written.resolve(&client, &deb).await.unwrap(),
            "http://deb.example.invalid/debian/pool/main/z/zlib/zlib1g.deb"
        );
        assert_eq!(
            written.resolve(&client, "file:///srv/x.tgz").await.unwrap(),
            "file:///srv/x.tgz"
        );
    }

    #[tokio::test]
    async fn unconfigured_or_unknown_mirrors_are_errors_that_say_how_to_configure() {
        let client = Client::new(ClientOptions::default());
        let none = Mirrors::default();
        let err = none
            .resolve(&client, "mirror://debian/pool/main/x.deb")
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`debian`") && err.contains("Debian mirror") && err.contains("sources.list.d"),
            "{err}"
        );
        let err = none
            .resolve(&client, "mirror://npm/react/-/react-19.0.0.tgz")
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`npm`") && err.contains("npm config set registry"),
            "{err}"
        );
        let err = none
            .resolve(&client, "pypi://pip/pip-24.2-py3-none-any.whl")
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("`pypi`") && err.contains("index-url"), "{err}");
        let err = mirrors()
            .resolve(&client, "mirror://cran/src/x.tgz")
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown mirror `cran`"), "{err}");
        assert!(matches!(
            mirrors().resolve(&client, "mirror://npm").await,
            Err(MirrorError::Malformed { .. })
        ));
    }

    #[tokio::test]
    async fn pypi_urls_are_looked_up_in_the_configured_index() {
        let page = r#"{"files":[{"filename":"pip-24.2-py3-none-any.whl","url":"/files/pip-24.2-py3-none-any.whl#sha256=00","hashes":{"sha256":"00"}}]}"#;
        let server =
            crate::pypi::test_index::serve(vec![("/simple/pip/", "application/vnd.pypi.simple.v1+json", page)]).await;
        let m = Mirrors {
            pypi_index: Some(format!("{}/simple", server.base)),
            ..Default::default()
        };
        let client = Client::new(ClientOptions::default());
        let url = m
            .resolve(&client, "pypi://pip/pip-24.2-py3-none-any.whl")
            .await
            .unwrap();
        assert_eq!(url, format!("{}/files/pip-24.2-py3-none-any.whl", server.base));
        let err = m
            .resolve(&client, "pypi://pip/pip-99.0-py3-none-any.whl")
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("pip-99.0-py3-none-any.whl is not in the index"), "{err}");
    }
}
