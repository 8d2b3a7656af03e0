#!/usr/bin/env bash
# Validate catalog files offline; stops at the first invalid file, printing file:line: message
# for each of its problems.   Usage: validate-catalog.sh FILE...
set -euo pipefail
source "$(dirname "$0")/lib.sh"
if [ "$#" -eq 0 ]; then
    echo "usage: $0 FILE..." >&2
    exit 2
fi
devctl validate catalog-item "$@"
