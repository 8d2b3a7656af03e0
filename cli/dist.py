"""Build devctl's distribution (`make dist`): a folder of wheels and one `devctl.pyz`.

The folder holds the wheels of pao-devctl, pao-contracts and pao-spec and of every third-party
package devctl needs, at the versions uv.lock pins, so that
`pip install --no-index --find-links DIR pao-devctl` works without a network. `devctl.pyz` runs
devctl with nothing but a CPython interpreter.

Five of those packages are compiled (pydantic-core, rpds-py, pyyaml, regex, markupsafe) and none
ships an abi3 wheel, so each CPython minor version needs its own. The folder gets the manylinux
x86_64 (glibc >= 2.17) wheels of every version in `--python`, and the .pyz carries the extension
modules of all of them side by side: their file names carry the ABI
(`_regex.cpython-312-x86_64-linux-gnu.so`), so each interpreter imports its own. A zip file
cannot hold importable extension modules, hence shiv: the .pyz unpacks itself into `~/.shiv`
(`SHIV_ROOT` overrides) on its first run and starts from there afterwards.

Usage: python cli/dist.py [--out DIR] [--uv PATH] [--python 3.11 --python 3.12 ...]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OWN_PACKAGES = ("pao-contracts", "pao-spec", "pao-devctl")
PYTHONS = ("3.11", "3.12", "3.13", "3.14")
#: glibc 2.17 and later: every x86_64 Linux distribution still supported.
PLATFORMS = ("manylinux_2_17_x86_64", "manylinux2014_x86_64")
UV_PLATFORM = "x86_64-manylinux_2_17"
ENTRY_POINT = "pao.devctl.main:main"

PREAMBLE = Path(__file__).with_name("pyz_preamble.py")


def run(*argv: str | Path) -> None:
    """Run a build step; its own output explains a failure, so stop with its exit code."""
    run_together([argv])


def run_together(commands: list[tuple[str | Path, ...]]) -> None:
    """Run build steps side by side (downloads mostly wait on the network); stop if any fails."""
    started = [
        (argv, subprocess.Popen([str(a) for a in argv], cwd=ROOT))  # noqa: S603 - our own tools
        for argv in commands
    ]
    for argv, process in started:
        if process.wait() != 0:
            sys.exit(f"error: {Path(str(argv[0])).name} failed (exit {process.returncode})")


def target_tags(python: str) -> list[str]:
    """pip options selecting the CPython `python` manylinux x86_64 wheels."""
    abi = "cp" + python.replace(".", "")
    options = ["--only-binary=:all:", "--implementation", "cp", "--python-version", python]
    options += ["--abi", abi, "--abi", "abi3", "--abi", "none"]
    for platform in PLATFORMS:
        options += ["--platform", platform]
    return options


def build_wheelhouse(out: Path, work: Path, *, uv: str, pythons: list[str]) -> None:
    """Our three wheels from the source tree, then the locked third-party wheels from PyPI."""
    for package in OWN_PACKAGES:
        run(uv, "build", "--quiet", "--package", package, "--wheel", "--out-dir", out)
    requirements = work / "requirements.txt"
    run(
        uv, "export", "--quiet", "--frozen", "--package", "pao-devctl", "--no-emit-workspace",
        "--no-dev", "--no-hashes", "--no-header", "--no-annotate", "--output-file", requirements,
    )  # fmt: skip
    # One download per Python version, each into its own folder: pure wheels come in every one.
    downloads = {python: work / f"wheels-{python}" for python in pythons}
    pip_download = (sys.executable, "-m", "pip", "download", "--quiet", "--no-deps")
    pip_download += ("--disable-pip-version-check",)
    run_together(
        [
            (*pip_download, *target_tags(python), "--requirement", requirements, "--dest", dest)
            for python, dest in downloads.items()
        ]
    )
    for dest in downloads.values():
        for wheel in dest.glob("*.whl"):
            if not (out / wheel.name).exists():
                shutil.move(wheel, out / wheel.name)


def build_pyz(out: Path, work: Path, *, uv: str, pythons: list[str]) -> Path:
    """Install devctl from the wheelhouse once per Python version, merged, and zip it with shiv."""
    merged = work / "site-packages"
    for python in pythons:
        target = work / f"site-packages-{python}"
        run(
            uv, "pip", "install", "--quiet", "--no-index", "--find-links", out,
            "--python-version", python, "--python-platform", UV_PLATFORM,
            "--target", target, "pao-devctl",
        )  # fmt: skip
        shutil.rmtree(target / "bin", ignore_errors=True)
        shutil.copytree(target, merged, dirs_exist_ok=True)
    pyz = out / "devctl.pyz"
    run(
        sys.executable, "-m", "shiv", "--site-packages", merged, "--entry-point", ENTRY_POINT,
        "--preamble", PREAMBLE, "--python", "/usr/bin/env python3", "--output-file", pyz,
        "--reproducible", "--compressed",
    )  # fmt: skip
    return pyz


def write_checksums(out: Path) -> None:
    """SHA256SUMS, in `sha256sum --check` format, of everything in the folder."""
    lines = [
        f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {path.name}\n"
        for path in sorted(out.iterdir())
        if path.is_file() and path.name != "SHA256SUMS"
    ]
    (out / "SHA256SUMS").write_text("".join(lines))


def clear_previous(out: Path) -> None:
    """Drop what an earlier build left, so the folder holds one version of each package."""
    for path in out.iterdir():
        if path.suffix in {".whl", ".pyz"} or path.name == "SHA256SUMS":
            path.unlink()


def find_uv() -> str:
    """uv from $UV, PATH or the workspace's .tools/."""
    for candidate in (os.environ.get("UV"), shutil.which("uv"), str(ROOT / ".tools/bin/uv")):
        if candidate and Path(candidate).is_file():
            return candidate
    sys.exit("error: uv not found; run `make sync` (it installs uv into .tools/) or set UV")


def main() -> None:
    """Parse the options and build the folder."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "dist", help="default: dist/")
    parser.add_argument("--uv", help="the uv executable (default: $UV, PATH, .tools/bin/uv)")
    parser.add_argument(
        "--python",
        action="append",
        choices=PYTHONS,
        help=f"a CPython version to carry wheels for (repeatable; default: {', '.join(PYTHONS)})",
    )
    args = parser.parse_args()
    pythons = args.python or list(PYTHONS)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    clear_previous(out)
    with tempfile.TemporaryDirectory(prefix="pao-dist-") as tmp:
        work = Path(tmp)
        uv = args.uv or find_uv()
        build_wheelhouse(out, work, uv=uv, pythons=pythons)
        pyz = build_pyz(out, work, uv=uv, pythons=pythons)
    write_checksums(out)
    wheels = len(list(out.glob("*.whl")))
    print(f"{out}: {wheels} wheels for CPython {', '.join(pythons)}; {pyz.name}")  # noqa: T201


if __name__ == "__main__":
    main()
