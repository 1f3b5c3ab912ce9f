#!/usr/bin/env bash
# Reproducibility audits of the example app, farm beside reprotest, in one
# hyperfine run; for each: the time, and what it found.
#
#   farm check          builds every target again from scratch in the
#                       sandbox (inputs from the store, action cache
#                       bypassed), 2 rounds by default: round 0 as usual,
#                       round 1 with 1 job on 1 CPU, ASLR off, the steps in
#                       reverse order, umask 0077, the clock 10 years ahead, a
#                       different build directory and files created in reverse
#                       order. Compares the digest of every output (frontend,
#                       backend, openapi, models, API types, images) and
#                       names the files that differ.
#                       Everything else (environment, HOME, user, hostname,
#                       locale, timezone, PATH) is pinned by the sandbox, so
#                       there is nothing there to vary.
#   reprotest (farm)    reprotest 0.7 around `farm build --hermetic
#                       --no-cache`, its default variations as far as they
#                       run here: two builds, control and experiment, that
#                       differ in environment (an extra variable), build path,
#                       kernel version reported by uname (setarch
#                       --uname-2.6), ASLR (off in the control), CPUs
#                       (taskset: 1 in the control, all in the experiment),
#                       time (faketime, > half a year ahead), readdir order
#                       (disorderfs), host and domain name (unshare --uts),
#                       HOME, locale, PATH, TZ and umask (0022 / 0002).
#                       Compares the output files with diffoscope, which
#                       shows the differing bytes (file modes and
#                       directory metadata are not compared). farm's
#                       farm-metrics.json (timings, by design not part of the
#                       build's identity) is left out of the artifacts.
#   reprotest (host)    the same reprotest around bench/host-build.sh: the
#                       same npm/pip build with the host's tools and no farm,
#                       to show what reprotest detects when nothing is pinned.
#
# Then "planted nondeterminism": a copy of the app whose vite.config.js
# starts with bench/plant.mjs, which writes one file per source of variation
# (random, clock, CPUs, umask, build path, hostname, HOME, timezone, locale,
# environment, readdir order) into dist/. One run of each audit on it gives a
# table of which variations each really reaches (BENCH_CHECK_PLANTS=0 skips it).
#
# Not varied by reprotest here: user_group (it needs sudo and extra users
# that are members of the fuse group; as root on this machine there are
# neither), so it is disabled with --vary=-user_group. reprotest runs with
# its "null" virtual server (directly on this machine, no VM).
#
# Usage: bench/check.sh   (BENCH_CHECK_RUNS, default 3, runs of each)
set -euo pipefail
. "$(dirname "$0")/lib.sh"

runs=${BENCH_CHECK_RUNS:-3}

need_packages hyperfine docker-registry curl reprotest diffoscope-minimal disorderfs faketime
build_farm
work="$BENCH_HOME/work/check"
prepare_app "$work/app"
logs="$BENCH_HOME/results/check-logs"
rm -rf "$logs" && mkdir -p "$logs"

# The build reprotest runs, in its copy of the project: outputs inside it.
farm_build="$farm --farm-home $FARM_HOME -q build --hermetic --no-cache --out farm-out"
farm_probe "$farm --project $app -q build --hermetic --no-cache --out $work/probe-out" 300

names=("farm check") commands=("$farm --project $app check > $logs/farm-check.log 2>&1")
skipped=()
# reprotest copies the source root it is given, so it gets a locked copy of its own.
copy_example "$work/reprotest-src"
cp "$app/farm.lock" "$work/reprotest-src/farm.lock"
names+=("reprotest (farm)")
commands+=("reprotest --verbosity 1 --vary=-user_group -c '$farm_build && rm farm-out/farm-metrics.json' \
$work/reprotest-src farm-out > $logs/reprotest-farm.log 2>&1")

host_py=$(python3 -c 'import sys; print(sys.executable)' 2>/dev/null || true)
if [[ -z $host_py ]] || ! command -v npm >/dev/null; then
  skipped+=("reprotest (host): the host has no python3 or npm on PATH")
else
  export HOST_NPM_CACHE="$BENCH_HOME/host/npm-cache" HOST_WHEELHOUSE="$BENCH_HOME/host/wheels" HOST_PYTHON=$host_py
  if ! out=$("$bench_dir/host-build.sh" prepare 2>&1); then
    skipped+=("reprotest (host): host-build.sh prepare failed: $(tail -3 <<<"$out" | tr '\n' ' ')")
  else
    copy_example "$work/host-src"
    names+=("reprotest (host)") host_ok=1
    commands+=("reprotest --verbosity 1 --vary=-user_group -c '$bench_dir/host-build.sh build . out' $work/host-src out \
> $logs/reprotest-host.log 2>&1")
  fi
fi

args=()
for i in "${!names[@]}"; do args+=(-n "${names[i]}" "${commands[i]}"); done
json="$BENCH_HOME/results/check.json"
say "hyperfine: ${#names[@]} audits, $runs runs each (each log keeps the last run's output, in $logs)"
run_hyperfine --ignore-failure --runs "$runs" --export-json "$json" "${args[@]}" ||
  die "hyperfine failed"

# Planted nondeterminism: one build of a copy of the app whose Vite config
# writes a file per source of variation (bench/plant.mjs), audited once by
# each tool, shows which variations each audit really reaches.
plant_matrix=""
if [[ ${BENCH_CHECK_PLANTS:-1} != 0 ]]; then
  planted="$work/planted"
  copy_example "$planted"
  cp "$app/farm.lock" "$planted/farm.lock"
  cat "$bench_dir/plant.mjs" "$planted/apps/web/vite.config.js" >"$planted/apps/web/vite.config.js.new"
  mv "$planted/apps/web/vite.config.js.new" "$planted/apps/web/vite.config.js"
  say "planted nondeterminism: one run of each audit"
  rc=0
  timeout -s KILL 600 "$farm" --project "$planted" check --target frontend --format json \
    >"$logs/plant-farm-check.json" 2>"$logs/plant-farm-check.log" || rc=$?
  echo "$rc" >"$logs/plant-farm-check.rc"
  rm -rf "$planted/.farm"
  rc=0
  timeout -s KILL 600 reprotest --verbosity 1 --vary=-user_group \
    -c "$farm --farm-home $FARM_HOME -q build frontend --hermetic --no-cache --out farm-out && rm farm-out/farm-metrics.json" \
    "$planted" farm-out >"$logs/plant-reprotest-farm.log" 2>&1 || rc=$?
  echo "$rc" >"$logs/plant-reprotest-farm.rc"
  if [[ ${host_ok:-0} == 1 ]]; then
    rc=0
    timeout -s KILL 600 reprotest --verbosity 1 --vary=-user_group -c "$bench_dir/host-build.sh build . out" \
      "$planted" out >"$logs/plant-reprotest-host.log" 2>&1 || rc=$?
    echo "$rc" >"$logs/plant-reprotest-host.rc"
  fi
  plant_matrix=$(python3 "$bench_dir/plant_matrix.py" "$logs" "$bench_dir/plant.mjs") ||
    plant_matrix="could not read the planted runs' results (logs in $logs)"
fi

section "check: reproducibility audits of the example app"
machine_line
echo "$farm_version"
print_table "$json" "farm check"
for s in "${skipped[@]}"; do echo "not measured: $s"; done
echo "not varied by reprotest: user_group (it needs sudo and other users in the fuse group to build as;" \
  "this script does not create users), so it runs with --vary=-user_group"

# What each found, from the last run's log and every run's exit status.
python3 - "$json" "$logs" <<'PY'
import json, os, re, sys

results = {r["command"]: r for r in json.load(open(sys.argv[1]))["results"]}
logs = sys.argv[2]

def codes(name):
    return sorted(set(results[name]["exit_codes"]))

def reprotest_verdict(name, log):
    text = open(log, errors="replace").read()
    if "Traceback" in text or "failed with status" in text:
        tail = [l for l in text.splitlines() if l.strip()][-2:]
        return "error: reprotest could not finish: " + " / ".join(tail)
    varied = re.search(r'build "experiment-1": (.*)', text)
    paths = re.findall(r"\+\+\+ \S*/experiment-1/source-root/(\S+)", text)
    leaves = [p for p in paths if not any(q.startswith(p + "/") for q in paths)]
    lines = []
    if varied:
        lines.append("  varied: " + ", ".join(v[5:] for v in varied.group(1).split(", ") if v.startswith("vary ")))
    if codes(name) == [0]:
        lines.insert(0, "reproducible: diffoscope found no difference between control and experiment")
        return "\n".join(lines)
    kinds = {}
    for p in leaves:
        base = p.rsplit("/", 1)[-1]
        kinds.setdefault(base.rsplit(".", 1)[-1] if "." in base else base, []).append(p)
    lines.insert(0, f"DIFFERS: {len(leaves)} files differ between control and experiment")
    for kind, ps in sorted(kinds.items(), key=lambda kv: -len(kv[1])):
        lines.append(f"  {len(ps)} .{kind} files, e.g. {ps[0]}")
    return "\n".join(lines)

print()
print("what each found (last run; exit statuses of all runs in brackets):")
if "farm check" in results:
    text = open(os.path.join(logs, "farm-check.log"), errors="replace").read().splitlines()
    verdict = [l for l in text if l.startswith(("reproducible", "all outputs", "DIFFER", "differ", "NOT REPRODUCIBLE", "error"))]
    rounds = [l for l in text if re.match(r"round \d+:", l)]
    print(f"farm check {codes('farm check')}: " + (" / ".join(verdict) or "no verdict line; see the log"))
    for r in rounds:
        print("  " + r)
for name, log in (("reprotest (farm)", "reprotest-farm.log"), ("reprotest (host)", "reprotest-host.log")):
    if name in results:
        print(f"{name} {codes(name)}: " + reprotest_verdict(name, os.path.join(logs, log)))
print(f"\nfull logs: {logs}")
PY
if [[ -n $plant_matrix ]]; then
  echo
  echo "planted nondeterminism (bench/plant.mjs, frontend target, one run each;"
  echo "DETECTED = the audit reported that file as differing, same = it did not):"
  echo "$plant_matrix"
fi
echo
echo "commands:"
for i in "${!names[@]}"; do echo "  ${names[i]}: ${commands[i]}"; done
