"""The API reference for people: the OpenAPI document rendered as one HTML page (``/docs``).

Rendered on the server, once, from the same document ``/openapi.json`` serves, so an operation
added to the document appears on the page with nothing else to change, and the page needs no
script at all (no CDN, no third-party viewer copied in, nothing for a Content-Security-Policy to
allow but one hashed stylesheet). Operations are grouped by their tag (one per dialect), in the
document's tag order; each shows its method, path, credential, parameters, request body and
responses with their headers, schemas and examples. ``$ref`` links jump to the named schema at
the end of the page.

Every string that comes from the document is escaped (``html.escape``) before it is written, so a
description or an example holding markup shows as text; the only markup added to document text
is ``<code>`` around backtick spans, applied after escaping.
"""

from __future__ import annotations

import hashlib
import html
import json
import re
from base64 import b64encode
from collections.abc import Mapping
from typing import Any

__all__ = ["STYLE", "STYLE_HASH", "render_home", "render_reference"]

METHODS = ("get", "head", "post", "put", "patch", "delete", "options", "trace")
_SCHEMA_PREFIX = "#/components/schemas/"
_PARAMETER_PREFIX = "#/components/parameters/"
_CODE_SPAN = re.compile(r"`([^`\n]+)`")
_NOT_ID = re.compile(r"[^A-Za-z0-9_-]+")

STYLE = """
:root { color-scheme: light dark; --muted: #667; --line: #8884; --code: #8881; }
body { font: 16px/1.5 system-ui, sans-serif; margin: 0 auto; max-width: 70rem; padding: 1rem 2rem; }
a { color: #2563eb; }
code, pre { font: 0.9em/1.4 ui-monospace, monospace; background: var(--code); border-radius: 4px; }
code { padding: 0 0.2em; }
pre { padding: 0.6rem; overflow-x: auto; white-space: pre-wrap; word-break: break-word; }
header p, .muted { color: var(--muted); }
nav ul { columns: 2 22rem; padding-left: 1.2rem; }
nav > ul > li { break-inside: avoid; margin-bottom: 0.6rem; }
section { border-top: 2px solid var(--line); margin-top: 2rem; }
article { border: 1px solid var(--line); border-radius: 6px; margin: 1rem 0;
  padding: 0 1rem 0.5rem; }
h3 { display: flex; gap: 0.6rem; align-items: baseline; flex-wrap: wrap; }
h3 .summary { font-weight: normal; }
.method { font: bold 0.8em ui-monospace, monospace; padding: 0.1em 0.5em; border-radius: 4px;
  color: #fff; background: #555; text-transform: uppercase; }
.get, .head { background: #1d6f42; } .post { background: #1e4fa8; }
.put, .patch { background: #8a5a00; } .delete { background: #a32020; }
table { border-collapse: collapse; width: 100%; margin: 0.5rem 0; }
th, td { text-align: left; vertical-align: top; border-bottom: 1px solid var(--line);
  padding: 0.3rem; }
td pre { margin: 0; }
h4 { margin: 1rem 0 0.3rem; }
""".strip()
STYLE_HASH = "sha256-" + b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()
"""The CSP source that allows exactly the page's one inline stylesheet."""


def _text(value: object) -> str:
    """Document prose: escaped, then `backtick spans` as code."""
    return _CODE_SPAN.sub(r"<code>\1</code>", html.escape(str(value)))


def _esc(value: object) -> str:
    return html.escape(str(value))


def _slug(value: str) -> str:
    return _NOT_ID.sub("-", value).strip("-") or "x"


def _page(title: str, body: str) -> str:
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="referrer" content="no-referrer">'
        f"<title>{_esc(title)}</title><style>{STYLE}</style></head>\n"
        f"<body>\n{body}\n</body></html>\n"
    )


class _Renderer:
    def __init__(self, document: Mapping[str, Any]) -> None:
        self.document = document
        components = document.get("components") or {}
        self.schemas: Mapping[str, Any] = components.get("schemas") or {}
        self.parameters: Mapping[str, Any] = components.get("parameters") or {}
        self.schemes: Mapping[str, Any] = components.get("securitySchemes") or {}
        self._ids: set[str] = set()
        self.schema_ids = {name: self._id("schema-" + _slug(name)) for name in self.schemas}

    def _id(self, wanted: str) -> str:
        """An element id not used yet on the page (two names may slug alike)."""
        candidate, n = wanted, 1
        while candidate in self._ids:
            n += 1
            candidate = f"{wanted}-{n}"
        self._ids.add(candidate)
        return candidate

    # --- JSON (schemas and examples) ----------------------------------------------------------

    def ref_link(self, target: str) -> str:
        name = target.removeprefix(_SCHEMA_PREFIX)
        if target.startswith(_SCHEMA_PREFIX) and name in self.schema_ids:
            return f'<a href="#{self.schema_ids[name]}">{_esc(name)}</a>'
        return _esc(target)

    def json(self, value: Any, indent: int = 0) -> str:
        """Pretty JSON as HTML, every ``$ref`` a link to the schema it names."""
        pad, inner = "  " * indent, "  " * (indent + 1)
        if isinstance(value, Mapping):
            if not value:
                return "{}"
            items = []
            for key, item in value.items():
                if key == "$ref" and isinstance(item, str):
                    rendered = f"&quot;{self.ref_link(item)}&quot;"
                else:
                    rendered = self.json(item, indent + 1)
                items.append(f"{inner}{_esc(json.dumps(str(key)))}: {rendered}")
            return "{\n" + ",\n".join(items) + f"\n{pad}}}"
        if isinstance(value, list | tuple):
            if not value:
                return "[]"
            items = [f"{inner}{self.json(item, indent + 1)}" for item in value]
            return "[\n" + ",\n".join(items) + f"\n{pad}]"
        return _esc(json.dumps(value, ensure_ascii=False, default=str))

    def schema(self, schema: Any) -> str:
        """A schema: a bare reference is its link, anything else pretty JSON."""
        if isinstance(schema, Mapping) and set(schema) == {"$ref"}:
            return f"<p>Schema: {self.ref_link(str(schema['$ref']))}</p>"
        return f"<pre>{self.json(schema)}</pre>"

    def brief(self, schema: Any) -> str:
        """A parameter's schema on one line."""
        if isinstance(schema, Mapping) and set(schema) == {"$ref"}:
            return self.ref_link(str(schema["$ref"]))
        compact = json.dumps(schema, ensure_ascii=False, separators=(", ", ": "), default=str)
        return f"<code>{_esc(compact)}</code>"

    # --- operations ---------------------------------------------------------------------------

    def parameter(self, parameter: Any) -> Mapping[str, Any]:
        if isinstance(parameter, Mapping) and isinstance(parameter.get("$ref"), str):
            name = parameter["$ref"].removeprefix(_PARAMETER_PREFIX)
            found = self.parameters.get(name)
            if isinstance(found, Mapping):
                return found
            return {"name": parameter["$ref"], "in": "?"}
        return parameter if isinstance(parameter, Mapping) else {"name": str(parameter)}

    def parameters_table(self, parameters: list[Any]) -> str:
        if not parameters:
            return ""
        rows = []
        for raw in parameters:
            p = self.parameter(raw)
            required = "required" if p.get("required") else "optional"
            rows.append(
                f"<tr><td><code>{_esc(p.get('name', ''))}</code></td><td>{_esc(p.get('in', ''))}"
                f"</td><td>{required}</td><td>{self.brief(p.get('schema', {}))}</td>"
                f"<td>{_text(p.get('description', ''))}</td></tr>"
            )
        return (
            "<h4>Parameters</h4><table><thead><tr><th>Name</th><th>In</th><th></th>"
            "<th>Schema</th><th>Description</th></tr></thead><tbody>"
            + "".join(rows)
            + "</tbody></table>"
        )

    def content(self, content: Any) -> str:
        """Each media type of a body: its schema and examples."""
        if not isinstance(content, Mapping):
            return ""
        parts = []
        for media_type, media in content.items():
            media = media if isinstance(media, Mapping) else {}
            parts.append(f"<p>Content-Type: <code>{_esc(media_type)}</code></p>")
            if "schema" in media:
                parts.append(self.schema(media["schema"]))
            if "example" in media:
                parts.append(f"<p>Example:</p><pre>{self.json(media['example'])}</pre>")
            examples = media.get("examples")
            if isinstance(examples, Mapping):
                for name, example in examples.items():
                    example = example if isinstance(example, Mapping) else {"value": example}
                    label = example.get("summary") or name
                    parts.append(
                        f"<p>Example <em>{_text(label)}</em>:</p>"
                        f"<pre>{self.json(example.get('value'))}</pre>"
                    )
        return "".join(parts)

    def request_body(self, body: Any) -> str:
        if not isinstance(body, Mapping):
            return ""
        required = "required" if body.get("required") else "optional"
        description = _text(body.get("description", ""))
        return (
            f"<h4>Request body ({required})</h4><p>{description}</p>"
            f"{self.content(body.get('content'))}"
        )

    def responses(self, responses: Any) -> str:
        if not isinstance(responses, Mapping):
            return ""
        items = []
        for status, answer in responses.items():
            answer = answer if isinstance(answer, Mapping) else {}
            headers = answer.get("headers")
            header_rows = ""
            if isinstance(headers, Mapping) and headers:
                header_rows = (
                    "<table><thead><tr><th>Header</th><th>Schema</th><th>Description</th></tr>"
                    "</thead><tbody>"
                    + "".join(
                        f"<tr><td><code>{_esc(name)}</code></td>"
                        f"<td>{self.brief((h or {}).get('schema', {}))}</td>"
                        f"<td>{_text((h or {}).get('description', ''))}</td></tr>"
                        for name, h in headers.items()
                    )
                    + "</tbody></table>"
                )
            items.append(
                f"<li><strong>{_esc(status)}</strong> {_text(answer.get('description', ''))}"
                f"{header_rows}{self.content(answer.get('content'))}</li>"
            )
        return "<h4>Responses</h4><ul>" + "".join(items) + "</ul>"

    def security(self, security: Any) -> str:
        if not isinstance(security, list) or not security:
            return '<p class="muted">No credential.</p>'
        names = [name for requirement in security if isinstance(requirement, Mapping)
                 for name in requirement]  # fmt: skip
        links = ", ".join(f'<a href="#security-{_slug(n)}">{_esc(n)}</a>' for n in names)
        return f"<p>Credential: {links}</p>"

    def operation(self, op_id: str, method: str, path: str, op: Mapping[str, Any]) -> str:
        description = op.get("description")
        return (
            f'<article id="{op_id}" class="op" data-method="{_esc(method.upper())}"'
            f' data-path="{_esc(path)}">'
            f'<h3><span class="method {_esc(method)}">{_esc(method.upper())}</span>'
            f'<code class="path">{_esc(path)}</code>'
            f'<span class="summary">{_text(op.get("summary", ""))}</span></h3>'
            f"{f'<p>{_text(description)}</p>' if description else ''}"
            f"{self.security(op.get('security', self.document.get('security')))}"
            f"{self.parameters_table(list(op.get('parameters') or []))}"
            f"{self.request_body(op.get('requestBody'))}"
            f"{self.responses(op.get('responses'))}"
            "</article>"
        )

    # --- the page -------------------------------------------------------------------------------

    def grouped(self) -> list[tuple[str, str, list[tuple[str, str, str, Mapping[str, Any]]]]]:
        """(tag, its description, [(element id, method, path, operation)]), in tag order."""
        groups: dict[str, list[tuple[str, str, str, Mapping[str, Any]]]] = {}
        described: dict[str, str] = {}
        for tag in self.document.get("tags") or []:
            if isinstance(tag, Mapping) and "name" in tag:
                groups.setdefault(str(tag["name"]), [])
                described[str(tag["name"])] = str(tag.get("description", ""))
        for path, item in (self.document.get("paths") or {}).items():
            if not isinstance(item, Mapping):
                continue
            shared = list(item.get("parameters") or [])
            for method in METHODS:
                op = item.get(method)
                if not isinstance(op, Mapping):
                    continue
                if shared:  # path-level parameters apply to every operation of the path
                    op = {**op, "parameters": [*shared, *(op.get("parameters") or [])]}
                tags = op.get("tags") or ["Other"]
                wanted = "op-" + _slug(str(op.get("operationId") or f"{method}-{path}"))
                groups.setdefault(str(tags[0]), []).append((self._id(wanted), method, path, op))
        return [(tag, described.get(tag, ""), ops) for tag, ops in groups.items() if ops]

    def render(self) -> str:
        info = self.document.get("info") or {}
        title = f"{info.get('title', 'API')} {info.get('version', '')}".strip()
        groups = self.grouped()
        tag_ids = {tag: self._id("tag-" + _slug(tag)) for tag, _, _ in groups}
        nav = "".join(
            f'<li><a href="#{tag_ids[tag]}">{_esc(tag)}</a> ({len(ops)})<ul>'
            + "".join(
                f'<li><a href="#{op_id}"><code>{_esc(method.upper())} {_esc(path)}</code></a></li>'
                for op_id, method, path, _ in ops
            )
            + "</ul></li>"
            for tag, _, ops in groups
        )
        sections = "".join(
            f'<section id="{tag_ids[tag]}"><h2>{_esc(tag)}</h2><p>{_text(description)}</p>'
            + "".join(self.operation(*op) for op in ops)
            + "</section>"
            for tag, description, ops in groups
        )
        servers = ", ".join(
            f"<code>{_esc(s.get('url', ''))}</code>"
            for s in self.document.get("servers") or []
            if isinstance(s, Mapping)
        )
        schemes = "".join(
            f'<li id="security-{_slug(name)}"><strong>{_esc(name)}</strong>: '
            f"{_text(scheme.get('description', ''))}<pre>{self.json(scheme)}</pre></li>"
            for name, scheme in self.schemes.items()
            if isinstance(scheme, Mapping)
        )
        schemas = "".join(
            f'<details id="{self.schema_ids[name]}"><summary><code>{_esc(name)}</code></summary>'
            f"<pre>{self.json(schema)}</pre></details>"
            for name, schema in self.schemas.items()
        )
        body = (
            f"<header><h1>{_esc(title)} API reference</h1>"
            f"<p>{_text(info.get('description', ''))}</p>"
            f"<p>Server: {servers or 'this one'}. The machine-readable document: "
            '<a href="/openapi.json">/openapi.json</a>. Home: <a href="/">/</a>.</p></header>'
            f'<nav aria-label="Operations"><h2>Operations</h2><ul>{nav}</ul></nav>'
            f"<main>{sections}"
            f'<section id="credentials"><h2>Credentials</h2><ul>{schemes}</ul></section>'
            f'<section id="schemas"><h2>Schemas</h2>{schemas}</section></main>'
        )
        return _page(f"{title} API reference", body)


def render_reference(document: Mapping[str, Any]) -> str:
    """The whole reference page for an OpenAPI 3.x ``document``."""
    return _Renderer(document).render()


def render_home(document: Mapping[str, Any]) -> str:
    """What a person opening the server's root sees: what this is, and where to go next."""
    info = document.get("info") or {}
    tags = [t for t in document.get("tags") or [] if isinstance(t, Mapping) and "name" in t]
    dialects = "".join(
        f"<li><strong>{_esc(t['name'])}</strong>: {_text(t.get('description', ''))}</li>"
        for t in tags
    )
    body = (
        f"<header><h1>{_esc(info.get('title', 'tapevault'))}</h1>"
        f"<p>Version {_esc(info.get('version', ''))}</p></header><main>"
        f"<p>{_text(info.get('description', ''))}</p>"
        "<ul>"
        '<li><a href="/docs">API reference</a>: every operation, with its parameters, '
        "bodies, answers and examples</li>"
        '<li><a href="/openapi.json">/openapi.json</a>: the same as an OpenAPI 3.1 document</li>'
        '<li><a href="/healthz">/healthz</a>: liveness</li>'
        f"</ul><h2>What it speaks</h2><ul>{dialects}</ul></main>"
    )
    return _page(str(info.get("title", "tapevault")), body)
