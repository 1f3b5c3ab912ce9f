#!/usr/bin/env bash
# Runs every benchmark in bench/ one after the other and keeps going when one
# fails, so a broken row never hides the others. The full output is also
# written to $FARM_BENCH_HOME/results/run-all.txt (default ~/.cache/farm-bench).
#
# Usage: bench/run-all.sh [sandbox|build|check ...]   (default: all three)
set -uo pipefail
bench_dir=$(cd "$(dirname "$0")" && pwd)
results="${FARM_BENCH_HOME:-$HOME/.cache/farm-bench}/results"
mkdir -p "$results"

benches=("$@")
((${#benches[@]})) || benches=(sandbox build check)

# One farm binary for all of them: build it once here, unless FARM_BIN is set.
if [[ -z ${FARM_BIN:-} ]]; then
  echo "building farm (cargo build --release)" >&2
  cargo build --release --locked --quiet --manifest-path "$bench_dir/../Cargo.toml" || {
    echo "error: cargo build --release failed; set FARM_BIN to benchmark an existing farm binary" >&2
    exit 1
  }
  export FARM_BIN="$bench_dir/../target/release/farm"
fi

failed=()
{
  for b in "${benches[@]}"; do
    [[ -x $bench_dir/$b.sh ]] || {
      echo "error: no benchmark bench/$b.sh (choose from: sandbox, build, check)" >&2
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
