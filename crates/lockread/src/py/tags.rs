//! Wheel file names and platform compatibility tags: which wheels run on
//! the target (CPython 3.X, manylinux x86_64 with a given glibc) and in
//! which order of preference, as `packaging.tags.sys_tags` lists them.

use std::collections::HashMap;

/// A wheel file name, `{name}-{version}(-{build})?-{python}-{abi}-{platform}.whl`,
/// each tag part possibly a `.`-separated set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WheelName {
    pub name: String,
    pub version: String,
    pub build: Option<String>,
    pub python: Vec<String>,
    pub abi: Vec<String>,
    pub platform: Vec<String>,
}

pub fn parse_wheel_filename(filename: &str) -> Option<WheelName> {
    let stem = filename.strip_suffix(".whl")?;
    if stem.contains(['/', '\\']) {
        return None;
    }
    let parts: Vec<&str> = stem.split('-').collect();
    let (name, version, build, tags) = match parts.as_slice() {
        [n, v, p, a, pl] => (*n, *v, None, [*p, *a, *pl]),
        [n, v, b, p, a, pl] if b.starts_with(|c: char| c.is_ascii_digit()) => {
            (*n, *v, Some(b.to_string()), [*p, *a, *pl])
        }
        _ => return None,
    };
    if name.is_empty() || version.is_empty() || tags.iter().any(|t| t.is_empty()) {
        return None;
    }
    let split = |t: &str| t.split('.').map(str::to_string).collect::<Vec<_>>();
    Some(WheelName {
        name: name.to_string(),
        version: version.to_string(),
        build,
        python: split(tags[0]),
        abi: split(tags[1]),
        platform: split(tags[2]),
    })
}

/// The tags a target supports, most preferred first.
pub struct SupportedTags {
    rank: HashMap<(String, String, String), usize>,
    /// For messages: `cp311-cp311-manylinux_2_36_x86_64`.
    pub best: String,
}

/// manylinux platforms for glibc `2.max_minor` down to 2.5, with the legacy
/// aliases (manylinux2014 = 2.17, manylinux2010 = 2.12, manylinux1 = 2.5),
/// then `linux_x86_64`.
fn platforms(glibc_minor: u32) -> Vec<String> {
    let mut out = Vec::new();
    for minor in (5..=glibc_minor).rev() {
        out.push(format!("manylinux_2_{minor}_x86_64"));
        match minor {
            17 => out.push("manylinux2014_x86_64".into()),
            12 => out.push("manylinux2010_x86_64".into()),
            5 => out.push("manylinux1_x86_64".into()),
            _ => {}
        }
    }
    out.push("linux_x86_64".into());
    out
}

impl SupportedTags {
    /// CPython `3.py_minor` on x86_64 Linux with glibc `2.glibc_minor`.
    pub fn cpython_manylinux_x86_64(py_minor: u32, glibc_minor: u32) -> SupportedTags {
        let plats = platforms(glibc_minor);
        let cp = format!("cp3{py_minor}");
        let mut order: Vec<(String, String, String)> = Vec::new();
        // cpython_tags: the interpreter's ABI, abi3, none; then older abi3.
        for abi in [cp.as_str(), "abi3", "none"] {
            for p in &plats {
                order.push((cp.clone(), abi.into(), p.clone()));
            }
        }
        for minor in (2..py_minor).rev() {
            for p in &plats {
                order.push((format!("cp3{minor}"), "abi3".into(), p.clone()));
            }
        }
        // compatible_tags: pyXY/py3/older pyXY with no ABI, per platform, then `any`.
        let mut py_range = vec![format!("py3{py_minor}"), "py3".to_string()];
        py_range.extend((0..py_minor).rev().map(|m| format!("py3{m}")));
        for v in &py_range {
            for p in &plats {
                order.push((v.clone(), "none".into(), p.clone()));
            }
        }
        order.push((cp.clone(), "none".into(), "any".into()));
        for v in &py_range {
            order.push((v.clone(), "none".into(), "any".into()));
        }
        let mut rank = HashMap::new();
        for (i, t) in order.into_iter().enumerate() {
            rank.entry(t).or_insert(i);
        }
        SupportedTags {
            rank,
            best: format!("{cp}-{cp}-manylinux_2_{glibc_minor}_x86_64"),
        }
    }

    /// The wheel's best (lowest) rank over its tag sets; `None` when no tag fits.
    pub fn rank(&self, w: &WheelName) -> Option<usize> {
        let mut best: Option<usize> = None;
        for py in &w.python {
            for abi in &w.abi {
                for plat in &w.platform {
                    if let Some(&r) = self.rank.get(&(py.clone(), abi.clone(), plat.clone())) {
                        best = Some(best.map_or(r, |b: usize| b.min(r)));
                    }
                }
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filenames_parse_with_and_without_build_tags() {
        let w = parse_wheel_filename("pydantic_core-2.27.2-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl")
            .unwrap();
        assert_eq!(w.name, "pydantic_core");
        assert_eq!(w.platform, ["manylinux_2_17_x86_64", "manylinux2014_x86_64"]);
        let b = parse_wheel_filename("x-1.0-1build-py3-none-any.whl").unwrap();
        assert_eq!(b.build.as_deref(), Some("1build"));
        assert!(parse_wheel_filename("x-1.0.tar.gz").is_none());
        assert!(parse_wheel_filename("x-1.0-py3-none.whl").is_none());
        assert!(parse_wheel_filename("../x-1.0-py3-none-any.whl").is_none());
    }

    #[test]
    fn more_specific_tags_rank_first() {
        let t = SupportedTags::cpython_manylinux_x86_64(11, 36);
        let rank = |f: &str| t.rank(&parse_wheel_filename(f).unwrap());
        let native = rank("a-1-cp311-cp311-manylinux_2_17_x86_64.whl").unwrap();
        let newer_glibc = rank("a-1-cp311-cp311-manylinux_2_28_x86_64.whl").unwrap();
        let abi3 = rank("a-1-cp38-abi3-manylinux_2_17_x86_64.whl").unwrap();
        let pure = rank("a-1-py3-none-any.whl").unwrap();
        assert!(newer_glibc < native && native < abi3 && abi3 < pure);
        assert_eq!(rank("a-1-cp312-cp312-manylinux_2_17_x86_64.whl"), None);
        assert_eq!(
            rank("a-1-cp311-cp311-manylinux_2_39_x86_64.whl"),
            None,
            "newer glibc than the target"
        );
        assert_eq!(rank("a-1-cp311-cp311-musllinux_1_2_x86_64.whl"), None);
        assert_eq!(rank("a-1-cp311-cp311-win_amd64.whl"), None);
        assert!(rank("a-1-cp311-cp311-linux_x86_64.whl").unwrap() > native);
    }
}
