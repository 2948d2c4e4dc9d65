"""docs/openapi.yaml as the contract: real answers checked against it.

check(responses) validates each recorded Response (method, path, status,
JSON body) against the response schema the document gives for that
operation and status, with a JSON Schema validator (python3-jsonschema).
The document is OpenAPI 3.0: its schemas are JSON Schema draft 4 plus
`nullable`, which is turned into a null type here; `$ref`s are inlined.
"""

import functools
import os
import re

import jsonschema
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOC_PATH = os.path.join(ROOT, "docs", "openapi.yaml")


@functools.lru_cache(maxsize=1)
def document():
    with open(DOC_PATH) as f:
        return yaml.safe_load(f)


def _resolve(doc, node, depth=0):
    """node with every $ref inlined and OpenAPI-only keywords turned into
    JSON Schema."""
    if depth > 40:
        raise ValueError("$ref nesting too deep")
    if isinstance(node, list):
        return [_resolve(doc, n, depth + 1) for n in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = doc
        for part in node["$ref"].lstrip("#/").split("/"):
            target = target[part]
        return _resolve(doc, target, depth + 1)
    out = {}
    for k, v in node.items():
        if k in ("example", "examples", "xml", "externalDocs", "discriminator",
                 "readOnly", "writeOnly", "deprecated"):
            continue
        if k == "properties":
            out[k] = {name: _resolve(doc, s, depth + 1) for name, s in v.items()}
        else:
            out[k] = _resolve(doc, v, depth + 1)
    if out.pop("nullable", False):
        if "type" in out:
            out["type"] = [out["type"], "null"]
        if "enum" in out:
            out["enum"] = list(out["enum"]) + [None]
    return out


@functools.lru_cache(maxsize=1)
def _operations():
    """[(regex, method, operation)] for every documented path."""
    ops = []
    for path, item in document()["paths"].items():
        rx = "^" + re.sub(r"\{[^/}]+\}", "[^/]+", path) + "$"
        for method, op in item.items():
            if method in ("get", "post", "put", "delete", "patch", "head", "options"):
                ops.append((re.compile(rx), method.upper(), op))
    return ops


def operation(method, path):
    """(operation or None, path documented at all)."""
    path = path.split("?", 1)[0]
    known = False
    for rx, m, op in _operations():
        if rx.match(path):
            known = True
            if m == method:
                return op, True
    return None, known


@functools.lru_cache(maxsize=None)
def _schema_for(method, path_key, status):
    op, _ = operation(method, path_key)
    responses = op.get("responses", {})
    resp = responses.get(str(status)) or responses.get(f"{str(status)[0]}XX") \
        or responses.get("default")
    if resp is None:
        return None, f"status {status} is not documented"
    resp = _resolve(document(), resp)
    content = resp.get("content", {})
    if "application/json" not in content:
        return {}, None
    return content["application/json"].get("schema", {}), None


def problems(responses):
    """Every way a recorded answer disagrees with the document."""
    out = []
    doc_errors = set(error_codes())
    for r in responses:
        method, path = getattr(r, "method", None), getattr(r, "path", None)
        if method is None or path is None:
            continue
        op, known = operation(method, path)
        route = path.split("?", 1)[0]
        if not r.headers.get("x-request-id"):
            out.append(f"{method} {route} -> {r.status}: no X-Request-Id header")
        if op is None:
            # A method a documented path does not take (405, or 501 for
            # one HTTP does not define), or a path no route has (404): the
            # document promises the Error object (info.description).
            if (known and r.status in (405, 501)) or (not known and r.status in (404, 501)):
                schema = _resolve(document(), {"$ref": "#/components/schemas/Error"})
                try:
                    jsonschema.Draft4Validator(schema).validate(r.body)
                except jsonschema.ValidationError as e:
                    out.append(f"{method} {route} -> {r.status}: {e.message[:300]}")
                continue
            out.append(f"{method} {route} -> {r.status}: not in the document")
            continue
        if isinstance(r.body, dict) and isinstance(r.body.get("error"), str):
            if r.body["error"] not in doc_errors:
                out.append(f"{method} {route} -> {r.status}: error {r.body['error']} "
                           "is not in the Error enum")
        schema, why = _schema_for(method, route, r.status)
        if why is not None:
            out.append(f"{method} {route} -> {r.status}: {why}")
            continue
        if not schema:
            continue
        try:
            jsonschema.Draft4Validator(schema).validate(r.body)
        except jsonschema.ValidationError as e:
            where = "/".join(str(p) for p in e.absolute_path)
            out.append(f"{method} {route} -> {r.status}: at '{where}': {e.message[:300]}")
    return sorted(set(out))


def error_codes():
    return document()["components"]["schemas"]["Error"]["properties"]["error"]["enum"]
