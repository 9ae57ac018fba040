#!/usr/bin/env bash
# Runs every test of hubfarm, on a fresh Debian machine with Go, Node.js and npm:
#
#   1. installs what is missing (redis-server, redis-cli and redis-sentinel for the single-server,
#      Redis Cluster and Sentinel tests; a C compiler for the race detector;
#      Debian's chromium for the browser test; Debian's prometheus for promtool)
#   2. gofmt, go vet, and promtool on deploy/prometheus/ (config, rules, rule tests)
#   3. go test -race over every package
#   4. a short run of every Go fuzz target in the repository
#   5. the end-to-end suite in e2e/ (official @microsoft/signalr client against `hubfarm dev`)
#   6. the browser test of the web console in e2e/browser/ (headless Chromium driven by
#      playwright-core against `hubfarm dev`; screenshots in e2e/artifacts/)
#   7. the fault tests in e2e/faults/ (a real farm from deploy/local/farm.sh: redis-server,
#      three `hubfarm serve` nodes, Debian's nginx in front; drain, kill -9, rolling
#      restart, Redis restart; farm logs in e2e/artifacts/faults/)
#
# Usage: scripts/test.sh [--skip-e2e] [--skip-browser] [--skip-faults] [--skip-fuzz] [--fuzztime DURATION] [--no-install]
#
# Environment (flags win):
#   HUBFARM_SKIP_E2E=1            skip the end-to-end suite (and the browser test)
#   HUBFARM_SKIP_BROWSER=1        skip the browser test
#   HUBFARM_SKIP_FAULTS=1         skip the fault tests (also skipped with the e2e suite)
#   HUBFARM_CHROMIUM=path         Chromium binary of the browser test (default /usr/bin/chromium)
#   HUBFARM_FUZZTIME=15s          time per fuzz target; 0 skips fuzzing
#   HUBFARM_GO_TEST_TIMEOUT=20m   go test -timeout (per test binary)
#   HUBFARM_SKIP_INSTALL=1        never install system packages; fail if they are missing
#   HUBFARM_BIN=path              binary the e2e suite runs instead of building one
set -euo pipefail

usage() {
	sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
}

skip_e2e="${HUBFARM_SKIP_E2E:-0}"
skip_browser="${HUBFARM_SKIP_BROWSER:-0}"
skip_faults="${HUBFARM_SKIP_FAULTS:-0}"
fuzztime="${HUBFARM_FUZZTIME:-15s}"
go_test_timeout="${HUBFARM_GO_TEST_TIMEOUT:-20m}"
skip_install="${HUBFARM_SKIP_INSTALL:-0}"

while [ $# -gt 0 ]; do
	case "$1" in
	--skip-e2e) skip_e2e=1 ;;
	--skip-browser) skip_browser=1 ;;
	--skip-faults) skip_faults=1 ;;
	--skip-fuzz) fuzztime=0 ;;
	--fuzztime)
		[ $# -ge 2 ] || { echo "test.sh: --fuzztime needs a duration (e.g. 15s)" >&2; exit 2; }
		fuzztime="$2"
		shift
		;;
	--fuzztime=*) fuzztime="${1#*=}" ;;
	--no-install) skip_install=1 ;;
	-h | --help) usage; exit 0 ;;
	*) echo "test.sh: unknown argument: $1 (see --help)" >&2; exit 2 ;;
	esac
	shift
done

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

# --- reporting ------------------------------------------------------------

current_step="setup"
step_open=0
step_started=$SECONDS
summary=()

step() {
	finish_step
	current_step="$1"
	step_open=1
	step_started=$SECONDS
	printf '\n==> %s\n' "$current_step"
}

finish_step() {
	if [ "$step_open" = 1 ]; then
		summary+=("$(printf '%5ss  %s' "$((SECONDS - step_started))" "$current_step")")
		step_open=0
	fi
}

skipped() {
	finish_step
	summary+=("$(printf '%5s   %s (skipped)' '-' "$1")")
	printf '\n==> %s: skipped\n' "$1"
}

die() {
	printf '\ntest.sh: %s\n' "$*" >&2
	exit 1
}

on_exit() {
	local rc=$?
	if [ "$rc" -ne 0 ]; then
		printf '\ntest.sh: FAILED (exit %s) during: %s\n' "$rc" "$current_step" >&2
		return
	fi
	finish_step
	printf '\n==> all tests passed in %ss\n' "$SECONDS"
	printf '    %s\n' "${summary[@]}"
}
trap on_exit EXIT

# --- prerequisites --------------------------------------------------------

step "prerequisites"

command -v go >/dev/null 2>&1 || die "Go is not on PATH; install Go $(sed -n 's/^go //p' go.mod) or newer (https://go.dev/dl/)"
echo "go:    $(go version)"

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
# The Redis Cluster tests create their cluster with redis-cli (Debian: redis-tools);
# the Sentinel failover tests run Debian's redis-sentinel (a package of its own).
command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
command -v redis-sentinel >/dev/null 2>&1 || missing+=(redis-sentinel)
# The race detector needs cgo, hence a C compiler and the C library headers.
cc="$(go env CC)"
cc="${cc%% *}" # the compiler, without any flags
command -v "${cc:-gcc}" >/dev/null 2>&1 || missing+=(gcc libc6-dev)
# promtool checks the alert rules and scrape config; Debian ships it in the
# prometheus package (this script runs only promtool, never the server).
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
# The browser test drives Debian's Chromium (never a downloaded browser build).
chromium_bin="${HUBFARM_CHROMIUM:-/usr/bin/chromium}"
if [ "$skip_e2e" != 1 ] && [ "$skip_browser" != 1 ] && [ ! -x "$chromium_bin" ]; then
	missing+=(chromium fonts-dejavu-core)
fi
# The fault tests put Debian's nginx in front of the nodes (run by the test
# itself on a loopback port; the package's own site is never used).
if [ "$skip_e2e" != 1 ] && [ "$skip_faults" != 1 ]; then
	command -v nginx >/dev/null 2>&1 || missing+=(nginx)
	command -v curl >/dev/null 2>&1 || missing+=(curl)
fi

if [ "${#missing[@]}" -gt 0 ]; then
	if [ "$skip_install" = 1 ]; then
		die "missing: ${missing[*]} (installation disabled by --no-install / HUBFARM_SKIP_INSTALL)"
	fi
	command -v apt-get >/dev/null 2>&1 || die "missing: ${missing[*]}; install them (this script installs them only with apt-get)"
	if [ "$(id -u)" -eq 0 ]; then
		sudo=()
	elif command -v sudo >/dev/null 2>&1; then
		sudo=(sudo)
	else
		die "missing: ${missing[*]}; run as root or install sudo to let this script install them"
	fi
	echo "installing: ${missing[*]}"
	"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q ||
		die "apt-get update failed"
	"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" ||
		die "apt-get install ${missing[*]} failed"
	hash -r
fi
command -v redis-server >/dev/null 2>&1 || die "redis-server is still not on PATH"
command -v redis-cli >/dev/null 2>&1 || die "redis-cli is still not on PATH (Debian package: redis-tools)"
command -v redis-sentinel >/dev/null 2>&1 || die "redis-sentinel is still not on PATH (Debian package: redis-sentinel)"
echo "redis: $(redis-server --version)"
command -v promtool >/dev/null 2>&1 || die "promtool is still not on PATH (Debian package: prometheus)"
echo "promtool: $(promtool --version 2>&1 | head -n 1)"

if [ "$skip_e2e" != 1 ]; then
	command -v node >/dev/null 2>&1 || die "Node.js is not on PATH; install Node.js 20 or newer, or skip the e2e suite with --skip-e2e"
	command -v npm >/dev/null 2>&1 || die "npm is not on PATH; install it, or skip the e2e suite with --skip-e2e"
	node_major="$(node -p 'process.versions.node.split(".")[0]')"
	[ "$node_major" -ge 20 ] || die "Node.js $(node --version) is too old; the e2e suite needs 20 or newer"
	echo "node:  $(node --version), npm $(npm --version)"
	if [ "$skip_browser" != 1 ]; then
		[ -x "$chromium_bin" ] || die "no Chromium at $chromium_bin; install Debian's chromium package, set HUBFARM_CHROMIUM, or skip the browser test with --skip-browser"
		echo "chromium: $("$chromium_bin" --version 2>/dev/null | tail -n 1)"
	fi
fi

# --- static checks --------------------------------------------------------

step "gofmt"
unformatted="$(find . -name '*.go' -not -path './.git/*' -not -path '*/node_modules/*' -not -path '*/testdata/*' -print0 |
	xargs -0 -r gofmt -l)"
[ -z "$unformatted" ] || die "files not formatted with gofmt (run gofmt -w on them):
$unformatted"

step "go vet"
go vet ./...

step "promtool (deploy/prometheus)"
promtool check config deploy/prometheus/prometheus.yml
promtool check rules deploy/prometheus/alerts.yml
promtool test rules deploy/prometheus/alerts_test.yml

# --- unit and integration tests ------------------------------------------

step "go test -race"
CGO_ENABLED=1 go test -race -count=1 -timeout "$go_test_timeout" ./...

# --- fuzzing --------------------------------------------------------------

case "$fuzztime" in
0 | 0s | 0x) skipped "fuzz" ;;
*)
	step "fuzz ($fuzztime per target)"
	# Every `func FuzzXxx(` in a _test.go file, as "dir name" pairs.
	targets="$(grep -rE --include='*_test.go' --exclude-dir=node_modules --exclude-dir=.git --exclude-dir=testdata \
		-o '^func Fuzz[A-Za-z0-9_]*\(' . |
		sed -E 's#^(.*)/[^/]*_test\.go:func (Fuzz[A-Za-z0-9_]*)\($#\1 \2#' | sort -u)"
	if [ -z "$targets" ]; then
		echo "no fuzz targets found"
	else
		count="$(printf '%s\n' "$targets" | wc -l | tr -d ' ')"
		echo "$count fuzz targets"
		while read -r dir name; do
			printf -- '--- %s %s\n' "$dir" "$name"
			go test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" "$dir" </dev/null ||
				die "fuzz target $name in $dir failed; the failing input was saved under $dir/testdata/fuzz/$name/"
		done <<<"$targets"
	fi
	;;
esac

# --- end-to-end -----------------------------------------------------------

if [ "$skip_e2e" = 1 ]; then
	skipped "e2e"
else
	step "e2e (npm ci && npm test in e2e/)"
	(
		cd e2e
		npm ci --no-audit --no-fund
		npm test
	) || die "the e2e suite failed; server logs are in e2e/artifacts/"

	if [ "$skip_browser" = 1 ]; then
		skipped "e2e browser"
	else
		step "e2e browser (the web console in headless Chromium, e2e/browser/)"
		(
			cd e2e
			HUBFARM_CHROMIUM="$chromium_bin" npm test -- browser/store.test.mjs browser/console.test.mjs
		) || die "the browser test failed; screenshots, page and server logs are in e2e/artifacts/"
	fi

	if [ "$skip_faults" = 1 ]; then
		skipped "fault tests"
	else
		command -v nginx >/dev/null 2>&1 || die "nginx is not on PATH (Debian package: nginx), or skip the fault tests with --skip-faults"
		step "fault tests (e2e/faults/run.sh: local farm behind nginx)"
		e2e/faults/run.sh || die "the fault tests failed; farm logs are in e2e/artifacts/faults/"
	fi
fi
