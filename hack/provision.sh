#!/usr/bin/env bash
# Install everything the local stack and the tests need, idempotently.
#
#   hack/provision.sh            # all of it
#   hack/provision.sh apt        # only Debian packages
#   hack/provision.sh python     # only the virtualenv (.venv) and the project
#   hack/provision.sh go         # only the tools built from Go modules
#
# Versions come from hack/versions.env. Heavy builds are cached outside the
# repository, keyed by version, under $VYAPAAR_CACHE (default
# ~/.cache/vyapaar): a second run finds them and does nothing.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
# shellcheck source=versions.env
source "$here/versions.env"

cache=${VYAPAAR_CACHE:-$HOME/.cache/vyapaar}
venv=${VYAPAAR_VENV:-$root/.venv}
python=${PYTHON:-python3}

log() { printf '\033[1m[provision]\033[0m %s\n' "$*" >&2; }
stamp() { date +%s; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    log "need root for: $*"; return 1; fi
}

provision_apt() {
  local missing=()
  for pkg in $DEBIAN_PACKAGES $DEBIAN_NODE_PACKAGES; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  if [ ${#missing[@]} -eq 0 ]; then log "apt: all present ($DEBIAN_PACKAGES $DEBIAN_NODE_PACKAGES)"; return; fi
  local t0; t0=$(stamp)
  log "apt: installing ${missing[*]}"
  # Packages must not start system-wide daemons on their default ports: the
  # stack runs its own instances under its state directory. policy-rc.d is
  # Debian's documented switch for that; we only add it while installing.
  local policy=/usr/sbin/policy-rc.d added_policy=""
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null
    as_root chmod +x "$policy"; added_policy=1
  fi
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing[@]}"
  [ -n "$added_policy" ] && as_root rm -f "$policy"
  log "apt: done in $(( $(stamp) - t0 ))s"
}

provision_python() {
  local t0; t0=$(stamp)
  if [ ! -x "$venv/bin/python" ]; then
    log "python: creating $venv"
    "$python" -m venv "$venv"
  fi
  # Two distributions: the product (with its test/lint tools, the dev extra) and the
  # development tooling in hack/. Reinstall only when either pyproject.toml changed.
  local marker="$venv/.vyapaar-installed" wanted
  wanted=$(cat "$root/pyproject.toml" "$root/hack/pyproject.toml")
  if [ ! -f "$marker" ] || [ "$(cat "$marker")" != "$wanted" ]; then
    log "python: installing the product (runtime + dev extra) and the development tooling"
    "$venv/bin/pip" install -q --upgrade pip
    # hack[bench]: the peers of `vyapaar bench` (DBOS, the Temporal SDK) and its plots.
    "$venv/bin/pip" install -q -e "$root[dev]" -e "$root/hack[bench]"
    printf '%s' "$wanted" >"$marker"
  fi
  log "python: ready in $(( $(stamp) - t0 ))s ($venv)"
}

# A wrapper module that requires k8s.io/kubernetes and replaces every staging
# module (k8s.io/api, k8s.io/apiserver, ...) with its published v0.Y.Z tag:
# k8s.io/kubernetes itself points them at ./staging, which `go build` of the
# module from the proxy cannot follow.
kubernetes_wrapper() {
  local src=$1 version=$2 minor
  minor=${version#v1.}
  mkdir -p "$src"
  local mod staging
  mod=$(go mod download -json "k8s.io/kubernetes@$version" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  staging=$(sed -n 's#^\s*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#\1#p' "$mod")
  {
    echo "module vyapaar.dev/tools/kubernetes"
    echo
    echo "go 1.24.0"
    echo
    echo "require k8s.io/kubernetes $version"
    echo
    echo "replace ("
    for m in $staging; do echo "	$m => $m v0.$minor"; done
    echo ")"
  } >"$src/go.mod"
  cat >"$src/tools.go" <<'EOF'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
EOF
  (cd "$src" && go mod tidy)
}

build_kubernetes() {
  local out="$cache/kubernetes-$KUBERNETES_VERSION"
  # kubelet and kube-proxy: the local stack's real node (vyapaar stack up --node real).
  local bins="kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy"
  local ok=1; for b in $bins; do [ -x "$out/bin/$b" ] || ok=""; done
  if [ -n "$ok" ]; then log "go: kubernetes $KUBERNETES_VERSION cached"; return; fi
  local t0; t0=$(stamp)
  log "go: building kubernetes $KUBERNETES_VERSION ($bins) — 10-25 min cold on 2 cores"
  kubernetes_wrapper "$out/src" "$KUBERNETES_VERSION"
  local minor=${KUBERNETES_VERSION#v1.}; minor=${minor%%.*}
  local ld="-s -w"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld="$ld -X $p.gitVersion=$KUBERNETES_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor"
    ld="$ld -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  mkdir -p "$out/bin.tmp"
  (cd "$out/src" && CGO_ENABLED=0 go build -trimpath -ldflags "$ld" -o "$out/bin.tmp/" \
    $(for b in $bins; do echo "k8s.io/kubernetes/cmd/$b"; done))
  rm -rf "$out/bin" && mv "$out/bin.tmp" "$out/bin"
  log "go: kubernetes built in $(( $(stamp) - t0 ))s"
}

# kwok and helm are ordinary Go modules without replace directives, so
# `go install module/cmd@version` builds them as their authors tagged them.
build_go_install() {
  local name=$1 version=$2 ldflags=$3; shift 3
  local out="$cache/$name-$version"
  local ok=1; for pkg in "$@"; do [ -x "$out/bin/$(basename "$pkg")" ] || ok=""; done
  if [ -n "$ok" ]; then log "go: $name $version cached"; return; fi
  local t0; t0=$(stamp)
  log "go: building $name $version"
  for pkg in "$@"; do
    CGO_ENABLED=0 GOBIN="$out/bin" go install -trimpath -ldflags "-s -w $ldflags" "$pkg@$version"
  done
  log "go: $name built in $(( $(stamp) - t0 ))s"
}

# Jaeger v2 (github.com/jaegertracing/jaeger/cmd/jaeger), the local stack's trace
# backend. Its go.mod has a replace directive, so `go install ...@version` is refused:
# build it from a wrapper module that requires it and copies upstream's replace (a
# dependency's replace is not inherited).
build_jaeger() {
  local out="$cache/jaeger-$JAEGER_VERSION"
  if [ -x "$out/bin/jaeger" ]; then log "go: jaeger $JAEGER_VERSION cached"; return; fi
  local t0; t0=$(stamp)
  log "go: building jaeger $JAEGER_VERSION (~10 min cold on 2 cores)"
  mkdir -p "$out/src"
  cat >"$out/src/go.mod" <<GOMOD
module vyapaar.dev/tools/jaeger

go 1.24.6

require github.com/jaegertracing/jaeger $JAEGER_VERSION

// upstream's own replace (a dependency's replace is not inherited)
replace github.com/Shopify/sarama => github.com/Shopify/sarama v1.33.0
GOMOD
  printf '//go:build tools\n\npackage tools\n\nimport _ "github.com/jaegertracing/jaeger/cmd/jaeger"\n' \
    >"$out/src/tools.go"
  (cd "$out/src" && go mod tidy)
  mkdir -p "$out/bin.tmp"
  (cd "$out/src" && CGO_ENABLED=0 go build -trimpath \
    -ldflags "-s -w -X github.com/jaegertracing/jaeger/internal/version.latestVersion=$JAEGER_VERSION" \
    -o "$out/bin.tmp/jaeger" github.com/jaegertracing/jaeger/cmd/jaeger)
  rm -rf "${out:?}/bin" && mv "$out/bin.tmp" "$out/bin"
  log "go: jaeger built in $(( $(stamp) - t0 ))s"
}

# The pause image's binary (containerd's sandbox image), compiled the way Kubernetes'
# build/pause/Makefile does, from the pause.c in the Kubernetes module we already build.
build_pause() {
  local out="$cache/pause-$KUBERNETES_VERSION"
  if [ -x "$out/bin/pause" ]; then log "pause $KUBERNETES_VERSION cached"; return; fi
  command -v gcc >/dev/null || { log "gcc is required for the pause binary (apt step)"; exit 1; }
  local src
  src=$(go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  mkdir -p "$out/bin"
  gcc -Os -Wall -Werror -static -DVERSION="$KUBERNETES_VERSION" \
    -o "$out/bin/pause.tmp" "$src/build/pause/linux/pause.c"
  strip "$out/bin/pause.tmp" && mv "$out/bin/pause.tmp" "$out/bin/pause"
  log "pause built ($out/bin/pause)"
}

provision_go() {
  command -v go >/dev/null || { log "go is required to build the Kubernetes tools"; exit 1; }
  build_kubernetes
  build_go_install kwok "$KWOK_VERSION" "" \
    sigs.k8s.io/kwok/cmd/kwok sigs.k8s.io/kwok/cmd/kwokctl
  build_go_install helm "$HELM_VERSION" \
    "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean" \
    helm.sh/helm/v3/cmd/helm
  # CoreDNS has no replace directives either; the real node runs it as a host process.
  build_go_install coredns "$COREDNS_VERSION" \
    "-X github.com/coredns/coredns/coremain.GitCommit=$COREDNS_VERSION" \
    github.com/coredns/coredns
  build_pause
  # kind: the pytest-kind end-to-end test where a Docker engine exists (never downloaded
  # by pytest-kind: the plugin hands it this binary). actionlint: the CI workflow's lint.
  build_go_install kind "$KIND_VERSION" "" sigs.k8s.io/kind
  build_go_install actionlint "$ACTIONLINT_VERSION" \
    "-X github.com/rhysd/actionlint.version=$ACTIONLINT_VERSION" \
    github.com/rhysd/actionlint/cmd/actionlint
  # The local stack's trace backend (the `jaeger` infra component).
  build_jaeger
  # One folder on PATH for the stack: links into the versioned cache folders.
  mkdir -p "$cache/bin"
  for b in "$cache/kubernetes-$KUBERNETES_VERSION/bin/"* "$cache/kwok-$KWOK_VERSION/bin/"* \
           "$cache/helm-$HELM_VERSION/bin/"* "$cache/coredns-$COREDNS_VERSION/bin/"* \
           "$cache/pause-$KUBERNETES_VERSION/bin/"* "$cache/kind-$KIND_VERSION/bin/"* \
           "$cache/actionlint-$ACTIONLINT_VERSION/bin/"* "$cache/jaeger-$JAEGER_VERSION/bin/"*; do
    ln -sfn "$b" "$cache/bin/$(basename "$b")"
  done
  log "go: tools in $cache/bin ($(du -sh "$cache" | cut -f1) cache)"
}

main() {
  local what=${1:-all}
  case "$what" in
    apt) provision_apt ;;
    python) provision_python ;;
    go) provision_go ;;
    all) provision_apt; provision_python; provision_go ;;
    *) echo "usage: $0 [all|apt|python|go]" >&2; exit 2 ;;
  esac
}

main "$@"
