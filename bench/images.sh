#!/usr/bin/env bash
# The app image of the example app (examples/farm-app), in one run:
#
# (1) Assembling the image from the build outputs (base = the merged Debian
#     runtime root, python-deps = the backend's site-packages, app = the
#     backend's code, frontend = the static files):
#     - `farm build --hermetic --rerun images`: every other step comes from
#       the action cache, the images step runs again; with a cold layer cache
#       ($FARM_HOME/cache/layers removed before each run: every layer is
#       written and compressed) and with a warm one (the layers are written
#       and hashed to find their diffIDs, the compressed blobs come from the
#       cache).
#     - the same cold run three ways: gzip on one thread (RAYON_NUM_THREADS=1
#       sizes farm's compression pool), parallel gzip (the default: 1 MiB
#       blocks compressed on every core, the same bytes) and zstd
#       (`--compression zstd`, level 3, one thread), beside `tar | gzip -6`
#       and `tar | zstd -3` of the same trees, in a table of their own with
#       the ratios to `tar | gzip -6`, with farm's images step time of each
#       (farm-metrics.json) and the compressed sizes.
#     - buildah: `bud --layers --timestamp 0` of a Containerfile `FROM
#       scratch` + one `COPY <layer>/ /` per layer, then `push` into an OCI
#       layout (bud keeps layers uncompressed; push compresses them). The
#       four trees are farm's own layers, extracted once from the built
#       image's blobs into plain directories, so both tools pack the same
#       files. Private storage (--root/--runroot under the bench home), with
#       --storage-driver vfs (every layer a full copy of the root) and, for
#       comparison, overlay; with empty storage before each run, and with
#       every layer already in the storage (bud's layer cache hits).
#     - `tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -c |
#       gzip -6 -n` of each of the four trees, one after the other: the plain
#       pipe, without an image around it.
# (2) The rebuild after a one-line backend change (a unique comment appended
#     to apps/api/app/main.py before each run): `farm build --hermetic images`
#     (the backend step runs again in the sandbox, then the images step, which
#     should recompress only the app layer) beside buildah rebuilding the same
#     Containerfile after the same change to its copy of the app tree (bud's
#     layer cache keeps base and python-deps; app and frontend are new
#     layers) and pushing it. farm's row includes building the backend
#     (pip install of the locked wheels, compileall, the OpenAPI schema),
#     buildah's only copies the edited file, so the images step's own time
#     is also printed, from .farm/out/farm-metrics.json.
#
# Then: whether two farm runs give the same image manifest digest, whether
# buildah's --timestamp 0 does (two builds in fresh storage, the second after
# every file's mtime changed), and whether farm's and buildah's images hold
# the same files (both unpacked with umoci).
#
# Usage: bench/images.sh [compression]   (BENCH_IMAGES_RUNS, default 5)
#   compression: only the farm and tar rows of (1) and the compression
#   table (no buildah, no reproducibility checks, no rebuild; ~1 min).
set -euo pipefail
. "$(dirname "$0")/lib.sh"

runs=${BENCH_IMAGES_RUNS:-5}
mode=${1:-all}
[[ $mode == all || $mode == compression ]] || die "unknown mode $mode" "run bench/images.sh or bench/images.sh compression"

need_packages hyperfine docker-registry curl buildah umoci zstd
build_farm
work="$BENCH_HOME/work/images"
prepare_app "$work/app"
layer_cache="$FARM_HOME/cache/layers"
layout="$app/.farm/out/images/app"
tag="0.1.0"
image="localhost/farm-bench-app:$tag"
results="$BENCH_HOME/results"
mkdir -p "$results"

# manifest_digest LAYOUT: the digest of the one image in an OCI layout
# (farm's layouts also hold the SBOMs as artifact manifests, which are skipped).
manifest_digest() {
  python3 - "$1/index.json" <<'PY'
import json, sys
m = [d for d in json.load(open(sys.argv[1]))["manifests"] if "artifactType" not in d]
assert len(m) == 1, f"{sys.argv[1]}: expected one image manifest, found {len(m)}"
print(m[0]["digest"])
PY
}

# The images step's own duration in the last build.
images_step_ms() {
  python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["steps"]["images"]["duration_ms"])' \
    "$app/.farm/out/farm-metrics.json"
}

say "farm build --hermetic images (the backend, frontend and models steps, then the images step)"
timeout -s KILL 900 "$farm" --project "$app" -q build --hermetic images >/dev/null ||
  die "farm build --hermetic images failed in $app (log: farm --project $app log images)"
[[ -f $layout/index.json ]] || die "$layout/index.json is missing after farm build --hermetic images"
farm_digest_built=$(manifest_digest "$layout")

# The four layer trees: farm's layer blobs (names and digests from the build
# manifest), each extracted into a directory of its own.
tree="$work/tree"
rm -rf "$tree" && mkdir -p "$tree"
mapfile -t layers < <(python3 - "$app/.farm/out/farm-manifest.json" <<'PY'
import json, sys
for layer in json.load(open(sys.argv[1]))["outputs"]["image.app"]["metadata"]["layers"]:
    print(layer["name"], layer["digest"].split(":", 1)[1])
PY
)
((${#layers[@]} > 0)) || die "farm-manifest.json in $app/.farm/out lists no layers for image.app"
layer_names=()
for l in "${layers[@]}"; do
  name=${l% *} hex=${l#* }
  mkdir -p "$tree/$name"
  tar -xzf "$layout/blobs/sha256/$hex" --numeric-owner --same-owner --same-permissions -C "$tree/$name" ||
    die "could not extract layer $name (blobs/sha256/$hex) of $layout"
  layer_names+=("$name")
done
{
  echo "FROM scratch"
  for name in "${layer_names[@]}"; do echo "COPY $name/ /"; done
} >"$tree/Containerfile"

# buildah, private storage per use: DRIVER and a directory name.
buildah_cmd() { echo "buildah --storage-driver $1 --root $work/buildah/$2/root --runroot $work/buildah/$2/run"; }
# bud + push into OUT; the bud's image ID is not needed.
buildah_build() {
  local b
  b=$(buildah_cmd "$1" "$2")
  echo "$b bud --quiet --layers --timestamp 0 -f $3/Containerfile -t $image $3 >/dev/null &&" \
    "$b push --quiet --compression-format gzip --compression-level 6 $image oci:$4:$tag"
}
buildah_skip=""
rm -rf "$work/buildah" && mkdir -p "$work/buildah"
if [[ $mode == compression ]]; then
  buildah_skip="not run by bench/images.sh compression"
elif ! out=$(bash -c "$(buildah_build vfs probe "$tree" "$work/buildah/probe.oci")" 2>&1); then
  buildah_skip="buildah bud/push failed: $(tail -3 <<<"$out" | tr '\n' ' ')"
fi
rm -rf "$work/buildah/probe" "$work/buildah/probe.oci"

# --- (1) assembling the image --------------------------------------------------

targz="$work/targz"
tar_cmd="mkdir -p $targz && for d in ${layer_names[*]}; do tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner"
tar_cmd+=" -C $tree/\$d -c . | gzip -6 -n > $targz/\$d.tar.gz || exit 1; done"
# The no-op build (every step cached, the images step too) is the floor
# under both farm rows: reading the config, the lock and the action cache.
names=("farm --rerun images (cold layer cache)" "farm --rerun images (warm layer cache)" "farm build images (no-op)")
commands=("$farm --project $app -q build --hermetic --rerun images" "$farm --project $app -q build --hermetic --rerun images"
  "$farm --project $app -q build --hermetic images")
prepares=("rm -rf $layer_cache" "true" "true")
# The compression variants, each with a cold layer cache.
names+=("farm --rerun images, gzip on 1 thread (cold)" "farm --rerun images, zstd (cold)")
commands+=("RAYON_NUM_THREADS=1 ${commands[0]}" "${commands[0]} --compression zstd")
prepares+=("rm -rf $layer_cache" "rm -rf $layer_cache")
if [[ -z $buildah_skip ]]; then
  for driver in vfs overlay; do
    names+=("buildah bud + push ($driver, empty storage)")
    commands+=("$(buildah_build "$driver" "cold-$driver" "$tree" "$work/buildah/cold-$driver.oci")")
    prepares+=("rm -rf $work/buildah/cold-$driver $work/buildah/cold-$driver.oci")
    [[ $driver == vfs ]] || continue
    # Filled once here; every timed run finds all four layers in the storage.
    bash -c "$(buildah_build vfs warm-vfs "$tree" "$work/buildah/warm-vfs.oci")" >/dev/null ||
      die "buildah could not fill its layer cache in $work/buildah/warm-vfs"
    names+=("buildah bud + push (vfs, layers cached)")
    commands+=("$(buildah_build vfs warm-vfs "$tree" "$work/buildah/warm-vfs.oci")")
    prepares+=("rm -rf $work/buildah/warm-vfs.oci")
  done
fi
names+=("tar | gzip -6 (${#layer_names[@]} layers)") commands+=("$tar_cmd") prepares+=("rm -rf $targz")
tarzst="$work/tarzst"
zst_cmd="mkdir -p $tarzst && for d in ${layer_names[*]}; do tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner"
zst_cmd+=" -C $tree/\$d -c . | zstd -3 -q -c > $tarzst/\$d.tar.zst || exit 1; done"
names+=("tar | zstd -3 (${#layer_names[@]} layers)") commands+=("$zst_cmd") prepares+=("rm -rf $tarzst")

rm -rf "$layer_cache"
farm_probe "${commands[0]}" 60
farm_probe "${commands[1]}" 30

assemble_json="$results/images-assemble.json"
args=()
for i in "${!names[@]}"; do args+=(--prepare "${prepares[i]}"); done
for i in "${!names[@]}"; do args+=(-n "${names[i]}" "${commands[i]}"); done
say "hyperfine: assembling the image, warmup 1, $runs runs each"
run_hyperfine --warmup 1 --runs "$runs" --export-json "$assemble_json" "${args[@]}" ||
  die "hyperfine failed on the image assembly"
assemble_load=$bench_load

# The images step's own time for each compression variant (one more cold
# run each), and the zstd build's manifest for its layer sizes.
variant_ms=()
for i in 3 4 0; do
  rm -rf "$layer_cache"
  bash -c "${commands[i]}" >/dev/null || die "${names[i]} failed: ${commands[i]}"
  variant_ms+=("$(images_step_ms)")
  [[ $i != 4 ]] || cp "$app/.farm/out/farm-manifest.json" "$work/farm-manifest-zstd.json"
done
compression_json="$results/images-compression.json"
python3 - "$assemble_json" "$compression_json" "${names[0]}" "${names[3]}" "${names[4]}" "${names[-2]}" "${names[-1]}" <<'PY'
import json, sys
data = json.load(open(sys.argv[1]))
keep = sys.argv[3:]
data["results"] = sorted((r for r in data["results"] if r["command"] in keep), key=lambda r: keep.index(r["command"]))
json.dump(data, open(sys.argv[2], "w"))
PY

print_compression() {
  echo "compression: farm's cold image beside the plain pipes over the same trees"
  print_table "$compression_json" "${names[-2]}"
  echo "farm's images step alone (farm-metrics.json, one more cold run each): gzip on 1 thread ${variant_ms[0]} ms," \
    "parallel gzip ${variant_ms[2]} ms, zstd ${variant_ms[1]} ms"
  echo "compressed layer sizes (bytes):"
  # The last build of either mode is a gzip one.
  python3 - "$app/.farm/out/farm-manifest.json" "$work/farm-manifest-zstd.json" "$targz" "$tarzst" "${layer_names[@]}" <<'PY'
import json, os, sys
def sizes(path):
    return {l["name"]: l["size"] for l in json.load(open(path))["outputs"]["image.app"]["metadata"]["layers"]}
gz, zst = sizes(sys.argv[1]), sizes(sys.argv[2])
for name in sys.argv[5:]:
    pgz = os.path.getsize(os.path.join(sys.argv[3], name + ".tar.gz"))
    pzst = os.path.getsize(os.path.join(sys.argv[4], name + ".tar.zst"))
    print(f"  {name:<12} farm gzip {gz[name]:>10}  tar | gzip -6 {pgz:>10} ({gz[name] / pgz - 1:+.2%})"
          f"   farm zstd {zst[name]:>10}  tar | zstd -3 {pzst:>10}")
PY
}

if [[ $mode == compression ]]; then
  section "images: compression of the example app's image"
  bench_load=$assemble_load machine_line
  echo "$farm_version"
  echo "$(hyperfine --version), $(gzip --version | head -1), $(zstd --version), $(tar --version | head -1)"
  echo
  print_table "$assemble_json" "${names[0]}"
  echo
  print_compression
  exit 0
fi

# --- reproducibility and content --------------------------------------------------

say "digests: farm twice, buildah twice"
rm -rf "$layer_cache"
"$farm" --project "$app" -q build --hermetic --rerun images >/dev/null || die "farm --rerun images failed"
farm_digest_cold=$(manifest_digest "$layout")
images_ms_cold=$(images_step_ms)
"$farm" --project "$app" -q build --hermetic --rerun images >/dev/null || die "farm --rerun images failed"
farm_digest_warm=$(manifest_digest "$layout")
images_ms_warm=$(images_step_ms)
if [[ -z $buildah_skip ]]; then
  bash -c "$(buildah_build vfs repro1 "$tree" "$work/buildah/repro1.oci")" >/dev/null || die "buildah failed (repro1)"
  # Every file and directory gets a new mtime before the second build.
  find "$tree" -exec touch -h -d "@$(date +%s)" {} +
  bash -c "$(buildah_build vfs repro2 "$tree" "$work/buildah/repro2.oci")" >/dev/null || die "buildah failed (repro2)"
  buildah_digest1=$(manifest_digest "$work/buildah/repro1.oci")
  buildah_digest2=$(manifest_digest "$work/buildah/repro2.oci")
  rm -rf "$work/buildah/repro1" "$work/buildah/repro2"

  # Both images unpacked by umoci; listed by path, type, mode, owner and
  # symlink target, and compared by content.
  say "umoci unpack: farm's image and buildah's"
  content_same="yes" content_diff=""
  for which in farm buildah; do
    rm -rf "$work/unpacked-$which"
    src=$layout
    [[ $which == buildah ]] && src="$work/buildah/repro1.oci"
    umoci unpack --image "$src:$tag" "$work/unpacked-$which" >/dev/null 2>&1 ||
      die "umoci unpack --image $src:$tag failed"
    (cd "$work/unpacked-$which/rootfs" && find . -printf '%p %y %m %U:%G %l\n' | LC_ALL=C sort) >"$work/listing-$which.txt"
  done
  if ! content_diff=$(diff "$work/listing-farm.txt" "$work/listing-buildah.txt"); then
    content_same="no"
  elif ! content_diff=$(diff -r --no-dereference "$work/unpacked-farm/rootfs" "$work/unpacked-buildah/rootfs"); then
    content_same="no"
  fi
  files=$(wc -l <"$work/listing-farm.txt")
  rm -rf "$work/unpacked-farm" "$work/unpacked-buildah"
fi

# --- (2) the rebuild after a one-line change ---------------------------------------

# Run before each rebuild: records what the previous rebuild did (its metrics
# and how many layer-cache records it wrote, i.e. how many layers it
# compressed), then appends a unique comment to main.py.
edit="$work/edit-farm.sh"
rebuild_log="$work/rebuild-metrics.jsonl"
cat >"$edit" <<EOF
#!/usr/bin/env bash
set -euo pipefail
if [[ -f $work/edit.marker ]]; then
  n=\$(find $layer_cache/layers -type f -newer $work/edit.marker | wc -l)
  printf '{"recompressed": %s, "metrics": %s}\n' "\$n" "\$(tr -d '\n' <$app/.farm/out/farm-metrics.json)" >>$rebuild_log
fi
[[ \${1:-} == record ]] && exit 0
touch $work/edit.marker
echo "# bench edit \$(date +%s%N)" >>$app/apps/api/app/main.py
EOF
chmod +x "$edit"
rm -f "$rebuild_log" "$work/edit.marker"

rb_names=("farm build --hermetic images") rb_commands=("$farm --project $app -q build --hermetic images")
rb_prepares=("$edit")
if [[ -z $buildah_skip ]]; then
  for driver in vfs overlay; do
    rm -rf "$work/tree-$driver" && cp -a "$tree" "$work/tree-$driver"
    # Fills bud's layer cache, so each timed run changes one file since the last.
    bash -c "$(buildah_build "$driver" "rebuild-$driver" "$work/tree-$driver" "$work/buildah/rebuild-$driver.oci")" \
      >/dev/null || die "buildah ($driver) failed in $work/buildah/rebuild-$driver"
    rb_names+=("buildah bud --layers + push ($driver)")
    rb_commands+=("$(buildah_build "$driver" "rebuild-$driver" "$work/tree-$driver" "$work/buildah/rebuild-$driver.oci")")
    rb_prepares+=("echo \"# bench edit \$(date +%s%N)\" >>$work/tree-$driver/app/app/app/main.py")
  done
fi
# The farm probe is itself a rebuild after an edit.
"$edit"
farm_probe "${rb_commands[0]}" 120

rebuild_json="$results/images-rebuild.json"
args=()
for i in "${!rb_names[@]}"; do args+=(--prepare "${rb_prepares[i]}"); done
for i in "${!rb_names[@]}"; do args+=(-n "${rb_names[i]}" "${rb_commands[i]}"); done
say "hyperfine: rebuild after a one-line backend change, warmup 1, $runs runs each"
run_hyperfine --warmup 1 --runs "$runs" --export-json "$rebuild_json" "${args[@]}" ||
  die "hyperfine failed on the rebuild"
"$edit" record
farm_digest_edited=$(manifest_digest "$layout")
# vfs keeps a full copy of the root per layer of every rebuilt image.
rm -rf "$work/buildah"

# --- report ------------------------------------------------------------------------

section "images: the example app's image"
bench_load=$assemble_load machine_line
echo "$farm_version"
echo "$(buildah --version), $(hyperfine --version), $(gzip --version | head -1), $(tar --version | head -1)"
echo
echo "(1) assembling the image from the build outputs"
print_table "$assemble_json" "${names[0]}"
[[ -z $buildah_skip ]] || echo "not measured: buildah: $buildah_skip"
echo "farm's images step alone (farm-metrics.json, one more run each): cold layer cache $images_ms_cold ms," \
  "warm $images_ms_warm ms"
echo
echo
print_compression
echo
echo "(2) rebuild after a one-line change to apps/api/app/main.py, load average before timing: $bench_load"
print_table "$rebuild_json" "${rb_names[0]}"
python3 - "$rebuild_log" <<'PY'
import json, statistics, sys
runs = [json.loads(line) for line in open(sys.argv[1])]
ms = lambda step: [r["metrics"]["steps"][step]["duration_ms"] for r in runs]
rerun = sorted({s for r in runs for s, v in r["metrics"]["steps"].items() if not v["cached"]})
recompressed = sorted({r["recompressed"] for r in runs})
print(f"farm, over its {len(runs)} rebuilds (probe, warmup and timed; from farm-metrics.json):")
print(f"  steps run again: {', '.join(rerun)}; cached: "
      + ", ".join(sorted({s for r in runs for s, v in r['metrics']['steps'].items() if v['cached']})))
for step in ("backend", "images"):
    v = ms(step)
    print(f"  {step} step: mean {statistics.mean(v):.0f} ms, min {min(v)} ms, max {max(v)} ms")
print(f"  layers compressed per rebuild (layer-cache records written): {', '.join(map(str, recompressed))}")
PY
echo
echo "reproducibility (image manifest digests):"
same() { [[ $1 == "$2" ]] && echo "same" || echo "DIFFERENT"; }
echo "  farm, built:                  $farm_digest_built"
echo "  farm, --rerun, cold cache:    $farm_digest_cold"
echo "  farm, --rerun, warm cache:    $farm_digest_warm   ($(same "$farm_digest_cold" "$farm_digest_warm") as cold; $(same "$farm_digest_built" "$farm_digest_warm") as built)"
echo "  farm, after the edits:        $farm_digest_edited   (a new main.py: a new image)"
if [[ -z $buildah_skip ]]; then
  echo "  buildah --timestamp 0, 1st:   $buildah_digest1"
  echo "  buildah, 2nd, new mtimes:     $buildah_digest2   ($(same "$buildah_digest1" "$buildah_digest2") as the 1st)"
  echo "content: farm's and buildah's images unpacked by umoci hold the same $files paths, types, modes, owners, symlinks and contents: $content_same"
  [[ $content_same == yes ]] || head -20 <<<"$content_diff"
fi
echo
echo "commands (layer trees: $tree, extracted from farm's layer blobs):"
for i in "${!names[@]}"; do echo "  ${names[i]}: ${commands[i]}   (before each run: ${prepares[i]})"; done
for i in "${!rb_names[@]}"; do echo "  ${rb_names[i]}: ${rb_commands[i]}   (before each run: ${rb_prepares[i]})"; done
