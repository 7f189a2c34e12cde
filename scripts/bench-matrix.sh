#!/usr/bin/env bash
# The BENCHMARKS.md matrix. Run alone on the machine (npm run build first). Put runs preload the
# 100,000 keys so they measure overwrites of an existing key space, like the get runs.
cd "$(dirname "$0")/.."
B="node dist/src/cli/kvctl.js"
R=bench-results/matrix
mkdir -p $R
run() { name=$1; shift; echo "== $name: kvctl $*"; timeout 240 $B "$@" --duration 10 --keys 100000 --value-bytes 100 --out $R/$name.json 2>/dev/null | grep -E "^(put|get|total) |servers|load generator|^disk"; }
run 1n-put-128 bench put --local-cluster 1 --concurrency 128 --preload
run 1n-get-128 bench get --local-cluster 1 --concurrency 128
run 3n-put-quorum-128 --consistency quorum bench put --local-cluster 3 --concurrency 128 --preload
run 3n-get-quorum-128 --consistency quorum bench get --local-cluster 3 --concurrency 128
run 3n-put-one-128 --consistency one bench put --local-cluster 3 --concurrency 128 --preload
run 3n-get-one-128 --consistency one bench get --local-cluster 3 --concurrency 128
run 3n-put-one-512 --consistency one bench put --local-cluster 3 --concurrency 512 --preload
run 3n-get-one-512 --consistency one bench get --local-cluster 3 --concurrency 512
run 3n-put-quorum-128-zipf --consistency quorum bench put --local-cluster 3 --concurrency 128 --distribution zipfian --preload
run 3n-put-quorum-512 --consistency quorum bench put --local-cluster 3 --concurrency 512 --preload
run 3n-get-quorum-512 --consistency quorum bench get --local-cluster 3 --concurrency 512
run 3n-get-quorum-128-zipf --consistency quorum bench get --local-cluster 3 --concurrency 128 --distribution zipfian
run 3n-ycsba-quorum-128-zipf --consistency quorum bench ycsb-a --local-cluster 3 --concurrency 128 --html bench-results/matrix/3n-ycsba.html
run 3n-ycsba-quorum-128-uniform --consistency quorum bench ycsb-a --local-cluster 3 --concurrency 128 --distribution uniform
run 3n-put-quorum-1 --consistency quorum bench put --local-cluster 3 --concurrency 1 --preload
run 3n-get-quorum-1 --consistency quorum bench get --local-cluster 3 --concurrency 1 --keys 100000
run 1n-put-1 bench put --local-cluster 1 --concurrency 1 --preload
run 1n-get-1 bench get --local-cluster 1 --concurrency 1
# The SDK sending Batch calls instead of OperationStream messages (the default before session 5).
run 3n-put-quorum-128-batch --consistency quorum bench put --local-cluster 3 --concurrency 128 --preload --client sdk-batch
run 3n-get-quorum-128-batch --consistency quorum bench get --local-cluster 3 --concurrency 128 --client sdk-batch
run 3n-put-quorum-1-batch --consistency quorum bench put --local-cluster 3 --concurrency 1 --preload --client sdk-batch
run 3n-get-quorum-1-batch --consistency quorum bench get --local-cluster 3 --concurrency 1 --client sdk-batch
# The same cluster runs without coalescing (one RPC per operation), and puts into an empty key space.
run 3n-put-quorum-128-nocoalesce --consistency quorum bench put --local-cluster 3 --concurrency 128 --preload --client sdk-no-coalesce
run 3n-get-quorum-128-nocoalesce --consistency quorum bench get --local-cluster 3 --concurrency 128 --client sdk-no-coalesce
run 3n-put-quorum-128-inserts --consistency quorum bench put --local-cluster 3 --concurrency 128
# 1 node at 512 clients and YCSB-A; YCSB-A at ONE.
run 1n-put-512 bench put --local-cluster 1 --concurrency 512 --preload
run 1n-get-512 bench get --local-cluster 1 --concurrency 512
run 1n-ycsba-128-zipf bench ycsb-a --local-cluster 1 --concurrency 128
run 3n-ycsba-one-128-zipf --consistency one bench ycsb-a --local-cluster 3 --concurrency 128
# Zipfian on 1 node and at ONE, and YCSB-A at 512 clients.
run 1n-put-128-zipf bench put --local-cluster 1 --concurrency 128 --distribution zipfian --preload
run 1n-get-128-zipf bench get --local-cluster 1 --concurrency 128 --distribution zipfian
run 3n-get-one-128-zipf --consistency one bench get --local-cluster 3 --concurrency 128 --distribution zipfian
run 3n-ycsba-quorum-512-zipf --consistency quorum bench ycsb-a --local-cluster 3 --concurrency 512
# The rest of the cross product the issue asks for (1 node, 3 nodes at QUORUM and ONE; 128 and
# 512 clients; uniform and zipfian; put, get, YCSB-A).
run 1n-ycsba-128-uniform bench ycsb-a --local-cluster 1 --concurrency 128 --distribution uniform
run 1n-put-512-zipf bench put --local-cluster 1 --concurrency 512 --distribution zipfian --preload
run 1n-get-512-zipf bench get --local-cluster 1 --concurrency 512 --distribution zipfian
run 1n-ycsba-512-uniform bench ycsb-a --local-cluster 1 --concurrency 512 --distribution uniform
run 1n-ycsba-512-zipf bench ycsb-a --local-cluster 1 --concurrency 512
run 3n-put-quorum-512-zipf --consistency quorum bench put --local-cluster 3 --concurrency 512 --distribution zipfian --preload
run 3n-get-quorum-512-zipf --consistency quorum bench get --local-cluster 3 --concurrency 512 --distribution zipfian
run 3n-ycsba-quorum-512-uniform --consistency quorum bench ycsb-a --local-cluster 3 --concurrency 512 --distribution uniform
run 3n-put-one-128-zipf --consistency one bench put --local-cluster 3 --concurrency 128 --distribution zipfian --preload
run 3n-put-one-512-zipf --consistency one bench put --local-cluster 3 --concurrency 512 --distribution zipfian --preload
run 3n-get-one-512-zipf --consistency one bench get --local-cluster 3 --concurrency 512 --distribution zipfian
run 3n-ycsba-one-128-uniform --consistency one bench ycsb-a --local-cluster 3 --concurrency 128 --distribution uniform
run 3n-ycsba-one-512-uniform --consistency one bench ycsb-a --local-cluster 3 --concurrency 512 --distribution uniform
run 3n-ycsba-one-512-zipf --consistency one bench ycsb-a --local-cluster 3 --concurrency 512
