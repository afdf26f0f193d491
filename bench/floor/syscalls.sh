#!/usr/bin/env bash
# bench/floor/syscalls.sh: system calls per request of nginx, xlb and the floor (bench/floor), by
# strace -c -f attached to each server's processes while wrk sends keep-alive GETs, then GETs with
# Connection: close. nginx and xlb proxy to the shared harness's upstream; the floor answers
# itself (it is the least a server can do: its calls are the floor of the client side's).
# Counts, not times, are what it measures: strace slows every server alike.
#   bash bench/floor/syscalls.sh            # needs strace, wrk, nginx (tools/install.sh --bench)
#   DURATION=3 CONNS=16 bash bench/floor/syscalls.sh
# Ports: 127.0.0.1:18095 (floor), 18096 (nginx), 18097 (xlb), 18101 (upstream).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
UPSTREAM_SRC=${UPSTREAM_SRC:-"$ROOT/../shared/bench/upstream"}
DURATION=${DURATION:-3}
CONNS=${CONNS:-16}
export GOTOOLCHAIN=local
for tool in strace wrk nginx; do
	command -v $tool >/dev/null || { echo "syscalls.sh: no $tool (bash tools/install.sh --bench)" >&2; exit 1; }
done
tmp=$(mktemp -d -t xlbfloor.XXXXXX)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$tmp"
}
trap cleanup EXIT

(cd "$ROOT" && go build -o "$tmp/xlb" . && go build -o "$tmp/floor" ./bench/floor)
(cd "$UPSTREAM_SRC" && go build -o "$tmp/upstream" .)

"$tmp/upstream" -addr 127.0.0.1:18101 -name up1 -size 100 & pids+=($!)
"$tmp/floor" -addr 127.0.0.1:18095 -loops 1 -size 100 & pids+=($!)
cat >"$tmp/nginx.conf" <<EOF
worker_processes 1;
daemon off;
master_process on;
pid $tmp/nginx.pid;
error_log $tmp/nginx-error.log error;
events { worker_connections 8192; use epoll; }
http {
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path $tmp/cb; proxy_temp_path $tmp/pt; fastcgi_temp_path $tmp/ft; uwsgi_temp_path $tmp/ut; scgi_temp_path $tmp/st;
    upstream backends { server 127.0.0.1:18101; keepalive 64; keepalive_requests 1000000; }
    server {
        listen 127.0.0.1:18096 reuseport backlog=4096;
        location / {
            proxy_pass http://backends;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
nginx -p "$tmp" -c "$tmp/nginx.conf" & pids+=($!)
cat >"$tmp/xlb.yaml" <<EOF
listeners: [{address: "127.0.0.1:18097", backend_set: b}]
backend_sets: [{name: b, backends: [{id: up1, address: "127.0.0.1:18101"}]}]
EOF
"$tmp/xlb" run --config "$tmp/xlb.yaml" --workers 1 --state-dir "$tmp/state" 2>"$tmp/xlb.log" & pids+=($!)

ready() { for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$1/" && return 0; sleep 0.1; done; echo "no server on $1" >&2; exit 1; }
for port in 18095 18096 18097; do ready $port; done

# serving_pids NAME: the processes that serve requests (nginx's and xlb's workers, the floor).
serving_pids() {
	case $1 in
	floor) pgrep -f "$tmp/floor" ;;
	nginx) pgrep -f "nginx: worker process" -P "$(cat "$tmp/nginx.pid")" ;;
	xlb) pgrep -f "xlb worker" -P "$(pgrep -f "$tmp/xlb run" | head -1)" ;;
	esac
}

printf '%-6s %-10s %10s %10s  %s\n' server load requests calls/req "top calls per request"
for load in keepalive close; do
	for name in floor nginx xlb; do
		port=$(case $name in floor) echo 18095 ;; nginx) echo 18096 ;; xlb) echo 18097 ;; esac)
		args=()
		for p in $(serving_pids $name); do args+=(-p "$p"); done
		out="$tmp/strace-$name-$load.txt"
		strace -c -f -o "$out" "${args[@]}" 2>/dev/null &
		st=$!
		sleep 0.5 # strace attaches; what it misses of the first half-second is before wrk starts
		hdr=()
		[ $load = close ] && hdr=(-H "Connection: close")
		n=$(wrk -t1 -c"$CONNS" -d"${DURATION}s" "${hdr[@]}" "http://127.0.0.1:$port/" | awk '/requests in/ {print $1}')
		kill -INT $st
		wait $st 2>/dev/null || true
		# strace -c: % time, seconds, usecs/call, calls, [errors], syscall; calls is the 4th field.
		total=$(awk '$NF == "total" {print $4}' "$out")
		top=$(awk -v n="$n" '$NF != "total" && $1 ~ /^[0-9.]+$/ {printf "%s %.2f\n", $NF, $4 / n}' "$out" | sort -k2 -nr | head -${TOP:-6} | awk '{printf "%s %s, ", $1, $2}')
		printf '%-6s %-10s %10s %10.2f  %s\n' $name $load "$n" "$(echo "$total $n" | awk '{print $1 / $2}')" "${top%, }"
	done
done
