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
# One process compiles in sorted order; -s/-p make every path in the .pyc /app/...
python3 -m compileall -q -j 1 --invalidation-mode checked-hash -s "{o}/backend" -p /app "{o}/backend"
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
