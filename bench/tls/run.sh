#!/usr/bin/env bash
# bench/tls/run.sh: xlb against nginx and HAProxy with TLS on either side, measured the way the
# shared harness (../shared/bench/run.sh) measures plain HTTP. See bench/README.md.
#   bash bench/tls/run.sh
#   ROUNDS=3 DURATION=3 PIN=1 bash bench/tls/run.sh
#   CONTESTANTS="nginx xlb" SCENARIOS="client-tls-new client-tls-get" DURATION=2 bash bench/tls/run.sh
#
# Scenarios (one request per connection in the -new and -full ones, so requests = handshakes):
#   backend-tls      wrk keep-alive GET over plain HTTP to the LB, the LB to HTTPS upstreams
#   client-tls-new   wrk over HTTPS with Connection: close: a new client TLS connection per request
#                    (wrk resumes its session on each reconnect: a TLS 1.3 PSK handshake + X25519)
#   client-tls-full  FULL_CLIENTS parallel `openssl s_time -new`: a full TLS 1.3 handshake per
#                    connection, one HTTP/1.0 GET each
#   client-tls-get   wrk keep-alive GET over HTTPS to the LB, the LB to plain upstreams
# Every LB runs both listeners at once: plain in / TLS out on its BTLS port, TLS in / plain out on
# its CTLS port. "direct" is wrk (or s_time) straight to the first HTTPS upstream: the one-hop
# limit of this box with TLS, and the proof of what wrk resumes (the upstream counts it).
set -euo pipefail
shopt -u patsub_replacement 2>/dev/null || true # bash 5.2: no "&" magic in ${x//a/b}

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
export GOTOOLCHAIN=local

# ------------------------------------------------------------------ settings
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-3}               # seconds per measurement
WARMUP=${WARMUP:-1}                   # seconds of unmeasured load per listener after each start
SCENARIOS=${SCENARIOS:-"backend-tls client-tls-new client-tls-full client-tls-get"}
CONTESTANTS=${CONTESTANTS:-"direct nginx haproxy xlb"}
CONNS=${CONNS:-64}                    # wrk connections
FULL_CLIENTS=${FULL_CLIENTS:-16}      # parallel s_time processes of client-tls-full
WRK_THREADS=${WRK_THREADS:-1}
N_UPSTREAMS=${N_UPSTREAMS:-2}         # plain upstreams, and as many HTTPS ones
UPSTREAM_BASE_PORT=${UPSTREAM_BASE_PORT:-18301}         # plain: 18301, 18302
TLS_UPSTREAM_BASE_PORT=${TLS_UPSTREAM_BASE_PORT:-18311} # HTTPS: 18311, 18312
UPSTREAM_GOMAXPROCS=${UPSTREAM_GOMAXPROCS:-1}
UPSTREAM_CONN_REQUESTS=${UPSTREAM_CONN_REQUESTS:-0} # HTTPS upstreams close a connection after N requests (0: never)
BODY_SIZE=${BODY_SIZE:-100}
CERT_KEY=${CERT_KEY:-ec}              # ec (P-256) or rsa (2048 bits): the key type of every certificate
READY_TIMEOUT=${READY_TIMEOUT:-10}
PIN=${PIN:-0}                         # 1: LBs on CPU 1 with one worker/thread, load and upstreams on CPU 0
NOISE_MAX=${NOISE_MAX:-0.35}          # cores used by other tenants above which a measurement is repeated
RETRIES=${RETRIES:-1}
RETRY_BUDGET=${RETRY_BUDGET:-30}
XLB_BACKEND_TLS=${XLB_BACKEND_TLS:-auto} # auto: the backend-tls listener if xlb accepts it; on; off
XLB_WORKERS=${XLB_WORKERS:-}          # xlb run --workers N (default: xlb's own)
XLB_FLAGS=${XLB_FLAGS:-}              # more flags of xlb run
XLB_PERF=${XLB_PERF:-0}               # 1: a CPU profile (perf, cpu-clock) of xlb's processes in each of its measurements
BACKEND_NAME=backend.bench.test       # the name in the upstreams' certificate, sent in SNI
LB_NAME_TLS=lb.bench.test             # the name in the LBs' certificate
STAMP=$(date -u +%Y%m%d-%H%M%S)
OUT=${OUT:-$ROOT/bench/results/tls-$STAMP}

declare -A BTLS_PORT=([nginx]=18211 [haproxy]=18212 [xlb]=18213)
declare -A CTLS_PORT=([nginx]=18221 [haproxy]=18222 [xlb]=18223)

die() { echo "bench/tls/run.sh: $*" >&2; exit 1; }
log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

for t in wrk curl go openssl awk ps taskset timeout; do
	command -v "$t" >/dev/null || die "missing tool: $t (bash tools/install.sh --bench)"
done
[[ $XLB_PERF == 0 ]] || command -v perf >/dev/null || die "XLB_PERF=1 needs perf (apt-get install -y linux-perf)"
[[ $ROUNDS =~ ^[0-9]+$ && $ROUNDS -ge 1 ]] || die "ROUNDS must be an integer >= 1, not '$ROUNDS'"
[[ $DURATION =~ ^[0-9]+$ && $DURATION -ge 1 ]] || die "DURATION must be an integer >= 1 (seconds), not '$DURATION'"
[[ $FULL_CLIENTS =~ ^[0-9]+$ && $FULL_CLIENTS -ge 1 ]] || die "FULL_CLIENTS must be an integer >= 1, not '$FULL_CLIENTS'"
case $CERT_KEY in ec | rsa) ;; *) die "CERT_KEY must be ec or rsa, not '$CERT_KEY'" ;; esac
case $XLB_BACKEND_TLS in auto | on | off) ;; *) die "XLB_BACKEND_TLS must be auto, on or off, not '$XLB_BACKEND_TLS'" ;; esac
for sc in $SCENARIOS; do
	case $sc in backend-tls | client-tls-new | client-tls-full | client-tls-get) ;; *) die "unknown scenario '$sc'" ;; esac
done
KEEP=""
for c in $CONTESTANTS; do
	case $c in
	direct | xlb) ;;
	nginx | haproxy) command -v "$c" >/dev/null || { log "WARNING: $c is not installed, skipping it"; continue; } ;;
	*) die "unknown contestant '$c' (direct nginx haproxy xlb)" ;;
	esac
	KEEP+=" $c"
done
CONTESTANTS=${KEEP# }
[[ -n $CONTESTANTS ]] || die "no contestant left"

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for ((i = 0; i < N_UPSTREAMS; i++)); do
	for p in $((UPSTREAM_BASE_PORT + i)) $((TLS_UPSTREAM_BASE_PORT + i)); do
		port_busy "$p" && die "port $p is already in use (a stale upstream?)"
	done
done
for c in $CONTESTANTS; do
	[[ $c == direct ]] && continue
	for p in "${BTLS_PORT[$c]}" "${CTLS_PORT[$c]}"; do
		port_busy "$p" && die "port $p of $c is already in use (a stale process?)"
	done
done

mkdir -p "$OUT/logs"
OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d -t xlbtlsbench.XXXXXX)
chmod 755 "$WORK" # nginx workers run as an unprivileged user
CERTS=$WORK/certs
mkdir -p "$WORK/bin" "$CERTS"

# ------------------------------------------------------------------ processes
declare -A STARTED=() # PIDs this script started and has not stopped yet
ours() {              # ours PID: alive (or a zombie) and a child of this script, so never a reused PID
	local s
	s=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
	s=${s##*) }
	read -r -a s <<<"$s"
	[[ ${s[1]} == "$$" ]]
}
alive() {
	local st
	st=$(awk '{ sub(/.*\) /, ""); print $1 }' "/proc/$1/stat" 2>/dev/null) || return 1
	[[ -n $st && $st != Z && $st != X ]]
}
descendants() { # PID -> PID and all its descendants
	ps -e -o pid=,ppid= | awk -v root="$1" '
		{ kids[$2] = kids[$2] " " $1 }
		END { q[1] = root; n = 1; i = 1
		      while (i <= n) { p = q[i++]; printf "%s ", p
		          m = split(kids[p], a, " "); for (j = 1; j <= m; j++) q[++n] = a[j] } }'
}
cleanup() {
	local p all=""
	for p in "${!STARTED[@]}"; do ours "$p" && all+=" $(descendants "$p")"; done
	for p in "${!STARTED[@]}"; do ours "$p" && kill -TERM "$p" 2>/dev/null; done
	if [[ -n $all ]]; then
		sleep 0.5
		for p in $all; do kill -KILL "$p" 2>/dev/null || true; done
	fi
	rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

stop_pid() { # TERM, wait up to 5 s, then KILL it and what is left of its tree
	local pid=$1 tree i p
	unset "STARTED[$pid]"
	ours "$pid" || return 0
	tree=$(descendants "$pid")
	kill -TERM "$pid" 2>/dev/null || true
	for ((i = 0; i < 50; i++)); do
		alive "$pid" || break
		sleep 0.1
	done
	for p in $tree; do kill -KILL "$p" 2>/dev/null || true; done
	wait "$pid" 2>/dev/null || true
}

cpu_ticks() { # PID... -> utime+stime (clock ticks) summed over the PIDs
	local t=0 p s
	for p in "$@"; do
		s=$(cat "/proc/$p/stat" 2>/dev/null) || continue
		s=${s##*) }
		read -r -a f <<<"$s"
		t=$((t + f[11] + f[12]))
	done
	echo "$t"
}
runq_ns() { # PID... -> time (ns) their threads waited for a CPU
	local t=0 p f a
	for p in "$@"; do
		for f in /proc/"$p"/task/*/schedstat; do
			read -r _ a _ 2>/dev/null <"$f" || continue
			t=$((t + a))
		done
	done
	echo "$t"
}
machine_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8; exit }' /proc/stat; }
CLK_TCK=$(getconf CLK_TCK)
LB_NCPU=$(nproc)
[[ $PIN == 1 ]] && LB_NCPU=1
pin_cmd() { [[ $PIN == 1 ]] && echo "taskset -c $1"; return 0; }

# ------------------------------------------------------------------ certificates
# A CA, a certificate for the LBs' TLS listeners and one for the HTTPS upstreams, each for its
# name and 127.0.0.1.
newkey() {
	if [[ $CERT_KEY == ec ]]; then
		openssl ecparam -name prime256v1 -genkey -noout -out "$1"
	else
		openssl genrsa -out "$1" 2048
	fi
}
log "making certificates ($CERT_KEY) in the scratch folder"
{
	newkey "$CERTS/ca-key.pem"
	openssl req -x509 -new -key "$CERTS/ca-key.pem" -subj /CN=xlb-tlsbench-ca -days 2 -out "$CERTS/ca.pem"
	for pair in "lb $LB_NAME_TLS" "backend $BACKEND_NAME"; do
		read -r f cn <<<"$pair"
		newkey "$CERTS/$f-key.pem"
		openssl req -new -key "$CERTS/$f-key.pem" -subj "/CN=$cn" -out "$CERTS/$f.csr"
		printf 'subjectAltName=DNS:%s,IP:127.0.0.1\nextendedKeyUsage=serverAuth\nkeyUsage=digitalSignature,keyEncipherment\n' "$cn" >"$CERTS/$f.ext"
		openssl x509 -req -in "$CERTS/$f.csr" -CA "$CERTS/ca.pem" -CAkey "$CERTS/ca-key.pem" -CAcreateserial \
			-days 2 -extfile "$CERTS/$f.ext" -out "$CERTS/$f.pem"
	done
	cat "$CERTS/lb.pem" "$CERTS/lb-key.pem" >"$CERTS/lb-full.pem" # HAProxy's crt: both in one file
	chmod 644 "$CERTS"/*.pem                                      # nginx's workers read nothing, but keep it simple
} >"$OUT/logs/certs.log" 2>&1 || die "openssl failed making the certificates (see $OUT/logs/certs.log)"

# ------------------------------------------------------------------ build
log "building upstream, report and xlb"
(cd "$ROOT" && go build -o "$WORK/bin/upstream" ./bench/tls/upstream && go build -o "$WORK/bin/report" ./bench/tls/report)
[[ " $CONTESTANTS " == *" xlb "* ]] && (cd "$ROOT" && go build -o "$WORK/bin/xlb" .)

# ------------------------------------------------------------------ upstreams
UPSTREAM_ADDRS=() TLS_UPSTREAM_ADDRS=() UPSTREAM_PIDS=() TLS_UPSTREAM_PIDS=()
start_upstream() { # start_upstream ADDR NAME [TLS flags...]
	local addr=$1 name=$2
	shift 2
	# shellcheck disable=SC2046
	env GOMAXPROCS="$UPSTREAM_GOMAXPROCS" $(pin_cmd 0) "$WORK/bin/upstream" -addr "$addr" -name "$name" \
		-size "$BODY_SIZE" "$@" >"$OUT/logs/upstream-$name.log" 2>&1 &
	STARTED[$!]=1
	LAST_PID=$!
}
for ((i = 1; i <= N_UPSTREAMS; i++)); do
	a=127.0.0.1:$((UPSTREAM_BASE_PORT + i - 1))
	start_upstream "$a" "up$i"
	UPSTREAM_ADDRS+=("$a") UPSTREAM_PIDS+=("$LAST_PID")
	a=127.0.0.1:$((TLS_UPSTREAM_BASE_PORT + i - 1))
	start_upstream "$a" "tls$i" -cert "$CERTS/backend.pem" -key "$CERTS/backend-key.pem" -conn-requests "$UPSTREAM_CONN_REQUESTS"
	TLS_UPSTREAM_ADDRS+=("$a") TLS_UPSTREAM_PIDS+=("$LAST_PID")
done
ALL_UPSTREAM_PIDS=("${UPSTREAM_PIDS[@]}" "${TLS_UPSTREAM_PIDS[@]}")

# get URL: curl that trusts the bench CA and resolves the certificates' names to 127.0.0.1
get() {
	local url=$1 port
	shift
	port=${url#*://} port=${port%%/*} port=${port##*:}
	curl -s --max-time 2 --cacert "$CERTS/ca.pem" --resolve "$LB_NAME_TLS:$port:127.0.0.1" \
		--resolve "$BACKEND_NAME:$port:127.0.0.1" "$@" "$url"
}
wait_ready() { # wait_ready URL PID -> 0 when GET URL/ answers 200 within READY_TIMEOUT
	local url=$1 pid=$2 deadline=$((SECONDS + READY_TIMEOUT)) code
	while ((SECONDS < deadline)); do
		[[ -z $pid ]] || alive "$pid" || return 1
		code=$(get "${url%/}" -o /dev/null -w '%{http_code}' || true)
		[[ $code == 200 ]] && return 0
		sleep 0.05
	done
	return 1
}
for ((i = 0; i < N_UPSTREAMS; i++)); do
	wait_ready "http://${UPSTREAM_ADDRS[i]}/" "${UPSTREAM_PIDS[i]}" || die "upstream ${UPSTREAM_ADDRS[i]} did not start (see $OUT/logs)"
	wait_ready "https://$BACKEND_NAME:${TLS_UPSTREAM_ADDRS[i]##*:}/" "${TLS_UPSTREAM_PIDS[i]}" ||
		die "HTTPS upstream ${TLS_UPSTREAM_ADDRS[i]} did not start (see $OUT/logs)"
done
log "upstreams up: plain ${UPSTREAM_ADDRS[*]}, HTTPS ${TLS_UPSTREAM_ADDRS[*]}"

# upstream_counts -> "requests full resumed": requests served by all upstreams, handshakes by the HTTPS ones
upstream_counts() {
	local a r=0 f=0 s=0 n
	for a in "${UPSTREAM_ADDRS[@]}"; do
		n=$(get "http://$a/__stats") || n=""
		r=$((r + $(awk '$1 == "requests" {print $2 + 0}' <<<"$n") + 0))
	done
	for a in "${TLS_UPSTREAM_ADDRS[@]}"; do
		n=$(get "https://$BACKEND_NAME:${a##*:}/__stats") || n=""
		r=$((r + $(awk '$1 == "requests" {print $2 + 0}' <<<"$n") + 0))
		n=$(get "https://$BACKEND_NAME:${a##*:}/__tls") || n=""
		f=$((f + $(awk '$1 == "full" {print $2 + 0}' <<<"$n") + 0))
		s=$((s + $(awk '$1 == "resumed" {print $2 + 0}' <<<"$n") + 0))
	done
	echo "$r $f $s"
}
# The /__stats and /__tls requests of upstream_counts make handshakes of their own: 2 per HTTPS
# upstream per call (curl resumes nothing across calls), all full. measure subtracts them.
COUNT_HS=$((2 * N_UPSTREAMS))

# ------------------------------------------------------------------ contestants
render() { # render TEMPLATE NAME > file
	local tmpl=$1 name=$2 line u i list
	while IFS= read -r line || [[ -n $line ]]; do
		line=${line//'{PORT_BTLS}'/${BTLS_PORT[$name]}}
		line=${line//'{PORT_CTLS}'/${CTLS_PORT[$name]}}
		line=${line//'{WORKDIR}'/$WORK}
		line=${line//'{CERTS}'/$CERTS}
		line=${line//'{NAME}'/$name}
		line=${line//'{NCPU}'/$LB_NCPU}
		line=${line//'{BACKEND_NAME}'/$BACKEND_NAME}
		case $line in
		*'{EACH_UPSTREAM}'*) list=("${UPSTREAM_ADDRS[@]}") u='{EACH_UPSTREAM}' ;;
		*'{EACH_TLS_UPSTREAM}'*) list=("${TLS_UPSTREAM_ADDRS[@]}") u='{EACH_TLS_UPSTREAM}' ;;
		*) printf '%s\n' "$line"; continue ;;
		esac
		for ((i = 0; i < ${#list[@]}; i++)); do
			local l=${line//"$u"/${list[i]}}
			printf '%s\n' "${l//'{EACH_INDEX}'/$((i + 1))}"
		done
	done <"$tmpl"
}

declare -A PID_OF=() NO_BTLS=()
# URL NAME SCENARIO -> the URL the scenario drives
url_of() {
	local name=$1 sc=$2
	if [[ $name == direct ]]; then
		echo "https://$BACKEND_NAME:${TLS_UPSTREAM_ADDRS[0]##*:}"
	elif [[ $sc == backend-tls ]]; then
		echo "http://127.0.0.1:${BTLS_PORT[$name]}"
	else
		echo "https://$LB_NAME_TLS:${CTLS_PORT[$name]}"
	fi
}
launch() { # launch NAME: start it in the background; PID_OF[NAME]
	local name=$1 pin logf="$OUT/logs/$name.log"
	pin=$(pin_cmd 1)
	case $name in
	nginx)
		render "$HERE/conf/nginx.conf" nginx >"$WORK/nginx.conf"
		$pin nginx -p "$WORK" -e "$WORK/nginx-error.log" -c "$WORK/nginx.conf" >>"$logf" 2>&1 &
		;;
	haproxy)
		render "$HERE/conf/haproxy.cfg" haproxy >"$WORK/haproxy.cfg"
		$pin haproxy -db -f "$WORK/haproxy.cfg" >>"$logf" 2>&1 &
		;;
	xlb)
		render "$HERE/conf/xlb.yaml" xlb >"$WORK/xlb-full.yaml"
		if [[ -n ${NO_BTLS[xlb]:-} ]]; then
			sed '/^# BEGIN backend-tls/,/^# END backend-tls/d' "$WORK/xlb-full.yaml" >"$WORK/xlb.yaml"
		else
			cp "$WORK/xlb-full.yaml" "$WORK/xlb.yaml"
		fi
		local flags=(run --config "$WORK/xlb.yaml" --state-dir "$WORK/xlb-state" --log-format json)
		[[ -n $XLB_WORKERS ]] && flags+=(--workers "$XLB_WORKERS")
		# shellcheck disable=SC2086
		$pin "$WORK/bin/xlb" "${flags[@]}" $XLB_FLAGS >>"$logf" 2>&1 &
		;;
	esac
	PID_OF[$name]=$!
	STARTED[$!]=1
}
ready() { # ready NAME: both listeners (only CTLS when backend TLS is off) answer 200
	local name=$1
	wait_ready "$(url_of "$name" client-tls-get)/" "${PID_OF[$name]}" || return 1
	[[ -n ${NO_BTLS[$name]:-} ]] || wait_ready "$(url_of "$name" backend-tls)/" "${PID_OF[$name]}"
}
start_contestant() {
	local name=$1
	if [[ $name == direct ]]; then
		PID_OF[direct]=
		return 0
	fi
	[[ $name == xlb && $XLB_BACKEND_TLS == off ]] && NO_BTLS[xlb]="XLB_BACKEND_TLS=off"
	launch "$name"
	ready "$name" && return 0
	log "$name did not become ready; log tail:"
	tail -5 "$OUT/logs/$name.log" >&2 || true
	stop_pid "${PID_OF[$name]}"
	PID_OF[$name]=
	if [[ $name == xlb && $XLB_BACKEND_TLS == auto && -z ${NO_BTLS[xlb]:-} ]]; then
		# This xlb rejects backend TLS (a set with tls) until that lands: serve the rest.
		NO_BTLS[xlb]="rejected: $(grep -v '^Run ' "$OUT/logs/xlb.log" | tail -1 | sed "s#$WORK/##g")"
		log "xlb: retrying without the backend-tls listener; backend-tls is skipped for xlb"
		launch xlb
		ready xlb && return 0
		stop_pid "${PID_OF[xlb]}"
		PID_OF[xlb]=
	fi
	return 1
}
stop_contestant() {
	local pid=${PID_OF[$1]:-}
	[[ -n $pid ]] && stop_pid "$pid"
	PID_OF[$1]=
}

# ------------------------------------------------------------------ sanity and TLS facts
# sanity NAME (round 1): each listener reaches every upstream; the TLS listener's protocol, key
# exchange group, and whether it resumes a session (openssl s_client, the OpenSSL wrk links).
printf 'contestant\tlistener\tupstreams_seen\tprotocol\tgroup\tresumes\n' >"$OUT/tls.tsv"
sanity() {
	local name=$1 sc url seen proto group resumes host port
	for sc in backend-tls client-tls-get; do
		[[ $sc == backend-tls && -n ${NO_BTLS[$name]:-} ]] && continue
		url=$(url_of "$name" "$sc")
		seen=0
		for ((n = 0; n < 2 * N_UPSTREAMS; n++)); do get "$url/" -D - -o /dev/null || true; done | tr -d '\r' |
			awk -F': ' 'tolower($1) == "x-upstream" { s[$2] = 1 } END { n = 0; for (k in s) n++; print n }' >"$WORK/seen"
		seen=$(cat "$WORK/seen")
		[[ $name == direct || $seen == "$N_UPSTREAMS" ]] || log "WARNING: $name $sc reached $seen of $N_UPSTREAMS upstreams"
		proto=- group=- resumes=-
		if [[ $url == https://* ]]; then
			host=${url#https://} port=${host##*:} host=${host%:*}
			# a TLS 1.3 ticket comes after the handshake: give s_client a request to read past it
			printf 'GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n' "$host" |
				timeout 5 openssl s_client -connect "127.0.0.1:$port" -servername "$host" -CAfile "$CERTS/ca.pem" \
					-sess_out "$WORK/sess" -ign_eof >"$WORK/s1" 2>&1 || true
			proto=$(awk -F': *' '/^ *Protocol *:/ { print $2; exit }' "$WORK/s1")
			group=$(awk -F': *' '/^(Server Temp Key|Negotiated TLS1.3 group)/ { print $2; exit }' "$WORK/s1" | cut -d, -f1)
			printf 'GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n' "$host" |
				timeout 5 openssl s_client -connect "127.0.0.1:$port" -servername "$host" -CAfile "$CERTS/ca.pem" \
					-sess_in "$WORK/sess" -ign_eof >"$WORK/s2" 2>&1 || true
			resumes=no
			grep -q '^Reused,' "$WORK/s2" && resumes=yes
			grep -q 'Verify return code: 0 (ok)' "$WORK/s1" || log "WARNING: $name $sc: the certificate did not verify (see $OUT/logs/$name-s_client.txt)"
			cat "$WORK/s1" "$WORK/s2" >"$OUT/logs/$name-s_client.txt"
		fi
		printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$sc" "$seen" "${proto:--}" "${group:--}" "$resumes" >>"$OUT/tls.tsv"
	done
}

# ------------------------------------------------------------------ load
# load URL SCENARIO SECONDS OUTFILE: the scenario's load; its output ends in a RESULT line
load() {
	local url=$1 sc=$2 d=$3 of=$4 pin host port i
	pin=$(pin_cmd 0)
	host=${url#*://} port=${host##*:} host=${host%:*}
	local wrk=($pin timeout -k 5 $((d + 20)) wrk -t"$WRK_THREADS" -c"$CONNS" -d"${d}s" --latency -s "$HERE/wrk.lua")
	# wrk dials the address: 127.0.0.1, in the Host header and SNI too (the certificates hold it)
	local u="${url%%://*}://127.0.0.1:$port/"
	case $sc in
	backend-tls | client-tls-get) "${wrk[@]}" "$u" ;;
	client-tls-new) "${wrk[@]}" -H 'Connection: close' "$u" ;;
	client-tls-full)
		local t0 t1
		t0=$(date +%s%N)
		for ((i = 0; i < FULL_CLIENTS; i++)); do
			$pin timeout -k 5 $((d + 20)) openssl s_time -connect "127.0.0.1:$port" -new -time "$d" -www / \
				>"$WORK/stime.$i" 2>&1 &
		done
		wait
		t1=$(date +%s%N)
		cat "$WORK"/stime.* | grep -v '^\**$' || true
		awk -v t0="$t0" -v t1="$t1" '/connections in .* real seconds/ { n += $1 }
			/^ERROR|error/ { e++ }
			END { printf "RESULT requests=%d duration_us=%d errors=%d p50_us=0 p99_us=0\n", n, (t1 - t0) / 1000, e }' "$WORK"/stime.*
		rm -f "$WORK"/stime.*
		;;
	esac >"$of" 2>&1
}

COLS='round\tcontestant\tscenario\twall_s\trequests\tduration_s\trps\terrors\tp50_us\tp99_us\tlb_cpu_s\tup_cpu_s\tclient_cpu_s\tother_cpu_s\tlb_runq_s\tup_requests\ths_full\ths_resumed\tattempts\n'
printf "$COLS" >"$OUT/raw.tsv"
printf "$COLS" >"$OUT/discarded.tsv"
printf 'round\tcontestant\tphase\ths_full\ths_resumed\n' >"$OUT/handshakes.tsv"

measure_once() { # ROUND NAME SCENARIO ATTEMPT -> one raw.tsv row
	local round=$1 name=$2 sc=$3 attempt=$4 lbp=() of="$OUT/logs/r$1-$2-$3-a$4.txt"
	[[ -n ${PID_OF[$name]:-} ]] && read -r -a lbp <<<"$(descendants "${PID_OF[$name]}")"
	local c0 c1 lb0 lb1 up0 up1 m0 m1 lq0 lq1 t0 t1 cl
	c0=$(upstream_counts)
	lb0=$(cpu_ticks "${lbp[@]}") up0=$(cpu_ticks "${ALL_UPSTREAM_PIDS[@]}") lq0=$(runq_ns "${lbp[@]}") m0=$(machine_ticks)
	t0=$(date +%s%N)
	local TIMEFORMAT='%U %S' perfpid=""
	if [[ $XLB_PERF == 1 && $name == xlb ]]; then
		# perf samples xlb's processes for the length of the load; it costs xlb CPU: the figures
		# of such a run are for the profile only
		timeout -k 5 $((DURATION + 20)) perf record -q -e cpu-clock -F 997 -g -o "$WORK/perf.data" \
			-p "$(IFS=,; echo "${lbp[*]}")" -- sleep "$DURATION" >/dev/null 2>&1 &
		perfpid=$!
	fi
	cl=$({ time load "$(url_of "$name" "$sc")" "$sc" "$DURATION" "$of" || true; } 2>&1 | tail -1 | awk '{print $1 + $2}')
	t1=$(date +%s%N)
	if [[ -n $perfpid ]]; then
		wait "$perfpid" || true
		perf report -i "$WORK/perf.data" --stdio --no-children -g none --sort comm,dso,sym --percent-limit 0.4 2>/dev/null |
			grep -v '^$' >"$OUT/perf-xlb-$sc-r$round.txt" || true
	fi
	m1=$(machine_ticks) lb1=$(cpu_ticks "${lbp[@]}") up1=$(cpu_ticks "${ALL_UPSTREAM_PIDS[@]}") lq1=$(runq_ns "${lbp[@]}")
	c1=$(upstream_counts)
	local res
	res=$(grep '^RESULT ' "$of" | tail -1 || true)
	[[ -n $res ]] || {
		log "WARNING: no result for $name/$sc (see $of)"
		res="RESULT requests=0 duration_us=1 errors=0 p50_us=0 p99_us=0"
	}
	awk -v round="$round" -v name="$name" -v sc="$sc" -v t0="$t0" -v t1="$t1" -v tck="$CLK_TCK" \
		-v lb="$((lb1 - lb0))" -v up="$((up1 - up0))" -v cl="$cl" -v m="$((m1 - m0))" -v haslb="${#lbp[@]}" \
		-v lq="$((lq1 - lq0))" -v c0="$c0" -v c1="$c1" -v counths="$COUNT_HS" -v attempt="$attempt" '
	{
		for (i = 2; i <= NF; i++) { split($i, kv, "="); r[kv[1]] = kv[2] }
		wall = (t1 - t0) / 1e9; dur = r["duration_us"] / 1e6
		split(c0, a, " "); split(c1, b, " ")
		other = m / tck - (haslb ? lb / tck : 0) - up / tck - cl
		if (other < 0) other = 0
		printf "%d\t%s\t%s\t%.3f\t%d\t%.3f\t%.1f\t%d\t%d\t%d\t%s\t%.2f\t%.2f\t%.2f\t%s\t%d\t%d\t%d\t%d\n",
			round, name, sc, wall, r["requests"], dur, r["requests"] / dur, r["errors"], r["p50_us"], r["p99_us"],
			haslb ? sprintf("%.2f", lb / tck) : "NA", up / tck, cl, other, haslb ? sprintf("%.2f", lq / 1e9) : "NA",
			b[1] - a[1], b[2] - a[2] - counths, b[3] - a[3], attempt
	}' <<<"$res"
}

RETRY_USED=0
measure() { # ROUND NAME SCENARIO: measure_once, repeated once when other tenants were busy
	local round=$1 name=$2 sc=$3 attempt row best="" best_other="" other
	for ((attempt = 1; attempt <= RETRIES + 1; attempt++)); do
		row=$(measure_once "$round" "$name" "$sc" "$attempt")
		other=$(awk -F'\t' '{ printf "%.3f", $14 / $4 }' <<<"$row")
		if [[ -z $best ]] || awk -v a="$other" -v b="$best_other" 'BEGIN { exit !(a < b) }'; then
			[[ -n $best ]] && printf '%s\n' "$best" >>"$OUT/discarded.tsv"
			best=$row best_other=$other
		else
			printf '%s\n' "$row" >>"$OUT/discarded.tsv"
		fi
		awk -v o="$other" -v m="$NOISE_MAX" 'BEGIN { exit !(o > m) }' || break
		((RETRY_USED + DURATION <= RETRY_BUDGET && attempt <= RETRIES)) || break
		RETRY_USED=$((RETRY_USED + DURATION))
		log "  $name/$sc: other tenants used $other cores, measuring again"
	done
	printf '%s\n' "$best" >>"$OUT/raw.tsv"
	awk -F'\t' '{ printf "  %-8s %-16s %8.0f req/s  lb %4s cores  up %4.2f  client %4.2f  other %4.2f  backend handshakes %d full %d resumed\n",
		$2, $3, $7, ($11 == "NA" ? "-" : sprintf("%.2f", $11 / $6)), $12 / $6, $13 / $6, $14 / $4, $17, $18 }' <<<"$best" >&2
}

# warm NAME ROUND: a short unmeasured load on each listener, counting the backend handshakes
warm() {
	local name=$1 round=$2 c0 c1 sc f0 f1 s0 s1
	for sc in backend-tls client-tls-get; do
		[[ $sc == backend-tls && ( $name == direct || -n ${NO_BTLS[$name]:-} ) ]] && continue
		[[ $sc == client-tls-get && $name == direct ]] && continue
		c0=$(upstream_counts)
		((WARMUP > 0)) && load "$(url_of "$name" "$sc")" "$sc" "$WARMUP" "$OUT/logs/warmup.txt"
		c1=$(upstream_counts)
		read -r _ f0 s0 <<<"$c0"
		read -r _ f1 s1 <<<"$c1"
		printf '%d\t%s\twarmup-%s\t%d\t%d\n' "$round" "$name" "$sc" $((f1 - f0 - COUNT_HS)) $((s1 - s0)) >>"$OUT/handshakes.tsv"
	done
}

# ------------------------------------------------------------------ main loop
read -r -a CLIST <<<"$CONTESTANTS"
read -r -a SLIST <<<"$SCENARIOS"
declare -A BROKEN=()
log "contestants: ${CLIST[*]}; scenarios: ${SLIST[*]}; $ROUNDS rounds x ${DURATION}s; PIN=$PIN; results in $OUT"
for ((round = 1; round <= ROUNDS; round++)); do
	log "round $round/$ROUNDS: starting contestants"
	RUNNING=()
	for name in "${CLIST[@]}"; do
		[[ -n ${BROKEN[$name]:-} ]] && continue
		if ! start_contestant "$name"; then
			BROKEN[$name]=1
			log "WARNING: $name could not be started; it is left out"
			continue
		fi
		RUNNING+=("$name")
		((round == 1)) && sanity "$name"
		warm "$name" "$round"
	done
	NR=${#RUNNING[@]}
	((NR > 0)) || die "no contestant could be started"
	for ((si = 0; si < ${#SLIST[@]}; si++)); do
		sc=${SLIST[si]}
		log "round $round/$ROUNDS: $sc"
		for ((k = 0; k < NR; k++)); do
			name=${RUNNING[(k + round - 1 + si) % NR]} # rotated: nobody always goes first
			[[ $sc == backend-tls && -n ${NO_BTLS[$name]:-} ]] && continue
			measure "$round" "$name" "$sc"
		done
	done
	for name in "${RUNNING[@]}"; do stop_contestant "$name"; done
done

# ------------------------------------------------------------------ report
{
	echo "date	$(date -u '+%Y-%m-%d %H:%M UTC')"
	echo "host	$(nproc) CPUs, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), $(uname -r)"
	echo "settings	ROUNDS=$ROUNDS DURATION=${DURATION}s WARMUP=${WARMUP}s CONNS=$CONNS FULL_CLIENTS=$FULL_CLIENTS WRK_THREADS=$WRK_THREADS N_UPSTREAMS=$N_UPSTREAMS UPSTREAM_GOMAXPROCS=$UPSTREAM_GOMAXPROCS UPSTREAM_CONN_REQUESTS=$UPSTREAM_CONN_REQUESTS BODY_SIZE=$BODY_SIZE CERT_KEY=$CERT_KEY NOISE_MAX=$NOISE_MAX PIN=$PIN XLB_PERF=$XLB_PERF XLB_WORKERS=${XLB_WORKERS:-default} XLB_FLAGS=${XLB_FLAGS:-none}"
	echo "go	$(go version | awk '{print $3}')"
	echo "wrk	$(wrk -v 2>&1 | head -1 | awk '{print $2}')"
	echo "openssl	$(openssl version)"
	for c in "${CLIST[@]}"; do
		case $c in
		nginx) echo "nginx	$(nginx -v 2>&1 | sed 's/.*version: //')" ;;
		haproxy) echo "haproxy	$(haproxy -v | head -1 | awk '{print $3}')" ;;
		xlb) echo "xlb	$(cd "$ROOT" && git log -1 --format='%h %s' 2>/dev/null || echo unknown)" ;;
		esac
	done
	for c in "${!NO_BTLS[@]}"; do echo "no-backend-tls	$c: ${NO_BTLS[$c]}"; done
} >"$OUT/meta.tsv"
for a in "${TLS_UPSTREAM_ADDRS[@]}"; do
	echo "== $a"
	get "https://$BACKEND_NAME:${a##*:}/__tls"
done >"$OUT/upstream-tls.txt"
"$WORK/bin/report" -dir "$OUT" >"$OUT/report.md"
cat "$OUT/report.md"
log "results: $OUT/report.md, $OUT/raw.tsv"
