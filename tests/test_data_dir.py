"""A data directory that exists but cannot be written is refused at start, in one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tapevault.config import Settings
from tapevault.errors import ConfigError
from tests.conftest import need

# A directory that exists for everyone, root included, and in which no file can be created.
UNWRITABLE = Path("/proc/self")


def test_an_unwritable_data_dir_is_a_config_error_naming_it() -> None:
    """ensure_data_dir probes for a writable file, so the failure names TAPEVAULT_DATA_DIR
    instead of surfacing later as a database outage or a traceback."""
    need(UNWRITABLE.is_dir(), "needs Linux /proc")
    settings = Settings.load({"data_dir": str(UNWRITABLE)}, env={})
    with pytest.raises(ConfigError, match=r"TAPEVAULT_DATA_DIR.*cannot write in"):
        settings.ensure_data_dir()


def test_serve_with_an_unwritable_data_dir_says_why_before_serving() -> None:
    """`tapevault serve` exits non-zero with one line about the directory, and never claims
    to be serving first."""
    need(UNWRITABLE.is_dir(), "needs Linux /proc")
    done = subprocess.run(
        [sys.executable, "-m", "tapevault.cli", "serve", "--data-dir", str(UNWRITABLE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert done.returncode != 0
    assert "serving on" not in done.stderr + done.stdout
    assert (
        done.stderr.strip()
        .splitlines()[-1]
        .startswith("tapevault: invalid setting TAPEVAULT_DATA_DIR: cannot write in")
    ), done.stderr
    assert "Traceback" not in done.stderr
