#!/usr/bin/env bash
# HTTP and store benchmarks of a generated shop service, against a bare hyper baseline
# built in the same run. Release builds; load generator (wrk) on the same machine.
#
#   bash bench/run.sh            # all benchmarks, 10 s each
#   bash bench/run.sh http                       # GET by id against bare hyper (alternating,
#                                                # then both at once, ROUNDS rounds, default 6,
#                                                # with each one's CPU per request; then
#                                                # reads spread over 1000 records; then
#                                                # against bare hyper built with fat LTO
#                                                # and one write per answer, as the
#                                                # service is) and durable creates
#   DURATION=5s bash bench/run.sh
#   RECORDS=1000000 bash bench/run.sh restart   # only the restart / memory benchmark
#   bash bench/run.sh scale                      # the same (1M by default): fill, data dir,
#                                                # restart, RSS, lists and GET by id at scale
#                                                # (FILL_IN_FLIGHT=64: the fill in a service's
#                                                # batch sizes; default 4096)
#   bash bench/run.sh cluster                    # only the Raft benchmarks
#   LIST_RECORDS=160000 bash bench/run.sh lists  # durable creates with and without heavy lists
#   bash bench/run.sh firewall                   # GET and POST with the firewall on and off
#   bash bench/run.sh jwt                        # GET by id with an API token and with a JWT
#   bash bench/run.sh masks                      # a list of 100 with and without a field mask
#   bash bench/run.sh cache                      # a repeated list of 100, computed and cached
#   bash bench/run.sh lifecycle                  # durable creates with and without a lifecycle
#   bash bench/run.sh projection                 # creates into an audited model with a projection
#                                                # vs a plain one; restart with RECORDS of them
#   bash bench/run.sh telemetry                  # GET and POST with request_log = "all" (JSON
#                                                # lines) and traces at 0.1 to a local OTLP
#                                                # sink vs both off; metrics are on in both;
#                                                # alternating, then both services at once
#   ROUNDS=7 bash bench/run.sh firewall          # more alternating rounds (default 5)
#
# Needs wrk (Debian: apt-get install wrk). Results go to stdout; copy them into
# bench/README.md with the machine's description.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
DURATION=${DURATION:-10s}
CONNS=${CONNS:-64}
RECORDS=${RECORDS:-1000000}
only=${1:-all}
work=$root/target/bench
export CARGO_TARGET_DIR=$root/target/bench-target
mkdir -p "$work"
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 1; }

echo "== building (release)"
cargo build --release -q -p lithair-gen
cargo build --release -q -p lithair-runtime --example hello_baseline --example fill_store --example mint_jwt
rm -rf "$work/shop"
"$CARGO_TARGET_DIR/release/lithair-gen" new "$work/shop" --schema examples/shop.yaml >/dev/null
cp Cargo.lock "$work/shop/"
(cd "$work/shop" && cargo build --release -q)
shop=$CARGO_TARGET_DIR/release/shop
editor=$(cd "$work/shop" && "$shop" token new --name bench --role editor 2>&1 >>lithair.toml | sed -n 's/.*shown once; give it to the client): //p')

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

# start NAME CMD...: runs CMD in the background, waits for "listening on", sets $addr.
start() {
  local log=$work/$1.log; shift
  "$@" >"$log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 2400); do
    addr=$(sed -n 's/^listening on http:\/\///p' "$log" | head -1)
    [ -n "$addr" ] && return 0
    sleep 0.05
  done
  echo "server did not start: $(cat "$log")" >&2; exit 1
}

serve_shop() { # serve_shop NAME SYNC [CONFIG]
  rm -rf "$work/data-$1"
  start "$1" env LITHAIR_SYNC="$2" LITHAIR_LOG=warn "$shop" serve --config "${3:-$work/shop/lithair.toml}" --port 0 --data-dir "$work/data-$1"
}

summary() { # the lines of wrk's output worth keeping; a run with errors is not a result
  tee "$work/last-wrk.txt" | grep -E "Requests/sec|Latency  |  50%|  99%|Non-2xx|Socket errors" || true
  if grep -q "Non-2xx" "$work/last-wrk.txt"; then echo "!! some requests failed: the figures above are not valid" >&2; fi
}

rate() { sed -n 's/^Requests\/sec: *//p' "$work/last-wrk.txt"; }

# median RATIO...: the middle one (the machine's speed drifts between runs; neighbouring
# runs are compared, and the median of the rounds is the figure to report).
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# cpu_ticks PID: the process's user + system CPU time so far, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# per_request TICKS REQUESTS: CPU microseconds per request.
per_request() { awk -v t="$1" -v n="$2" -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.2f", t * 1e6 / hz / n}'; }

category() {
  curl -s -XPOST "http://$addr/api/categories" -H "authorization: Bearer $editor" \
    -H 'content-type: application/json' -d "{\"name\":\"bench-$RANDOM$RANDOM\"}" | sed 's/.*"id":"\([^"]*\)".*/\1/'
}

if [ "$only" = all ] || [ "$only" = http ]; then
  # The baseline and the service alternate three times: the machine's speed drifts, and
  # the ratio of neighbouring runs is what counts.
  start hello "$CARGO_TARGET_DIR/release/examples/hello_baseline" 127.0.0.1:0
  hello_addr=$addr
  serve_shop get always
  cat=$(category)
  id=$(curl -s -XPOST "http://$addr/api/products" -H "authorization: Bearer $editor" -H 'content-type: application/json' \
    -d "{\"name\":\"x\",\"sku\":\"GET-1\",\"price\":1,\"category\":\"$cat\"}" | sed 's/.*"id":"\([^"]*\)".*/\1/')
  for round in 1 2 3; do
    echo "== 1. baseline: bare hyper, GET, $CONNS connections, $DURATION (round $round)"
    wrk -t2 -c"$CONNS" -d"$DURATION" --latency "http://$hello_addr/" | summary
    echo "== 2. shop: GET /api/products/{id} with a bearer token, $CONNS connections, $DURATION (round $round)"
    LITHAIR_TOKEN=$editor LITHAIR_PATH=/api/products/$id wrk -t2 -c"$CONNS" -d"$DURATION" --latency -s bench/get.lua "http://$addr" | summary
  done
  # The same two at once, half the connections each: they share the two cores, so each
  # runs at the rate its own cost per request allows, and a change of the machine's
  # speed touches both alike (the ratio to report; the alternating one drifts).
  # Each server's CPU time (user + system, from /proc) per request it answered is noted
  # too: the throughput ratio is damped (a server that answers more keeps its load
  # generator busier), the CPU per request is not.
  half=$(( CONNS / 2 ))
  hello_pid=${pids[-2]}; shop_pid=${pids[-1]}
  # at_once LABEL SCRIPT ENV=VALUE...: ROUNDS rounds of bare hyper and the shop (wrk with
  # bench/SCRIPT and the environment given) at once, then the medians of both ratios.
  at_once() {
    local label=$1 script=$2 ratios=() cpu_ratios=() round h0 s0 h1 s1 w1 w2 h g hn gn hc gc
    shift 2
    for round in $(seq 1 "${ROUNDS:-6}"); do
      h0=$(cpu_ticks "$hello_pid"); s0=$(cpu_ticks "$shop_pid")
      wrk -t1 -c"$half" -d"$DURATION" "http://$hello_addr/" > "$work/once-hello.txt" &
      w1=$!
      env "$@" wrk -t1 -c"$half" -d"$DURATION" -s "bench/$script" "http://$addr" > "$work/once-shop.txt" &
      w2=$!
      wait "$w1" "$w2"
      h1=$(cpu_ticks "$hello_pid"); s1=$(cpu_ticks "$shop_pid")
      ! grep -q "Non-2xx" "$work/once-shop.txt" || echo "!! some requests failed: the figures above are not valid" >&2
      h=$(sed -n 's/^Requests\/sec: *//p' "$work/once-hello.txt"); g=$(sed -n 's/^Requests\/sec: *//p' "$work/once-shop.txt")
      hn=$(awk '/requests in/ {print $1}' "$work/once-hello.txt"); gn=$(awk '/requests in/ {print $1}' "$work/once-shop.txt")
      hc=$(per_request "$((h1 - h0))" "$hn"); gc=$(per_request "$((s1 - s0))" "$gn")
      echo "== $label, at once, $half connections each (round $round): bare hyper $h req/s (${hc} µs CPU each), shop GET $g req/s (${gc} µs CPU each)"
      ratios+=("$(awk -v a="$g" -v b="$h" 'BEGIN {printf "%.3f", a / b}')")
      cpu_ratios+=("$(awk -v a="$gc" -v b="$hc" 'BEGIN {printf "%.3f", b / a}')")
    done
    echo "== $label: shop GET / bare hyper, at once, per round: ${ratios[*]}; median $(median "${ratios[@]}")"
    echo "== $label: bare hyper's CPU per request / the shop's, per round: ${cpu_ratios[*]}; median $(median "${cpu_ratios[@]}")"
  }
  at_once "2p. one record" get.lua LITHAIR_TOKEN="$editor" LITHAIR_PATH="/api/products/$id"
  # The same with reads spread over a thousand records (each worker keeps the answers of
  # up to 256 it rendered recently, so here nearly every read renders its record).
  LITHAIR_TOKEN=$editor LITHAIR_CATEGORY=$cat LITHAIR_RUN="M$(date +%s%N | tail -c 9)" \
    wrk -t1 -c8 -d1s -s bench/post.lua "http://$addr" > /dev/null
  curl -s "http://$addr/api/products?limit=1000" -H "authorization: Bearer $editor" \
    | grep -o '"id":"[^"]*"' | sed 's/"id":"\([^"]*\)"/\1/' > "$work/ids.txt"
  at_once "2q. $(wc -l < "$work/ids.txt") records in turn" get_many.lua LITHAIR_TOKEN="$editor" LITHAIR_IDS="$work/ids.txt"
  # Bare hyper above is hyper as it comes: built with the workspace's release profile,
  # writing an answer's head and body with one gathered write. A generated service is
  # built with fat LTO (its Cargo.toml) and writes an answer as one buffer (its server):
  # the one-record series again against bare hyper built and run that way too.
  echo "== building bare hyper with fat LTO"
  CARGO_PROFILE_RELEASE_LTO=fat CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1 CARGO_TARGET_DIR="$root/target/bench-lto" \
    cargo build --release -q -p lithair-runtime --example hello_baseline
  plain_hello_pid=$hello_pid shop_addr=$addr
  start hello-tuned "$root/target/bench-lto/release/examples/hello_baseline" 127.0.0.1:0 --one-write
  hello_addr=$addr hello_pid=${pids[-1]} addr=$shop_addr
  at_once "2r. one record, bare hyper with fat LTO and one write per answer" get.lua LITHAIR_TOKEN="$editor" LITHAIR_PATH="/api/products/$id"
  kill "$hello_pid" "$shop_pid" "$plain_hello_pid"

  for run in "always 64" "always 1" "never 64" "periodic 64"; do
    set -- $run
    echo "== 3/4. shop: POST /api/products, sync=$1, $2 connection(s), $DURATION"
    serve_shop "post-$1-$2" "$1"
    cat=$(category)
    LITHAIR_TOKEN=$editor LITHAIR_CATEGORY=$cat LITHAIR_RUN="$(date +%s%N | tail -c 9)" \
      wrk -t$(( $2 < 2 ? 1 : 2 )) -c"$2" -d"$DURATION" --latency -s bench/post.lua "http://$addr" | summary
    curl -s "http://$addr/metrics" | grep -E "^lithair_store_(events|batches)_total"
    kill "${pids[-1]}"
  done
fi

if [ "$only" = all ] || [ "$only" = firewall ]; then
  # The same GET by id with the firewall's rules and rate limit on (limits too high to
  # trigger) and off, alternating, beside the bare hyper baseline.
  fw=$work/shop/firewall.toml
  sed -e 's|^allow = \[\]|allow = ["127.0.0.0/8", "10.0.0.0/8"]|' \
      -e 's|^deny = \[\]|deny = ["203.0.113.0/24", "198.51.100.0/24"]|' \
      -e 's|^per_ip = 0|per_ip = 100000000|' -e 's|^burst = 0|burst = 100000000|' \
      "$work/shop/lithair.toml" > "$fw"
  grep -q '^per_ip = 100000000' "$fw" || { echo "the firewall config was not written" >&2; exit 1; }
  start hello "$CARGO_TARGET_DIR/release/examples/hello_baseline" 127.0.0.1:0
  hello_addr=$addr
  serve_shop fw-off always
  off_addr=$addr
  cat=$(category)
  off_id=$(curl -s -XPOST "http://$addr/api/products" -H "authorization: Bearer $editor" -H 'content-type: application/json' \
    -d "{\"name\":\"x\",\"sku\":\"GET-1\",\"price\":1,\"category\":\"$cat\"}" | sed 's/.*"id":"\([^"]*\)".*/\1/')
  serve_shop fw-on always "$fw"
  on_addr=$addr
  cat=$(category)
  on_id=$(curl -s -XPOST "http://$addr/api/products" -H "authorization: Bearer $editor" -H 'content-type: application/json' \
    -d "{\"name\":\"x\",\"sku\":\"GET-1\",\"price\":1,\"category\":\"$cat\"}" | sed 's/.*"id":"\([^"]*\)".*/\1/')
  curl -si "http://$on_addr/api/products/$on_id" -H "authorization: Bearer $editor" | grep -qi '^ratelimit:' \
    || { echo "the firewall is not on" >&2; exit 1; }
  off_bare=(); on_off=()
  for round in $(seq 1 "${ROUNDS:-5}"); do
    echo "== 10. baseline: bare hyper, GET, $CONNS connections, $DURATION (round $round)"
    wrk -t2 -c"$CONNS" -d"$DURATION" --latency "http://$hello_addr/" | summary
    bare=$(rate)
    # Odd rounds measure off then on, even rounds on then off: the one measured right
    # after the baseline has no systematic advantage.
    order="off on"; [ $((round % 2)) = 0 ] && order="on off"
    for which in $order; do
      if [ "$which" = off ]; then
        echo "== 10. GET /api/products/{id}, firewall off, $CONNS connections, $DURATION (round $round)"
        LITHAIR_TOKEN=$editor LITHAIR_PATH=/api/products/$off_id wrk -t2 -c"$CONNS" -d"$DURATION" --latency -s bench/get.lua "http://$off_addr" | summary
        off=$(rate)
      else
        echo "== 10. GET /api/products/{id}, firewall and rate limit on, $CONNS connections, $DURATION (round $round)"
        LITHAIR_TOKEN=$editor LITHAIR_PATH=/api/products/$on_id wrk -t2 -c"$CONNS" -d"$DURATION" --latency -s bench/get.lua "http://$on_addr" | summary
        on=$(rate)
      fi
    done
    off_bare+=("$(awk -v a="$off" -v b="$bare" 'BEGIN {printf "%.2f", a / b}')")
    on_off+=("$(awk -v a="$on" -v b="$off" 'BEGIN {printf "%.2f", a / b}')")
  done
  echo "== 10. GET firewall off / bare hyper, per round: ${off_bare[*]}; median $(median "${off_bare[@]}")"
  echo "== 10. GET firewall on / firewall off, per round: ${on_off[*]}; median $(median "${on_off[@]}")"
  for which in off on; do
    a_var=${which}_addr
    echo "== 10. POST /api/products, sync=always, firewall $which, $CONNS connections, $DURATION"
    cat=$(addr=${!a_var} category)
    LITHAIR_TOKEN=$editor LITHAIR_CATEGORY=$cat LITHAIR_RUN="$(date +%s%N | tail -c 9)" \
      wrk -t2 -c"$CONNS" -d"$DURATION" --latency -s bench/post.lua "http://${!a_var}" | summary
  done
  kill "${pids[-1]}" "${pids[-2]}" "${pids[-3]}"
fi

if [ "$only" = all ] || [ "$only" = telemetry ]; then
  # The same shop with every request logged as a JSON line (to a file, at info) and with
  # the request log off; metrics and stage timings are on in both. Alternating rounds.
  # "Logged" also exports traces at sample_rate 0.1 to a local OTLP sink (bench/otlp_sink.py).
  rm -f "$work/sink.port" "$work/sink.count"
  python3 bench/otlp_sink.py "$work/sink.port" "$work/sink.count" &
  sink_pid=$!
  for _ in $(seq 50); do [ -s "$work/sink.port" ] && break; sleep 0.1; done
  logged_cfg=$work/shop/logged.toml
  sed -e 's|^log_format = "text"|log_format = "json"|' -e 's|^request_log = "errors"|request_log = "all"|' \
    -e "s|^# otlp_endpoint = .*|otlp_endpoint = \"http://127.0.0.1:$(cat "$work/sink.port")\"|" \
    -e 's|^# sample_rate = .*|sample_rate = 0.1|' \
    "$work/shop/lithair.toml" > "$logged_cfg"
  grep -q '^otlp_endpoint = "http://127.0.0.1:[0-9]' "$logged_cfg" || { echo "the trace export was not configured" >&2; exit 1; }
  quiet_cfg=$work/shop/quiet.toml
  sed -e 's|^request_log = "errors"|request_log = "off"|' "$work/shop/lithair.toml" > "$quiet_cfg"
  grep -q '^request_log = "all"' "$logged_cfg" || { echo "the telemetry config was not written" >&2; exit 1; }
  rm -rf "$work/data-quiet" "$work/data-logged"
  start quiet env LITHAIR_SYNC=always LITHAIR_LOG=info "$shop" serve --config "$quiet_cfg" --port 0 --data-dir "$work/data-quiet"
  quiet_addr=$addr
  cat=$(category)
  quiet_id=$(curl -s -XPOST "http://$addr/api/products" -H "authorization: Bearer $editor" -H 'content-type: application/json' \
    -d "{\"name\":\"x\",\"sku\":\"GET-1\",\"price\":1,\"category\":\"$cat\"}" | sed 's/.*"id":"\([^"]*\)".*/\1/')
  start logged env LITHAIR_SYNC=always LITHAIR_LOG=info "$shop" serve --config "$logged_cfg" --port 0 --data-dir "$work/data-logged"
  logged_addr=$addr
  cat=$(category)
  logged_id=$(curl -s -XPOST "http://$addr/api/products" -H "authorization: Bearer $editor" -H 'content-type: application/json' \
    -d "{\"name\":\"x\",\"sku\":\"GET-1\",\"price\":1,\"category\":\"$cat\"}" | sed 's/.*"id":"\([^"]*\)".*/\1/')
  grep -q '"target":"lithair::request"' "$work/logged.log" || { echo "the request log is not on" >&2; exit 1; }
  get_ratio=(); post_ratio=()
  for round in $(seq 1 "${ROUNDS:-4}"); do
    order="quiet logged"; [ $((round % 2)) = 0 ] && order="logged quiet"
    for which in $order; do
      a_var=${which}_addr; i_var=${which}_id
      echo "== 14. GET /api/products/{id}, request log $which, $CONNS connections, $DURATION (round $round)"
      LITHAIR_TOKEN=$editor LITHAIR_PATH=/api/products/${!i_var} wrk -t2 -c"$CONNS" -d"$DURATION" --latency -s bench/get.lua "http://${!a_var}" | summary
      printf -v "get_$which" '%s' "$(rate)"
    done
    for which in $order; do
      a_var=${which}_addr
      echo "== 14. POST /api/products, sync=always, request log $which, $CONNS connections, $DURATION (round $round)"
      cat=$(addr=${!a_var} category)
      LITHAIR_TOKEN=$editor LITHAIR_CATEGORY=$cat LITHAIR_RUN="$(date +%s%N | tail -c 9)" \
        wrk -t2 -c"$CONNS" -d"$DURATION" --latency -s bench/post.lua "http://${!a_var}" | summary
      printf -v "post_$which" '%s' "$(rate)"
    done
    get_ratio+=("$(awk -v a="$get_logged" -v b="$get_quiet" 'BEGIN {printf "%.2f", a / b}')")
    post_ratio+=("$(awk -v a="$post_logged" -v b="$post_quiet" 'BEGIN {printf "%.2f", a / b}')")
  done
  echo "== 14. GET logged / quiet, per round: ${get_ratio[*]}; median $(median "${get_ratio[@]}")"
  echo "== 14. POST logged / quiet, per round: ${post_ratio[*]}; median $(median "${post_ratio[@]}")"
  # Paired: both services loaded at once, half the connections each, so that a change of
  # the machine's speed during a run touches both alike (alternating runs spread by up to
  # +-20 % here between two identical services). Sharing the cores, each runs at the
  # rate its own cost per request allows: the ratio is that of their costs.
  get_pair=(); post_pair=()
  half=$((CONNS / 2))
  paired() { # SCRIPT EXTRA_ENV...: one wrk per service at once; sets pair_quiet and pair_logged
    for which in quiet logged; do
      a_var=${which}_addr; i_var=${which}_id
      env LITHAIR_TOKEN=$editor LITHAIR_PATH=/api/products/${!i_var} LITHAIR_CATEGORY="$(addr=${!a_var} category)" \
        LITHAIR_RUN="${#which}$(date +%s%N | tail -c 9)" \
        wrk -t1 -c"$half" -d"$DURATION" -s "bench/$1.lua" "http://${!a_var}" > "$work/pair-$which.txt" &
      printf -v "wrk_$which" '%s' "$!"
    done
    wait "$wrk_quiet" "$wrk_logged"
    pair_quiet=$(sed -n 's/^Requests\/sec: *//p' "$work/pair-quiet.txt")
    pair_logged=$(sed -n 's/^Requests\/sec: *//p' "$work/pair-logged.txt")
    ! grep -q "Non-2xx" "$work/pair-quiet.txt" "$work/pair-logged.txt" || echo "!! some requests failed: the figures above are not valid" >&2
  }
  for round in $(seq 1 "${ROUNDS:-4}"); do
    paired get
    echo "== 14p. GET at once, $half connections each (round $round): quiet $pair_quiet, logged $pair_logged req/s"
    get_pair+=("$(awk -v a="$pair_logged" -v b="$pair_quiet" 'BEGIN {printf "%.2f", a / b}')")
    paired post
    echo "== 14p. POST at once, sync=always, $half connections each (round $round): quiet $pair_quiet, logged $pair_logged req/s"
    post_pair+=("$(awk -v a="$pair_logged" -v b="$pair_quiet" 'BEGIN {printf "%.2f", a / b}')")
  done
  echo "== 14p. GET logged / quiet, at once, per round: ${get_pair[*]}; median $(median "${get_pair[@]}")"
  echo "== 14p. POST logged / quiet, at once, per round: ${post_pair[*]}; median $(median "${post_pair[@]}")"
  echo "== 14. request log lines written: $(grep -c '"target":"lithair::request"' "$work/logged.log")"
  kill "${pids[-1]}" "${pids[-2]}"
  sleep 2
  echo "== 14. OTLP exports received (posts, bytes): $(cat "$work/sink.count")"
  kill "$sink_pid"
fi

if [ "$only" = all ] || [ "$only" = jwt ]; then
  # GET by id with an API token and with an RS256 JWT (the key read once, at start; each
  # request's signature verified), alternating, same service.
  jwt_config=$work/shop/jwt.toml
  cp runtime/tests/keys/rsa.pub "$work/shop/bench-idp.pem"
  { cat "$work/shop/lithair.toml"; printf '\n[auth.jwt]\nalgorithms = ["RS256"]\npublic_key_file = "bench-idp.pem"\n'; } > "$jwt_config"
  serve_shop jwt always "$jwt_config"
  jwt=$("$CARGO_TARGET_DIR/release/examples/mint_jwt" runtime/tests/keys/rsa.key editor)
  cat=$(category)
  id=$(curl -s -XPOST "http://$addr/api/products" -H "authorization: Bearer $jwt" -H 'content-type: application/json' \
    -d "{\"name\":\"x\",\"sku\":\"JWT-1\",\"price\":1,\"category\":\"$cat\"}" | sed 's/.*"id":"\([^"]*\)".*/\1/')
  ratios=()
  for round in $(seq 1 "${ROUNDS:-3}"); do
    echo "== 11. GET /api/products/{id} with an API token, $CONNS connections, $DURATION (round $round)"
    LITHAIR_TOKEN=$editor LITHAIR_PATH=/api/products/$id wrk -t2 -c"$CONNS" -d"$DURATION" --latency -s bench/get.lua "http://$addr" | summary
    token_rate=$(rate)
    echo "== 11. GET /api/products/{id} with an RS256 JWT, $CONNS connections, $DURATION (round $round)"
    LITHAIR_TOKEN=$jwt LITHAIR_PATH=/api/products/$id wrk -t2 -c"$CONNS" -d"$DURATION" --latency -s bench/get.lua "http://$addr" | summary
    ratios+=("$(awk -v a="$(rate)" -v b="$token_rate" 'BEGIN {printf "%.2f", a / b}')")
  done
  echo "== 11. GET with a JWT / with an API token, per round: ${ratios[*]}; median $(median "${ratios[@]}")"
  kill "${pids[-1]}"
fi

if [ "$only" = all ] || [ "$only" = masks ]; then
  # A page of 100 products as an admin (who sees `cost`) and as an editor (whose answers
  # leave `cost` out: the field mask), alternating, same service and records.
  admin=$(cd "$work/shop" && "$shop" token new --name bench-admin --role admin 2>&1 >>lithair.toml | sed -n 's/.*shown once; give it to the client): //p')
  serve_shop masks always
  cat=$(category)
  for i in $(seq 1 100); do
    curl -s -o /dev/null -XPOST "http://$addr/api/products" -H "authorization: Bearer $admin" -H 'content-type: application/json' \
      -d "{\"name\":\"p$i\",\"sku\":\"M-$i\",\"price\":$i,\"cost\":$i.5,\"category\":\"$cat\"}"
  done
  ratios=()
  for round in $(seq 1 "${ROUNDS:-3}"); do
    echo "== 12. GET /api/products?limit=100 as an admin (no mask), $CONNS connections, $DURATION (round $round)"
    LITHAIR_TOKEN=$admin LITHAIR_PATH="/api/products?limit=100" wrk -t2 -c"$CONNS" -d"$DURATION" --latency -s bench/get.lua "http://$addr" | summary
    open_rate=$(rate)
    echo "== 12. GET /api/products?limit=100 as an editor (cost masked), $CONNS connections, $DURATION (round $round)"
    LITHAIR_TOKEN=$editor LITHAIR_PATH="/api/products?limit=100" wrk -t2 -c"$CONNS" -d"$DURATION" --latency -s bench/get.lua "http://$addr" | summary
    ratios+=("$(awk -v a="$(rate)" -v b="$open_rate" 'BEGIN {printf "%.2f", a / b}')")
  done
  echo "== 12. list of 100 with a field mask / without, per round: ${ratios[*]}; median $(median "${ratios[@]}")"
  kill "${pids[-1]}"
fi

if [ "$only" = all ] || [ "$only" = cache ]; then
  # A repeated list of 100 (sorted on an unindexed field, of 1,000 records) with and
  # without the list-page cache of a `cache` model, in process, one request at a time.
  echo "== 13. a repeated list of 100: computed / from the page cache"
  cargo run --release -q -p lithair-runtime --example list_cache
fi

if [ "$only" = all ] || [ "$only" = lifecycle ]; then
  # Durable creates into two models with the same fields, one with `lifecycle: { audited,
  # versioned: 5 }`, alternating, same service (sync always).
  cat > "$work/ledger.yaml" <<'YAML'
service: { name: ledger }
roles: [clerk]
audit: { read: [clerk] }
models:
  Plain:
    path: /api/plain
    permissions: { read: [clerk], create: [clerk], update: [clerk], delete: [clerk] }
    fields: { name: string, total: float }
  Audited:
    path: /api/audited
    lifecycle: { audited: true, versioned: 5 }
    permissions: { read: [clerk], create: [clerk], update: [clerk], delete: [clerk] }
    fields: { name: string, total: float }
YAML
  rm -rf "$work/ledger" "$work/data-ledger"
  "$CARGO_TARGET_DIR/release/lithair-gen" new "$work/ledger" --schema "$work/ledger.yaml" >/dev/null
  cp Cargo.lock "$work/ledger/"
  (cd "$work/ledger" && cargo build --release -q)
  ledger=$CARGO_TARGET_DIR/release/ledger
  clerk=$(cd "$work/ledger" && "$ledger" token new --name bench --role clerk 2>&1 >>lithair.toml | sed -n 's/.*shown once; give it to the client): //p')
  start ledger env LITHAIR_SYNC=always LITHAIR_LOG=warn "$ledger" serve --config "$work/ledger/lithair.toml" --port 0 --data-dir "$work/data-ledger"
  # The store grows during the run (and snapshots fall due as it does): the order
  # alternates, so that neither model always writes into the larger store.
  create_rate() { # create_rate PATH LABEL ROUND
    echo "== 14. durable creates, $2, $CONNS connections, $DURATION (round $3)"
    LITHAIR_TOKEN=$clerk LITHAIR_PATH=$1 wrk -t2 -c"$CONNS" -d"$DURATION" --latency -s bench/post_named.lua "http://$addr" | summary
  }
  ratios=()
  for round in $(seq 1 "${ROUNDS:-4}"); do
    if [ $((round % 2)) = 1 ]; then
      create_rate /api/plain "no lifecycle" "$round"; plain_rate=$(rate)
      create_rate /api/audited "audited and versioned" "$round"; audited_rate=$(rate)
    else
      create_rate /api/audited "audited and versioned" "$round"; audited_rate=$(rate)
      create_rate /api/plain "no lifecycle" "$round"; plain_rate=$(rate)
    fi
    ratios+=("$(awk -v a="$audited_rate" -v b="$plain_rate" 'BEGIN {printf "%.2f", a / b}')")
  done
  echo "== 14. creates into the audited, versioned model / into the plain one, per round: ${ratios[*]}; median $(median "${ratios[@]}")"
  kill "${pids[-1]}"
fi

if [ "$only" = all ] || [ "$only" = projection ]; then
  # Durable creates into two models with the same fields, alternating, same service
  # (sync always): a plain one, and one with `lifecycle: { audited, versioned: 5 }` and a
  # projection on it (per day: count, sum, avg, max). Then the restart of RECORDS records
  # of the projected model.
  cat > "$work/sales.yaml" <<'YAML'
service: { name: sales }
roles: [clerk]
audit: { read: [clerk] }
models:
  Plain:
    path: /api/plain
    permissions: { read: [clerk], create: [clerk], update: [clerk], delete: [clerk] }
    fields: { name: string, total: float, placed_at: datetime }
  Order:
    lifecycle: { audited: true, versioned: 5 }
    permissions: { read: [clerk], create: [clerk], update: [clerk], delete: [clerk] }
    fields: { name: string, total: float, placed_at: datetime }
projections:
  SalesMetrics:
    source: Order
    group_by: { field: placed_at, granularity: day }
    aggregates:
      daily_revenue: { sum: total }
      orders_count: { count: true }
      avg_order_value: { avg: total }
      biggest_order: { max: total }
YAML
  rm -rf "$work/sales" "$work/data-sales"
  "$CARGO_TARGET_DIR/release/lithair-gen" new "$work/sales" --schema "$work/sales.yaml" >/dev/null
  cp Cargo.lock "$work/sales/"
  (cd "$work/sales" && cargo build --release -q)
  sales=$CARGO_TARGET_DIR/release/sales
  clerk=$(cd "$work/sales" && "$sales" token new --name bench --role clerk 2>&1 >>lithair.toml | sed -n 's/.*shown once; give it to the client): //p')
  start sales env LITHAIR_SYNC=always LITHAIR_LOG=warn "$sales" serve --config "$work/sales/lithair.toml" --port 0 --data-dir "$work/data-sales"
  order_rate() { # order_rate PATH LABEL ROUND
    echo "== 15. durable creates, $2, $CONNS connections, $DURATION (round $3)"
    LITHAIR_TOKEN=$clerk LITHAIR_PATH=$1 wrk -t2 -c"$CONNS" -d"$DURATION" --latency -s bench/post_order.lua "http://$addr" | summary
  }
  ratios=()
  for round in $(seq 1 "${ROUNDS:-4}"); do
    if [ $((round % 2)) = 1 ]; then
      order_rate /api/plain "plain" "$round"; plain_rate=$(rate)
      order_rate /api/orders "audited, versioned, with a projection" "$round"; projected_rate=$(rate)
    else
      order_rate /api/orders "audited, versioned, with a projection" "$round"; projected_rate=$(rate)
      order_rate /api/plain "plain" "$round"; plain_rate=$(rate)
    fi
    ratios+=("$(awk -v a="$projected_rate" -v b="$plain_rate" 'BEGIN {printf "%.2f", a / b}')")
  done
  echo "== 15. creates into the projected, audited model / into the plain one, per round: ${ratios[*]}; median $(median "${ratios[@]}")"
  curl -s -H "authorization: Bearer $clerk" "http://$addr/api/sales_metrics?limit=2" | head -c 400; echo
  kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true

  echo "== 16. restart with $RECORDS orders and the projection"
  data=$work/data-sales-restart
  rm -rf "$data"
  "$CARGO_TARGET_DIR/release/examples/fill_store" "$work/sales/src/generated/spec.json" "$data" Order "$RECORDS" \
    '{"name":"Order {i}","total":"{i}","placed_at":"2026-11-{day}T10:00:00Z"}'
  du -sh "$data" | sed 's/^/store size: /'
  for attempt in 1 2; do
    t0=$(date +%s.%N)
    start "sales-restart-$attempt" env LITHAIR_LOG=info "$sales" serve --config "$work/sales/lithair.toml" --port 0 --data-dir "$data"
    t1=$(date +%s.%N)
    pid=${pids[-1]}
    rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
    how=$([ "$attempt" = 1 ] && echo "after a crash" || echo "after a clean shutdown")
    echo "restart $attempt ($how): listening after $(awk "BEGIN {printf \"%.2f\", $t1 - $t0}") s, RSS $((rss / 1024)) MiB"
    grep -o 'snapshot_records=[0-9]* replayed_events=[0-9]* snapshot_ms=[0-9]* replay_ms=[0-9]*' "$work/sales-restart-$attempt.log" | head -1 || true
    grep -o 'projection built from the snapshot.s records.*' "$work/sales-restart-$attempt.log" | sed 's/\x1b\[[0-9;]*m//g' | head -1 || true
    curl -s -H "authorization: Bearer $clerk" "http://$addr/api/sales_metrics?limit=1" | head -c 300; echo
    kill "$pid"; wait "$pid" 2>/dev/null || true
  done
fi

if [ "$only" = all ] || [ "$only" = restart ] || [ "$only" = scale ]; then
  echo "== 5. restart with $RECORDS products"
  data=$work/data-restart
  rm -rf "$data"
  serve_shop seed always
  cat=$(category)
  kill "${pids[-1]}"; sleep 0.5
  rm -rf "$data"; cp -r "$work/data-seed" "$data"
  "$CARGO_TARGET_DIR/release/examples/fill_store" "$work/shop/src/generated/spec.json" "$data" Product "$RECORDS" \
    "{\"name\":\"Product {i}\",\"sku\":\"SKU-{i}\",\"price\":9.5,\"stock\":3,\"status\":\"draft\",\"tags\":[\"a\",\"b\"],\"category\":\"$cat\"}"
  du -sh "$data" | sed 's/^/store size: /'
  echo "of which: $(du -sh "$data"/events "$data"/raft-log "$data"/snapshot | awk '{printf "%s %s; ", $2, $1}' | sed "s|$data/||g")(FILL_IN_FLIGHT=${FILL_IN_FLIGHT:-4096} writes in flight)"
  for attempt in 1 2; do
    t0=$(date +%s.%N)
    start "restart-$attempt" env LITHAIR_LOG=info "$shop" serve --config "$work/shop/lithair.toml" --port 0 --data-dir "$data"
    t1=$(date +%s.%N)
    pid=${pids[-1]}
    rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
    # fill_store stops as a crash would (the events since its last snapshot are replayed);
    # the first restart's SIGTERM writes a last snapshot, so the second replays nothing.
    how=$([ "$attempt" = 1 ] && echo "after a crash" || echo "after a clean shutdown")
    echo "restart $attempt ($how): listening after $(awk "BEGIN {printf \"%.2f\", $t1 - $t0}") s, RSS $((rss / 1024)) MiB"
    grep -o 'snapshot_records=[0-9]* replayed_events=[0-9]* snapshot_ms=[0-9]* replay_ms=[0-9]*' "$work/restart-$attempt.log" | head -1 || true
    curl -s "http://$addr/api/products?limit=1" | grep -o '"total":[0-9]*'
    if [ "$attempt" = 2 ]; then
      # In the first seconds after a start the allocator hands the load's scratch memory
      # back to the system, and list latencies have a tail of 3-30 ms: measured after.
      sleep 3
      # Pages of the whole model: the default order and an indexed field are read from
      # their ordered indexes, and so is a range of that field (a ninth of the names);
      # an unindexed sort or range orders or checks every row (timed with curl).
      for q in "limit=20" "sort=name&limit=20" "sort=-name&limit=20&offset=1000" \
        "sort=-name&name%5Bgte%5D=Product%205&name%5Blt%5D=Product%206&limit=20"; do
        echo "== 5. GET /api/products?$q at $RECORDS products, 4 connections, 5s"
        wrk -t1 -c4 -d5s --latency "http://$addr/api/products?$q" | summary
      done
      for q in "sort=price&limit=20" "price%5Bgte%5D=9&limit=20"; do
        t=$(curl -s -o /dev/null -w '%{time_total}' "http://$addr/api/products?$q")
        echo "== 5. GET /api/products?$q at $RECORDS products (unindexed, one request): ${t} s"
      done
      one=$(curl -s "http://$addr/api/products?limit=1" | sed 's/.*"id":"\([^"]*\)".*/\1/')
      echo "== 5. GET /api/products/{id} at $RECORDS products, $CONNS connections, 5s"
      LITHAIR_TOKEN=$editor LITHAIR_PATH=/api/products/$one wrk -t2 -c"$CONNS" -d5s --latency -s bench/get.lua "http://$addr" | summary
      rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
      echo "RSS after the lists: $((rss / 1024)) MiB"
    fi
    kill "$pid"; wait "$pid" 2>/dev/null || true
  done
fi

if [ "$only" = all ] || [ "$only" = lists ]; then
  # Heavy lists (every matching row filtered and sorted) run on low-priority workers on a
  # frozen view: durable creates should keep most of their rate beside them, and no
  # election may happen. Alternating runs, same data.
  n=${LIST_RECORDS:-160000}
  echo "== 9. durable creates beside 8 clients of sorted lists over $n products, $CONNS connections, $DURATION"
  data=$work/data-lists
  rm -rf "$data"
  serve_shop listseed always
  cat=$(category)
  kill "${pids[-1]}"; sleep 0.5
  cp -r "$work/data-listseed" "$data"
  "$CARGO_TARGET_DIR/release/examples/fill_store" "$work/shop/src/generated/spec.json" "$data" Product "$n" \
    "{\"name\":\"Product {i}\",\"sku\":\"LIST-{i}\",\"price\":9.5,\"stock\":3,\"status\":\"draft\",\"tags\":[\"a\",\"b\"],\"category\":\"$cat\"}"
  start lists env LITHAIR_LOG=warn "$shop" serve --config "$work/shop/lithair.toml" --port 0 --data-dir "$data"
  term0=$(curl -s "http://$addr/_cluster/status" | sed -n 's/.*"term":\([0-9]*\).*/\1/p')
  for round in 1 2; do
    echo "-- round $round: creates alone"
    LITHAIR_TOKEN=$editor LITHAIR_CATEGORY=$cat LITHAIR_RUN="A$round$(date +%s%N | tail -c 9)" \
      wrk -t2 -c"$CONNS" -d"$DURATION" --latency -s bench/post.lua "http://$addr" | summary
    echo "-- round $round: creates beside 8 clients of GET /api/products?sort=-name&limit=20"
    LITHAIR_TOKEN=$editor LITHAIR_PATH="/api/products?sort=-name&limit=20" \
      wrk -t1 -c8 -d"$DURATION" -s bench/get.lua "http://$addr" > "$work/lists-wrk.txt" 2>&1 &
    lists_wrk=$!
    LITHAIR_TOKEN=$editor LITHAIR_CATEGORY=$cat LITHAIR_RUN="B$round$(date +%s%N | tail -c 9)" \
      wrk -t2 -c"$CONNS" -d"$DURATION" --latency -s bench/post.lua "http://$addr" | summary
    wait "$lists_wrk" || true
    grep -E "Requests/sec|Non-2xx" "$work/lists-wrk.txt" | sed 's/^/   lists: /'
  done
  term1=$(curl -s "http://$addr/_cluster/status" | sed -n 's/.*"term":\([0-9]*\).*/\1/p')
  echo "Raft term before $term0, after $term1 (equal: no election)"
  kill "${pids[-1]}"
fi

if [ "$only" = all ] || [ "$only" = cluster ]; then
  secret=bench-cluster-secret-0123456789
  # ELECTION_MS / HEARTBEAT_MS: try other Raft timings than the defaults.
  cluster_config=$work/shop/lithair.toml
  if [ -n "${ELECTION_MS:-}" ]; then
    cluster_config=$work/shop/cluster-timing.toml
    { cat "$work/shop/lithair.toml"; printf '\n[cluster]\nelection_timeout_ms = %s\nheartbeat_interval_ms = %s\n' "$ELECTION_MS" "${HEARTBEAT_MS:-50}"; } > "$cluster_config"
  fi
  node() { # node NAME PORT ID PEERS
    start "$1" env LITHAIR_CLUSTER_SECRET=$secret LITHAIR_LOG=warn "$shop" serve --config "$cluster_config" \
      --port "$2" --data-dir "$work/data-$1" --node-id "$3" --peers "$4"
  }
  leader_of() { curl -s "http://127.0.0.1:$1/_cluster/status" | sed -n 's/.*"leader":\([0-9]*\).*/\1/p'; }
  term_of() { curl -s "http://127.0.0.1:$1/_cluster/status" | sed -n 's/.*"term":\([0-9]*\).*/\1/p'; }

  echo "== 6. single node with an explicit --peers 1=self (the same path as 3): POST, sync=always, $CONNS connections, $DURATION"
  rm -rf "$work"/data-raft1
  node raft1 18301 1 "1=127.0.0.1:18301"
  sleep 2
  cat=$(category)
  LITHAIR_TOKEN=$editor LITHAIR_CATEGORY=$cat LITHAIR_RUN="$(date +%s%N | tail -c 9)" \
    wrk -t2 -c"$CONNS" -d"$DURATION" --latency -s bench/post.lua "http://$addr" | summary
  kill "${pids[-1]}"

  echo "== 7. three-node Raft cluster: POST, sync=always, $CONNS connections spread over the nodes, $DURATION"
  peers="1=127.0.0.1:18311,2=127.0.0.1:18312,3=127.0.0.1:18313"
  rm -rf "$work"/data-raft3-*
  for i in 1 2 3; do node "raft3-$i" "1831$i" "$i" "$peers"; done
  sleep 3
  cat=$(category)
  term_before=$(term_of 18311)
  per=$(( CONNS / 3 ))
  for i in 1 2 3; do
    LITHAIR_TOKEN=$editor LITHAIR_CATEGORY=$cat LITHAIR_RUN="$i$(date +%s%N | tail -c 8)" \
      wrk -t1 -c"$per" -d"$DURATION" --latency -s bench/post.lua "http://127.0.0.1:1831$i" > "$work/wrk-raft3-$i.txt" &
  done
  wait $(jobs -p | tail -3) 2>/dev/null || true
  sleep 1
  total=0
  for i in 1 2 3; do
    r=$(sed -n 's/^Requests\/sec: *\([0-9.]*\).*/\1/p' "$work/wrk-raft3-$i.txt")
    echo "node $i: $r creates/s; $(grep -E '  50%|  99%' "$work/wrk-raft3-$i.txt" | tr -s ' ' | tr '\n' ' ')"
    if grep -q "Non-2xx" "$work/wrk-raft3-$i.txt"; then echo "!! node $i: some requests failed" >&2; fi
    total=$(awk "BEGIN {print $total + $r}")
  done
  echo "total: $total creates/s"
  echo "terms: $term_before before the load, $(term_of 18311) after (each one more is an election)"

  echo "== 8. leader kill: time to the first acknowledged write after it"
  leader=$(leader_of 18311)
  follower=$(( leader % 3 + 1 ))
  pkill -9 -f -- "--node-id $leader --peers $peers" || true
  t0=$(date +%s%N)
  for _ in $(seq 1 3000); do
    code=$(curl -s -o /dev/null -w '%{http_code}' -XPOST "http://127.0.0.1:1831$follower/api/categories" \
      -H "authorization: Bearer $editor" -H 'content-type: application/json' -d "{\"name\":\"after-kill-$RANDOM$RANDOM\"}")
    [ "$code" = 201 ] && break
    sleep 0.01
  done
  t1=$(date +%s%N)
  echo "leader $leader killed; first 201 through node $follower after $(( (t1 - t0) / 1000000 )) ms (election timeout ${ELECTION_MS:-300} ms)"
fi
