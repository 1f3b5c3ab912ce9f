#!/usr/bin/env bash
# The no-op build of a large FARM app (issue 13's "real npm-workspaces app"
# row), and peak memory of the cold build, the fetch and the images step.
#
# The app: examples/farm-app grown by bench/bigapp_gen.py into an npm
# workspaces monorepo: a root package.json with apps/web and BIGAPP_PACKAGES
# (default 40) generated members of BIGAPP_MODULES (default 50) modules each,
# all bundled by Vite; real npm dependencies (react, lodash-es, date-fns,
# rxjs, … and dev tooling such as eslint, babel, jest: about 500 locked
# packages), locked by the host's `npm install --package-lock-only` from the
# user's npm registry; and a backend whose requirements.txt adds about 35
# common projects (numpy, pandas, scipy, boto3, sqlalchemy, …) that `farm
# lock` resolves with pip into roughly 80 locked wheels. Generated once under
# $BENCH_HOME/work/bigapp and reused (BIGAPP_REGENERATE=1 to start over).
# BIGAPP_DEPS=large adds the rest of a large React monorepo's dependencies
# (MUI, AWS SDK v3 clients, webpack, Storybook, Testing Library,
# typescript-eslint, …), 25 more Python projects and three Debian packages:
# issue 13's lock of about 1,300 packages (kept in $BENCH_HOME/work/bigapp-large).
#
# Then, after one cold build:
# (1) one hyperfine run: the no-op `farm build --hermetic`; the same after
#     `touch`ing every source file (each is read and hashed again, the
#     snapshots are found in the store); `git status --porcelain` of the same
#     tree committed in a git repository (the floor: git verifies its index by
#     stat) and, with FARM_BIN_BEFORE=/path/to/older/farm, that binary's no-op.
# (2) peak RSS: farm's own (VmHWM of the farm process, polled) and the whole
#     process tree's largest (GNU time's %M: farm or any step it waited for)
#     of the cold `farm build --hermetic --no-cache`, of `farm fetch` (the
#     first run downloads everything; later runs only verify, so the first
#     run's figures are kept in results/bigapp-fetch-rss.txt and printed
#     again), and of the images step (`--rerun images` with an empty layer
#     cache, every other step from the action cache).
#
# Usage: bench/bigapp.sh   (BENCH_NOOP_RUNS, default 20; BIGAPP_DEPS, base or large;
#        FARM_BIN, FARM_BIN_BEFORE as in lib.sh; the first run downloads about
#        400 MiB into the bench store, with BIGAPP_DEPS=large about 1 GiB)
set -euo pipefail
. "$(dirname "$0")/lib.sh"

runs=${BENCH_NOOP_RUNS:-20}
packages=${BIGAPP_PACKAGES:-40}
modules=${BIGAPP_MODULES:-50}
deps=${BIGAPP_DEPS:-base}
case $deps in
base) name=bigapp ;;
large) name=bigapp-large ;;
*) die "BIGAPP_DEPS=$deps is neither base nor large" ;;
esac

need_packages hyperfine docker-registry curl time git
command -v npm >/dev/null || die "npm is not installed" "apt-get install npm (it writes the fixture's package-lock.json)"
build_farm
work="$BENCH_HOME/work/$name"
app="$work/app"
out="$work/out"
results="$BENCH_HOME/results"
mkdir -p "$results"

# rss FILE COMMAND...: runs COMMAND, writes "farm_kib tree_kib seconds" to FILE.
# farm's own peak is its VmHWM, read every 20 ms until it exits (the kernel
# keeps the high-water mark, so the last reading is the peak up to its last
# 20 ms); the tree's is GNU time's maximum resident set size.
rss() {
  local file=$1 pid child hwm=0 h start
  shift
  start=$(date +%s%N)
  # stdout (the image digests a build prints) would only clutter the report.
  /usr/bin/time -f '%M' -o "$file.time" "$@" >/dev/null &
  pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    child=$(pgrep -P "$pid" | head -1 || true)
    if [[ -n $child ]]; then
      h=$(awk '/^VmHWM:/ { print $2 }' "/proc/$child/status" 2>/dev/null || true)
      [[ -n $h ]] && ((h > hwm)) && hwm=$h
    fi
    sleep 0.02
  done
  wait "$pid" || die "\`$*\` failed"
  echo "$hwm $(tail -1 "$file.time") $((($(date +%s%N) - start) / 1000000))" >"$file"
}
mib() { awk -v k="$1" 'BEGIN { printf "%.0f MiB", k / 1024 }'; }

# --- the app -------------------------------------------------------------------
if [[ -n ${BIGAPP_REGENERATE:-} || ! -f $app/farm.lock || ! -f $work/fetched ]]; then
  say "generating the app in $app ($packages workspace packages x $modules modules, $deps dependencies)"
  copy_example "$app"
  python3 "$bench_dir/bigapp_gen.py" "$app" "$packages" "$modules" "$deps"
  say "npm install --package-lock-only (the root package-lock.json, from your npm registry)"
  (cd "$app" && npm install --package-lock-only --ignore-scripts --no-audit --no-fund --loglevel=error) >/dev/null ||
    die "npm could not lock $app"
  rm -f "$work/fetched" "$results/$name-fetch-rss.txt"
  start_registry
  say "farm lock in $app"
  "$farm" --project "$app" -q lock || die "farm lock failed in $app"
  say "farm fetch (peak RSS measured)"
  rss "$results/$name-fetch-rss.txt" "$farm" --project "$app" -q fetch
  echo "first fetch, $(date -u +%Y-%m-%dT%H:%MZ)" >>"$results/$name-fetch-rss.txt"
  stop_registry
  touch "$work/fetched"
fi
rss "$work/fetch-again.txt" "$farm" --project "$app" -q fetch

# --- the cold build (fills the action cache) -----------------------------------
say "farm build --hermetic --no-cache (cold; peak RSS measured)"
rss "$work/cold-rss.txt" "$farm" --project "$app" -q build --hermetic --no-cache --out "$out"
say "farm build --hermetic --rerun images with an empty layer cache (peak RSS measured)"
rm -rf "$FARM_HOME/cache/layers"
rss "$work/images-rss.txt" "$farm" --project "$app" -q build --hermetic --rerun images --out "$out"
images_ms=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["steps"]["images"]["duration_ms"])' "$out/farm-metrics.json" 2>/dev/null || echo "?")

# --- what the app is -----------------------------------------------------------
src_files=$(find "$app" -path "$app/.farm" -prune -o -type f -print | wc -l)
js_modules=$(find "$app/apps/web/src" "$app/packages" -type f \( -name '*.js' -o -name '*.jsx' -o -name '*.ts' \) | wc -l)
npm_pkgs=$(grep -c '^\[\[npm' "$app/farm.lock" || true)
wheels=$(grep -c '^\[\[wheels\]\]' "$app/farm.lock" || true)
debs=$(grep -c '^\[\[debian\.packages\]\]' "$app/farm.lock" || true)
out_files=$(find "$out" | wc -l)
image_bytes=$(python3 -c '
import json, sys
m = json.load(open(sys.argv[1]))
print(sum(o["size"] for k, o in m["outputs"].items() if k.startswith("image.")))' "$out/farm-manifest.json")
site_files=$(find "$out/backend" -type f | wc -l)

# --- (1) the no-op, one hyperfine run --------------------------------------------
noop_cmd="$farm --project $app -q build --hermetic --out $out"
farm_probe "$noop_cmd" 30
names=("farm no-op") cmds=("$noop_cmd") preps=("true")
names+=("farm no-op, every source touched") cmds+=("$noop_cmd")
preps+=("find $app -path $app/.farm -prune -o -type f -exec touch {} +")
rm -rf "$work/git-app" && mkdir -p "$work/git-app" &&
  tar -C "$app" --exclude ./.farm -cf - . | tar -C "$work/git-app" -xf - &&
  git -C "$work/git-app" init -q && git -C "$work/git-app" add -A &&
  git -C "$work/git-app" -c user.name=bench -c user.email=bench@localhost commit -qm bench ||
  die "git could not commit the app copy in $work/git-app"
git -C "$work/git-app" status --porcelain >/dev/null
names+=("git status (same tree)") cmds+=("git -C $work/git-app status --porcelain") preps+=("true")
if [[ -n ${FARM_BIN_BEFORE:-} ]]; then
  before_cmd="$FARM_BIN_BEFORE --project $app -q build --hermetic --out $work/out-before"
  timeout -s KILL 3600 $before_cmd >/dev/null || die "FARM_BIN_BEFORE ($FARM_BIN_BEFORE) failed to build $app"
  farm_probe "$before_cmd" 60
  names+=("farm before (no-op)") cmds+=("$before_cmd") preps+=("true")
fi
json="$results/$name-noop.json"
args=()
for i in "${!names[@]}"; do args+=(--prepare "${preps[i]}"); done
for i in "${!names[@]}"; do args+=(-n "${names[i]}" "${cmds[i]}"); done
say "hyperfine: no-op builds of the large app, $runs runs each"
run_hyperfine -N --warmup 2 --runs "$runs" --export-json "$json" "${args[@]}" || die "hyperfine failed"
$noop_cmd >/dev/null
metrics=$(python3 -c 'import json, sys; m = json.load(open(sys.argv[1])); print("sources", json.dumps(m["sources"]), "outputs", json.dumps(m["outputs"]))' "$out/farm-metrics.json")

# --- report ----------------------------------------------------------------------
section "$name: no-op build of a large npm-workspaces FARM app (BIGAPP_DEPS=$deps)"
machine_line
echo "$farm_version"
echo "the app: $src_files source files ($js_modules JS modules in apps/web and $packages workspace packages),"
echo "  $npm_pkgs npm packages, $wheels wheels and $debs Debian packages in farm.lock ($((npm_pkgs + wheels + debs)) locked);"
echo "  the output directory: $out_files paths"
echo "  ($site_files files under backend/), images $(mib $((image_bytes / 1024))) compressed"
echo
print_table "$json" "farm no-op"
echo "the last no-op's farm-metrics.json: $metrics"
echo
echo "peak RSS (farm's own VmHWM / the largest process of its tree, GNU time), wall time:"
read -r f t s <"$work/cold-rss.txt"
echo "  cold build --no-cache:            $(mib "$f") / $(mib "$t"), $((s / 1000)) s"
read -r f t s <"$work/images-rss.txt"
echo "  --rerun images, cold layer cache: $(mib "$f") / $(mib "$t"), $((s / 1000)) s (images step ${images_ms} ms)"
if [[ -f $results/$name-fetch-rss.txt ]]; then
  { read -r f t s && read -r when; } <"$results/$name-fetch-rss.txt"
  echo "  fetch, downloading everything:    $(mib "$f") / $(mib "$t"), $((s / 1000)) s ($when)"
fi
read -r f t s <"$work/fetch-again.txt"
echo "  fetch, everything present:        $(mib "$f") / $(mib "$t"), $((s / 1000)) s"
echo
echo "commands (before each run):"
for i in "${!names[@]}"; do echo "  ${names[i]}: ${cmds[i]}   (${preps[i]})"; done
