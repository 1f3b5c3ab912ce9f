//! The shell scripts of the built-in steps. The same script runs in the
//! sandbox (store paths at /farm/store, /build, /out) or on the host
//! (`--hermetic` off), so only [`Paths`] differs between the two.

use std::path::Path;

use farm_store::StoreEntry;

use crate::toolchain::Toolchain;

pub struct Paths {
    pub hermetic: bool,
    pub build: String,
    pub out: String,
}

impl Paths {
    pub fn store(&self, e: &StoreEntry) -> String {
        if self.hermetic {
            Toolchain::sandbox_path(e).display().to_string()
        } else {
            e.path.display().to_string()
        }
    }

    /// Host builds get their real directories substituted for the placeholders.
    pub fn with_dirs(&self, build: &Path, out: &Path) -> Paths {
        Paths {
            hermetic: self.hermetic,
            build: build.display().to_string(),
            out: out.display().to_string(),
        }
    }
}

/// Single-quotes `s` for sh.
pub fn q(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Copies a source tree. `farm check` sets FARM_REVERSE_COPY=1 in one round
/// to create the files in reverse order, which changes readdir order on tmpfs.
const COPY_FN: &str = r#"farm_copy() {
  if [ "${FARM_REVERSE_COPY:-0}" = 1 ]; then
    (cd "$1" && find . -mindepth 1 -type d | LC_ALL=C sort | while IFS= read -r d; do mkdir -p "$2/$d"; done)
    (cd "$1" && find . -mindepth 1 ! -type d | LC_ALL=C sort -r | while IFS= read -r f; do cp -P "$f" "$2/$f"; done)
  else
    cp -R "$1"/. "$2"/
  fi
}
"#;

/// Compiles every `.py` under argv[1] to checked-hash bytecode whose paths
/// read `/app/...`, on all the step's CPUs with the same bytes on any number.
/// A `.pyc` depends on what its process compiled before
/// (python/cpython#129724), so the files, in compileall's sorted walk order,
/// are cut into a fixed number of contiguous groups by size, and each group
/// is compiled in order by a fresh process: which process runs when never
/// changes what it compiles.
const COMPILE_PY: &str = r#"import concurrent.futures, os, subprocess, sys
root = sys.argv[1]
GROUPS = 8

def walk(d):
    # compileall's order: sorted names, no __pycache__, no symlinked directories.
    for name in sorted(os.listdir(d)):
        full = os.path.join(d, name)
        if name == "__pycache__":
            continue
        if os.path.isdir(full):
            if not os.path.islink(full):
                yield from walk(full)
        elif name.endswith(".py"):
            yield full

def size(f):
    try:
        return os.stat(f).st_size
    except OSError:
        return 0

files = [(f, size(f)) for f in walk(root)]
total = sum(s for _, s in files) or 1
groups = [[] for _ in range(GROUPS)]
done = 0
for f, s in files:
    groups[min(GROUPS - 1, done * GROUPS // total)].append(f)
    done += s
WORKER = """import compileall, os, py_compile, sys
ok = True
for f in sys.stdin.buffer.read().split(b"\\0"):
    if f:
        ok = compileall.compile_file(os.fsdecode(f), quiet=1, stripdir=sys.argv[1], prependdir="/app",
            invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH) and ok
sys.exit(0 if ok else 1)
"""

def run(group):
    data = b"\0".join(os.fsencode(f) for f in group)
    return subprocess.run([sys.executable, "-S", "-c", WORKER, root], input=data).returncode

jobs = max(1, min(GROUPS, len(os.sched_getaffinity(0))))
with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
    codes = list(pool.map(run, [g for g in groups if g]))
sys.exit(1 if any(codes) else 0)
"#;

pub const BUILD_PLACEHOLDER: &str = "@FARM_BUILD@";
pub const OUT_PLACEHOLDER: &str = "@FARM_OUT@";

/// frontend: copy the sources and the laid-out node_modules into a writable
/// tree, run the app's build script, keep its output directory.
pub struct FrontendStep<'a> {
    pub src: &'a StoreEntry,
    pub node_modules: &'a StoreEntry,
    /// The npm script that builds.
    pub script: &'a str,
    pub output_dir: &'a Path,
    pub dev: bool,
    /// Where the generated API types go in the build copy, when the types step runs.
    pub api_types: Option<&'a Path>,
    /// Packages whose install scripts run.
    pub allow_scripts: &'a [String],
    /// Where the frontend is relative to the directory holding its JS
    /// lockfile (empty when that is the frontend): the build tree
    /// `app/` is that directory, the frontend `app/<member>`.
    pub member: &'a Path,
    /// More sources at their place below `app/`: the workspace root's files
    /// and the linked directories (crate::deps::workspace_sources).
    pub workspace: &'a [(std::path::PathBuf, StoreEntry)],
    /// Symlinks the package manager makes in node_modules (workspace
    /// members, `link:` dependencies), relative to `app/`.
    pub links: &'a [crate::deps::WorkspaceLink],
}

pub fn frontend(p: &Paths, f: &FrontendStep) -> String {
    let FrontendStep {
        src,
        node_modules,
        script,
        output_dir,
        dev,
        api_types,
        allow_scripts,
        member,
        workspace,
        links,
    } = *f;
    let (b, o) = (BUILD_PLACEHOLDER, OUT_PLACEHOLDER);
    let out_dir = output_dir.display().to_string();
    // A path below the frontend, quoted, relative to `app/`.
    let in_member = |p: &Path| q(&member.join(p).display().to_string());
    format!(
        r#"set -eu
{copy_fn}mkdir -p "{b}/app"
{workspace}mkdir -p "{b}/app/"{member}
farm_copy {src} "{b}/app/"{member}
cp -R {nm}/. "{b}/app/"
chmod -R u+w "{b}/app"
{links}{install_scripts}{types}cd "{b}/app/"{member}
npm run --no-update-notifier {script}{dev_args}
if [ ! -d {out_dir} ]; then
  echo "farm: the build script wrote no {out_dir}/ directory (frontend.output-dir in farm.toml)" >&2
  exit 1
fi
cp -R {out_dir}/. "{o}/"
"#,
        copy_fn = COPY_FN,
        // The workspace root's files first, so the frontend's own win.
        workspace = workspace
            .iter()
            .map(|(at, e)| {
                let at = q(&at.display().to_string());
                format!("mkdir -p \"{b}/app/\"{at}\nfarm_copy {} \"{b}/app/\"{at}\n", q(&p.store(e)))
            })
            .collect::<String>(),
        member = q(&member.display().to_string()),
        // Workspace packages are linked as npm links them.
        links = links
            .iter()
            .map(|l| {
                let at = q(&l.key);
                format!(
                    "mkdir -p \"$(dirname \"{b}/app/\"{at})\"\nln -s {} \"{b}/app/\"{at}\n",
                    q(&l.link_text().display().to_string())
                )
            })
            .collect::<String>(),
        // Install scripts run only for the packages farm.toml allows, in lock order.
        install_scripts = allow_scripts
            .iter()
            .map(|pkg| {
                let dir = q(&format!("node_modules/{pkg}"));
                format!(
                    "(cd \"{b}/app\"/{dir} && for s in preinstall install postinstall; do npm run --if-present --no-update-notifier \"$s\"; done)\n"
                )
            })
            .collect::<String>(),
        // The generated API types go into the build copy, never the user's tree.
        types = match api_types {
            Some(t) => {
                let t = in_member(t);
                format!("mkdir -p \"$(dirname \"{b}/app/\"{t})\"\ncp -f {}/api-types.ts \"{b}/app/\"{t}\nchmod u+w \"{b}/app/\"{t}\n", dep("types"))
            }
            None => String::new(),
        },
        // Vite's own flags for an unminified build with sourcemaps.
        dev_args = if dev {
            " -- --mode development --sourcemap --minify false"
        } else {
            ""
        },
        src = q(&p.store(src)),
        nm = q(&p.store(node_modules)),
        script = q(script),
        out_dir = q(&out_dir),
    )
}

/// backend: install the locked wheels into a fixed prefix without bytecode,
/// compile bytecode once (sorted, checked-hash, paths rewritten to /app),
/// then import the ASGI app and write its OpenAPI schema with sorted keys.
/// `requirements` (relative to the backend's sources) is what pip installs
/// from the wheelhouse; without it (a Python lockfile pinned the complete
/// set for this target) every wheel of the wheelhouse is installed as is.
pub fn backend(
    p: &Paths,
    src: &StoreEntry,
    wheelhouse: &StoreEntry,
    pip: &StoreEntry,
    requirements: Option<&Path>,
    app: &str,
) -> String {
    let o = OUT_PLACEHOLDER;
    let (module, attr) = app.split_once(':').unwrap_or((app, "app"));
    let what = match requirements {
        Some(r) => format!("-r {}/{}", q(&p.store(src)), q(&r.display().to_string())),
        // The lock's selection is the whole closure: no resolution, no
        // dependency lookups; the glob is sorted (LC_ALL=C.UTF-8).
        None => "--no-deps \"$@\"".to_string(),
    };
    let wheel_args = match requirements {
        Some(_) => String::new(),
        None => format!("set -- {}/*.whl\n", q(&p.store(wheelhouse))),
    };
    let guard = match requirements {
        Some(_) => "",
        None => "if [ -e \"$1\" ]; then\n",
    };
    let guard_end = match requirements {
        Some(_) => "",
        None => "\nfi",
    };
    format!(
        r#"set -eu
{copy_fn}export PYTHONPATH={pip}
{wheel_args}{guard}python3 -m pip install --quiet --no-index --find-links {wheels} --only-binary :all: --no-compile \
  --no-cache-dir --disable-pip-version-check --no-warn-script-location \
  --target "{o}/backend/site-packages" {what}{guard_end}
unset PYTHONPATH
mkdir -p "{o}/backend/app"
farm_copy {src} "{o}/backend/app"
chmod -R u+w "{o}/backend"
python3 - "{o}/backend" <<'FARM_COMPILE'
{compile}FARM_COMPILE
cd "{o}/backend/app"
PYTHONPATH="{o}/backend/app:{o}/backend/site-packages" python3 - {module} {attr} > "{o}/openapi.json" <<'FARM_PY'
import importlib, json, os, sys
module, attr = sys.argv[1], sys.argv[2]
# backend.secrets: variables of this import only, read from the secret files.
for name in os.environ.get("FARM_BACKEND_SECRETS", "").split():
    with open(os.path.join(os.environ["FARM_SECRETS_DIR"], name), "rb") as f:
        os.environb[name.encode()] = f.read()
app = getattr(importlib.import_module(module), attr)
sys.stdout.write(json.dumps(app.openapi(), sort_keys=True, indent=2, ensure_ascii=False) + "\n")
FARM_PY
"#,
        copy_fn = COPY_FN,
        compile = COMPILE_PY,
        pip = q(&p.store(pip)),
        wheels = q(&p.store(wheelhouse)),
        src = q(&p.store(src)),
        module = q(module),
        attr = q(attr),
    )
}

/// The script with its placeholders replaced by the step's directories.
pub fn render(script: &str, p: &Paths) -> String {
    script
        .replace(BUILD_PLACEHOLDER, &p.build)
        .replace(OUT_PLACEHOLDER, &p.out)
}

/// The placeholder a script uses for the output of step `name`.
pub fn dep(name: &str) -> String {
    format!("@FARM_DEP:{name}@")
}

/// Replaces `@FARM_DEP:<step>@` with where that step's output entry is.
pub fn render_deps(script: &str, deps: &crate::step::StepOutputs, hermetic: bool) -> String {
    let mut s = script.to_string();
    for (name, e) in deps {
        let at = if hermetic {
            Toolchain::sandbox_path(e).display().to_string()
        } else {
            e.path.display().to_string()
        };
        s = s.replace(&dep(name.as_str()), &q(&at));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::COMPILE_PY;
    use std::collections::BTreeMap;
    use std::path::Path;
    use std::process::Command;

    /// Runs the backend's compile script on `dir`, on one CPU or on all.
    fn compile(dir: &Path, one_cpu: bool) -> std::process::Output {
        let mut cmd = match one_cpu {
            true => {
                let mut c = Command::new("taskset");
                c.args(["-c", "0", "python3"]);
                c
            }
            false => Command::new("python3"),
        };
        let mut child = cmd
            .arg("-")
            .arg(dir)
            .env("PYTHONHASHSEED", "0")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("python3 and taskset (scripts/check-deps lists both)");
        use std::io::Write;
        child.stdin.take().unwrap().write_all(COMPILE_PY.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    }

    fn pycs(dir: &Path) -> BTreeMap<String, Vec<u8>> {
        let mut out = BTreeMap::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "pyc") {
                    let rel = p.strip_prefix(dir).unwrap().display().to_string();
                    out.insert(rel, std::fs::read(&p).unwrap());
                }
            }
        }
        out
    }

    fn tree(dir: &Path) {
        // python/cpython#129724: b's bytes depend on a having been compiled first in the same process.
        for pkg in 0..6 {
            let d = dir.join(format!("site-packages/pkg{pkg}"));
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("__init__.py"), "import foo\n").unwrap();
            for m in 0..8 {
                let body = format!(
                    "a = {{\"foo\", {m}, 3}}\n\ndef f():\n    b = {{\"foo\", 2, {pkg}}}\n    return b\n{}",
                    "x = 'padding'\n".repeat(m * 40)
                );
                std::fs::write(d.join(format!("m{m}.py")), body).unwrap();
            }
        }
        std::fs::create_dir_all(dir.join("app/app")).unwrap();
        std::fs::write(dir.join("app/app/main.py"), "from pkg0 import m1\n").unwrap();
    }

    /// The bytecode is the same whether the groups run one at a time or all
    /// at once, every `.py` gets a checked-hash `.pyc` naming `/app/...`,
    /// and a file that does not compile fails the script.
    #[test]
    fn bytecode_is_the_same_on_one_cpu_and_on_all() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        tree(a.path());
        tree(b.path());
        let one = compile(a.path(), true);
        assert!(one.status.success(), "{}", String::from_utf8_lossy(&one.stderr));
        let all = compile(b.path(), false);
        assert!(all.status.success(), "{}", String::from_utf8_lossy(&all.stderr));
        let (pa, pb) = (pycs(a.path()), pycs(b.path()));
        assert_eq!(pa.len(), 6 * 9 + 1, "one .pyc per .py: {:?}", pa.keys());
        assert!(pa == pb, "the .pyc bytes differ between one CPU and all of them");
        let main = pa
            .iter()
            .find(|(k, _)| k.starts_with("app/app/__pycache__/main."))
            .unwrap()
            .1;
        // PEP 552 flags word: 0b11 = hash-based, checked.
        assert_eq!(u32::from_le_bytes(main[4..8].try_into().unwrap()), 0b11);
        assert!(main.windows(16).any(|w| w == b"/app/app/main.py"));

        std::fs::write(a.path().join("site-packages/pkg3/broken.py"), "def (:\n").unwrap();
        let broken = compile(a.path(), false);
        assert!(!broken.status.success(), "a syntax error must fail the step");
    }
}
