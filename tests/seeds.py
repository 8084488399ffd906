"""The seed documents: the published API pages tapevault implements, found and parsed.

They live outside the repository (``../shared/seeds``, or ``TAPEVAULT_SEEDS_DIR``); a test that
needs one skips without it, or fails when the run is strict (``tests.conftest.need``). Call these
from a test or a fixture, never at import time, so that the skip belongs to the test.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import need


def _find_seeds() -> Path:
    """``TAPEVAULT_SEEDS_DIR``, or the nearest ``shared/seeds`` above this checkout (a clone
    beside ``shared/``, or a worktree one level further down)."""
    if "TAPEVAULT_SEEDS_DIR" in os.environ:
        return Path(os.environ["TAPEVAULT_SEEDS_DIR"])
    above = [parent / "shared" / "seeds" for parent in Path(__file__).resolve().parents[1:]]
    return next((path for path in above if path.is_dir()), above[1])


SEEDS_DIR = _find_seeds()
SUKI = "suki-form-filling-session-recording.md"
AMIGO = "amigo-recordings-api.md"
KORE = "kore-fetch-call-recording-v2.md"


def seed_text(name: str) -> str:
    """The text of one seed document."""
    path = SEEDS_DIR / name
    need(path.is_file(), f"seed document {name} not found in {SEEDS_DIR}")
    return path.read_text()


def suki_openapi() -> dict[str, Any]:
    """The OpenAPI document of the Suki recording page (its one ````yaml block)."""
    block = re.search(r"````yaml[^\n]*\n(.*?)````", seed_text(SUKI), re.S)
    assert block is not None, f"no yaml block in {SUKI}"
    document: dict[str, Any] = yaml.safe_load(block.group(1))
    return document


def amigo_documents() -> list[dict[str, Any]]:
    """The Amigo page's three OpenAPI documents, one per operation, as published."""
    blocks = [json.loads(b) for b in re.findall(r"```json\n(.*?)\n```", seed_text(AMIGO), re.S)]
    assert len(blocks) == 3, f"expected three OpenAPI blocks in {AMIGO}, found {len(blocks)}"
    return blocks


def amigo_openapi() -> dict[str, Any]:
    """The Amigo page's three one-operation documents merged into one.

    Each block repeats the same envelope (openapi, info, servers, security) and the schemas it
    uses; the union of their paths, schemas and security schemes is the API they describe.
    """
    blocks = amigo_documents()
    merged: dict[str, Any] = {
        **{key: blocks[0][key] for key in ("openapi", "info", "servers", "security")},
        "paths": {},
        "components": {"schemas": {}, "securitySchemes": {}},
    }
    for block in blocks:
        merged["paths"].update(block["paths"])
        for part in ("schemas", "securitySchemes"):
            for name, definition in block["components"][part].items():
                known = merged["components"][part].setdefault(name, definition)
                assert known == definition, f"{AMIGO} defines {name} in two ways"
    return merged


def python_example(seed: str) -> str:
    """The first ```python block of a seed, or the unfenced example of the ambient page."""
    text = seed_text(seed)
    fenced = re.search(r"```python[^\n]*\n(.*?)```", text, re.S)
    if fenced:
        return "\n".join(
            line[4:] if line.startswith("    ") else line for line in fenced.group(1).splitlines()
        )
    start = text.index("import requests")
    end = text.index("print(response.json())", start) + len("print(response.json())")
    return text[start:end]


def adapt(code: str, base: str, session_id: str, token: str) -> str:
    """Change only the base URL, the credentials and the session id placeholder."""
    code = re.sub(r"https://sdp\.suki(?:-stage)?\.(?:ai|com)", base, code)
    code = code.replace("<sdp_suki_token>", token).replace("<sdp_provider_id>", "provider-123")
    # The ambient page's placeholder line ends in a `//` comment, which is not Python.
    return re.sub(r'"123dfg-456dfg-789dfg-012dfg"( //[^\n]*)?', json.dumps(session_id), code)
