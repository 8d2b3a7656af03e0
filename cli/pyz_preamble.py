"""Run by devctl.pyz after it unpacked itself and before devctl starts (shiv's `--preamble`).

The .pyz carries compiled modules for a fixed set of interpreters (see cli/dist.py); on any other
one devctl would die inside an import with a traceback, so stop with one line that says what to do.
"""

import platform
import sys
from importlib.machinery import EXTENSION_SUFFIXES

# shiv runs this file with `site_packages`, the unpacked folder, among its globals.
carried = sorted(path.name for path in site_packages.glob("pydantic_core/_pydantic_core.*"))  # noqa: F821
if not any(name.endswith(EXTENSION_SUFFIXES[0]) for name in carried):
    # e.g. _pydantic_core.cpython-312-x86_64-linux-gnu.so: CPython 3.12 on Linux x86_64
    versions = ", ".join(f"{abi[0]}.{abi[1:]}" for abi in (n.split("-")[1] for n in carried))
    sys.exit(
        f"error: devctl.pyz runs on CPython {versions} on Linux x86_64, and this is "
        f"{sys.implementation.name} {platform.python_version()} on {platform.system()} "
        f"{platform.machine()}. Run it with one of those, or install devctl from its wheels "
        "(README: Installing devctl)."
    )
