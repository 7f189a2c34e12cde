#!/usr/bin/env bash
# Fails if gen/ differs from what `buf generate` makes of proto/ (gen/ is committed, never edited).
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
npx buf generate --output "$tmp"
if ! diff -r "$tmp/gen" gen; then
  echo "gen/ is stale: run 'npm run gen' and commit the result" >&2
  exit 1
fi
echo "gen/ matches buf generate"
