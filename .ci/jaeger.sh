#!/usr/bin/env bash
# Build Jaeger v2 from its Go module once per machine; print the binary's path.
#
# tests/test_jaeger.py runs a real Jaeger. There is no release binary to download on the
# project's machines, only the Go toolchain and the module proxy, so the binary is built
# from github.com/jaegertracing/jaeger/cmd/jaeger and kept outside the repository, keyed
# by the module version, for every later run (and every checkout) to reuse.
#
# `go install pkg@version` refuses Jaeger: its go.mod has a replace directive. A throwaway
# module repeating that replace builds it instead (see ../shared/JAEGER.md).
#
# Environment: FLOWDECO_JAEGER_VERSION (module version, default below), FLOWDECO_CACHE
# (default ${XDG_CACHE_HOME:-~/.cache}/flowdeco). Concurrent callers wait on one build.
set -euo pipefail

version="${FLOWDECO_JAEGER_VERSION:-v1.76.0}"
cache="${FLOWDECO_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/flowdeco}/jaeger/$version"
binary="$cache/jaeger"

if [[ -x "$binary" ]]; then
    echo "$binary"
    exit 0
fi
if ! command -v go >/dev/null; then
    echo "jaeger.sh: no Go toolchain on PATH; Jaeger $version cannot be built" >&2
    exit 2
fi

mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9  # another process may be building it right now: wait, then reuse its binary
if [[ -x "$binary" ]]; then
    echo "$binary"
    exit 0
fi

work="$(mktemp -d "$cache/build.XXXXXX")"
trap 'rm -rf "$work"' EXIT
started=$SECONDS
echo "jaeger.sh: building Jaeger $version into $binary (once per machine; minutes)" >&2
(
    cd "$work"
    export GOFLAGS="${GOFLAGS:-} -mod=mod" GOTOOLCHAIN="${GOTOOLCHAIN:-auto}"
    go mod init flowdeco.invalid/jaeger-build >/dev/null 2>&1
    go get -tool "github.com/jaegertracing/jaeger/cmd/jaeger@$version" >&2
    # Jaeger's own go.mod replaces sarama; a replace applies only in the main module.
    go mod edit -replace github.com/Shopify/sarama=github.com/Shopify/sarama@v1.33.0
    go mod tidy >&2
    CGO_ENABLED=0 go build -trimpath -o jaeger.new github.com/jaegertracing/jaeger/cmd/jaeger >&2
)
mv "$work/jaeger.new" "$binary"  # same file system: the binary appears whole or not at all
echo "jaeger.sh: built in $((SECONDS - started)) s" >&2
echo "$binary"
