#!/usr/bin/env bash
# The cost of consensus on one node: POST /api/products under sync=always, 64 connections,
# alternating between the shop built on this checkout (every write through openraft) and
# the same shop built on the last commit whose single node wrote through a local writer
# thread without Raft (45a6846). Alternating runs, because this machine's speed drifts.
#
#   bash bench/consensus_cost.sh            # 3 rounds of 10 s each
#   ROUNDS=5 DURATION=8s bash bench/consensus_cost.sh
#
# Needs wrk and git. Builds into target/bench-target (dependencies shared with run.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
BASELINE=${BASELINE:-45a6846}
work=$root/target/bench
export CARGO_TARGET_DIR=$root/target/bench-target
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 1; }
mkdir -p "$work"

echo "== building this checkout and $BASELINE (release)"
cargo build --release -q -p lithair-gen
rm -rf "$work/cost-shop" "$work/cost-base" "$work/cost-base-shop"
"$CARGO_TARGET_DIR/release/lithair-gen" new "$work/cost-shop" --schema examples/shop.yaml >/dev/null
cp Cargo.lock "$work/cost-shop/"
(cd "$work/cost-shop" && cargo build --release -q)
git worktree add -f "$work/cost-base" "$BASELINE" -q
trap 'git worktree remove --force "$work/cost-base" 2>/dev/null || true' EXIT
cp -r "$work/cost-shop" "$work/cost-base-shop"
sed -i "s/^name = \"shop\"/name = \"shop-baseline\"/; s#^lithair-runtime = .*#lithair-runtime = { path = \"$work/cost-base/runtime\" }#" \
  "$work/cost-base-shop/Cargo.toml"
cp "$work/cost-base/Cargo.lock" "$work/cost-base-shop/"
(cd "$work/cost-base-shop" && cargo build --release -q)
token=$(cd "$work/cost-shop" && "$CARGO_TARGET_DIR/release/shop" token new --name bench --role editor 2>&1 >>lithair.toml |
  sed -n 's/.*shown once; give it to the client): //p')

run() { # NAME BINARY
  local data=$work/cost-data log=$work/cost-$1.log
  rm -rf "$data"
  LITHAIR_SYNC=always LITHAIR_LOG=warn "$CARGO_TARGET_DIR/release/$2" serve --config "$work/cost-shop/lithair.toml" \
    --port 0 --data-dir "$data" >"$log" 2>&1 &
  local pid=$! addr=""
  for _ in $(seq 1 400); do
    addr=$(sed -n 's/^listening on http:\/\///p' "$log" | head -1)
    [ -n "$addr" ] && break
    sleep 0.05
  done
  [ -n "$addr" ] || { echo "server did not start: $(cat "$log")" >&2; exit 1; }
  local cat
  cat=$(curl -s -XPOST "http://$addr/api/categories" -H "authorization: Bearer $token" \
    -H 'content-type: application/json' -d "{\"name\":\"c$RANDOM$RANDOM\"}" | sed 's/.*"id":"\([^"]*\)".*/\1/')
  local out
  out=$(LITHAIR_TOKEN=$token LITHAIR_CATEGORY=$cat LITHAIR_RUN="$(date +%s%N | tail -c 9)" \
    wrk -t2 -c64 -d"$DURATION" --latency -s bench/post.lua "http://$addr")
  local rss
  rss=$(awk '/VmRSS/ {print int($2 / 1024)}' "/proc/$pid/status")
  kill "$pid"; wait "$pid" 2>/dev/null || true
  grep -q "Non-2xx" <<<"$out" && echo "!! $1: some requests failed; not a result" >&2
  echo "$1: $(sed -n 's/^Requests\/sec: *//p' <<<"$out") creates/s, p50 $(awk '/ 50%/ {print $2}' <<<"$out"), p99 $(awk '/ 99%/ {print $2}' <<<"$out"), RSS ${rss} MiB"
}

for round in $(seq 1 "$ROUNDS"); do
  echo "== round $round: POST /api/products, sync=always, 64 connections, $DURATION"
  run "without Raft ($BASELINE)" shop-baseline
  run "through openraft (this checkout)" shop
done
