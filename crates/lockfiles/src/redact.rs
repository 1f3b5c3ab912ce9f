//! Credentials in URLs never reach a message. Registry URLs may carry them
//! (`https://user:token@npm.example/`, a `[registries]` entry, a mirror, a
//! pre-signed `…?X-Amz-Signature=…` download), and farm prints URLs in every
//! error and log line about a download; so every URL that is shown goes
//! through [`redact_url`] (or [`RedactedUrl`], which error types hold
//! instead of a `String` so that neither `Display` nor `Debug` can leak).
//!
//! The rules, applied to the text as written (no re-serialisation, so the
//! rest of the URL reads exactly as the user typed it):
//!
//! - userinfo `user:password@` becomes `user:***@`; a userinfo without a
//!   password, or with an empty user or password, is one token
//!   (`ghp_…@github.com`, `TOKEN:@host`) and becomes `***@` — except under
//!   `ssh` schemes (`git+ssh://git@host/…`), where it is a login name;
//! - the value of a query or fragment parameter whose name looks like a
//!   credential (`token`, `access_token`, `X-Amz-Signature`, `sig`, `key`,
//!   `password`, …) becomes `***`;
//! - a string without `scheme://` is not a URL and is returned unchanged.

use std::borrow::Cow;
use std::fmt;

/// What replaces a secret.
pub const MASK: &str = "***";

/// Query parameter names (lowercase, percent-decoded) that are secrets
/// whole: Azure SAS `sig`, Google API `key`, and the short spellings.
const SECRET_PARAMS: [&str; 6] = ["sig", "key", "pwd", "pass", "jwt", "code"];

/// Fragments of parameter names that mark a secret: OAuth `access_token`,
/// GitLab `private_token`, S3 `X-Amz-Signature`/`X-Amz-Credential`/
/// `X-Amz-Security-Token`/`AWSAccessKeyId`, GCS `X-Goog-Signature`, …
const SECRET_PARAM_PARTS: [&str; 10] = [
    "token",
    "secret",
    "passw",
    "signature",
    "credential",
    "auth",
    "apikey",
    "api_key",
    "api-key",
    "accesskey",
];

/// `url` with its credentials masked (module docs). Idempotent.
pub fn redact_url(url: &str) -> String {
    let Some(parts) = UrlParts::split(url) else {
        return url.to_string();
    };
    let mut out = String::with_capacity(url.len());
    out.push_str(&url[..parts.authority_start]);
    if let Some(at) = parts.userinfo_end {
        let ssh = url[..parts.authority_start - 3].to_ascii_lowercase().ends_with("ssh");
        out.push_str(&mask_userinfo(&url[parts.authority_start..at], ssh));
        out.push_str(&url[at..parts.authority_end]);
    } else {
        out.push_str(&url[parts.authority_start..parts.authority_end]);
    }
    let rest = &url[parts.authority_end..];
    let (before_fragment, fragment) = match rest.find('#') {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    };
    match before_fragment.find('?') {
        Some(i) => {
            out.push_str(&before_fragment[..=i]);
            out.push_str(&mask_params(&before_fragment[i + 1..]));
        }
        None => out.push_str(before_fragment),
    }
    if let Some(fragment) = fragment {
        out.push('#');
        out.push_str(&mask_params(fragment));
    }
    out
}

/// `text` with every URL in it (`scheme://…` up to whitespace, a quote or a
/// closing parenthesis) passed through [`redact_url`]: for messages that
/// embed URLs, such as a transport error's or a tool's output.
pub fn redact_text(text: &str) -> Cow<'_, str> {
    if !text.contains("://") {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut search = 0;
    while let Some(found) = text[search..].find("://") {
        let sep = search + found;
        let start = text[..sep]
            .rfind(|c: char| !is_scheme_char(c))
            .map(|i| i + 1)
            .unwrap_or(0);
        let end = text[sep..]
            .find(|c: char| c.is_whitespace() || "\"'<>`)".contains(c))
            .map(|i| sep + i)
            .unwrap_or(text.len());
        if start < sep && start >= copied {
            out.push_str(&text[copied..start]);
            out.push_str(&redact_url(&text[start..end]));
            copied = end;
        }
        search = end.max(sep + 3);
    }
    out.push_str(&text[copied..]);
    Cow::Owned(out)
}

/// `url` without its userinfo, for comparing two URLs of one endpoint where
/// only one carries credentials. Unchanged when it has none or is no URL.
pub fn without_userinfo(url: &str) -> Cow<'_, str> {
    match UrlParts::split(url) {
        Some(UrlParts {
            authority_start,
            userinfo_end: Some(at),
            ..
        }) => Cow::Owned(format!("{}{}", &url[..authority_start], &url[at + 1..])),
        _ => Cow::Borrowed(url),
    }
}

/// A URL as it may be shown: redacted when made, so that printing it in any
/// form (`Display`, `Debug`, a serialised report) cannot leak credentials.
/// Error types hold this instead of a `String`; `url.into()` redacts.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RedactedUrl(String);

impl RedactedUrl {
    pub fn new(url: &str) -> Self {
        RedactedUrl(redact_url(url))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RedactedUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RedactedUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl From<&str> for RedactedUrl {
    fn from(url: &str) -> Self {
        RedactedUrl::new(url)
    }
}

impl From<&String> for RedactedUrl {
    fn from(url: &String) -> Self {
        RedactedUrl::new(url)
    }
}

impl From<String> for RedactedUrl {
    fn from(url: String) -> Self {
        RedactedUrl::new(&url)
    }
}

impl From<&url::Url> for RedactedUrl {
    fn from(url: &url::Url) -> Self {
        RedactedUrl::new(url.as_str())
    }
}

/// Byte offsets into a `scheme://authority…` string.
struct UrlParts {
    /// Just after `://`.
    authority_start: usize,
    /// The `@` ending the userinfo, when there is one.
    userinfo_end: Option<usize>,
    /// The first `/`, `\`, `?` or `#` after the authority, or the end.
    authority_end: usize,
}

impl UrlParts {
    fn split(url: &str) -> Option<UrlParts> {
        let sep = url.find("://")?;
        let scheme = &url[..sep];
        if !scheme.starts_with(|c: char| c.is_ascii_alphabetic()) || !scheme.chars().all(is_scheme_char) {
            return None;
        }
        let authority_start = sep + 3;
        // A backslash ends the authority of http(s) URLs for WHATWG parsers
        // (and so for reqwest); ending it there too errs towards masking.
        let authority_end = url[authority_start..]
            .find(['/', '\\', '?', '#'])
            .map_or(url.len(), |i| authority_start + i);
        // The last `@` separates the userinfo, as WHATWG parsers decide.
        let userinfo_end = url[authority_start..authority_end]
            .rfind('@')
            .map(|i| authority_start + i);
        Some(UrlParts {
            authority_start,
            userinfo_end,
            authority_end,
        })
    }
}

fn is_scheme_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')
}

/// `ssh`: ssh never authenticates with the URL, so a lone user is a login
/// name (`git`), not a token.
fn mask_userinfo(userinfo: &str, ssh: bool) -> String {
    match userinfo.split_once(':') {
        // The user part alone is a name worth showing ("which login failed").
        Some((user, password)) if !user.is_empty() && !password.is_empty() && user != MASK => {
            format!("{user}:{MASK}")
        }
        None if ssh => userinfo.to_string(),
        _ if userinfo.is_empty() => String::new(),
        _ => MASK.to_string(),
    }
}

fn mask_params(params: &str) -> String {
    params
        .split('&')
        .map(|param| match param.split_once('=') {
            Some((name, value)) if !value.is_empty() && is_secret_param(name) => format!("{name}={MASK}"),
            _ => param.to_string(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

fn is_secret_param(name: &str) -> bool {
    let name = percent_decode_lossy(name).to_ascii_lowercase();
    SECRET_PARAMS.contains(&name.as_str()) || SECRET_PARAM_PARTS.iter().any(|part| name.contains(part))
}

fn percent_decode_lossy(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_keeps_the_user_and_masks_the_password() {
        assert_eq!(
            redact_url("http://alice:s3cret@registry.example.invalid:5000/v2/"),
            "http://alice:***@registry.example.invalid:5000/v2/"
        );
        // Without a password the one part may be the token itself.
        assert_eq!(
            redact_url("https://ghp_abcdef123456@github.example.invalid/o/r.tgz"),
            "https://***@github.example.invalid/o/r.tgz"
        );
        assert_eq!(
            redact_url("https://TOKEN:@npm.example.invalid/"),
            "https://***@npm.example.invalid/"
        );
        assert_eq!(
            redact_url("https://:TOKEN@npm.example.invalid/"),
            "https://***@npm.example.invalid/"
        );
        // ssh URLs name a login, never a secret; a password there is still masked.
        assert_eq!(
            redact_url("git+ssh://git@git.example.invalid/x.git#abc"),
            "git+ssh://git@git.example.invalid/x.git#abc"
        );
        assert_eq!(
            redact_url("ssh://git:pw@git.example.invalid/x"),
            "ssh://git:***@git.example.invalid/x"
        );
        // Idempotent: redacting a redacted URL changes nothing.
        let once = redact_url("https://bob:pw@h.example.invalid/x?token=abc");
        assert_eq!(redact_url(&once), once);
        assert_eq!(
            redact_url("https://***@h.example.invalid/"),
            "https://***@h.example.invalid/"
        );
    }

    #[test]
    fn percent_encoded_and_odd_userinfo_is_masked_whole() {
        // An encoded `@` or `:` inside the password, and raw `@`s before the last one.
        assert_eq!(
            redact_url("https://us%40er:p%40ss%3Aword@h.example.invalid/p"),
            "https://us%40er:***@h.example.invalid/p"
        );
        assert_eq!(
            redact_url("https://user:p@ss@word@h.example.invalid/p"),
            "https://user:***@h.example.invalid/p"
        );
        // An encoded colon is no separator: the whole userinfo is one secret.
        assert_eq!(
            redact_url("https://user%3Apassword@h.example.invalid/"),
            "https://***@h.example.invalid/"
        );
        // `@` after the authority (scoped npm packages) is path, not userinfo.
        assert_eq!(
            redact_url("https://npm.example.invalid/@types/node/-/node-22.0.0.tgz"),
            "https://npm.example.invalid/@types/node/-/node-22.0.0.tgz"
        );
        assert_eq!(
            redact_url("http://u:pw@h.example.invalid\\@evil.example.invalid/"),
            "http://u:***@h.example.invalid\\@evil.example.invalid/"
        );
        let secret = redact_url("HTTPS://Admin:Hunter2@Registry.Example.Invalid");
        assert!(!secret.contains("Hunter2"), "{secret}");
    }

    #[test]
    fn secret_query_and_fragment_values_are_masked() {
        assert_eq!(
            redact_url("https://files.example.invalid/ollama.tgz?token=abc&v=1"),
            "https://files.example.invalid/ollama.tgz?token=***&v=1"
        );
        assert_eq!(
            redact_url(
                "https://b.s3.example.invalid/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIA%2F20240101&\
                 X-Amz-Signature=deadbeef&X-Amz-Security-Token=FQo"
            ),
            "https://b.s3.example.invalid/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=***&\
             X-Amz-Signature=***&X-Amz-Security-Token=***"
        );
        assert_eq!(
            redact_url("https://h.example.invalid/p?access_token=a&private_token=b&sig=c&key=d&api-key=e&AWSAccessKeyId=f"),
            "https://h.example.invalid/p?access_token=***&private_token=***&sig=***&key=***&api-key=***&AWSAccessKeyId=***"
        );
        // Percent-encoded parameter names are recognised too.
        assert_eq!(
            redact_url("https://h.example.invalid/p?access%5Ftoken=a"),
            "https://h.example.invalid/p?access%5Ftoken=***"
        );
        // OAuth implicit-flow style fragments; a wheel's `#sha256=` stays.
        assert_eq!(
            redact_url("https://h.example.invalid/cb#access_token=xyz&state=1"),
            "https://h.example.invalid/cb#access_token=***&state=1"
        );
        assert_eq!(
            redact_url("https://files.example.invalid/pip-24.2-py3-none-any.whl#sha256=00ff"),
            "https://files.example.invalid/pip-24.2-py3-none-any.whl#sha256=00ff"
        );
        // Harmless parameters, empty values and flags are left alone.
        assert_eq!(
            redact_url("https://h.example.invalid/v2/r/blobs/uploads/?mount=sha256:00&from=lib/x&token="),
            "https://h.example.invalid/v2/r/blobs/uploads/?mount=sha256:00&from=lib/x&token="
        );
        assert_eq!(
            redact_url("https://alice:pw@h.example.invalid?token=t"),
            "https://alice:***@h.example.invalid?token=***"
        );
    }

    #[test]
    fn strings_that_are_not_urls_are_left_alone() {
        for s in [
            "",
            "not a url",
            "alice@example.invalid",
            "registry.example.invalid:5000/library/mongo:7",
            "mongo@sha256:0123",
            "/srv/ollama.tgz?token=abc",
            "1://x:y@z",
        ] {
            assert_eq!(redact_url(s), s);
        }
        // Lock URLs carry no credentials and keep their exact form.
        for s in [
            "mirror://npm/@types/node/-/node-22.0.0.tgz",
            "pypi://pip/pip-24.2-py3-none-any.whl",
            "file:///srv/x.tgz",
            "http://127.0.0.1:4873/react/-/react-19.0.0.tgz",
        ] {
            assert_eq!(redact_url(s), s);
        }
    }

    #[test]
    fn urls_inside_text_are_redacted_and_the_rest_kept() {
        let text = "error sending request for url (https://bob:hunter2@h.example.invalid/x?token=t1): \
                    connection refused; see https://docs.example.invalid/help";
        assert_eq!(
            redact_text(text),
            "error sending request for url (https://bob:***@h.example.invalid/x?token=***): \
             connection refused; see https://docs.example.invalid/help"
        );
        assert_eq!(
            redact_text("Looking in indexes: \"http://u:p@pi.example.invalid/simple\"\nERROR"),
            "Looking in indexes: \"http://u:***@pi.example.invalid/simple\"\nERROR"
        );
        assert!(matches!(redact_text("no urls here: a:b@c"), Cow::Borrowed(_)));
        assert_eq!(redact_text("odd ://x and ://"), "odd ://x and ://");
    }

    #[test]
    fn redacted_url_redacts_on_construction_so_debug_is_safe_too() {
        let u: RedactedUrl = "https://bob:hunter2@h.example.invalid/?token=abc".into();
        assert_eq!(u.to_string(), "https://bob:***@h.example.invalid/?token=***");
        let debug = format!("{u:?}");
        assert!(!debug.contains("hunter2") && !debug.contains("abc"), "{debug}");
        let parsed = url::Url::parse("https://bob:hunter2@h.example.invalid/v2/").unwrap();
        assert_eq!(
            RedactedUrl::from(&parsed).as_str(),
            "https://bob:***@h.example.invalid/v2/"
        );
    }

    #[test]
    fn userinfo_can_be_dropped_for_comparisons() {
        assert_eq!(
            without_userinfo("https://u:p@npm.example.invalid/npm/"),
            "https://npm.example.invalid/npm/"
        );
        assert_eq!(
            without_userinfo("https://npm.example.invalid/@a/b"),
            "https://npm.example.invalid/@a/b"
        );
        assert_eq!(without_userinfo("not a url"), "not a url");
    }
}
