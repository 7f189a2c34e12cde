#!/bin/bash
# The revert matrix of docs/testing.md ("Catches and does not catch"): reverts the named
# data-safety fixes in the working tree (apply.py), builds, runs the simulator over seeds, and
# restores the files. Needs a clean tree for the files it touches. The reverts are text
# replacements of today's code: when the code moves, apply.py says which one no longer applies.
# usage: scripts/sim-revert-matrix/run.sh "<revert> [<revert> ...]" <from seed> <count> [nodes]
set -u
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../.."
files="src/replication/tombstone-gc.ts src/replication/replica.ts src/replication/delivery-loop.ts src/server/node-core.ts src/replication/coordinator.ts src/replication/deadline.ts src/storage/repository.ts"
git diff --quiet -- $files || { echo "uncommitted changes in the files this script reverts; commit or stash them first" >&2; exit 2; }
trap 'git checkout -q -- $files; npm run build --silent' EXIT  # dist/ back to the real code too
python3 "$here/apply.py" $1 || exit 1
npm run build --silent && echo "== reverted: $1" && node "$here/sweep.mjs" "$2" "$3" "${4:-3}"
