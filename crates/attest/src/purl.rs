//! Package URLs (the purl specification) for every kind of artifact a lock
//! names. Each component is percent-encoded except for the unreserved
//! characters `A-Z a-z 0-9 . - _ ~`; qualifier values also keep `/` and `:`
//! readable (`repository_url=host/library/mongo`, as the spec's examples).
//! Qualifier keys are sorted, as the spec requires.

use std::collections::BTreeMap;

/// Percent-encodes `s`, keeping the unreserved characters and `keep`.
pub fn encode(s: &str, keep: &[u8]) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || b".-_~".contains(&b) || keep.contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `pkg:TYPE/NAMESPACE/NAME@VERSION?QUALIFIERS`, each part encoded.
pub fn build(
    ty: &str,
    namespace: &[&str],
    name: &str,
    version: Option<&str>,
    qualifiers: &BTreeMap<&str, String>,
) -> String {
    let mut out = format!("pkg:{ty}/");
    for segment in namespace.iter().filter(|s| !s.is_empty()) {
        out.push_str(&encode(segment, b""));
        out.push('/');
    }
    out.push_str(&encode(name, b""));
    if let Some(v) = version {
        out.push('@');
        out.push_str(&encode(v, b""));
    }
    let qs: Vec<String> = qualifiers
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k}={}", encode(v, b"/:")))
        .collect();
    if !qs.is_empty() {
        out.push('?');
        out.push_str(&qs.join("&"));
    }
    out
}

/// A Debian binary package: `pkg:deb/debian/NAME@VERSION?arch=ARCH&distro=debian-SUITE`.
pub fn deb(name: &str, version: &str, arch: &str, suite: &str) -> String {
    let q = BTreeMap::from([("arch", arch.to_string()), ("distro", format!("debian-{suite}"))]);
    build("deb", &["debian"], name, Some(version), &q)
}

/// An npm package; a scoped name `@scope/name` becomes the namespace `%40scope`.
pub fn npm(name: &str, version: &str) -> String {
    match name.split_once('/') {
        Some((scope, bare)) if scope.starts_with('@') => build("npm", &[scope], bare, Some(version), &BTreeMap::new()),
        _ => build("npm", &[], name, Some(version), &BTreeMap::new()),
    }
}

/// A PyPI distribution, its name normalised as PEP 503 says (lowercase,
/// runs of `-_.` as one `-`), which is what the purl spec asks for.
pub fn pypi(name: &str, version: &str) -> String {
    build("pypi", &[], &pep503(name), Some(version), &BTreeMap::new())
}

/// PEP 503's normalised project name.
pub fn pep503(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut sep = false;
    for c in name.chars() {
        if "-_.".contains(c) {
            sep = true;
            continue;
        }
        if sep && !out.is_empty() {
            out.push('-');
        }
        sep = false;
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// Something with no package ecosystem of its own (the Node runtime, Ollama).
pub fn generic(name: &str, version: &str) -> String {
    build("generic", &[], name, Some(version), &BTreeMap::new())
}

/// An OCI artifact by manifest digest (`sha256:<hex>`): the name is the
/// repository's last path segment, lowercased; `repository_url` the
/// registry host and repository path (never credentials).
pub fn oci(repository: &str, digest: &str, registry: Option<&str>, tag: Option<&str>) -> String {
    let name = repository.rsplit('/').next().unwrap_or(repository).to_ascii_lowercase();
    let mut q = BTreeMap::new();
    if let Some(reg) = registry.map(registry_host).filter(|r| !r.is_empty()) {
        q.insert("repository_url", format!("{reg}/{repository}"));
    }
    if let Some(t) = tag {
        q.insert("tag", t.to_string());
    }
    build("oci", &[], &name, Some(digest), &q)
}

/// `host[:port][/path]` of a registry given as a URL or a bare host: no
/// scheme, no credentials, no trailing slash.
pub fn registry_host(registry: &str) -> String {
    let no_scheme = registry.split_once("://").map_or(registry, |(_, rest)| rest);
    let no_user = match no_scheme.split_once('/') {
        Some((auth, path)) => format!("{}/{path}", auth.rsplit('@').next().unwrap_or(auth)),
        None => no_scheme.rsplit('@').next().unwrap_or(no_scheme).to_string(),
    };
    no_user.trim_end_matches('/').to_string()
}

/// An image reference `[registry/]repository[:tag][@digest]` split into
/// (registry, repository, tag). The first path segment is a registry when
/// it has a `.` or `:` or is `localhost`, as Docker decides.
pub fn split_reference(reference: &str) -> (Option<String>, String, Option<String>) {
    let no_digest = reference.split('@').next().unwrap_or(reference);
    let (path, tag) = match no_digest.rsplit_once(':') {
        Some((p, t)) if !t.contains('/') => (p, Some(t.to_string())),
        _ => (no_digest, None),
    };
    match path.split_once('/') {
        Some((first, rest)) if first.contains('.') || first.contains(':') || first == "localhost" => {
            (Some(registry_host(first)), rest.to_string(), tag)
        }
        _ => (None, path.to_string(), tag),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_ecosystem_as_the_purl_spec_writes_it() {
        assert_eq!(
            deb("libc6", "2.36-9+deb12u9", "amd64", "bookworm"),
            "pkg:deb/debian/libc6@2.36-9%2Bdeb12u9?arch=amd64&distro=debian-bookworm"
        );
        assert_eq!(
            deb("tzdata", "1:2024a-0~x", "all", "bookworm"),
            "pkg:deb/debian/tzdata@1%3A2024a-0~x?arch=all&distro=debian-bookworm"
        );
        assert_eq!(
            npm("@vitejs/plugin-react", "4.3.4"),
            "pkg:npm/%40vitejs/plugin-react@4.3.4"
        );
        assert_eq!(npm("react", "18.3.1"), "pkg:npm/react@18.3.1");
        assert_eq!(pypi("Annotated_Types", "0.7.0"), "pkg:pypi/annotated-types@0.7.0");
        assert_eq!(pypi("zope.interface", "7.2"), "pkg:pypi/zope-interface@7.2");
        assert_eq!(generic("node", "22.19.0"), "pkg:generic/node@22.19.0");
        assert_eq!(
            oci(
                "library/mongo",
                "sha256:abcd",
                Some("https://user:pw@registry.example:5000/"),
                Some("7.0")
            ),
            "pkg:oci/mongo@sha256%3Aabcd?repository_url=registry.example:5000/library/mongo&tag=7.0"
        );
    }

    #[test]
    fn references_split_like_docker() {
        assert_eq!(
            split_reference("registry.example/library/mongo:7.0"),
            (
                Some("registry.example".into()),
                "library/mongo".into(),
                Some("7.0".into())
            )
        );
        assert_eq!(split_reference("mongo"), (None, "mongo".into(), None));
        assert_eq!(
            split_reference("localhost:5000/a/b@sha256:00"),
            (Some("localhost:5000".into()), "a/b".into(), None)
        );
    }
}
