#!/usr/bin/env bash
# Issue 13's table in one run: every row beside its peer and its goal, from
# one farm binary. Runs bench/sandbox.sh, bench/build.sh, bench/images.sh
# compression and bench/bigapp.sh (BIGAPP_DEPS, default large: the
# 1,300-package lock) one after the other, each printing its own tables, then
# reads their results (hyperfine's JSON under $FARM_BENCH_HOME/results, the
# peak-RSS files of bigapp.sh) and prints the summary. bigapp.sh runs twice:
# the base app (issue 13's "real npm-workspaces app": the no-op row) and,
# unless ISSUE13_LARGE=0, BIGAPP_DEPS=large (the 1,300-package lock: the
# memory rows, and its no-op for information). A row whose benchmark failed
# says so; the others are still printed. About 15 minutes once the stores
# are filled (the first large bigapp run downloads about 1 GiB and takes
# about 12 minutes more).
#
# Usage: bench/issue13.sh   (FARM_BIN, FARM_BENCH_HOME as in lib.sh; ISSUE13_LARGE=0)
set -uo pipefail
bench_dir=$(cd "$(dirname "$0")" && pwd)
. "$bench_dir/lib.sh"
build_farm
export FARM_BIN=$farm FARM_BIN_COMMIT=${farm_commit:-}
large=${ISSUE13_LARGE:-1}
results="$BENCH_HOME/results"
mkdir -p "$results"
log="$results/issue13.txt"
started=$(date -u +%s)

{
  benches=(sandbox build "images compression" "bigapp base")
  [[ $large == 0 ]] || benches+=("bigapp large")
  for b in "${benches[@]}"; do
    # The results a failed benchmark leaves behind are not this run's.
    case $b in
    sandbox) rm -f "$results/sandbox.json" ;;
    build) rm -f "$results/build-noop.json" "$results/build-cold.json" ;;
    images*) rm -f "$results/images-compression.json" ;;
    esac
    start=$SECONDS
    script=${b%% *} arg=${b#* }
    [[ $arg != "$b" ]] || arg=
    if [[ $script == bigapp ]]; then
      BIGAPP_DEPS=$arg "$bench_dir/bigapp.sh"
    else
      # shellcheck disable=SC2086 # no argument, or one word
      "$bench_dir/$script.sh" $arg
    fi
    if (($? == 0)); then
      echo "(${b%% *}.sh took $((SECONDS - start)) s)"
    else
      echo "error: bench/${b%% *}.sh failed after $((SECONDS - start)) s; the others still run" >&2
    fi
  done
} 2>&1 | tee "$log"

name=bigapp
[[ $large == 0 ]] || name=bigapp-large
section "issue 13: every row in one run"
bench_load=$(cut -d" " -f1-3 /proc/loadavg) machine_line
echo "$farm_version"
python3 - "$results" "$BENCH_HOME/work/$name" "$name" "$started" <<'PY'
import json, os, sys

# bigwork and name: the bigapp run the memory rows come from.
results, bigwork, name, started = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])

def fresh(path):
    return os.path.exists(path) and os.path.getmtime(path) >= started

def runs(file):
    path = os.path.join(results, file)
    if not fresh(path):
        return None
    return {r["command"]: r for r in json.load(open(path))["results"]}

def row(rs, prefix):
    if rs is None:
        return None
    return next((r for c, r in rs.items() if c.startswith(prefix)), None)

def ms(r):
    return f"{r['mean'] * 1000:.1f} ms" if r["mean"] < 1 else f"{r['mean']:.2f} s"

def cpu(r):
    # hyperfine's mean user and system time per run, in seconds.
    return (r["user"] + r["system"]) * 1000 if "user" in r else None

lines = []
def add(work, farm, peer, goal, met):
    verdict = "not measured" if met is None else ("met" if met else "NOT met")
    lines.append((work, farm, peer, goal, verdict))

sandbox, noop, cold = runs("sandbox.json"), runs("build-noop.json"), runs("build-cold.json")
big, comp = runs(f"{name}-noop.json"), runs("images-compression.json")

r = row(noop, "farm build --hermetic (no-op)")
add("no-op `farm build --hermetic`, example", ms(r) if r else "-", "", "<= 50 ms", r and r["mean"] <= 0.050)

r = row(runs("bigapp-noop.json"), "farm no-op")
add("no-op, large npm-workspaces app (bigapp)", ms(r) if r else "-", "", "<= 150 ms", r and r["mean"] <= 0.150)
if name != "bigapp":
    r = row(big, "farm no-op")
    lines.append((f"no-op, the same app with the big lock ({name})", ms(r) if r else "-", "", "(no goal)", ""))

def ratio(work, f, p, peer, goal, limit, extra=""):
    """A row of farm's mean `f` against the peer's `p`, met when f / p <= limit."""
    if f and p:
        q = f["mean"] / p["mean"]
        add(work, ms(f), f"{peer} {ms(p)} ({q:.2f}x{extra})", goal, q <= limit)
    else:
        add(work, "-", "", goal, None)

f, b = row(sandbox, "farm exec"), row(sandbox, "bwrap")
fc, bc = (cpu(f), cpu(b)) if f and b else (None, None)
extra = f"; CPU {fc:.1f} vs {bc:.1f} ms = {fc / bc:.2f}x" if fc and bc else ""
ratio("`farm exec -- true`", f, b, "bwrap", "<= 2x bwrap", 2, extra)

ratio("app image, cold layer cache (gzip)", row(comp, "farm --rerun images (cold layer cache)"),
      row(comp, "tar | gzip"), "tar | gzip -6", "<= 0.6x", 0.6)
z, tz = row(comp, "farm --rerun images, zstd"), row(comp, "tar | zstd")
add("app image, zstd layers", ms(z) if z else "-", f"tar | zstd -3 {ms(tz)}" if tz else "", "<= 0.6 s",
    z and z["mean"] <= 0.6)

ratio("cold hermetic build, store warm", row(cold, "farm cold"), row(cold, "host direct"), "host",
      "<= 0.9x host", 0.9)

def rss(path, any_age=False):
    # The first fetch downloads: bigapp.sh keeps its figures from then.
    if not any_age and not fresh(path):
        return None
    try:
        farm_kib, tree_kib, _ = open(path).readline().split()
        return int(farm_kib) // 1024, int(tree_kib) // 1024
    except (OSError, ValueError):
        return None

locked = None
try:
    text = open(os.path.join(bigwork, "app", "farm.lock")).read()
    locked = sum(text.count(h) for h in ("[[npm", "[[wheels]]", "[[debian.packages]]"))
except OSError:
    pass
# Bounded: farm's own peak against the same figure of the smaller lock
# (bench/bigapp.sh with BIGAPP_DEPS=base), when that was measured.
def base_rss(file):
    return rss(os.path.join(os.path.dirname(bigwork), "bigapp", file), any_age=True)

for what, path, base in (("cold build", os.path.join(bigwork, "cold-rss.txt"), "cold-rss.txt"),
                         ("fetch (first, downloading)", os.path.join(results, f"{name}-fetch-rss.txt"), None),
                         ("images step", os.path.join(bigwork, "images-rss.txt"), "images-rss.txt")):
    m = rss(path, any_age="fetch" in what)
    b = base_rss(base) if base and name != "bigapp" else None
    peer = f"largest process {m[1]} MiB" if m else ""
    if m and b:
        peer += f"; smaller lock: farm {b[0]} MiB"
    lines.append((f"peak RSS of farm, {what}, {locked or '?'}-package lock", f"{m[0]} MiB" if m else "-", peer,
                  "bounded (streaming)", "see figures" if m else "not measured"))

heads = ("work", "farm", "peer", "goal", "")
widths = [max(len(h), *(len(l[i]) for l in lines)) for i, h in enumerate(heads)]
fmt = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()
print(fmt(heads))
print(fmt(["-" * w for w in widths]))
for l in lines:
    print(fmt(l))
PY
