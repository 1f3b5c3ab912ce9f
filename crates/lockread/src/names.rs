//! What a lockfile may name: package names, versions, install paths and
//! URLs are checked before they become paths on disk or downloads, so a
//! hostile lockfile cannot write outside `node_modules` or smuggle a secret
//! into farm.lock.

use farm_lockfiles::redact::redact_url;

/// npm's rules for a package name (validate-npm-package-name), accepting the
/// legacy upper-case names still published (`JSONStream`): `name` or
/// `@scope/name`, each part of `A-Z a-z 0-9 - . _ ~`, not starting with `.`
/// or `_`, at most 214 characters.
pub fn is_npm_name(name: &str) -> bool {
    if name.is_empty() || name.len() > 214 {
        return false;
    }
    let part_ok = |p: &str| {
        !p.is_empty()
            && !p.starts_with('.')
            && !p.starts_with('_')
            && p != "node_modules"
            && p.chars().all(|c| c.is_ascii_alphanumeric() || "-._~".contains(c))
    };
    match name.strip_prefix('@') {
        Some(rest) => match rest.split_once('/') {
            Some((scope, pkg)) => part_ok(scope) && part_ok(pkg),
            None => false,
        },
        None => part_ok(name),
    }
}

/// A version as registries publish them (semver with pre-release and
/// build parts); it becomes part of a URL and a store name.
pub fn is_version(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 256
        && v.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && v.chars().all(|c| c.is_ascii_alphanumeric() || "-.+_".contains(c))
}

/// One path component that stays where it is put.
fn component_ok(c: &str) -> bool {
    !c.is_empty() && c != "." && c != ".." && !c.contains(['\\', '\0'])
}

/// A relative `/`-separated path that names a place inside the root:
/// no empty, `.` or `..` components, not absolute, no backslashes.
/// The empty string is the root itself.
pub fn is_inside_relative(path: &str) -> bool {
    path.is_empty() || (!path.starts_with('/') && path.split('/').all(component_ok))
}

/// `base` joined with `rel` (which may use `.` and `..`), normalised;
/// `None` when the result is absolute or leaves the root.
pub fn join_inside(base: &str, rel: &str) -> Option<String> {
    if rel.starts_with('/') || rel.contains(['\\', '\0']) || !is_inside_relative(base) {
        return None;
    }
    let mut parts: Vec<&str> = base.split('/').filter(|p| !p.is_empty()).collect();
    for c in rel.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            c => parts.push(c),
        }
    }
    Some(parts.join("/"))
}

/// Checks an install path (`[<member dir>/]node_modules/<name>[/node_modules/<name>…]`)
/// and returns the innermost package name.
pub fn install_path_name(path: &str) -> Result<&str, String> {
    if !is_inside_relative(path) || path.is_empty() {
        return Err("is not a relative path inside the project (absolute, empty, `.` or `..` parts)".into());
    }
    let comps: Vec<&str> = path.split('/').collect();
    let Some(first) = comps.iter().position(|c| *c == "node_modules") else {
        return Err("has no `node_modules/` part".into());
    };
    // Byte offset where each component starts.
    let mut offsets = Vec::with_capacity(comps.len());
    let mut pos = 0;
    for c in &comps {
        offsets.push(pos);
        pos += c.len() + 1;
    }
    let mut i = first;
    let (mut start, mut end) = (0, 0);
    while i < comps.len() {
        if comps[i] != "node_modules" {
            return Err(format!(
                "expected `node_modules` at part {}, found `{}`",
                i + 1,
                comps[i]
            ));
        }
        let len = if comps.get(i + 1).is_some_and(|c| c.starts_with('@')) {
            2
        } else {
            1
        };
        if i + len >= comps.len() {
            return Err("ends without a package name after `node_modules/`".into());
        }
        start = offsets[i + 1];
        end = offsets[i + len] + comps[i + len].len();
        let name = &path[start..end];
        if !is_npm_name(name) {
            return Err(format!("`{name}` is not a valid npm package name"));
        }
        i += len + 1;
    }
    Ok(&path[start..end])
}

/// PEP 508 project names: ASCII letters and digits, with `-_.` inside.
pub fn is_python_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 200
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(c))
}

/// A download URL farm may lock: `http(s)://` with a host, no credentials
/// (userinfo or a token parameter). The message is about the redacted form.
pub fn check_download_url(url: &str) -> Result<(), String> {
    let shown = redact_url(url);
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| format!("`{shown}` is not an http(s) URL"))?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err(format!("`{shown}` has no host"));
    }
    if shown != url {
        return Err(format!(
            "`{shown}` carries credentials; hint: remove them from the lockfile and configure the registry's credentials on the machine instead"
        ));
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("`{shown}` contains whitespace or control characters"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npm_names() {
        for ok in ["react", "@vitejs/plugin-react", "JSONStream", "lodash.merge", "a~b"] {
            assert!(is_npm_name(ok), "{ok}");
        }
        for bad in [
            "",
            "..",
            ".bin",
            "_x",
            "@scope",
            "@/x",
            "a/b",
            "a b",
            "node_modules",
            "@s/../x",
        ] {
            assert!(!is_npm_name(bad), "{bad}");
        }
    }

    #[test]
    fn install_paths() {
        assert_eq!(install_path_name("node_modules/a").unwrap(), "a");
        assert_eq!(install_path_name("node_modules/@s/a/node_modules/b").unwrap(), "b");
        assert_eq!(install_path_name("web/node_modules/@s/b").unwrap(), "@s/b");
        for bad in [
            "node_modules/../x",
            "/node_modules/x",
            "node_modules/",
            "node_modules/@s",
            "node_modules/a/b",
            "x",
            "node_modules/a/node_modules",
        ] {
            assert!(install_path_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn joins_stay_inside() {
        assert_eq!(join_inside("packages/web", "../ui").as_deref(), Some("packages/ui"));
        assert_eq!(join_inside("", "./frontend").as_deref(), Some("frontend"));
        assert_eq!(join_inside("web", "../../x"), None);
        assert_eq!(join_inside("", "/etc"), None);
    }
}
