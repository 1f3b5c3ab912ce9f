# Shared by the bench/*.sh scripts (sourced, not run): packages, the farm
# binary, a loopback model registry, a prepared copy of the example app and
# the results table. Everything a benchmark writes lives under $BENCH_HOME
# (default ~/.cache/farm-bench), so a rerun downloads nothing again.
#
# Knobs (environment):
#   FARM_BIN        use this farm binary instead of building target/release/farm
#                   (FARM_BIN_COMMIT: the commit it was built from, for the report)
#   FARM_BENCH_HOME where the bench keeps its store, caches and work trees

bench_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$bench_dir/.." && pwd)
example="$repo/examples/farm-app"
BENCH_HOME=${FARM_BENCH_HOME:-${HOME:?}/.cache/farm-bench}
# The bench's own store: never the user's ~/.cache/farm, never the tests'.
export FARM_HOME="$BENCH_HOME/home"
# Commands are handed to hyperfine and reprotest as strings.
[[ $BENCH_HOME$repo != *[[:space:]]* ]] || {
  echo "error: $BENCH_HOME or $repo contains white space, which the benchmark commands cannot quote" >&2
  exit 1
}
mkdir -p "$BENCH_HOME" "$FARM_HOME"

# --- output ------------------------------------------------------------------

say() { printf '%s\n' "$*" >&2; }
die() {
  printf 'error: %s\n' "$1" >&2
  [[ -n ${2:-} ]] && printf 'hint: %s\n' "$2" >&2
  exit 1
}
section() { printf '\n== %s\n' "$*"; }

# The machine a number was measured on, printed above every table.
machine_line() {
  local cpu
  cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
  printf '%s, %s cores (%s), %s GiB, Linux %s, %s; load average before timing: %s\n' "$(date -u +%Y-%m-%dT%H:%MZ)" \
    "$(nproc)" "${cpu:-unknown cpu}" "$(awk '/MemTotal/ { printf "%d", $2 / 1048576 }' /proc/meminfo)" "$(uname -r)" \
    "$(. /etc/os-release && echo "$PRETTY_NAME")" "${bench_load:-?}"
}

# --- cleanup -----------------------------------------------------------------

_cleanups=()
on_exit() { _cleanups+=("$1"); }
_run_cleanups() {
  local i
  for ((i = ${#_cleanups[@]} - 1; i >= 0; i--)); do eval "${_cleanups[i]}" || true; done
  _cleanups=()
}
trap _run_cleanups EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- packages ----------------------------------------------------------------

_apt_updated=0
# need_packages PKG...: installs the Debian packages that are missing.
need_packages() {
  local missing=() p sudo=""
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  command -v apt-get >/dev/null || die "missing packages ${missing[*]} and no apt-get to install them" \
    "install them with your package manager"
  [[ $(id -u) -ne 0 ]] && sudo="sudo"
  say "installing: ${missing[*]}"
  if ((!_apt_updated)); then
    $sudo apt-get update -qq || die "apt-get update failed"
    _apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
    die "apt-get could not install ${missing[*]}"
}

# --- farm ----------------------------------------------------------------------

# Sets $farm to the binary under test: $FARM_BIN, or a fresh release build.
build_farm() {
  if [[ -n ${FARM_BIN:-} ]]; then
    farm=$FARM_BIN
    [[ -x $farm ]] || die "FARM_BIN=$farm is not an executable file"
    farm_commit=${FARM_BIN_COMMIT:-}
  else
    command -v cargo >/dev/null || die "cargo is not installed and FARM_BIN is not set" \
      "install Rust with rustup, or point FARM_BIN at a farm binary"
    say "building farm (cargo build --release)"
    cargo build --release --locked --quiet --manifest-path "$repo/Cargo.toml" ||
      die "cargo build --release failed in $repo" "set FARM_BIN to a farm binary to benchmark that one instead"
    # A private copy, so a cargo build running meanwhile cannot swap the
    # binary in the middle of a benchmark.
    mkdir -p "$BENCH_HOME/bin"
    cp "$repo/target/release/farm" "$BENCH_HOME/bin/farm.tmp"
    mv "$BENCH_HOME/bin/farm.tmp" "$BENCH_HOME/bin/farm"
    farm="$BENCH_HOME/bin/farm"
    farm_commit=$(git -C "$repo" describe --always --dirty 2>/dev/null || echo "unknown commit")
  fi
  # shellcheck disable=SC2034 # printed by the scripts that source this file
  farm_version="$("$farm" --version) ($farm, built from ${farm_commit:-FARM_BIN})"
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_for_url URL SECONDS LOG: polls until URL answers, or dies showing LOG.
wait_for_url() {
  local deadline=$((SECONDS + $2))
  until curl -fsS "$1" >/dev/null 2>&1; do
    if ((SECONDS > deadline)); then
      say "its log:"
      cat "$3" >&2 || true
      die "$1 did not answer within $2 s"
    fi
    sleep 0.1
  done
}

# Starts a loopback docker-registry seeded with the example's model and
# exports FARM_OLLAMA_REGISTRY (farm.toml's [models] registry). Sets
# $registry_pid; stop_registry stops it (also done on exit).
start_registry() {
  local dir="$BENCH_HOME/registry" port
  rm -rf "$dir" && mkdir -p "$dir"
  port=$(free_port)
  cat >"$dir/registry.yml" <<YAML
version: 0.1
log: { level: error }
storage: { filesystem: { rootdirectory: $dir/data } }
http: { addr: 127.0.0.1:$port }
YAML
  docker-registry serve "$dir/registry.yml" >"$dir/registry.log" 2>&1 &
  registry_pid=$!
  on_exit stop_registry
  wait_for_url "http://127.0.0.1:$port/v2/" 30 "$dir/registry.log"
  python3 "$example/models/seed-model.py" --registry "http://127.0.0.1:$port" --name farm-tiny:latest \
    >"$dir/seed.log" 2>&1 || die "models/seed-model.py could not seed the loopback registry on port $port: $(tail -3 "$dir/seed.log")"
  export FARM_OLLAMA_REGISTRY="http://127.0.0.1:$port"
}

stop_registry() {
  if [[ -n ${registry_pid:-} ]]; then
    kill "$registry_pid" 2>/dev/null || true
    wait "$registry_pid" 2>/dev/null || true
    registry_pid=""
  fi
}

# copy_example DEST: the example app's sources, without build outputs.
copy_example() {
  rm -rf "$1"
  mkdir -p "$(dirname "$1")"
  cp -a "$example" "$1"
  rm -rf "$1/.farm" "$1/farm-out" "$1/apps/web/node_modules" "$1/apps/web/dist"
  find "$1" -name __pycache__ -type d -prune -exec rm -rf {} +
}

# prepare_app DEST: a private copy of examples/farm-app, locked and fetched
# into the bench store (the first run downloads ~80 MiB; later runs nothing).
# The example itself is never written to. Sets $app.
prepare_app() {
  app=$1
  copy_example "$app"
  start_registry
  say "farm lock + fetch in $app (FARM_HOME=$FARM_HOME)"
  "$farm" --project "$app" -q lock || die "farm lock failed in $app"
  "$farm" --project "$app" -q lock --check || die "farm lock --check says $app/farm.lock is stale right after farm lock"
  "$farm" --project "$app" -q fetch || die "farm fetch failed in $app"
  stop_registry
}

# farm_probe COMMAND [SECONDS]: runs a farm command once before it is timed;
# dies if it fails or takes longer than SECONDS (default 10), since timing a
# hang or an error would only produce a meaningless number.
farm_probe() {
  local limit=${2:-10} start rc=0 out elapsed
  start=$(date +%s%N)
  # shellcheck disable=SC2086 # COMMAND is a command line, split on purpose
  out=$(timeout -s KILL "$((limit * 3))" $1 2>&1) || rc=$?
  elapsed=$((($(date +%s%N) - start) / 1000000))
  ((rc == 137)) && die "\`$1\` did not finish within $((limit * 3)) s and was killed" \
    "the farm binary under test hangs; nothing was measured"
  ((rc == 0)) || die "\`$1\` failed (exit $rc): $(tail -5 <<<"$out")"
  ((elapsed <= limit * 1000)) || die "\`$1\` took $elapsed ms, more than the $limit s this benchmark expects" \
    "the farm binary under test is waiting on something; time it by hand before benchmarking it"
}

# run_hyperfine ARGS...: hyperfine without its outlier warnings (the table
# shows the spread anyway); fails when hyperfine does.
run_hyperfine() {
  bench_load=$(cut -d' ' -f1-3 /proc/loadavg)
  hyperfine --style none "$@" 2> >(grep -v -e 'Statistical outliers' -e '^ *$' >&2)
}

# --- results -----------------------------------------------------------------

# print_table JSON [REFERENCE]: tool, mean ± stddev and ratio to the
# reference row (default: the row named "farm*" first in the file) from a
# hyperfine --export-json file.
print_table() {
  python3 - "$1" "${2:-}" <<'PY'
import json, math, sys

results = json.load(open(sys.argv[1]))["results"]
ref_name = sys.argv[2]
ref = next((r for r in results if r["command"] == ref_name), None) if ref_name else None
if ref is None:
    ref = next((r for r in results if r["command"].startswith("farm")), results[0])

def fmt(seconds):
    if seconds >= 1:
        return f"{seconds:.2f} s"
    return f"{seconds * 1000:.1f} ms"

rows = []
for r in results:
    mean, sd = r["mean"], r["stddev"] or 0.0
    ratio = mean / ref["mean"]
    rsd = ratio * math.sqrt((sd / mean) ** 2 + ((ref["stddev"] or 0.0) / ref["mean"]) ** 2)
    failed = sum(1 for c in r.get("exit_codes", []) if c != 0)
    note = f"  ({failed} of {len(r['times'])} runs exited non-zero)" if failed else ""
    rows.append((r["command"], f"{fmt(mean)} ± {fmt(sd)}", fmt(r["median"]), f"{ratio:.2f} ± {rsd:.2f}",
                 f"{len(r['times'])}", note))

heads = ("tool", "mean ± stddev", "median", f"ratio tool / {ref['command']}", "runs")
if len(rows) == 1:  # a ratio to itself says nothing
    heads, rows = heads[:3] + heads[4:], [row[:3] + row[4:] for row in rows]
widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(heads)]
line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()
print(line(heads))
print(line(["-" * w for w in widths]))
for row in rows:
    print(line(row[:-1]) + row[-1])
PY
}
