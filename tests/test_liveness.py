"""Owner ids name their node (ingest/liveness.py): one name per data directory, kept across
restarts; only a process of the same node (or an id of an older version, of this host) is
judged by its pid, so a second data directory on the same host never takes the first's live
streams for dead."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tapevault import cli
from tapevault.ingest.liveness import (
    NODE_FILE,
    is_gone,
    node_name,
    node_of,
    process_id,
    spool_node,
)


def dead_pid() -> int:
    """The pid of a process that has just ended."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_data_directory_keeps_one_node_name(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    first = node_name(tmp_path / "a")
    assert first == node_name(tmp_path / "a")  # read back, not made anew
    assert first.startswith(socket.gethostname().replace("+", "-")[:60] + "+")
    (tmp_path / "b").mkdir()
    assert node_name(tmp_path / "b") != first  # another data directory: another node
    assert (tmp_path / "a" / NODE_FILE).read_text().strip() == first


@pytest.mark.parametrize("garbage", ["", "a:b", "a~b", "x" * 81, "a/b"])
def test_a_damaged_node_file_stops_the_start(tmp_path: Path, garbage: str) -> None:
    (tmp_path / NODE_FILE).write_text(garbage)
    with pytest.raises(ValueError, match="node"):
        node_name(tmp_path)


def test_only_this_nodes_processes_are_judged_by_pid(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    me = process_id(node_name(tmp_path / "a"))
    pid = dead_pid()
    mine_dead = f"{node_of(me)}:{pid}:1"
    other_node_dead = f"{node_name(tmp_path / 'b')}:{pid}:1"
    older_version_dead = f"{socket.gethostname()}:{pid}:1"
    assert is_gone(mine_dead, me)
    assert not is_gone(other_node_dead, me)  # its lease decides, not this host's pids
    assert is_gone(older_version_dead, me)
    assert not is_gone(me, me)  # alive
    assert not is_gone(f"elsewhere+00:{os.getpid()}:1", me)
    assert not is_gone("not an owner id", me)


def test_a_spool_belongs_to_a_named_node_only(tmp_path: Path) -> None:
    node = node_name(tmp_path)
    assert spool_node(process_id(node)) == node
    assert spool_node(process_id()) is None  # a bare host name: an id of an older version
    assert spool_node(None) is None and spool_node("garbage") is None


def test_processes_starting_together_agree_on_one_name(tmp_path: Path) -> None:
    """Several server processes (``TAPEVAULT_PROCESSES``) make the name at the same moment:
    each reads the one that was linked into place, never a half-written one."""
    code = (
        "import sys; from pathlib import Path; from tapevault.ingest.liveness import node_name;"
        "print(node_name(Path(sys.argv[1])))"
    )
    children = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True
        )
        for _ in range(8)
    ]
    names = {child.communicate(timeout=60)[0].strip() for child in children}
    assert all(child.returncode == 0 for child in children)
    assert names == {node_name(tmp_path)}
    assert [p.name for p in tmp_path.iterdir()] == [NODE_FILE]  # no temporary left behind


def test_a_damaged_node_file_is_one_line_at_start_up(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / NODE_FILE).write_text("two:nodes")
    data = ["--data-dir", str(tmp_path), "--database-url", f"sqlite:///{tmp_path / 'db'}"]
    assert cli.main(["node", "show", *data]) == 2
    err = capsys.readouterr().err
    assert "TAPEVAULT_DATA_DIR: its node name" in err and "Traceback" not in err


@pytest.mark.parametrize("kind", ["fifo", "device", "huge", "binary"])
def test_a_node_id_that_is_not_a_name_is_refused_at_once(tmp_path: Path, kind: str) -> None:
    """A FIFO (which would block the start), a link to an endless device, a huge or a binary
    file at DATA_DIR/node-id: a ValueError naming the file, without reading it whole."""
    path = tmp_path / "node-id"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "device":
        path.symlink_to("/dev/zero")
    elif kind == "huge":
        path.write_bytes(b"a" * (10 * 2**20))
    else:
        path.write_bytes(b"\xff\xfe\x00name")
    with pytest.raises(ValueError, match="node-id"):
        node_name(tmp_path)
