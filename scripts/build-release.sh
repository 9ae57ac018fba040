#!/usr/bin/env bash
# Builds the static release binary of hubfarm. The Dockerfile and .ci/run both
# use this script, so CI (which has no Docker engine) checks the image's build.
#
# Usage: scripts/build-release.sh [OUTPUT]     (default: bin/hubfarm)
# GOOS and GOARCH from the environment select the target platform.
set -euo pipefail

out="${1:-bin/hubfarm}"
case "$out" in
/*) ;;
*) out="$PWD/$out" ;;
esac

cd "$(dirname "${BASH_SOURCE[0]}")/.."
CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$out" ./cmd/hubfarm
echo "built $out"
