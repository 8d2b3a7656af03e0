#!/usr/bin/env bash
# Render an item's actions against sample inputs, as PAO would (secrets masked).
#   Usage: test-template.sh ITEM [INPUTS]
#   ITEM is an item id (e.g. postgresql-standard) or a file; INPUTS is a YAML/JSON file and
#   defaults to the first example of the item's form.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
if [ "$#" -lt 1 ]; then
    echo "usage: $0 ITEM [INPUTS]" >&2
    exit 2
fi
item="$1"
if [ ! -f "$item" ]; then
    found=$(find "$CATALOG_DIR" -path "$CATALOG_DIR/tests" -prune -o -name "$item.yaml" -print | head -n 1)
    [ -n "$found" ] || { echo "error: no item '$item' in $CATALOG_DIR" >&2; exit 2; }
    item="$found"
fi
if [ "$#" -ge 2 ]; then
    devctl test template "$item" --inputs "$2"
else
    devctl test template "$item"
fi
