"""The services' layering, locked: nobody reaches around a service into its repository, nobody
invalidates the serving cache by hand, and each service is handed a narrow protocol."""

from __future__ import annotations

import ast
import inspect
import typing
from collections.abc import Iterator
from pathlib import Path

import pytest

import tapevault
from tapevault.core.calls import Calls
from tapevault.core.ingest import Ingest
from tapevault.core.keyring import KeyRing
from tapevault.core.mediaauth import MediaAuthorisation
from tapevault.core.playerlinks import PlayerLinks
from tapevault.core.ports import Repository
from tapevault.core.quota import Quotas
from tapevault.core.renditions import Renditions
from tapevault.core.retention import Retention
from tapevault.core.servingcache import ServingCache
from tapevault.core.sessions import Sessions
from tapevault.core.tenants import Tenants
from tapevault.ingest.finalize import Finalizer
from tests.seeds import AMIGO, KORE, SEEDS_DIR, SUKI, seed_text

SOURCE = Path(tapevault.__file__).parent
# Only the serving cache bumps the epoch; only the repository defines the bump.
INVALIDATION = {"bump_cache_epoch", "changed"}
INVALIDATORS = {"core/servingcache.py", "db/repository.py", "core/ports.py"}


def reaches(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """Every ``x.repo`` (or ``x._repo``) whose ``x`` is not ``self``, and every call of an
    invalidation, with its line."""
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and node.attr in ("repo", "_repo")
            and not (isinstance(node.value, ast.Name) and node.value.id == "self")
        ):
            yield node.lineno, f"{ast.unparse(node)} reaches around a service"
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in INVALIDATION
        ):
            yield node.lineno, f"{ast.unparse(node.func)}() invalidates by hand"


def test_nothing_reaches_around_a_service_into_its_repository() -> None:
    """No module calls ``vault.repo``, ``ctx.vault.repo``, ``self.finalizer.repo``...: the HTTP
    layer, the CLI and the worker call services, and a service calls its own repository."""
    found = []
    for path in sorted(SOURCE.rglob("*.py")):
        name = path.relative_to(SOURCE).as_posix()
        for line, what in reaches(ast.parse(path.read_text(), str(path))):
            if "invalidates" in what and name in INVALIDATORS:
                continue
            found.append(f"{name}:{line}: {what}")
    assert found == []


def test_the_scan_sees_a_reach_through_and_a_hand_placed_invalidation() -> None:
    """The scan is not vacuous: each kind it forbids is caught, and ``self.repo`` is not."""
    caught = (
        "ctx.vault.repo.get_tenant(x)\n"
        "self.finalizer.repo.lease_job()\n"
        "cache._repo.get_recording(r)\n"
        "vault.changed()\n"
        "repo.bump_cache_epoch()\n"
    )
    assert sorted(line for line, _ in reaches(ast.parse(caught))) == [1, 2, 3, 4, 5]
    assert list(reaches(ast.parse("self.repo.get_tenant(x)\nrepo.get_tenant(x)\n"))) == []


@pytest.mark.parametrize(
    "service",
    [
        Tenants,
        Quotas,
        Sessions,
        Ingest,
        KeyRing,
        MediaAuthorisation,
        ServingCache,
        Calls,
        Renditions,
        Retention,
        PlayerLinks,
        Finalizer,
    ],
)
def test_each_service_takes_a_narrow_repository_protocol(service: type) -> None:
    """A service's repository parameter is a protocol of only what it uses, never the whole
    ``Repository``: what it cannot call, it cannot call around the cache."""
    hints = typing.get_type_hints(service.__init__)
    parameters = inspect.signature(service.__init__).parameters
    name = "repo" if "repo" in parameters else next(iter(list(parameters)[1:]))
    protocol = hints[name]
    assert protocol is not Repository
    assert getattr(protocol, "_is_protocol", False), f"{service.__name__}.{name}: {protocol}"
    wanted = {m for m in vars(protocol) if not m.startswith("_")}
    everything = {m for m in vars(Repository) if not m.startswith("_")}
    assert wanted and len(wanted) < len(everything) // 2


def test_only_the_serving_cache_offers_the_writes_that_change_what_is_served() -> None:
    """Retention is given the writes that change what may be served only through the cache:
    its repository protocol lacks them, so mypy refuses a write around the cache."""
    hints = typing.get_type_hints(Retention.__init__)
    members = set(vars(hints["repo"]))
    for write in ("tombstone", "set_hold", "clear_hold", "mark_session_deleted"):
        assert write not in members
        assert callable(getattr(ServingCache, write))


def seed_phrases() -> list[str]:
    """The text of every seed document (their answers' messages and descriptions)."""
    texts = [seed_text(name) for name in (SUKI, AMIGO, KORE)]
    return texts + [path.read_text() for path in SEEDS_DIR.glob("*.md")]


def test_the_core_writes_no_vendor_words() -> None:
    """No string of ``core/`` (docstrings aside) is a phrase of a seed document: the core
    names a refusal's subject, each dialect words it (``http/wording.py``)."""
    texts = seed_phrases()
    found = []
    for path in sorted((SOURCE / "core").glob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            and node.body
            and isinstance(node.body[0], ast.Expr)
        }
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and id(node) not in docstrings
                and len(node.value.strip()) >= 12
                and " " in node.value.strip()
                and any(node.value.strip() in text for text in texts)
            ):
                found.append(f"core/{path.name}:{node.lineno}: {node.value!r}")
    assert found == []


def test_every_subject_is_worded() -> None:
    """Each subject the core can name has the dialects' words, so ``say`` never falls back to
    tapevault's plain message for one the seeds word."""
    from tapevault.errors import Gone, GoneDetail, NotFound, Subject
    from tapevault.http.wording import WORDS, say

    for subject in Subject:
        assert subject in WORDS
        assert say(NotFound("plain words", subject)) == WORDS[subject]
    expired = Gone("plain", GoneDetail("expired", 1, "tenant"), Subject.RECORDING)
    deleted = Gone("plain", GoneDetail("deleted", 1, "request"), Subject.RECORDING)
    assert say(expired) == "Recording has expired per retention policy."
    assert say(deleted) == "Recording has been deleted."
    assert say(Gone("tapevault's own words", GoneDetail("expired", 1))) == "tapevault's own words"
