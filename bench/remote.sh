#!/usr/bin/env bash
# A CI fleet on this machine: one BuildGrid (a real Remote Execution API
# server, with PostgreSQL for its scheduler) shared by "runners" that are
# farm stores of their own (one FARM_HOME and one checkout of the example
# app each), and two `farm worker`s.
#
# (1) remote cache: runner 1 builds the example cold with `--no-cache
#     --remote-cache` and fills the server's action cache and CAS (one run,
#     timed on its own). Then, in one hyperfine run, runner 2's cold build
#     (a fresh copy of a fetched store before every run: the fetch is not
#     timed) with `--remote-cache` beside the same cold build without it
#     (`--no-cache`, no server).
# (2) remote execution: two `farm worker`s, each with its own empty store,
#     take the steps of `farm build --hermetic --no-cache --remote-executor`.
#     The first run (server CAS, server action cache and workers' stores all
#     cold: the toolchain root is uploaded and materialised) is timed on its
#     own. Then local `farm build --hermetic --no-cache` and the remote build
#     with the workers warm, one after the other, each remote run after the
#     server was restarted: BuildGrid's LRU action cache lives in memory, so
#     a restart empties it while the CAS (on disk) and the workers' stores
#     stay warm, and the actions stay those of the first run (so the
#     manifest digest can be compared with the local one). Without it the
#     server answered every Execute from its action cache (farm sent
#     skip_cache_lookup = false even with --no-cache before 880bb02; one
#     untimed run shows what the binary does now). A changing `--var` would give new
#     actions too, but a manifest other than the local build's. In this
#     example only the backend and frontend steps go to workers (models,
#     types and images are assembled in-process by the client), and the
#     frontend waits for the types of the backend's API, so the two remote
#     steps run one after the other.
# Under each table: the remote_cache object of farm-metrics.json (hits,
# misses, bytes_up, bytes_down, executed_remotely) of the last build of each
# kind, and the step outcomes farm printed.
#
# Usage: bench/remote.sh   (BENCH_REMOTE_RUNS: runs of each remote cache row,
#        default 5; BENCH_REMOTE_EXEC_RUNS: of each remote execution row, default 5)
# Needs BuildGrid's `bgd` on PATH (scripts/install-deps puts PyPI's buildgrid
# into /opt/farm-buildgrid) and Debian's postgresql (installed when missing).
set -euo pipefail
. "$(dirname "$0")/lib.sh"

cache_runs=${BENCH_REMOTE_RUNS:-5}
exec_runs=${BENCH_REMOTE_EXEC_RUNS:-5}
# The caller's remote settings would reach every row.
unset FARM_REMOTE_CACHE FARM_REMOTE_EXECUTOR FARM_REMOTE_TOKEN

need_packages hyperfine docker-registry curl postgresql
command -v bgd >/dev/null || die "BuildGrid's bgd is not on PATH" \
  "scripts/install-deps installs it (PyPI's buildgrid in /opt/farm-buildgrid, linked as /usr/local/bin/bgd)"
pg_bin=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin 2>/dev/null | sort -V | tail -1)
[[ -x $pg_bin/initdb ]] || die "no PostgreSQL server programs under /usr/lib/postgresql" "apt-get install postgresql"
build_farm

work="$BENCH_HOME/work/remote"
rm -rf "$work" && mkdir -p "$work/results"
# The fetched store every runner starts from; no build ever runs in it.
fetched="$BENCH_HOME/remote-fetched-home"
FARM_HOME=$fetched prepare_app "$work/app"

# --- PostgreSQL and BuildGrid --------------------------------------------------

# The cluster lives under /tmp: the postgres user cannot reach root's home.
pg_dir=$(mktemp -d /tmp/farm-bench-pg.XXXXXX)
chmod 755 "$pg_dir"
on_exit "rm -rf $pg_dir"
# pg PROGRAM ARGS...: initdb and the server refuse to run as root.
pg() {
  if [[ $(id -u) -eq 0 ]]; then
    runuser -u postgres -- "$pg_bin/$1" "${@:2}"
  else
    "$pg_bin/$1" "${@:2}"
  fi
}
[[ $(id -u) -eq 0 ]] && chown postgres: "$pg_dir"
pg initdb -D "$pg_dir/data" -A trust -U bgd >"$work/initdb.log" 2>&1 || die "initdb failed: $(tail -3 "$work/initdb.log")"
pg_port=$(free_port)
pg pg_ctl -D "$pg_dir/data" -l "$pg_dir/postgres.log" -w -t 60 \
  -o "-k $pg_dir -p $pg_port -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null ||
  die "PostgreSQL did not start on 127.0.0.1:$pg_port: $(tail -3 "$pg_dir/postgres.log")"
on_exit "pg pg_ctl -D $pg_dir/data -m immediate -w stop >/dev/null 2>&1"
"$pg_bin/createdb" -h 127.0.0.1 -p "$pg_port" -U bgd bgd || die "createdb failed on 127.0.0.1:$pg_port"
# psycopg2 explicitly: BuildGrid's scheduler needs its LISTEN API.
db="postgresql+psycopg2://bgd@127.0.0.1:$pg_port/bgd"
(cd "$work" && bgd migrate apply "$db" >"$work/migrate.log" 2>&1) || die "bgd migrate apply failed: $(tail -3 "$work/migrate.log")"

# wait_for_port PORT SECONDS PID LOG: until PORT accepts connections; dies
# with LOG when PID exits first or the deadline passes.
wait_for_port() {
  local deadline=$((SECONDS + $2))
  until (: >"/dev/tcp/127.0.0.1/$1") 2>/dev/null; do
    kill -0 "$3" 2>/dev/null || die "the process on port $1 exited: $(tail -5 "$4")"
    ((SECONDS <= deadline)) || die "nothing listened on 127.0.0.1:$1 within $2 s: $(tail -5 "$4")"
    sleep 0.1
  done
}

# start_bgd CAS_DIR [PORT]: `bgd server start` with CAS, ByteStream, an LRU
# action cache, and Execution on the SQL scheduler (the configuration of
# crates/testkit/src/buildgrid_exec.rs). Sets $bgd_pid, $bgd_port, $url.
bgd_pid=""
start_bgd() {
  bgd_port=${2:-$(free_port)}
  mkdir -p "$1"
  cat >"$work/buildgrid.yml" <<YAML
server:
  - !channel { address: "127.0.0.1:$bgd_port", insecure-mode: true }
authorization: { method: none }
connections:
  - !sql-connection &sql { connection-string: "$db" }
storages:
  - !disk-storage &store { path: $1 }
caches:
  - !lru-action-cache &ac { storage: *store, max-cached-refs: 100000, allow-updates: true, cache-failed-actions: false }
schedulers:
  - !sql-scheduler &sched
    sql: *sql
    action-cache: *ac
    storage: *store
    property-set: !dynamic-property-set { match-property-keys: [OSFamily, ISA, farm-sandbox], wildcard-property-keys: [farm-mapping, farm-key, farm-toolchain-root, farm-host-tools] }
    bot-session-keepalive-timeout: 6
    session-expiry-timer-interval: 1
instances:
  - name: ""
    services:
      - !action-cache { cache: *ac }
      - !cas { storage: *store }
      - !bytestream { storage: *store }
      - !execution { scheduler: *sched }
YAML
  (cd "$work" && exec bgd server start "$work/buildgrid.yml") >>"$work/bgd.log" 2>&1 &
  bgd_pid=$!
  wait_for_port "$bgd_port" 120 "$bgd_pid" "$work/bgd.log"
  url="grpc://127.0.0.1:$bgd_port"
}
stop_bgd() {
  if [[ -n $bgd_pid ]]; then
    kill "$bgd_pid" 2>/dev/null || true
    wait "$bgd_pid" 2>/dev/null || true
    bgd_pid=""
  fi
}
on_exit stop_bgd

# --- runners and workers ---------------------------------------------------------

# runner N: a fresh copy of the fetched store ($work/home-N) and a fresh
# checkout of the locked app ($work/app-N).
runner() {
  rm -rf "$work/home-$1" "$work/app-$1" "$work/out-$1"
  cp -a "$fetched" "$work/home-$1"
  cp -a "$app" "$work/app-$1"
  rm -rf "$work/app-$1/.farm"
}

# farm_build N LOG ARGS...: one build of runner N, its step lines in LOG,
# the manifest digest it prints in LOG.digest.
farm_build() {
  local n=$1 log=$2
  shift 2
  "$farm" --project "$work/app-$n" build --farm-home "$work/home-$n" --hermetic --out "$work/out-$n" "$@" \
    >"$log.digest" 2>"$log" || die "farm build $* failed for runner $n: $(tail -5 "$log")"
}

# outcomes LOG: how each step ended and how long it took, from farm's step
# lines ("backend built remotely 10.2s, models built 0.0s").
outcomes() {
  sed -n 's/^ *\[\([^]]*\)\] \(built remotely\|built\|remote cache hit\|cached\|FAILED[^(]*\) (\(.*\))$/\1 \2 \3/p' "$1" |
    paste -sd, - | sed 's/,/, /g'
}

# remote_metrics OUT: farm-metrics.json's remote_cache object.
remote_metrics() {
  python3 -c 'import json, sys; print(json.dumps(json.load(open(sys.argv[1])).get("remote_cache")))' "$1/farm-metrics.json"
}

worker_pids=()
worker_names=()
start_worker() {
  mkdir -p "$work/worker-$1"
  FARM_HOME="$work/worker-$1/home" "$farm" worker --server "$url" --name "$1" >/dev/null 2>"$work/worker-$1/log" &
  worker_pids+=($!)
  worker_names+=("$1")
}
stop_workers() {
  local p
  for p in "${worker_pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${worker_pids[@]}"; do wait "$p" 2>/dev/null || true; done
  worker_pids=()
}
on_exit stop_workers
# count_in_logs WHAT: how often every worker's log says WHAT, one number each.
count_in_logs() {
  local w
  for w in "${worker_names[@]}"; do grep -c -- "$1" "$work/worker-$w/log" || true; done
}
# ran_since BEFORE...: the actions each worker ran since its log had BEFORE
# "exited" lines, with the worker's own time for each ("w1 ran 2 (7527, 4886 ms)").
ran_since() {
  local before=("$@") i w log lines times sep=""
  for i in "${!worker_names[@]}"; do
    w=${worker_names[i]} log="$work/worker-${worker_names[i]}/log"
    lines=$(grep -- "exited " "$log" | tail -n +"$((before[i] + 1))" || true)
    times=$(sed -n 's/.* after \([0-9]*\) ms$/\1/p' <<<"$lines" | paste -sd, - | sed 's/,/, /g')
    printf '%s%s ran %d%s' "$sep" "$w" "$(grep -c . <<<"$lines" || true)" "${times:+ ($times ms)}"
    sep=", "
  done
}
# wait_workers_connected BEFORE...: until each worker's log has more
# "connected to" lines than BEFORE (one count per worker) says.
wait_workers_connected() {
  local deadline=$((SECONDS + 120)) before=("$@") now i ok
  while :; do
    mapfile -t now < <(count_in_logs "connected to")
    ok=1
    for i in "${!worker_names[@]}"; do ((now[i] > before[i])) || ok=0; done
    ((ok)) && return 0
    ((SECONDS <= deadline)) || die "the workers did not connect to $url within 120 s: $(tail -3 "$work"/worker-*/log)"
    sleep 0.1
  done
}

# elapsed COMMAND...: runs it, prints its wall time in seconds.
elapsed() {
  local start
  start=$(date +%s%N)
  "$@" >/dev/null
  python3 -c "print(f'{($(date +%s%N) - $start) / 1e9:.2f}')"
}

# write_json FILE NAME TIMES NAME TIMES...: hyperfine's JSON layout, for print_table.
write_json() {
  python3 - "$@" <<'PY'
import json, statistics, sys
out, rows = sys.argv[1], sys.argv[2:]
results = []
for name, times in zip(rows[::2], rows[1::2]):
    t = [float(x) for x in times.split()]
    results.append({"command": name, "mean": statistics.mean(t), "median": statistics.median(t),
                    "stddev": statistics.stdev(t) if len(t) > 1 else 0.0, "times": t, "exit_codes": [0] * len(t)})
json.dump({"results": results}, open(out, "w"), indent=1)
PY
}

# --- (1) remote cache ------------------------------------------------------------

start_bgd "$work/cas-cache"
say "BuildGrid on $url (PostgreSQL on 127.0.0.1:$pg_port)"

runner 1
say "runner 1: cold build with --no-cache --remote-cache (fills the server)"
fill_load=$(cut -d' ' -f1-3 /proc/loadavg)
fill_time=$(elapsed farm_build 1 "$work/results/runner1.log" --no-cache --remote-cache "$url")
fill_metrics=$(remote_metrics "$work/out-1")
fill_outcomes=$(outcomes "$work/results/runner1.log")

# One untimed runner-2 build to show where its steps came from.
runner 2
farm_build 2 "$work/results/runner2-probe.log" --remote-cache "$url"
probe_outcomes=$(outcomes "$work/results/runner2-probe.log")
grep -q '\] built (' "$work/results/runner2-probe.log" &&
  say "warning: runner 2 built some steps itself although runner 1 filled the server: $probe_outcomes"

cache_json="$work/results/remote-cache.json"
prep2="rm -rf $work/home-2 $work/app-2/.farm $work/out-2 && cp -a $fetched $work/home-2"
prep3="rm -rf $work/home-3 $work/app-3/.farm $work/out-3 && cp -a $fetched $work/home-3"
runner 3
b2="$farm --project $work/app-2 -q build --farm-home $work/home-2 --hermetic --out $work/out-2"
b3="$farm --project $work/app-3 -q build --farm-home $work/home-3 --hermetic --out $work/out-3"
say "hyperfine: runner 2 cold, with and without the remote cache, $cache_runs runs each"
run_hyperfine --runs "$cache_runs" --export-json "$cache_json" \
  --prepare "$prep2" --prepare "$prep3" \
  -n "runner 2 cold, --remote-cache" "$b2 --remote-cache $url" \
  -n "runner 2 cold, local (--no-cache)" "$b3 --no-cache" ||
  die "hyperfine failed on the remote cache rows"
cache_load=$bench_load
cache_metrics=$(remote_metrics "$work/out-2")
local_metrics=$(remote_metrics "$work/out-3")

# --- (2) remote execution ----------------------------------------------------------

# A server of its own: empty CAS and action cache, as on the first day.
stop_bgd
start_bgd "$work/cas-exec"
exec_port=$bgd_port
start_worker w1
start_worker w2
wait_workers_connected 0 0
say "two workers connected to $url"

runner 4
say "remote execution, first run (server and workers cold)"
first_load=$(cut -d' ' -f1-3 /proc/loadavg)
first_time=$(elapsed farm_build 4 "$work/results/exec-first.log" --no-cache --remote-executor "$url")
first_metrics=$(remote_metrics "$work/out-4")
first_outcomes=$(outcomes "$work/results/exec-first.log")
first_ran=$(ran_since 0 0)

# The same build again without emptying the server's action cache: what
# --no-cache does with a remote executor (printed, not timed).
mapfile -t ran_before < <(count_in_logs "exited ")
runner 4
farm_build 4 "$work/results/exec-again.log" --no-cache --remote-executor "$url"
again_outcomes=$(outcomes "$work/results/exec-again.log")
again_metrics=$(remote_metrics "$work/out-4")
again_ran=$(ran_since "${ran_before[@]}")

# Local and remote one after the other (the same load for both), each
# remote run after a restart of the server: an empty action cache, a warm
# CAS, warm workers.
local_times="" remote_times="" remote_ran=""
exec_load=$(cut -d' ' -f1-3 /proc/loadavg)
for ((i = 1; i <= exec_runs; i++)); do
  say "remote execution rows: run $i of $exec_runs"
  runner 5
  local_times+=" $(elapsed farm_build 5 "$work/results/exec-local.log" --no-cache)"
  mapfile -t before < <(count_in_logs "connected to")
  mapfile -t ran_before < <(count_in_logs "exited ")
  stop_bgd
  start_bgd "$work/cas-exec" "$exec_port"
  wait_workers_connected "${before[@]}"
  runner 4
  remote_times+=" $(elapsed farm_build 4 "$work/results/exec-warm.log" --no-cache --remote-executor "$url")"
  remote_ran+="${remote_ran:+; }run $i: $(ran_since "${ran_before[@]}")"
done
exec_json="$work/results/remote-exec.json"
write_json "$exec_json" "local --no-cache" "$local_times" "remote exec, workers warm" "$remote_times"
warm_metrics=$(remote_metrics "$work/out-4")
warm_outcomes=$(outcomes "$work/results/exec-warm.log")
local_outcomes=$(outcomes "$work/results/exec-local.log")
digest_l=$(cat "$work/results/exec-local.log.digest")
digest_r=$(cat "$work/results/exec-warm.log.digest")
digest_1=$(cat "$work/results/runner1.log.digest")
digest_2=$(cat "$work/results/runner2-probe.log.digest")

# --- report ------------------------------------------------------------------------

bgd_python=$(sed -n '1s/^#!//p' "$(readlink -f "$(command -v bgd)")")
bgd_version=$("$bgd_python" -c 'import importlib.metadata as m; print(m.version("buildgrid"))' 2>/dev/null || echo "version unknown")
section "remote: a CI fleet on one BuildGrid ($bgd_version, PostgreSQL $(basename "$(dirname "$pg_bin")"))"
bench_load=$cache_load
machine_line
echo "$farm_version"
echo
echo "(1) remote cache: runner 2's cold build (fresh fetched store), after runner 1 filled the server"
echo "runner 1, cold with --no-cache --remote-cache (one run, load $fill_load): ${fill_time} s"
echo "  steps: $fill_outcomes"
echo "  remote_cache: $fill_metrics"
print_table "$cache_json" "runner 2 cold, local (--no-cache)"
echo "runner 2's steps (an untimed run before): $probe_outcomes"
echo "manifest digest: runner 1 $digest_1, runner 2 $digest_2$([[ $digest_1 == "$digest_2" ]] && echo " (the same)" || echo " (DIFFERENT)")"
echo "  remote_cache, runner 2 --remote-cache: $cache_metrics"
echo "  remote_cache, runner 2 local: $local_metrics"
echo
echo "(2) remote execution with two farm workers (load before: first $first_load, rows $exec_load)"
python3 - "$first_time" "$exec_json" <<'PY'
import json, sys
first = float(sys.argv[1])
r = {x["command"]: x for x in json.load(open(sys.argv[2]))["results"]}
print(f"first remote build (server CAS, action cache and worker stores empty; one run): {first:.2f} s"
      f" = {first / r['local --no-cache']['mean']:.2f} × the local mean below")
PY
echo "  steps: $first_outcomes; $first_ran"
echo "  remote_cache: $first_metrics"
echo "the same build at once again, --no-cache, the server's action cache not emptied (untimed): $again_outcomes; $again_ran"
echo "  remote_cache: $again_metrics"
bench_load=$exec_load
print_table "$exec_json" "local --no-cache"
echo "steps of the last remote run: $warm_outcomes"
echo "  actions the workers ran: $remote_ran"
echo "steps of the last local run: $local_outcomes"
echo "  remote_cache, remote exec (last run): $warm_metrics"
echo "manifest digest: local $digest_l, remote $digest_r$([[ $digest_l == "$digest_r" ]] && echo " (the same)" || echo " (DIFFERENT)")"
echo
echo "commands:"
echo "  runner 1: $farm --project $work/app-1 build --farm-home $work/home-1 --hermetic --no-cache --remote-cache URL"
echo "  runner 2: $b2 --remote-cache URL   (before each run: $prep2)"
echo "  local:    $b3 --no-cache   (before each run: $prep3)"
echo "  remote:   farm build --hermetic --no-cache --remote-executor URL   (before each run: the server restarted, workers reconnected)"
echo "  workers:  FARM_HOME=$work/worker-wN/home $farm worker --server URL --name wN"
