#!/usr/bin/env bash
# Build the Temporal peer of the throughput benchmark from its Go module: the server
# (go.temporal.io/server/cmd/server) and its SQL schema tool (cmd/tools/sql), installed as
# temporal-server and temporal-sql-tool into the cache (never into the repo), where
# vyapaar_stack.bench.peers.temporal_server finds them. About 12 minutes on 2 cores; a
# second run with the binaries there does nothing. The schema files the peer applies come
# from the same module in the Go module cache (go env GOMODCACHE).
#
#   hack/bench/peers/build-temporal.sh            # or: TEMPORAL_VERSION=v1.32.0 ...
set -euo pipefail

version="${TEMPORAL_VERSION:-v1.32.0}"
bin="${VYAPAAR_CACHE:-$HOME/.cache/vyapaar}/peers/bin"
marker="$bin/.temporal-version"

if [[ -x "$bin/temporal-server" && -x "$bin/temporal-sql-tool" \
      && "$(cat "$marker" 2>/dev/null)" == "$version" ]]; then
    echo "temporal $version already built in $bin"
    exit 0
fi
command -v go >/dev/null || { echo "go is needed to build the Temporal server" >&2; exit 1; }

staging="$(mktemp -d)"
trap 'rm -rf "$staging"' EXIT
start=$(date +%s)
for pkg in cmd/server cmd/tools/sql; do
    echo "building go.temporal.io/server/$pkg@$version ..."
    # the module has no replace directives, so `go install pkg@version` builds it as released
    GOBIN="$staging" GOFLAGS=-mod=mod CGO_ENABLED=0 go install "go.temporal.io/server/$pkg@$version"
done
mkdir -p "$bin"
mv "$staging/server" "$bin/temporal-server"
mv "$staging/sql" "$bin/temporal-sql-tool"
echo "$version" > "$marker"
echo "temporal $version built into $bin in $(( $(date +%s) - start ))s"
