"""Nodes started at the same moment against one empty PostgreSQL database (a rolling deploy, a
cluster's first start) all come up: the migrations run once, under an advisory lock, and the
others find the schema at head. Without the lock all but one failed to create the tables."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tapevault.db.engine import current_revision, head_revision, make_engine
from tests.server import inherited_environment


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_nodes_migrating_at_once_all_succeed(database_url: str, tmp_path: Path) -> None:
    children = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tapevault.cli",
                "migrate",
                "--database-url",
                database_url,
                "--data-dir",
                str(tmp_path / f"node-{n}"),
            ],
            env=inherited_environment(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(4)
    ]
    errors = [child.communicate(timeout=120)[1] for child in children]
    assert [child.returncode for child in children] == [0] * 4, errors
    engine = make_engine(database_url)
    try:
        assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()
