//! PEP 508 environment markers, with PEP 751's `extras` and
//! `dependency_groups` sets, evaluated as `packaging` does: a comparison is
//! a PEP 440 version comparison when `<op><right>` is a valid specifier and
//! the left side a valid version, and a string comparison otherwise.
//!
//! Written here rather than taken from `pep508_rs` because that crate (0.9)
//! cannot parse the PEP 751 forms (`'dev' in dependency_groups`) that
//! pylock.toml files carry; PEP 440 itself comes from `pep440_rs`.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use farm_lockfiles::pypi::normalize_project;
use pep440_rs::{Version, VersionSpecifier};

/// The values of the PEP 508 environment variables for one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarkerEnv {
    pub python_version: String,
    pub python_full_version: String,
    pub os_name: String,
    pub sys_platform: String,
    pub platform_machine: String,
    pub platform_system: String,
    pub platform_python_implementation: String,
    pub implementation_name: String,
    pub implementation_version: String,
    pub platform_release: String,
    pub platform_version: String,
}

impl MarkerEnv {
    /// CPython `full_version` (`3.11.2`) on Linux x86_64.
    pub fn linux_cpython_x86_64(full_version: &str) -> MarkerEnv {
        let short: Vec<&str> = full_version.split('.').take(2).collect();
        MarkerEnv {
            python_version: short.join("."),
            python_full_version: full_version.into(),
            os_name: "posix".into(),
            sys_platform: "linux".into(),
            platform_machine: "x86_64".into(),
            platform_system: "Linux".into(),
            platform_python_implementation: "CPython".into(),
            implementation_name: "cpython".into(),
            implementation_version: full_version.into(),
            // Kernel details of the build machine are not part of the target.
            platform_release: String::new(),
            platform_version: String::new(),
        }
    }

    fn get(&self, var: &str) -> Option<&str> {
        Some(match var {
            "python_version" => &self.python_version,
            "python_full_version" => &self.python_full_version,
            "os_name" => &self.os_name,
            "sys_platform" => &self.sys_platform,
            "platform_machine" => &self.platform_machine,
            "platform_system" => &self.platform_system,
            "platform_python_implementation" => &self.platform_python_implementation,
            "implementation_name" => &self.implementation_name,
            "implementation_version" => &self.implementation_version,
            "platform_release" => &self.platform_release,
            "platform_version" => &self.platform_version,
            _ => return None,
        })
    }
}

/// What a marker is evaluated against.
pub struct MarkerContext<'a> {
    pub env: &'a MarkerEnv,
    /// Active extras (normalised): `extra == 'x'`, `'x' in extras`.
    pub extras: &'a BTreeSet<String>,
    /// Active dependency groups (normalised): `'g' in dependency_groups`.
    pub groups: &'a BTreeSet<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Lt,
    Le,
    Eq,
    Ne,
    Ge,
    Gt,
    Compatible,
    Arbitrary,
    In,
    NotIn,
}

impl Op {
    fn as_str(self) -> &'static str {
        match self {
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Eq => "==",
            Op::Ne => "!=",
            Op::Ge => ">=",
            Op::Gt => ">",
            Op::Compatible => "~=",
            Op::Arbitrary => "===",
            Op::In => "in",
            Op::NotIn => "not in",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Operand {
    Var(String),
    Str(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Expr {
    Or(Vec<Expr>),
    And(Vec<Expr>),
    Cmp(Operand, Op, Operand),
}

/// A parsed marker; `Display` gives back the text it was parsed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marker {
    text: String,
    expr: Expr,
}

impl fmt::Display for Marker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    LParen,
    RParen,
    Ident(String),
    Str(String),
    Op(Op),
}

const VARIABLES: [&str; 14] = [
    "python_version",
    "python_full_version",
    "os_name",
    "sys_platform",
    "platform_machine",
    "platform_system",
    "platform_python_implementation",
    "implementation_name",
    "implementation_version",
    "platform_release",
    "platform_version",
    "extra",
    "extras",
    "dependency_groups",
];

fn tokenize(s: &str) -> Result<Vec<Tok>, String> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b' ' | b'\t' | b'\n' | b'\r' => i += 1,
            b'(' => {
                out.push(Tok::LParen);
                i += 1;
            }
            b')' => {
                out.push(Tok::RParen);
                i += 1;
            }
            b'\'' | b'"' => {
                let end = s[i + 1..]
                    .find(c as char)
                    .ok_or_else(|| format!("unterminated string at column {}", i + 1))?;
                out.push(Tok::Str(s[i + 1..i + 1 + end].to_string()));
                i += end + 2;
            }
            b'<' | b'>' | b'=' | b'!' | b'~' => {
                let rest = &s[i..];
                let (op, len) = [
                    ("===", Op::Arbitrary),
                    ("==", Op::Eq),
                    ("!=", Op::Ne),
                    ("<=", Op::Le),
                    (">=", Op::Ge),
                    ("~=", Op::Compatible),
                    ("<", Op::Lt),
                    (">", Op::Gt),
                ]
                .iter()
                .find(|(t, _)| rest.starts_with(t))
                .map(|(t, o)| (*o, t.len()))
                .ok_or_else(|| format!("unknown operator at column {}", i + 1))?;
                out.push(Tok::Op(op));
                i += len;
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'.') {
                    i += 1;
                }
                out.push(Tok::Ident(s[start..i].to_string()));
            }
            _ => return Err(format!("unexpected {:?} at column {}", c as char, i + 1)),
        }
    }
    Ok(out)
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn peek_ident(&self, word: &str) -> bool {
        matches!(self.toks.get(self.pos), Some(Tok::Ident(w)) if w == word)
    }

    fn or(&mut self) -> Result<Expr, String> {
        let mut items = vec![self.and()?];
        while self.peek_ident("or") {
            self.pos += 1;
            items.push(self.and()?);
        }
        Ok(if items.len() == 1 {
            items.pop().unwrap()
        } else {
            Expr::Or(items)
        })
    }

    fn and(&mut self) -> Result<Expr, String> {
        let mut items = vec![self.atom()?];
        while self.peek_ident("and") {
            self.pos += 1;
            items.push(self.atom()?);
        }
        Ok(if items.len() == 1 {
            items.pop().unwrap()
        } else {
            Expr::And(items)
        })
    }

    fn atom(&mut self) -> Result<Expr, String> {
        if self.toks.get(self.pos) == Some(&Tok::LParen) {
            self.pos += 1;
            let e = self.or()?;
            if self.toks.get(self.pos) != Some(&Tok::RParen) {
                return Err("expected `)`".into());
            }
            self.pos += 1;
            return Ok(e);
        }
        let lhs = self.operand()?;
        let op = match self.toks.get(self.pos) {
            Some(Tok::Op(o)) => {
                self.pos += 1;
                *o
            }
            Some(Tok::Ident(w)) if w == "in" => {
                self.pos += 1;
                Op::In
            }
            Some(Tok::Ident(w)) if w == "not" => {
                self.pos += 1;
                if !self.peek_ident("in") {
                    return Err("expected `in` after `not`".into());
                }
                self.pos += 1;
                Op::NotIn
            }
            other => return Err(format!("expected a comparison operator, found {other:?}")),
        };
        let rhs = self.operand()?;
        if matches!((&lhs, &rhs), (Operand::Str(_), Operand::Str(_))) {
            return Err("a comparison needs an environment variable on one side".into());
        }
        Ok(Expr::Cmp(lhs, op, rhs))
    }

    fn operand(&mut self) -> Result<Operand, String> {
        match self.toks.get(self.pos).cloned() {
            Some(Tok::Str(s)) => {
                self.pos += 1;
                Ok(Operand::Str(s))
            }
            Some(Tok::Ident(v)) if VARIABLES.contains(&v.as_str()) => {
                self.pos += 1;
                Ok(Operand::Var(v))
            }
            Some(Tok::Ident(v)) => Err(format!("unknown marker variable `{v}`")),
            other => Err(format!("expected a variable or a quoted string, found {other:?}")),
        }
    }
}

impl FromStr for Marker {
    type Err = String;

    fn from_str(s: &str) -> Result<Marker, String> {
        let mut p = Parser {
            toks: tokenize(s)?,
            pos: 0,
        };
        let expr = p.or()?;
        if p.pos != p.toks.len() {
            return Err(format!("unexpected {:?} after a complete marker", p.toks[p.pos]));
        }
        Ok(Marker {
            text: s.trim().to_string(),
            expr,
        })
    }
}

impl Marker {
    /// Whether the marker holds; `Err` for comparisons PEP 508 leaves
    /// undefined (`~=` on strings, `<` on a set).
    pub fn evaluate(&self, ctx: &MarkerContext) -> Result<bool, String> {
        eval(&self.expr, ctx).map_err(|m| format!("marker `{}`: {m}", self.text))
    }
}

fn eval(e: &Expr, ctx: &MarkerContext) -> Result<bool, String> {
    match e {
        Expr::Or(items) => {
            for i in items {
                if eval(i, ctx)? {
                    return Ok(true);
                }
            }
            Ok(false)
        }
        Expr::And(items) => {
            for i in items {
                if !eval(i, ctx)? {
                    return Ok(false);
                }
            }
            Ok(true)
        }
        Expr::Cmp(l, op, r) => compare(l, *op, r, ctx),
    }
}

fn compare(l: &Operand, op: Op, r: &Operand, ctx: &MarkerContext) -> Result<bool, String> {
    // `extra` and the PEP 751 sets compare normalised names, by membership.
    let set_of = |v: &str| match v {
        "extras" | "extra" => Some(ctx.extras),
        "dependency_groups" => Some(ctx.groups),
        _ => None,
    };
    match (l, r) {
        (Operand::Var(v), Operand::Str(s)) | (Operand::Str(s), Operand::Var(v)) if v == "extra" => {
            let has = ctx.extras.contains(&normalize_project(s));
            return match op {
                Op::Eq => Ok(has),
                Op::Ne => Ok(!has),
                _ => Err(format!("`extra {}` is not defined; use == or !=", op.as_str())),
            };
        }
        (Operand::Str(s), Operand::Var(v)) if set_of(v).is_some() => {
            let has = set_of(v).expect("checked").contains(&normalize_project(s));
            return match op {
                Op::In => Ok(has),
                Op::NotIn => Ok(!has),
                _ => Err(format!("`{v}` is a set; use `in` or `not in`")),
            };
        }
        (Operand::Var(v), _) | (_, Operand::Var(v)) if set_of(v).is_some() => {
            return Err(format!("`{v}` can only be the right side of `in`/`not in`"));
        }
        _ => {}
    }
    let value = |o: &Operand| -> Result<String, String> {
        match o {
            Operand::Str(s) => Ok(s.clone()),
            Operand::Var(v) => ctx
                .env
                .get(v)
                .map(str::to_string)
                .ok_or_else(|| format!("unknown variable `{v}`")),
        }
    };
    let (lv, rv) = (value(l)?, value(r)?);
    match op {
        Op::In => return Ok(rv.contains(&lv)),
        Op::NotIn => return Ok(!rv.contains(&lv)),
        _ => {}
    }
    if let (Ok(spec), Ok(version)) = (
        VersionSpecifier::from_str(&format!("{}{rv}", op.as_str())),
        Version::from_str(&lv),
    ) {
        return Ok(spec.contains(&version));
    }
    Ok(match op {
        Op::Eq | Op::Arbitrary => lv == rv,
        Op::Ne => lv != rv,
        Op::Lt => lv < rv,
        Op::Le => lv <= rv,
        Op::Gt => lv > rv,
        Op::Ge => lv >= rv,
        Op::Compatible => return Err(format!("`~=` needs versions, found {lv:?} and {rv:?}")),
        Op::In | Op::NotIn => unreachable!("handled above"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holds(m: &str, version: &str, extras: &[&str], groups: &[&str]) -> bool {
        let env = MarkerEnv::linux_cpython_x86_64(version);
        let extras: BTreeSet<String> = extras.iter().map(|s| s.to_string()).collect();
        let groups: BTreeSet<String> = groups.iter().map(|s| s.to_string()).collect();
        m.parse::<Marker>()
            .unwrap()
            .evaluate(&MarkerContext {
                env: &env,
                extras: &extras,
                groups: &groups,
            })
            .unwrap()
    }

    #[test]
    fn versions_compare_as_versions_and_the_rest_as_strings() {
        assert!(holds("python_version >= '3.10'", "3.11.2", &[], &[]));
        assert!(!holds("python_version < '3.11'", "3.11.2", &[], &[]));
        assert!(holds("python_full_version < '3.11.4'", "3.11.2", &[], &[]));
        assert!(
            holds("python_version > '3.9'", "3.11.2", &[], &[]),
            "3.11 > 3.9 as versions, not strings"
        );
        assert!(holds("'3.11' <= python_version", "3.11.2", &[], &[]));
        assert!(holds(
            "sys_platform == 'linux' and (platform_machine == 'x86_64' or platform_machine == 'aarch64')",
            "3.11.2",
            &[],
            &[]
        ));
        assert!(!holds("sys_platform == 'win32' or os_name == 'nt'", "3.13.0", &[], &[]));
        assert!(holds("platform_python_implementation != 'PyPy'", "3.13.0", &[], &[]));
        assert!(holds("'linux' in sys_platform", "3.13.0", &[], &[]));
        assert!(holds("python_version not in '3.8 3.9'", "3.11.0", &[], &[]));
    }

    #[test]
    fn extras_and_groups() {
        assert!(holds("extra == 'Standard'", "3.11.0", &["standard"], &[]));
        assert!(!holds("extra == 'standard'", "3.11.0", &[], &[]));
        assert!(holds("'dev' in dependency_groups", "3.11.0", &[], &["dev"]));
        assert!(holds(
            "'dev' not in dependency_groups and 'cli' in extras",
            "3.11.0",
            &["cli"],
            &[]
        ));
    }

    #[test]
    fn malformed_markers_are_errors() {
        for bad in [
            "python_version >=",
            "python_version >= '3.1",
            "os.name == 'posix'",
            "'a' == 'b'",
            "(python_version > '3')  and",
            "python_version ?? '3'",
        ] {
            assert!(bad.parse::<Marker>().is_err(), "{bad}");
        }
    }
}
