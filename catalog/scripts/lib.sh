# Shared by the catalog scripts: where the catalog is and how to run devctl.
# devctl comes from $DEVCTL, else PATH, else the PAO checkout this catalog sits in (uv).

CATALOG_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

devctl() {
    if [ -n "${DEVCTL:-}" ]; then
        # shellcheck disable=SC2086
        $DEVCTL "$@"
    elif type -P devctl >/dev/null 2>&1; then
        command devctl "$@"
    elif [ -x "$CATALOG_DIR/../.venv/bin/devctl" ]; then
        "$CATALOG_DIR/../.venv/bin/devctl" "$@"
    elif command -v uv >/dev/null 2>&1 && [ -f "$CATALOG_DIR/../pyproject.toml" ]; then
        uv run --quiet --project "$CATALOG_DIR/.." devctl "$@"
    else
        echo "error: devctl not found; install it from a PAO release (pip install --no-index" \
            "--find-links DIR pao-devctl) or set DEVCTL='python3 /path/to/devctl.pyz'" >&2
        return 127
    fi
}
