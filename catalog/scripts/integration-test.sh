#!/usr/bin/env bash
# Check the catalog against a running PAO: it is ready, it serves every item of this folder, and
# it judges each file as the offline checks do.   Usage: integration-test.sh
# The endpoint and credentials come from devctl's usual settings (PAO_ENDPOINT, PAO_PROFILE, ...).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
devctl health ready
if ! devctl catalog refresh; then
    echo "note: refresh refused or failed; checking the catalog the server already has" >&2
fi
failures=0
while IFS= read -r file; do
    id=$(basename "$file" .yaml)
    if devctl --output json catalog get "$id" >/dev/null; then
        echo "served: $id"
    else
        echo "MISSING on the server: $id ($file)" >&2
        failures=$((failures + 1))
    fi
    devctl validate catalog-item --remote "$file" >/dev/null || failures=$((failures + 1))
done < <(find "$CATALOG_DIR" -mindepth 2 -maxdepth 2 -name '*.yaml' \
            -not -path '*/tests/*' -not -path '*/templates/*' -not -path '*/bundles/*' | sort)
if [ "$failures" -gt 0 ]; then
    echo "$failures problem(s)" >&2
    exit 1
fi
echo "the server serves every item of $CATALOG_DIR"
