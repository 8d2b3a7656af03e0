#!/usr/bin/env bash
# Validate the whole catalog offline: every item and bundle, unique ids, file paths, bundle
# references.   Usage: validate-all.sh [CATALOG_DIR]
set -euo pipefail
source "$(dirname "$0")/lib.sh"
devctl validate catalog "${1:-$CATALOG_DIR}"
