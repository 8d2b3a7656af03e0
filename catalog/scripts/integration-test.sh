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
files=()
while IFS= read -r file; do
    files+=("$file")
done < <(find "$CATALOG_DIR" -mindepth 2 -maxdepth 2 -name '*.yaml' \
            -not -path '*/tests/*' -not -path '*/templates/*' -not -path '*/bundles/*' | sort)
# What the server serves, every page of it (one devctl call per 200 items).
served=""
offset=0
while :; do
    page=$(devctl --output json catalog list --limit 200 --offset "$offset")
    served+="$page"
    total=$(sed -n 's/^  "total": \([0-9]*\).*/\1/p' <<<"$page")
    offset=$((offset + 200))
    [ "${total:-0}" -gt "$offset" ] || break
done
failures=0
for file in "${files[@]}"; do
    id=$(basename "$file" .yaml)
    if grep -q "\"id\": \"$id\"" <<<"$served"; then
        echo "served: $id"
    else
        echo "MISSING on the server: $id ($file)" >&2
        failures=$((failures + 1))
    fi
done
# The server judges every file in one call each, and reports every invalid one.
devctl validate catalog-item --remote --keep-going "${files[@]}" >/dev/null \
    || failures=$((failures + 1))
if [ "$failures" -gt 0 ]; then
    echo "$failures problem(s)" >&2
    exit 1
fi
echo "the server serves every item of $CATALOG_DIR"
