#!/usr/bin/env bash
# Alternates one kvctl bench command between two or more builds of kvstore, run by run, so a
# shared machine's slow and fast phases fall on both (BENCHMARKS.md compares builds this way).
# Each tree must be built (npm run build) and have node_modules; a second tree is most easily a
# git worktree with node_modules symlinked: git worktree add ../base <commit> && ln -s
# "$PWD/node_modules" ../base/node_modules && (cd ../base && npx tsc -p tsconfig.build.json).
# Run it alone on the machine.
#
# usage: scripts/bench-ab.sh "<kvctl args after 'kvctl'>" <tree> <tree> [...]   (ROUNDS=2 default)
# e.g.   scripts/bench-ab.sh "--consistency quorum bench put --local-cluster 3 --concurrency 128 --client raw --no-preload --duration 10" ../base .
set -u
if [ $# -lt 2 ]; then
  sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
args="$1"; shift
for round in $(seq 1 "${ROUNDS:-2}"); do
  for tree in "$@"; do
    # shellcheck disable=SC2086 # the kvctl arguments are split on purpose
    out=$(cd "$tree" && timeout 600 node dist/src/cli/kvctl.js $args 2>/dev/null)
    row=$(echo "$out" | awk '/^(put|get|delete) +[0-9]/{print $3 "/s, p50 " $5 " ms, p99 " $7 " ms"}')
    server=$(echo "$out" | grep -o 'servers: .*µs/op' | grep -o '[0-9.]* µs/op')
    loadgen=$(echo "$out" | grep -o 'load generator: .*µs/op' | grep -o '[0-9.]* µs/op')
    echo "round $round $tree: $row; server $server; load generator $loadgen"
  done
done
