#!/usr/bin/env bash
# Validate only the catalog files changed since a git base (default: origin/main, else main), and
# require a version bump in each changed item; then check the catalog as a whole.
#   Usage: validate-changed.sh [BASE]
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$CATALOG_DIR"
base="${1:-}"
if [ -z "$base" ]; then
    if git rev-parse --verify --quiet origin/main >/dev/null; then base=origin/main; else base=main; fi
fi
git rev-parse --verify --quiet "$base" >/dev/null || { echo "error: unknown git base '$base'" >&2; exit 2; }
mapfile -t changed < <(
    git diff --name-only --diff-filter=ACMR "$base" -- . \
        | sed "s|^$(git rev-parse --show-prefix)||" \
        | grep -E '\.ya?ml$' | grep -Ev '^(tests|templates|scripts|schema|\.github)/' || true
)
if [ "${#changed[@]}" -eq 0 ]; then
    echo "no catalog files changed since $base"
    exit 0
fi
echo "checking ${#changed[@]} file(s) changed since $base"
devctl validate catalog-item --base-ref "$base" "${changed[@]}"
devctl validate catalog "$CATALOG_DIR"
