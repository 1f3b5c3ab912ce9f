#!/usr/bin/env bash
# The cost of one trivial sandboxed step, farm beside its peers in one
# hyperfine run:
#
#   farm exec -- true   in the example app (locked and fetched first): reads
#                       farm.toml and farm.lock, checks the store, assembles a
#                       root from the pinned Debian base and toolchains and
#                       runs `true` in new user/mount/PID/net/UTS/IPC
#                       namespaces with Landlock, rlimits and a reaper.
#   bwrap               bubblewrap with the same kind of isolation
#                       (--unshare-all, read-only /usr, fresh /proc, /dev, /tmp,
#                       cleared environment): the floor a namespace sandbox
#                       costs, with no lock, store or root assembly.
#   nix-build --check   Nix's sandboxed build of a trivial derivation
#                       (builder /bin/sh = busybox-static, substituters off),
#                       rebuilt with --check so every run really builds: parse
#                       and evaluate a .nix file, talk to the store database,
#                       set up the sandbox, build, compare with the stored output.
#   true                no sandbox at all: the cost of starting a process.
#
# Nix runs as root here without a daemon and without touching /nix: a
# bench-private nix.conf (build-users-group empty, so root builds without the
# nixbld users) and a chroot store (--store DIR, the store's real location is
# DIR/nix/store); the build still sees /nix/store inside its sandbox.
#
# The table's ratios are relative to farm exec; the line under it gives
# farm exec / bwrap, the figure issue 13's goal (≤ 2) is about, then each
# command's CPU time (hyperfine's user + system), which the load of a shared
# machine disturbs less than wall time.
#
# Usage: bench/sandbox.sh   (BENCH_WARMUP, BENCH_MIN_RUNS to change hyperfine's counts;
#        FARM_BIN_BEFORE=/path/to/an/older/farm to time its `exec -- true` in the same run)
set -euo pipefail
. "$(dirname "$0")/lib.sh"

warmup=${BENCH_WARMUP:-5}
min_runs=${BENCH_MIN_RUNS:-30}

need_packages hyperfine bubblewrap nix-bin busybox-static docker-registry curl
build_farm
prepare_app "$BENCH_HOME/work/sandbox/app"

names=() commands=() skipped=()

# farm: the row every ratio is relative to, so it must work, and quickly:
# hyperfine would otherwise sit on a hanging sandbox for ever.
farm_probe "$farm --project $app exec -- true"
names+=("farm exec") commands+=("$farm --project $app exec -- true")
if [[ -n ${FARM_BIN_BEFORE:-} ]]; then
  farm_probe "$FARM_BIN_BEFORE --project $app exec -- true"
  names+=("farm exec (before)") commands+=("$FARM_BIN_BEFORE --project $app exec -- true")
fi

bwrap_cmd="bwrap --unshare-all --die-with-parent --clearenv --hostname farm-bench --ro-bind /usr /usr \
--symlink usr/lib64 /lib64 --symlink usr/lib /lib --symlink usr/bin /bin --symlink usr/sbin /sbin \
--proc /proc --dev /dev --tmpfs /tmp --chdir / true"
if out=$($bwrap_cmd 2>&1); then
  names+=("bwrap") commands+=("$bwrap_cmd")
else
  skipped+=("bwrap: cannot sandbox here: $out")
fi

# Nix: private configuration and store under $BENCH_HOME/nix.
nix_dir="$BENCH_HOME/nix"
mkdir -p "$nix_dir/conf"
cat >"$nix_dir/conf/nix.conf" <<'CONF'
# farm bench: root builds without a daemon or the nixbld group; nothing from substituters.
build-users-group =
sandbox = true
substitute = false
CONF
cat >"$nix_dir/trivial.nix" <<'NIX'
derivation {
  name = "farm-bench-trivial";
  system = "x86_64-linux";
  builder = "/bin/sh";
  args = [ "-c" "true; echo ok > $out" ];
}
NIX
export NIX_CONF_DIR="$nix_dir/conf"
nix_build="nix-build --store $nix_dir/store --option substitute false --option sandbox true \
--option sandbox-paths /bin/sh=/bin/busybox --no-out-link"
if [[ $(uname -m) != x86_64 ]]; then
  skipped+=("nix-build: the trivial derivation is for x86_64-linux; this machine is $(uname -m)")
elif ldd /bin/busybox >/dev/null 2>&1; then
  skipped+=("nix-build: /bin/busybox is dynamically linked, so it cannot run alone in Nix's sandbox (install busybox-static)")
elif ! out=$($nix_build "$nix_dir/trivial.nix" 2>&1); then
  skipped+=("nix-build: cannot build here: $(tail -3 <<<"$out" | tr '\n' ' ')")
elif ! out=$($nix_build --check "$nix_dir/trivial.nix" 2>&1); then
  skipped+=("nix-build --check: cannot rebuild here: $(tail -3 <<<"$out" | tr '\n' ' ')")
else
  names+=("nix-build --check") commands+=("$nix_build --check $nix_dir/trivial.nix")
fi

names+=("true (no sandbox)") commands+=("true")

args=()
for i in "${!names[@]}"; do args+=(-n "${names[i]}" "${commands[i]}"); done
json="$BENCH_HOME/results/sandbox.json"
mkdir -p "$(dirname "$json")"
say "hyperfine: ${#names[@]} commands, warmup $warmup, at least $min_runs runs each"
run_hyperfine -N --warmup "$warmup" --min-runs "$min_runs" --export-json "$json" "${args[@]}" ||
  die "hyperfine failed"

section "sandbox: one trivial sandboxed step"
machine_line
echo "$farm_version"
print_table "$json" "farm exec"
python3 - "$json" <<'PY'
import json, sys
results = json.load(open(sys.argv[1]))["results"]
rows = {r["command"]: r["mean"] for r in results}
medians = {r["command"]: r["median"] for r in results}
bwrap = rows.get("bwrap")
for name in ("farm exec", "farm exec (before)"):
    if bwrap and name in rows:
        # The median beside the mean: on a shared machine a few runs that
        # waited for a CPU move the mean more than the typical run.
        print(f"{name} / bwrap: {rows[name] / bwrap:.2f} (goal ≤ 2); medians: {medians[name] / medians['bwrap']:.2f}")
# CPU time (user + system of the command and its children) moves less with
# the machine's load than wall time does.
cpu = {r["command"]: r["user"] + r["system"] for r in results}
print("CPU per run (user + system): " + ", ".join(f"{n} {t * 1000:.1f} ms" for n, t in cpu.items()))
if "bwrap" in cpu and "farm exec" in cpu:
    print(f"farm exec / bwrap in CPU time: {cpu['farm exec'] / cpu['bwrap']:.2f}")
PY
for s in "${skipped[@]}"; do echo "not measured: $s"; done
echo
echo "commands:"
for i in "${!names[@]}"; do echo "  ${names[i]}: ${commands[i]}"; done
