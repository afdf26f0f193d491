#!/usr/bin/env bash
# tools/install.sh: install what the tests (and, with --bench, the benchmark) need.
# Idempotent: Debian packages are installed only when missing (apt-get update only
# then), and a Go tool is rebuilt only when .tools/bin/NAME is not at its pinned
# version (`go version -m`). Binaries go to .tools/bin (gitignored).
# Usage: bash tools/install.sh            # test needs: curl, staticcheck, buf, protoc plugins, grpcurl,
#                                         # and an OpenTelemetry Collector built with the builder
#        bash tools/install.sh --bench    # also nginx, haproxy, wrk, openssl (or WITH_BENCH=1)
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS_BIN="$PWD/.tools/bin"
mkdir -p "$TOOLS_BIN"
export GOTOOLCHAIN=local

[ "${1:-}" = --bench ] && WITH_BENCH=1

# --- Debian packages -------------------------------------------------------
APT_PKGS="curl haproxy"
[ "${WITH_BENCH:-}" = 1 ] && APT_PKGS="$APT_PKGS nginx haproxy wrk openssl"   # openssl: bench/tls makes its certificates, s_client, s_time
missing=""
for p in $APT_PKGS; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  echo "apt   $missing"
  $SUDO apt-get update -qq
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
fi

# --- Go tools: name  package  version ----------------------------------------
# buf and the two protoc plugins regenerate gen/ (make gen); grpcurl is driven by the
# integration tests. They are never `tool` lines of go.mod: buf requires a pre-release protobuf
# that minimal version selection would drag the project onto.
TOOLS="
staticcheck         honnef.co/go/tools/cmd/staticcheck                v0.8.2
buf                 github.com/bufbuild/buf/cmd/buf                   v1.75.0
protoc-gen-go       google.golang.org/protobuf/cmd/protoc-gen-go      v1.36.12
protoc-gen-go-grpc  google.golang.org/grpc/cmd/protoc-gen-go-grpc     v1.6.2
grpcurl             github.com/fullstorydev/grpcurl/cmd/grpcurl       v1.9.4
"
have() { # NAME VERSION -> 0 when .tools/bin/NAME is built from that module version
  [ -x "$TOOLS_BIN/$1" ] &&
    go version -m "$TOOLS_BIN/$1" 2>/dev/null | awk '$1=="mod"{print $3}' | grep -qx "$2"
}
echo "$TOOLS" | while read -r name pkg ver; do
  [ -n "$name" ] || continue
  if have "$name" "$ver"; then echo "ok    $name $ver"; continue; fi
  echo "build $name $ver"
  GOBIN="$TOOLS_BIN" go install "$pkg@$ver"
done

# --- OpenTelemetry Collector for the integration tests -----------------------
# .tools/bin/otelcol-xlbtest, built by the collector builder from tools/otelcol/builder-config.yaml
# (OTLP receiver, file exporter; every component at OTELCOL_VERSION, the builder too). The build
# dir is .tools/otelcol-build, its log .tools/otelcol-build.log. Rebuilt only when the binary is
# missing, is not built from the OTLP receiver at OTELCOL_VERSION (`go version -m`), or was built
# from another builder config (the one it was built from is kept as .tools/bin/.otelcol-xlbtest.yaml).
OTELCOL_VERSION=v0.161.0
OTELCOL_CFG=tools/otelcol/builder-config.yaml
otelcol_have() {
  [ -x "$TOOLS_BIN/otelcol-xlbtest" ] &&
    go version -m "$TOOLS_BIN/otelcol-xlbtest" 2>/dev/null |
    awk '$1=="dep" && $2=="go.opentelemetry.io/collector/receiver/otlpreceiver"{print $3}' |
    grep -qx "$OTELCOL_VERSION" &&
    cmp -s "$OTELCOL_CFG" "$TOOLS_BIN/.otelcol-xlbtest.yaml"
}
if otelcol_have; then
  echo "ok    otelcol-xlbtest $OTELCOL_VERSION"
else
  echo "build otelcol-xlbtest $OTELCOL_VERSION"
  rm -f "$TOOLS_BIN/.otelcol-xlbtest.yaml"
  go run "go.opentelemetry.io/collector/cmd/builder@$OTELCOL_VERSION" --config "$OTELCOL_CFG" \
    >.tools/otelcol-build.log 2>&1 ||
    { tail -20 .tools/otelcol-build.log; echo "otelcol-xlbtest: build failed; log in .tools/otelcol-build.log" >&2; exit 1; }
  install -m 755 .tools/otelcol-build/otelcol-xlbtest "$TOOLS_BIN/otelcol-xlbtest"
  cp "$OTELCOL_CFG" "$TOOLS_BIN/.otelcol-xlbtest.yaml"
fi
