#!/usr/bin/env bash
# Runs every benchmark in bench/ one after the other and keeps going when one
# fails, so a broken row never hides the others. The full output is also
# written to $FARM_BENCH_HOME/results/run-all.txt (default ~/.cache/farm-bench).
#
# Usage: bench/run-all.sh [sandbox|build|check|images|remote|bigapp ...]   (default: all six)
set -uo pipefail
bench_dir=$(cd "$(dirname "$0")" && pwd)
results="${FARM_BENCH_HOME:-$HOME/.cache/farm-bench}/results"
mkdir -p "$results"

benches=("$@")
((${#benches[@]})) || benches=(sandbox build check images remote bigapp)

# One farm binary for all of them: built (and copied aside) once here,
# unless FARM_BIN is set.
. "$bench_dir/lib.sh"
build_farm
export FARM_BIN=$farm FARM_BIN_COMMIT=${farm_commit:-}

failed=()
{
  for b in "${benches[@]}"; do
    [[ -x $bench_dir/$b.sh ]] || {
      echo "error: no benchmark bench/$b.sh (choose from: sandbox, build, check, images, remote, bigapp)" >&2
      failed+=("$b")
      continue
    }
    start=$SECONDS
    if "$bench_dir/$b.sh"; then
      echo "($b.sh took $((SECONDS - start)) s)"
    else
      echo "error: bench/$b.sh failed after $((SECONDS - start)) s; the others still run" >&2
      failed+=("$b")
    fi
  done
  ((${#failed[@]} == 0)) || echo "failed: ${failed[*]}"
} 2>&1 | tee "$results/run-all.txt"
# The exit status of the loop, not of tee.
grep -q '^failed: ' "$results/run-all.txt" && exit 1
exit 0
