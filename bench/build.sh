#!/usr/bin/env bash
# Build times of the example app (examples/farm-app), in one run:
#
# (a) no-op: `farm build --hermetic` when every step is in the action cache:
#     what a rebuild of an unchanged commit costs (hash the sources, look up
#     the step keys, write the output tree and the manifest).
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
# Usage: bench/build.sh   (BENCH_NOOP_RUNS, default 10; BENCH_COLD_RUNS, default 5)
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
noop_json="$BENCH_HOME/results/build-noop.json"
mkdir -p "$(dirname "$noop_json")"
say "hyperfine: no-op build, $noop_runs runs"
run_hyperfine --warmup 1 --runs "$noop_runs" --export-json "$noop_json" \
  -n "farm build --hermetic (no-op)" "$noop_cmd" || die "hyperfine failed on the no-op build"

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
echo "(a) no-op hermetic build, everything cached"
print_table "$noop_json"
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
echo "  farm build --hermetic (no-op): $noop_cmd"
for i in "${!names[@]}"; do echo "  ${names[i]}: ${commands[i]}   (before each run: ${prepares[i]})"; done
