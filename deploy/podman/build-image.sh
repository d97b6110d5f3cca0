#!/usr/bin/env bash
# Builds the production image (deploy/Dockerfile, unchanged) with podman and no registry: the
# base images come from setup.sh, the npm packages from an offline cache filled on the host from
# package-lock.json (the host reaches the npm registry; containers here do not).
#   deploy/podman/build-image.sh [TAG [PODMAN-BUILD-ARGS…]]   default TAG: localhost/arrowquant:<package.json version>
#   e.g. build-image.sh localhost/arrowquant-build:0.1.0 --target build   (the build stage alone)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
"$ROOT/deploy/podman/setup.sh"
export CONTAINERS_CONF="$ROOT/deploy/podman/containers.conf"
VERSION=$(node -p "require('$ROOT/package.json').version")
TAG=${1:-localhost/arrowquant:$VERSION}
shift || true
NPM_CACHE="${ARROWQUANT_CACHE:-$ROOT/.cache}/podman/npm"
mkdir -p "$NPM_CACHE"

# Fill the cache once per lock file: an install of exactly the lock's packages into a scratch dir.
lock_hash=$(sha256sum "$ROOT/package-lock.json" | cut -c1-16)
if [[ ! -f "$NPM_CACHE/.filled-$lock_hash" ]]; then
  scratch=$(mktemp -d)
  trap 'rm -rf "$scratch"' EXIT
  cp "$ROOT/package.json" "$ROOT/package-lock.json" "$scratch/"
  (cd "$scratch" && npm ci --ignore-scripts --no-audit --no-fund --prefer-offline --cache "$NPM_CACHE" --loglevel=error >/dev/null)
  touch "$NPM_CACHE/.filled-$lock_hash"
fi

podman build --pull=never --quiet \
  --volume "$NPM_CACHE:/npm-offline-cache" \
  --build-arg npm_config_offline=true --build-arg npm_config_cache=/npm-offline-cache \
  "$@" -f "$ROOT/deploy/Dockerfile" -t "$TAG" "$ROOT" >/dev/null
echo "$TAG"
