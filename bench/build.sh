#!/usr/bin/env bash
# Build times of the example app (examples/farm-app), in one run:
#
# (a) no-op: `farm build --hermetic` when every step is in the action cache:
#     what a rebuild of an unchanged commit costs (stat the sources against
#     the stat cache, look up the step keys, check the output directory in
#     place). In the same hyperfine run: the same build after `touch`ing every
#     source file (mtime only: each file is read and hashed again, nothing is
#     copied), after removing one output file (the output directory is placed
#     again), `git status` of the same tree in a git repository (git's index
#     verifies a tree by stat the same way; a floor for that part) and, with
#     FARM_BIN_BEFORE=/path/to/an/older/farm, the older binary's no-op.
# (b) cold: `farm build --hermetic --no-cache` (every step runs in the
#     sandbox: npm ci offline + vite build, pip install of the locked wheels +
#     compileall + the OpenAPI schema, the models directory) beside the same
#     work done directly on the host with the host's node, npm and python3
#     (bench/host-build.sh: `npm ci --offline && npm run build` in a fresh copy
#     of apps/web, `pip install --no-index --no-compile --target` of apps/api's
#     requirements into a fresh directory, compileall, the OpenAPI schema).
#     Neither side downloads anything while timed: farm's inputs are in its
#     store (farm fetch), the host's in a warm npm cache and a wheelhouse
#     (host-build.sh prepare). The ratio farm-cold / host-direct is what the
#     sandbox, the pinned toolchains and the store cost on top of the work.
#
# Usage: bench/build.sh [noop]   (noop: part (a) only; BENCH_NOOP_RUNS, default 10;
#        BENCH_COLD_RUNS, default 5; FARM_BIN_BEFORE: an older farm binary to time beside)
# hyperfine is the Debian package `hyperfine` (apt-get install hyperfine);
# need_packages installs it when it is missing.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

noop_runs=${BENCH_NOOP_RUNS:-10}
cold_runs=${BENCH_COLD_RUNS:-5}

need_packages hyperfine docker-registry curl
build_farm
work="$BENCH_HOME/work/build"
prepare_app "$work/app"

# (a) one full build first, so that everything is in the action cache.
say "farm build --hermetic (fills the action cache)"
timeout -s KILL 900 "$farm" --project "$app" -q build --hermetic --out "$work/noop-out" >/dev/null ||
  die "farm build --hermetic failed in $app (log: farm log)"
noop_cmd="$farm --project $app -q build --hermetic --out $work/noop-out"
farm_probe "$noop_cmd" 30
noop_names=("farm build --hermetic (no-op)") noop_cmds=("$noop_cmd") noop_preps=("true")
noop_names+=("farm no-op, every source touched")
noop_cmds+=("$noop_cmd")
noop_preps+=("find $app/apps -type f -exec touch {} +")
noop_names+=("farm no-op, one output removed")
noop_cmds+=("$noop_cmd")
noop_preps+=("rm -f $work/noop-out/frontend/index.html")
# git's index verifies the same tree by stat: a peer for that part of a no-op.
rm -rf "$work/git-app" && copy_example "$work/git-app"
git -C "$work/git-app" init -q && git -C "$work/git-app" add -A &&
  git -C "$work/git-app" -c user.name=bench -c user.email=bench@localhost commit -qm bench ||
  die "git could not commit the example copy in $work/git-app"
noop_names+=("git status (same tree)") noop_cmds+=("git -C $work/git-app status --porcelain") noop_preps+=("true")
if [[ -n ${FARM_BIN_BEFORE:-} ]]; then
  before_cmd="$FARM_BIN_BEFORE --project $app -q build --hermetic --out $work/noop-out-before"
  timeout -s KILL 900 $before_cmd >/dev/null || die "FARM_BIN_BEFORE ($FARM_BIN_BEFORE) failed to build $app"
  farm_probe "$before_cmd" 30
  noop_names+=("farm before (no-op)") noop_cmds+=("$before_cmd") noop_preps+=("true")
fi
noop_json="$BENCH_HOME/results/build-noop.json"
mkdir -p "$(dirname "$noop_json")"
args=()
for i in "${!noop_names[@]}"; do args+=(--prepare "${noop_preps[i]}"); done
for i in "${!noop_names[@]}"; do args+=(-n "${noop_names[i]}" "${noop_cmds[i]}"); done
say "hyperfine: no-op builds, $noop_runs runs each"
run_hyperfine -N --warmup 1 --runs "$noop_runs" --export-json "$noop_json" "${args[@]}" ||
  die "hyperfine failed on the no-op builds"
noop_load=$bench_load
"$farm" --project "$app" -q build --hermetic --out "$work/noop-out" >/dev/null
noop_metrics=$(python3 -c 'import json, sys; m = json.load(open(sys.argv[1])); print("sources", json.dumps(m["sources"]), "outputs", json.dumps(m["outputs"]))' "$work/noop-out/farm-metrics.json")

if [[ ${1:-} == noop ]]; then
  section "build: the example app (no-op only)"
  machine_line
  echo "$farm_version"
  echo
  print_table "$noop_json" "farm build --hermetic (no-op)"
  echo "the last no-op's farm-metrics.json: $noop_metrics"
  echo
  echo "commands (before each run):"
  for i in "${!noop_names[@]}"; do echo "  ${noop_names[i]}: ${noop_cmds[i]}   (${noop_preps[i]})"; done
  exit 0
fi

# (b) cold builds: farm, and the host directly when its toolchain can build the app.
names=("farm cold") commands=("$farm --project $app -q build --hermetic --no-cache --out $work/farm-out")
prepares=("rm -rf $work/farm-out")
host_skip=""
host_py=$(python3 -c 'import sys; print(sys.executable)' 2>/dev/null) || host_skip="no python3 on PATH"
if [[ -z $host_skip ]] && ! command -v npm >/dev/null; then host_skip="no npm on PATH"; fi
if [[ -z $host_skip ]]; then
  # Vite 7 needs Node >= 20.19 (or >= 22.12): apps/web/package.json's engines.
  node_ok=$(node -e 'const [a, b] = process.versions.node.split(".").map(Number);
    console.log((a === 20 && b >= 19) || (a === 22 && b >= 12) || a > 22 ? "yes" : "no")' 2>/dev/null || echo "no")
  [[ $node_ok == yes ]] || host_skip="the host's node ($(node --version 2>/dev/null || echo none)) is older than Vite 7 needs (>= 20.19)"
fi
if [[ -z $host_skip ]]; then
  export HOST_NPM_CACHE="$BENCH_HOME/host/npm-cache" HOST_WHEELHOUSE="$BENCH_HOME/host/wheels" HOST_PYTHON=$host_py
  say "host-build.sh prepare (npm cache, wheelhouse)"
  if ! prep_out=$("$bench_dir/host-build.sh" prepare 2>&1); then
    host_skip="host-build.sh prepare failed: $(tail -3 <<<"$prep_out" | tr '\n' ' ')"
  else
    copy_example "$work/host-src"
    host_cmd="$bench_dir/host-build.sh build $work/host-app $work/host-out"
    host_prep="rm -rf $work/host-app $work/host-out && cp -a $work/host-src $work/host-app"
    if ! out=$(bash -c "$host_prep && $host_cmd" 2>&1); then
      host_skip="the host build failed: $(tail -3 <<<"$out" | tr '\n' ' ')"
    else
      names+=("host direct") commands+=("$host_cmd") prepares+=("$host_prep")
    fi
  fi
fi
farm_probe "${commands[0]}" 300

cold_json="$BENCH_HOME/results/build-cold.json"
args=()
for i in "${!names[@]}"; do args+=(--prepare "${prepares[i]}"); done
for i in "${!names[@]}"; do args+=(-n "${names[i]}" "${commands[i]}"); done
say "hyperfine: cold builds, warmup 1, $cold_runs runs each"
run_hyperfine --warmup 1 --runs "$cold_runs" --export-json "$cold_json" "${args[@]}" ||
  die "hyperfine failed on the cold builds"

section "build: the example app"
machine_line
echo "$farm_version"
echo
echo "(a) no-op hermetic build, everything cached (load before: $noop_load)"
print_table "$noop_json" "farm build --hermetic (no-op)"
echo "the last no-op's farm-metrics.json: $noop_metrics"
echo
echo "(b) cold build: farm --hermetic --no-cache beside the same work on the host"
print_table "$cold_json" "farm cold"
if [[ -n $host_skip ]]; then
  echo "not measured: host direct: $host_skip"
else
  python3 - "$cold_json" <<'PY'
import json, math, sys
r = {x["command"]: x for x in json.load(open(sys.argv[1]))["results"]}
f, h = r["farm cold"], r["host direct"]
q = f["mean"] / h["mean"]
e = q * math.sqrt((f["stddev"] / f["mean"]) ** 2 + (h["stddev"] / h["mean"]) ** 2)
print(f"farm cold / host direct = {q:.2f} ± {e:.2f}")
PY
  echo "host toolchain: node $(node --version), npm $(npm --version 2>/dev/null), $("$host_py" --version)"
fi
echo
echo "commands:"
for i in "${!noop_names[@]}"; do echo "  ${noop_names[i]}: ${noop_cmds[i]}   (before each run: ${noop_preps[i]})"; done
for i in "${!names[@]}"; do echo "  ${names[i]}: ${commands[i]}   (before each run: ${prepares[i]})"; done
