#!/usr/bin/env bash
# Runs the fault tests: each test file starts a real farm on loopback with
# deploy/local/farm.sh (redis-server, three `hubfarm serve` nodes, nginx in
# front), drives it with the official @microsoft/signalr client through nginx,
# breaks it (drain, kill -9, rolling restart, Redis restart), counts every
# session event sent and received, and stops exactly what it started.
#
# Usage: e2e/faults/run.sh [FILE.test.mjs ...]   (default: every test file)
#
# Needs redis-server, redis-cli, nginx, curl (Debian: apt-get install
# redis-server nginx curl), Node.js 20+, and Go unless HUBFARM_BIN is set.
# scripts/test.sh installs the Debian packages when missing.
#
# Environment:
#   HUBFARM_BIN                    binary to test (default: go build ./cmd/hubfarm)
#   HUBFARM_FAULTS_DRAIN_CLIENTS   clients of the drain test (default 500)
#   HUBFARM_FAULTS_CLIENT_LOG      echo SignalR client log lines at this level
#
# Farm state and logs: e2e/artifacts/faults/<test>/ (logs/node-N.log, ...).
set -euo pipefail

usage() {
	sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
}

case "${1:-}" in -h | --help) usage; exit 0 ;; esac

die() {
	printf 'faults/run.sh: %s\n' "$*" >&2
	exit 1
}

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(cd "$here/../.." && pwd)"

missing=()
for c in redis-server redis-cli nginx curl node; do
	command -v "$c" >/dev/null 2>&1 || missing+=("$c")
done
[ "${#missing[@]}" -eq 0 ] || die "missing: ${missing[*]} (Debian: apt-get install redis-server nginx curl; Node.js 20+)"

if [ ! -d "$here/../node_modules/@microsoft/signalr" ]; then
	echo "installing the e2e dependencies (npm ci in e2e/)"
	(cd "$here/.." && npm ci --no-audit --no-fund) || die "npm ci failed"
fi

tmp=""
trap '[ -z "$tmp" ] || rm -rf "$tmp"' EXIT
if [ -z "${HUBFARM_BIN:-}" ]; then
	command -v go >/dev/null 2>&1 || die "Go is not on PATH; install it or set HUBFARM_BIN"
	tmp="$(mktemp -d)"
	echo "building hubfarm (go build ./cmd/hubfarm)"
	(cd "$repo_root" && go build -o "$tmp/hubfarm" ./cmd/hubfarm) || die "go build failed"
	export HUBFARM_BIN="$tmp/hubfarm"
fi

files=("$@")
if [ "${#files[@]}" -eq 0 ]; then
	# The cheapest first; one farm at a time (each test file starts its own).
	files=(drain.test.mjs node-kill.test.mjs rolling-restart.test.mjs redis-restart.test.mjs)
fi
cd "$here"
node --test --test-concurrency=1 --test-timeout=300000 "${files[@]}" ||
	die "fault tests failed; farm logs are in e2e/artifacts/faults/"
