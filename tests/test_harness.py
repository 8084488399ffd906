"""The test harness itself: shared helpers live in support modules, waiting fails clearly."""

from __future__ import annotations

import ast
import asyncio
from pathlib import Path

import pytest

from tests.support import until, wait_for

TESTS = Path(__file__).resolve().parent


def test_no_test_module_imports_another() -> None:
    """A helper two test modules need lives in a support module, never in a test module."""
    offenders = []
    for path in sorted(TESTS.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            offenders += [
                f"{path.name}:{node.lineno} imports {name}"
                for name in names
                if name.startswith("tests.test_") or name.startswith("test_")
            ]
    assert not offenders, "\n".join(offenders)


def test_wait_for_returns_the_first_truthy_answer() -> None:
    """``wait_for`` polls until the probe answers something truthy and returns that answer."""
    answers = iter([None, 0, "", "ready", "later"])
    assert wait_for(lambda: next(answers), every=0) == "ready"


def test_wait_for_fails_at_the_deadline_saying_what_it_waited_for() -> None:
    """At the deadline the failure names the condition and the probe's last answer."""
    with pytest.raises(AssertionError, match=r"the moon to rise.*last answer was \[\]"):
        wait_for(list, timeout=0.05, what="the moon to rise", every=0.01)


async def test_until_waits_for_the_event_loop_and_fails_clearly() -> None:
    """``until`` lets other tasks run until the condition holds, and names it when it never
    does."""
    seen: list[int] = []

    async def later() -> None:
        seen.append(1)

    task = asyncio.ensure_future(later())
    await until(lambda: seen)
    await task
    with pytest.raises(AssertionError, match="nothing at all"):
        await until(lambda: False, within=0.05, what="nothing at all")
