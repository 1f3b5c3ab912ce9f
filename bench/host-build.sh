#!/usr/bin/env bash
# The example app's build done directly on the host, without farm: the same
# work as farm's frontend and backend steps (offline installs from what was
# downloaded before, the Vite build, wheels installed without bytecode then
# compiled with checked-hash .pyc, the OpenAPI schema), with the host's own
# node, npm and python3. bench/build.sh times it beside a cold farm build and
# bench/check.sh hands it to reprotest.
#
#   host-build.sh prepare        fill the npm cache and the wheelhouse (network)
#   host-build.sh build APP OUT  build APP (a copy of examples/farm-app) into OUT
#
# Environment: HOST_NPM_CACHE, HOST_WHEELHOUSE (where prepare puts them) and
# HOST_PYTHON (the python3 to use; default: the one on PATH).
set -euo pipefail
export npm_config_update_notifier=false

: "${HOST_NPM_CACHE:?set HOST_NPM_CACHE to the npm cache directory}"
: "${HOST_WHEELHOUSE:?set HOST_WHEELHOUSE to the wheel directory}"
py=${HOST_PYTHON:-python3}
example=$(cd "$(dirname "$0")/../examples/farm-app" && pwd)

case ${1:-} in
prepare)
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  cp -a "$example/apps/web/." "$tmp/"
  rm -rf "$tmp/node_modules" "$tmp/dist"
  (cd "$tmp" && npm ci --cache "$HOST_NPM_CACHE" --prefer-offline --no-audit --no-fund --loglevel error >/dev/null)
  mkdir -p "$HOST_WHEELHOUSE"
  "$py" -m pip download --quiet --disable-pip-version-check --only-binary :all: \
    -d "$HOST_WHEELHOUSE" -r "$example/apps/api/requirements.txt"
  ;;
build)
  app=${2:?usage: host-build.sh build APP OUT}
  out=${3:?usage: host-build.sh build APP OUT}
  mkdir -p "$out"
  out=$(cd "$out" && pwd)
  # frontend: npm ci from the warm cache only, then the app's build script.
  (
    cd "$app/apps/web"
    npm ci --offline --cache "$HOST_NPM_CACHE" --no-audit --no-fund --loglevel error >/dev/null
    npm run --silent build >/dev/null
  )
  mkdir -p "$out/frontend"
  cp -R "$app/apps/web/dist/." "$out/frontend/"
  # backend: the wheels downloaded by prepare, nothing from an index.
  PIP_FIND_LINKS="" PIP_ROOT_USER_ACTION=ignore "$py" -m pip install --quiet --no-index --find-links "$HOST_WHEELHOUSE" --only-binary :all: \
    --no-compile --no-cache-dir --disable-pip-version-check --no-warn-script-location \
    --target "$out/backend/site-packages" -r "$app/apps/api/requirements.txt"
  mkdir -p "$out/backend/app"
  cp -R "$app/apps/api/." "$out/backend/app/"
  "$py" -m compileall -q -j 1 --invalidation-mode checked-hash "$out/backend"
  (
    cd "$out/backend/app"
    PYTHONPATH="$out/backend/app:$out/backend/site-packages" "$py" -c '
import json, sys
from app.main import app
sys.stdout.write(json.dumps(app.openapi(), sort_keys=True, indent=2) + "\n")' >"$out/openapi.json"
  )
  ;;
*)
  echo "usage: host-build.sh prepare | host-build.sh build APP OUT" >&2
  exit 2
  ;;
esac
