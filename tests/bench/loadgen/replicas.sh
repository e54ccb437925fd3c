#!/usr/bin/env bash
# The poll benchmark (ota-loadgen) on the three server setups, in one run on this machine, every part sharing
# its cores: SQLite on one replica, PostgreSQL on one replica, PostgreSQL on two replicas behind haproxy. Prints
# polls/s and p99 for each and checks the PostgreSQL target (>= 10,000 polls/s at p99 <= 50 ms).
#
# Needs PostgreSQL's server binaries (Debian package postgresql), psql, haproxy and curl. Extra arguments go to
# every ota-loadgen run (e.g. --devices 2000 --duration-secs 5 for a quick look). RATE and P99_MS set the
# target (default 10000 and 50); NO_BUILD=1 uses the release binaries as they are; SETUPS picks setups
# (default "sqlite pg1 pg2").
set -euo pipefail

root=$(cd "$(dirname "$0")/../../.." && pwd)
rate=${RATE:-10000}
p99=${P99_MS:-50}
cd "$root"
[ -n "${NO_BUILD:-}" ] || cargo build --release -q -p ota-server -p ota-loadgen -p ota-bundle-tool
bin=$root/target/release
pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
for tool in "$pgbin/initdb" "$pgbin/pg_ctl" psql haproxy curl; do
  command -v "$tool" >/dev/null || { echo "replicas.sh: $tool not found (install postgresql haproxy curl)" >&2; exit 1; }
done

work=$(mktemp -d /tmp/ota-replicas-bench.XXXXXX)
chmod 755 "$work"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -f "$work/pg/postmaster.pid" ] && $as "$pgbin/pg_ctl" -D "$work/pg" -m fast stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# PostgreSQL refuses to run as root: as root it runs as the package's postgres user.
as=""
if [ "$(id -u)" -eq 0 ]; then
  as="runuser -u postgres --"
  mkdir "$work/pg" && chown postgres "$work/pg"
fi
pgport=$(free_port)
$as "$pgbin/initdb" -D "$work/pg" -U ota --auth=trust -N >/dev/null
$as "$pgbin/pg_ctl" -D "$work/pg" -l "$work/pg/log" -w \
  -o "-p $pgport -k $work/pg -c listen_addresses=127.0.0.1 -c max_connections=300" start >/dev/null
for db in one two; do psql -q -h 127.0.0.1 -p "$pgport" -U ota -d postgres -c "CREATE DATABASE $db"; done

admin=admin-token-for-the-benchmark-0123
secret=enrollment-secret-for-the-benchmark
"$bin/ota-bundle" keygen "$work/release" >/dev/null

# serve NAME DATABASE-URL: starts a replica; sets $port.
serve() {
  port=$(free_port)
  local db=()
  [ -n "$2" ] && db=(--database "$2")
  RUST_LOG=warn "$bin/ota-server" serve --listen "127.0.0.1:$port" --data-dir "$work/$1" "${db[@]}" \
    --trust-root "$work/release.pub" --admin-token "$admin" --enrollment-secret "$secret" \
    --admission auto >"$work/$1.out" 2>"$work/$1.log" &
  pids+=($!)
  for _ in $(seq 100); do
    curl -fs "http://127.0.0.1:$port/healthz" >/dev/null && return
    sleep 0.1
  done
  echo "replicas.sh: $1 did not start: $(cat "$work/$1.log")" >&2
  exit 1
}

# balance PORT...: haproxy in front of those replicas; sets $port.
balance() {
  port=$(free_port)
  {
    printf 'global\n  maxconn 4000\ndefaults\n  mode http\n  timeout connect 1s\n  timeout client 30s\n'
    printf '  timeout server 30s\n  option http-keep-alive\nfrontend fe\n  bind 127.0.0.1:%s\n' "$port"
    printf '  default_backend replicas\nbackend replicas\n  balance roundrobin\n  option httpchk GET /healthz\n'
    local i=0
    for p in "$@"; do printf '  server r%s 127.0.0.1:%s check inter 1s\n' $i "$p"; i=$((i + 1)); done
  } >"$work/haproxy.cfg"
  haproxy -db -f "$work/haproxy.cfg" >"$work/haproxy.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do
    curl -fs "http://127.0.0.1:$port/healthz" >/dev/null && return
    sleep 0.1
  done
  echo "replicas.sh: haproxy did not start: $(cat "$work/haproxy.log")" >&2
  exit 1
}

results=()
# run LABEL URL: one ota-loadgen run against URL; keeps its summary line.
run() {
  echo "== $1"
  local out status=0
  out=$("$bin/ota-loadgen" --server "$2" --admin-token "$admin" --enrollment-secret "$secret" \
    --signing-key "$work/release.key" --rate "$rate" --target-rate "$rate" --target-p99-ms "$p99" \
    "${extra[@]}" 2>&1) || status=$?
  echo "$out"
  local polls p99line
  polls=$(grep -m1 -A1 '^rate phase:$' <<<"$out" | grep -o 'polls/s *[0-9]*' | grep -o '[0-9]*$' || true)
  p99line=$(grep -m1 -A2 '^rate phase:$' <<<"$out" | grep -o 'p99 [0-9.]*' | head -1 || true)
  results+=("$(printf '%-34s %8s polls/s  %-12s %s' "$1" "${polls:-?}" "${p99line:-p99 ?} ms" \
    "$([ $status -eq 0 ] && echo PASS || echo FAIL)")")
  return 0
}
extra=("$@")

for setup in ${SETUPS:-sqlite pg1 pg2}; do
  case $setup in
    sqlite) serve sqlite ""; run "SQLite, one replica" "http://127.0.0.1:$port" ;;
    pg1) serve pg1 "postgres://ota@127.0.0.1:$pgport/one"; run "PostgreSQL, one replica" "http://127.0.0.1:$port" ;;
    pg2)
      serve pg2a "postgres://ota@127.0.0.1:$pgport/two"; a=$port
      serve pg2b "postgres://ota@127.0.0.1:$pgport/two"; b=$port
      balance "$a" "$b"
      run "PostgreSQL, two replicas + haproxy" "http://127.0.0.1:$port" ;;
    *) echo "replicas.sh: unknown setup $setup (sqlite, pg1, pg2)" >&2; exit 2 ;;
  esac
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  pids=()
done
echo
echo "summary (target with PostgreSQL: >= $rate polls/s at p99 <= $p99 ms, all parts on $(nproc) cores):"
printf '  %s\n' "${results[@]}"
