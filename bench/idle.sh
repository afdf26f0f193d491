#!/usr/bin/env bash
# bench/idle.sh: resident memory per idle keep-alive client connection of nginx, xlb --event-loop
# and xlb (a goroutine per connection), side by side: each, freshly started with one worker in
# front of the shared harness's upstream, is given N connections that each served one GET
# (bench/idleconns), and the growth of its processes' RSS is divided by N. ROUNDS rounds, the
# servers in turn.
#   bash bench/idle.sh                  # needs nginx and curl (tools/install.sh --bench)
#   N=10000 ROUNDS=3 bash bench/idle.sh
# Ports: 127.0.0.1:18098 (nginx), 18099 (xlb), 18101 (upstream).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
UPSTREAM_SRC=${UPSTREAM_SRC:-"$ROOT/../shared/bench/upstream"}
N=${N:-10000}
ROUNDS=${ROUNDS:-2}
export GOTOOLCHAIN=local
for tool in nginx curl; do
	command -v $tool >/dev/null || { echo "idle.sh: no $tool (bash tools/install.sh --bench)" >&2; exit 1; }
done
ulimit -n $((N + 4096)) 2>/dev/null || { echo "idle.sh: cannot raise the descriptor limit to $((N + 4096))" >&2; exit 1; }
tmp=$(mktemp -d -t xlbidle.XXXXXX)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$tmp"
}
trap cleanup EXIT

(cd "$ROOT" && go build -o "$tmp/xlb" . && go build -o "$tmp/idleconns" ./bench/idleconns)
(cd "$UPSTREAM_SRC" && go build -o "$tmp/upstream" .)
"$tmp/upstream" -addr 127.0.0.1:18101 -name up1 -size 100 & pids+=($!)
cat >"$tmp/nginx.conf" <<EOF
worker_processes 1;
worker_rlimit_nofile $((N + 4096));
daemon off;
master_process on;
pid $tmp/nginx.pid;
error_log $tmp/nginx-error.log error;
events { worker_connections $((N + 1024)); use epoll; }
http {
    access_log off;
    keepalive_timeout 10m;
    keepalive_requests 1000000;
    client_body_temp_path $tmp/cb; proxy_temp_path $tmp/pt; fastcgi_temp_path $tmp/ft; uwsgi_temp_path $tmp/ut; scgi_temp_path $tmp/st;
    upstream backends { server 127.0.0.1:18101; keepalive 64; }
    server {
        listen 127.0.0.1:18098 reuseport backlog=4096;
        location / { proxy_pass http://backends; proxy_http_version 1.1; proxy_set_header Connection ""; }
    }
}
EOF

ready() { for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$1/" && return 0; sleep 0.1; done; echo "no server on $1" >&2; exit 1; }

# measure NAME PORT PID: N idle connections to PORT, the RSS of PID and its children.
measure() {
	ready "$2"
	local tree
	tree=$(echo "$3" $(pgrep -P "$3") | tr ' ' ,)
	printf '%-18s ' "$1"
	"$tmp/idleconns" -addr "127.0.0.1:$2" -n "$N" -pids "$tree" | tail -1
	kill "$3"
	wait "$3" 2>/dev/null || true
}

for round in $(seq "$ROUNDS"); do
	echo "round $round"
	nginx -p "$tmp" -c "$tmp/nginx.conf" & pids+=($!)
	measure nginx 18098 $!
	for flags in --event-loop ""; do
		rm -rf "$tmp/state"
		"$tmp/xlb" run --listen 127.0.0.1:18099 --backend 127.0.0.1:18101 --workers 1 --idle-timeout 10m \
			--connections-max $((N + 1024)) --state-dir "$tmp/state" --log-level warn $flags 2>"$tmp/xlb.log" & pids+=($!)
		measure "xlb ${flags:-(goroutine)}" 18099 $!
	done
done
