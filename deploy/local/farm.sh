#!/usr/bin/env bash
# Runs a real hubfarm on loopback from Debian's packages: redis-server (AOF on,
# noeviction), N `hubfarm serve` processes, and nginx in front of them (round
# robin, WebSocket upgrade, no sticky sessions) -- and stops exactly the
# processes it started, by the PIDs it recorded.
#
# Usage: deploy/local/farm.sh COMMAND [options] [-- serve flags...]
#
# Commands:
#   start            start redis-server, the nodes and nginx; wait until every
#                    node answers /readyz; print the addresses
#   stop             stop what start started: nginx, then the nodes (SIGTERM:
#                    they drain), then redis-server
#   status           each process and each node's /readyz
#   env              the farm's addresses as KEY=VALUE lines (for scripts)
#   node-stop N      SIGTERM node N (graceful drain) and wait for its exit;
#                    prints its exit status
#   node-kill N      SIGKILL node N (a crash)
#   node-start N     start node N again (same port and flags); wait for /readyz
#   node-restart N   node-stop N, then node-start N
#   redis-stop       SIGTERM redis-server (it writes its AOF) and wait for its exit
#   redis-kill       SIGKILL redis-server
#   redis-start      start redis-server again (same port and data)
#
# Options:
#   --dir DIR        state directory: PIDs, logs, configs, Redis data
#                    (default: deploy/local/run)
#   --nodes N        hub nodes (start; default 3)
#   --port P         nginx port on 127.0.0.1 (start; default 8080; 0 = a free one)
#   --bin PATH       hubfarm binary (default: $HUBFARM_BIN, else go build
#                    ./cmd/hubfarm into DIR)
#   --timeout SECS   deadline to start, become ready or exit (default 60)
#   -- FLAGS...      extra `hubfarm serve` flags for every node (start; reused
#                    by node-start), e.g. -- --jwt-secret s3cret --drain-window 5s.
#                    Without --jwt-secret, --jwt-public-key, --jwks-file or
#                    --insecure, nodes run with --insecure --dev-trust-user-param
#                    (development only: the `user` query parameter is trusted).
#
# Needs redis-server, redis-cli, nginx and curl (Debian: apt-get install
# redis-server nginx curl) and, without --bin, Go.
set -euo pipefail

usage() {
	sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
}

die() {
	printf 'farm.sh: %s\n' "$*" >&2
	exit 1
}

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

cmd="${1:-}"
[ -n "$cmd" ] || { usage >&2; exit 2; }
shift
case "$cmd" in -h | --help | help) usage; exit 0 ;; esac

dir="$repo_root/deploy/local/run"
nodes=3
port=8080
bin="${HUBFARM_BIN:-}"
timeout=60
arg=""
serve_args=()
while [ $# -gt 0 ]; do
	case "$1" in
	--dir) dir="${2:?--dir needs a directory}"; shift ;;
	--dir=*) dir="${1#*=}" ;;
	--nodes) nodes="${2:?--nodes needs a number}"; shift ;;
	--nodes=*) nodes="${1#*=}" ;;
	--port) port="${2:?--port needs a number}"; shift ;;
	--port=*) port="${1#*=}" ;;
	--bin) bin="${2:?--bin needs a path}"; shift ;;
	--bin=*) bin="${1#*=}" ;;
	--timeout) timeout="${2:?--timeout needs seconds}"; shift ;;
	--timeout=*) timeout="${1#*=}" ;;
	--) shift; serve_args=("$@"); break ;;
	-h | --help) usage; exit 0 ;;
	-*) die "unknown option: $1 (see --help)" ;;
	*) [ -z "$arg" ] || die "unexpected argument: $1"; arg="$1" ;;
	esac
	shift
done
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
state="$dir/farm.env"
pids="$dir/pids"
logs="$dir/logs"

# --- processes -------------------------------------------------------------
#
# A PID file holds "PID STARTTIME" (field 22 of /proc/PID/stat): a process is
# ours only while both match, so a recycled PID is never signalled.

starttime() {
	local s
	s="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
	s="${s##*) }" # drop "pid (comm) "; the start time is then field 20
	set -- $s
	printf '%s' "${20}"
}

record() { # record NAME PID
	local st
	st="$(starttime "$2")" || return 1
	printf '%s %s\n' "$2" "$st" >"$pids/$1.pid"
}

running() { # running NAME -> prints PID when the recorded process lives
	local f="$pids/$1.pid" pid st now
	[ -r "$f" ] || return 1
	read -r pid st <"$f" || return 1
	now="$(starttime "$pid")" || return 1
	[ "$now" = "$st" ] || return 1
	# A zombie is dead (its wrapper has not reaped it yet).
	[ "$(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' "/proc/$pid/status" 2>/dev/null)" != Z ] || return 1
	printf '%s' "$pid"
}

signal() { # signal NAME SIG -> sends SIG to the recorded process if it is ours
	local pid
	pid="$(running "$1")" || return 1
	kill -s "$2" "$pid" 2>/dev/null
}

wait_gone() { # wait_gone NAME SECONDS
	local deadline=$((SECONDS + $2))
	while running "$1" >/dev/null; do
		[ "$SECONDS" -lt "$deadline" ] || return 1
		sleep 0.1
	done
}

stop_proc() { # stop_proc NAME SIG SECONDS: SIG, then SIGKILL after SECONDS
	local name="$1"
	signal "$name" "$2" || { rm -f "$pids/$name.pid"; return 0; }
	if ! wait_gone "$name" "$3"; then
		echo "farm.sh: $name still running $3 s after SIG$2; sending SIGKILL" >&2
		signal "$name" KILL || true
		wait_gone "$name" 10 || die "$name survived SIGKILL"
	fi
	rm -f "$pids/$name.pid"
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

picked=" "
# Ports are picked below the kernel's ephemeral range, where no outgoing
# connection can be holding them when a node is started again later.
ephemeral_lo="$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)"
pick_port() {
	local p i lo=10000 hi="$ephemeral_lo"
	[ "$hi" -gt $((lo + 1000)) ] || { lo=1024; [ "$hi" -gt 2048 ] || hi=65535; }
	for i in $(seq 1 200); do
		p=$((lo + RANDOM % (hi - lo)))
		case "$picked" in *" $p "*) continue ;; esac
		if port_free "$p"; then
			picked="$picked$p "
			printf '%s' "$p"
			return 0
		fi
	done
	die "no free TCP port found on 127.0.0.1"
}

http_ok() { curl -fsS -o /dev/null --max-time 2 "$1" 2>/dev/null; }

# --- state -------------------------------------------------------------------

load_state() {
	[ -r "$state" ] || die "no farm in $dir (run: farm.sh start --dir $dir)"
	# shellcheck disable=SC1090
	. "$state"
	serve_args=()
	if [ -r "$dir/serve.args" ]; then
		mapfile -t serve_args <"$dir/serve.args"
	fi
}

node_port() { # node_port N
	local p
	p="$(printf '%s\n' $NODE_PORTS | sed -n "${1}p")"
	[ -n "$p" ] || die "no node $1 in this farm (it has $NODES)"
	printf '%s' "$p"
}

check_node_arg() {
	[ -n "$arg" ] || die "$cmd needs a node number"
	case "$arg" in *[!0-9]* | 0) die "bad node number: $arg" ;; esac
}

# --- redis -------------------------------------------------------------------

write_redis_conf() {
	mkdir -p "$dir/redis"
	cat >"$dir/redis.conf" <<EOF
# Written by deploy/local/farm.sh. Same policy as deploy/compose: AOF on,
# never evict (an evicted membership or history entry would be silent loss).
bind 127.0.0.1
port $REDIS_PORT
daemonize no
dir $dir/redis
logfile ""
appendonly yes
appendfsync everysec
save ""
maxmemory 256mb
maxmemory-policy noeviction
EOF
}

start_redis() {
	running redis >/dev/null && { echo "redis-server already running"; return 0; }
	port_free "$REDIS_PORT" || die "port $REDIS_PORT (redis) is taken"
	redis-server "$dir/redis.conf" </dev/null >>"$logs/redis.log" 2>&1 &
	record redis $! || die "redis-server exited at once; see $logs/redis.log"
	local deadline=$((SECONDS + timeout))
	until [ "$(redis-cli -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ]; do
		running redis >/dev/null || die "redis-server exited; see $logs/redis.log"
		[ "$SECONDS" -lt "$deadline" ] || die "redis-server did not answer PING within $timeout s"
		sleep 0.1
	done
	echo "redis-server  pid $(running redis)  redis://127.0.0.1:$REDIS_PORT/0"
}

# --- nodes -------------------------------------------------------------------

start_node() { # start_node N
	local i="$1" p
	p="$(node_port "$i")"
	running "node-$i" >/dev/null && { echo "node $i already running"; return 0; }
	port_free "$p" || die "port $p (node $i) is taken"
	rm -f "$dir/node-$i.exit" "$pids/node-$i.pid"
	# The subshell waits for the node and keeps its exit status; the node's
	# own PID is what gets recorded and signalled.
	(
		HUBFARM_TOKEN_SECRET="$TOKEN_SECRET" "$BIN" serve --listen "127.0.0.1:$p" \
			--redis "redis://127.0.0.1:$REDIS_PORT/0" --node-id "local-$i" "${serve_args[@]}" \
			>>"$logs/node-$i.log" 2>&1 &
		child=$!
		record "node-$i" "$child" || true
		rc=0
		wait "$child" || rc=$?
		echo "$rc" >"$dir/node-$i.exit"
	) </dev/null >/dev/null 2>&1 &
	local deadline=$((SECONDS + timeout))
	until [ -e "$pids/node-$i.pid" ] || [ -e "$dir/node-$i.exit" ]; do
		[ "$SECONDS" -lt "$deadline" ] || die "node $i did not start"
		sleep 0.05
	done
	until http_ok "http://127.0.0.1:$p/readyz"; do
		if ! running "node-$i" >/dev/null; then
			tail -n 20 "$logs/node-$i.log" >&2 || true
			die "node $i exited ($(cat "$dir/node-$i.exit" 2>/dev/null || echo '?')); see $logs/node-$i.log"
		fi
		[ "$SECONDS" -lt "$deadline" ] || die "node $i not ready within $timeout s; see $logs/node-$i.log"
		sleep 0.1
	done
	echo "node $i        pid $(running "node-$i")  http://127.0.0.1:$p"
}

stop_node() { # stop_node N: SIGTERM, wait for the drain; print the exit status
	local i="$1" pid rc
	if ! pid="$(running "node-$i")"; then
		echo "node $i is not running"
		return 0
	fi
	local started=$SECONDS
	kill -TERM "$pid" 2>/dev/null || true # it may be exiting already
	# The node drains for --drain-window, then finishes or releases jobs.
	if ! wait_gone "node-$i" "$timeout"; then
		echo "farm.sh: node $i still running $timeout s after SIGTERM; sending SIGKILL" >&2
		signal "node-$i" KILL || true
		wait_gone "node-$i" 10 || die "node $i survived SIGKILL"
	fi
	local deadline=$((SECONDS + 5))
	until [ -e "$dir/node-$i.exit" ] || [ "$SECONDS" -ge "$deadline" ]; do sleep 0.05; done
	rc="$(cat "$dir/node-$i.exit" 2>/dev/null || echo '?')"
	rm -f "$pids/node-$i.pid"
	echo "node $i stopped after $((SECONDS - started)) s, exit status $rc"
}

kill_node() {
	local i="$1"
	signal "node-$i" KILL || { echo "node $i is not running"; return 0; }
	wait_gone "node-$i" 10 || die "node $i survived SIGKILL"
	rm -f "$pids/node-$i.pid"
	echo "node $i killed"
}

# --- nginx -------------------------------------------------------------------

write_nginx_conf() {
	mkdir -p "$dir/nginx/tmp"
	local servers="" p
	for p in $NODE_PORTS; do
		# A node that refuses connections or answers 502/503 (draining,
		# full) is skipped for fail_timeout; requests go to the next one.
		servers="$servers        server 127.0.0.1:$p max_fails=1 fail_timeout=3s;
"
	done
	cat >"$dir/nginx/nginx.conf" <<EOF
# Written by deploy/local/farm.sh: the same load balancing as
# deploy/compose/nginx.conf, on loopback.
daemon off;
worker_processes 1;
worker_rlimit_nofile 16384;
pid $dir/nginx/nginx.pid;
error_log $logs/nginx-error.log warn;

events {
    worker_connections 8192;
}

http {
    access_log off;
    client_body_temp_path $dir/nginx/tmp/body;
    proxy_temp_path $dir/nginx/tmp/proxy;
    fastcgi_temp_path $dir/nginx/tmp/fastcgi;
    uwsgi_temp_path $dir/nginx/tmp/uwsgi;
    scgi_temp_path $dir/nginx/tmp/scgi;

    map \$http_upgrade \$connection_upgrade {
        default upgrade;
        ''      '';
    }

    # Round robin, no stickiness: any node takes any request.
    upstream hubfarm {
$servers        keepalive 32;
    }

    server {
        listen 127.0.0.1:$NGINX_PORT;

        location / {
            proxy_pass http://hubfarm;
            proxy_http_version 1.1;
            proxy_set_header Upgrade \$http_upgrade;
            proxy_set_header Connection \$connection_upgrade;
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;
            # WebSockets live for hours; the hub's keep-alive pings flow every 15 s.
            proxy_read_timeout 1h;
            proxy_send_timeout 1h;
            proxy_connect_timeout 2s;
            proxy_buffering off;
            # negotiate (POST) and the upgrade are safe to retry elsewhere.
            proxy_next_upstream error timeout http_502 http_503 non_idempotent;
            proxy_next_upstream_tries 3;
            proxy_next_upstream_timeout 10s;
        }
    }
}
EOF
}

start_nginx() {
	running nginx >/dev/null && { echo "nginx already running"; return 0; }
	port_free "$NGINX_PORT" || die "port $NGINX_PORT (nginx) is taken"
	nginx -q -t -p "$dir/nginx" -c "$dir/nginx/nginx.conf" -e "$logs/nginx-error.log" ||
		die "nginx rejected its configuration ($dir/nginx/nginx.conf)"
	nginx -p "$dir/nginx" -c "$dir/nginx/nginx.conf" -e "$logs/nginx-error.log" </dev/null >>"$logs/nginx.log" 2>&1 &
	record nginx $! || die "nginx exited at once; see $logs/nginx-error.log"
	local deadline=$((SECONDS + timeout))
	until http_ok "http://127.0.0.1:$NGINX_PORT/healthz"; do
		running nginx >/dev/null || die "nginx exited; see $logs/nginx-error.log"
		[ "$SECONDS" -lt "$deadline" ] || die "nginx did not answer within $timeout s"
		sleep 0.1
	done
	echo "nginx         pid $(running nginx)  http://127.0.0.1:$NGINX_PORT"
}

# --- commands ----------------------------------------------------------------

need() {
	local missing=() c
	for c in "$@"; do command -v "$c" >/dev/null 2>&1 || missing+=("$c"); done
	[ "${#missing[@]}" -eq 0 ] || die "missing: ${missing[*]} (Debian: apt-get install redis-server nginx curl)"
}

cmd_start() {
	need redis-server redis-cli nginx curl
	mkdir -p "$pids" "$logs"
	for name in redis nginx $(seq -f 'node-%g' 1 "$nodes"); do
		running "$name" >/dev/null && die "a farm is already running in $dir (farm.sh stop --dir $dir)"
	done
	case "$nodes" in *[!0-9]* | "" | 0) die "--nodes must be a positive number" ;; esac
	if [ -z "$bin" ]; then
		need go
		echo "building hubfarm (go build ./cmd/hubfarm)"
		(cd "$repo_root" && go build -o "$dir/hubfarm" ./cmd/hubfarm) || die "go build failed"
		bin="$dir/hubfarm"
	fi
	[ -x "$bin" ] || die "not an executable: $bin"
	bin="$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")"

	local auth=0 a
	for a in "${serve_args[@]}"; do
		case "$a" in --jwt-secret* | --jwt-public-key* | --jwks-file* | --insecure*) auth=1 ;; esac
	done
	if [ "$auth" = 0 ]; then
		echo "farm.sh: no authentication flags given: nodes run with --insecure --dev-trust-user-param (development only)"
		serve_args+=(--insecure --dev-trust-user-param)
	fi
	printf '%s\n' "${serve_args[@]}" >"$dir/serve.args"

	[ "$port" = 0 ] && port="$(pick_port)"
	local node_ports="" i
	for i in $(seq 1 "$nodes"); do node_ports="$node_ports $(pick_port)"; done
	cat >"$state" <<EOF
BIN='$bin'
NODES=$nodes
NGINX_PORT=$port
REDIS_PORT=$(pick_port)
NODE_PORTS='${node_ports# }'
TOKEN_SECRET=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')
EOF
	load_state
	write_redis_conf
	write_nginx_conf
	# Whatever fails from here on, leave nothing running.
	trap 'rc=$?; if [ $rc -ne 0 ]; then echo "farm.sh: start failed; stopping what was started" >&2; cmd_stop >&2 || true; fi' EXIT
	start_redis
	for i in $(seq 1 "$NODES"); do start_node "$i"; done
	start_nginx
	trap - EXIT
	echo
	echo "hubfarm on http://127.0.0.1:$NGINX_PORT  (hubs: /hubs/orchestrator, /hubs/agent)"
	echo "state and logs in $dir; stop with: deploy/local/farm.sh stop --dir $dir"
}

cmd_stop() {
	[ -r "$state" ] || { echo "no farm in $dir"; return 0; }
	load_state
	# nginx first (fast shutdown: its WebSockets would hold a graceful one),
	# then every node at once (each drains), then Redis.
	stop_proc nginx TERM 10
	local i
	for i in $(seq 1 "$NODES"); do signal "node-$i" TERM || true; done
	for i in $(seq 1 "$NODES"); do
		if running "node-$i" >/dev/null; then stop_node "$i"; fi
		rm -f "$pids/node-$i.pid"
	done
	stop_proc redis TERM 30
	echo "farm in $dir stopped"
}

cmd_status() {
	load_state
	local name pid i p
	for name in redis nginx; do
		if pid="$(running "$name")"; then echo "$name: running (pid $pid)"; else echo "$name: stopped"; fi
	done
	for i in $(seq 1 "$NODES"); do
		p="$(node_port "$i")"
		if pid="$(running "node-$i")"; then
			if http_ok "http://127.0.0.1:$p/readyz"; then r=ready; else r="not ready"; fi
			echo "node $i: running (pid $pid), $r, http://127.0.0.1:$p"
		else
			echo "node $i: stopped (last exit status $(cat "$dir/node-$i.exit" 2>/dev/null || echo -))"
		fi
	done
}

cmd_env() {
	load_state
	echo "HUBFARM_URL=http://127.0.0.1:$NGINX_PORT"
	echo "HUBFARM_REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0"
	echo "HUBFARM_REDIS_PORT=$REDIS_PORT"
	echo "HUBFARM_NODES=$NODES"
	local i
	for i in $(seq 1 "$NODES"); do
		echo "HUBFARM_NODE_${i}_URL=http://127.0.0.1:$(node_port "$i")"
		echo "HUBFARM_NODE_${i}_ID=local-$i"
		echo "HUBFARM_NODE_${i}_LOG=$logs/node-$i.log"
	done
	echo "HUBFARM_DIR=$dir"
}

case "$cmd" in
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
env) cmd_env ;;
node-stop) check_node_arg; load_state; stop_node "$arg" ;;
node-kill) check_node_arg; load_state; kill_node "$arg" ;;
node-start) check_node_arg; load_state; mkdir -p "$pids" "$logs"; start_node "$arg" ;;
node-restart) check_node_arg; load_state; stop_node "$arg"; start_node "$arg" ;;
redis-stop) load_state; stop_proc redis TERM 30; echo "redis-server stopped" ;;
redis-kill) load_state; stop_proc redis KILL 10; echo "redis-server killed" ;;
redis-start) load_state; mkdir -p "$pids" "$logs"; start_redis ;;
*) die "unknown command: $cmd (see --help)" ;;
esac
