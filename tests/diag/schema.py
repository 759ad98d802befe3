"""A small checker for the JSON documents the diagnostics commands print.

The schemas mirror docs/diagnostics.md: a dict maps each required key to a type, a nested
schema dict, or a one-element list (a list of that). ``None`` in a tuple of types allows
null.
"""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]

TRANSCRIPT_LINE: Schema = {"t": (float, int), "dir": str, "line": str}
CERT: Schema = {"subject": str, "issuer": str, "sans": [str], "not_before": str,
                "not_after": str, "days_left": int, "self_signed": bool}
TLS: Schema = {"version": str, "cipher": str, "bits": int, "certificate": (CERT, None),
               "verified": bool, "verify_error": str}
FINDING: Schema = {"status": str, "check": str, "message": str, "fix": str}

SEND: Schema = {
    "command": str, "server": str, "port": int, "ok": bool, "exit_code": int,
    "error": (str, None), "tls": (TLS, None), "extensions": dict,
    "steps": [{"step": str, "seconds": (float, int), "code": (int, None)}],
    "recipients": [{"address": str, "code": int, "reply": str}],
    "message_reply": ({"code": int, "text": str}, None),
    "transcript": [TRANSCRIPT_LINE],
}
SINK_MESSAGE: Schema = {"type": str, "number": int, "sender": str, "recipients": [str],
                        "size": int, "tls": str, "auth": str, "reply": int, "saved": str,
                        "client": str}
SINK_SUMMARY: Schema = {"type": str, "connections": int, "messages": int, "accepted": int,
                        "refused": int, "recipients": int, "octets": int,
                        "seconds": (float, int), "messages_per_second": (float, int)}
SASL: Schema = {"command": str, "mechanism": str}
PROBE_PORT: Schema = {
    "port": int, "state": str, "protocol": (str, None), "tls_mode": (str, None),
    "banner": (str, None), "capabilities_before_tls": [str], "capabilities_after_tls": [str],
    "auth_before_tls": [str], "auth_after_tls": [str], "tls": (TLS, None),
    "login": (dict, None), "error": (str, None), "findings": [FINDING],
}
PROBE: Schema = {"command": str, "host": str, "ports": [PROBE_PORT], "findings": [FINDING],
                 "exit_code": int}
CHECK: Schema = {"command": str, "domain": str, "findings": [FINDING], "exit_code": int,
                 "error": (str, None)}
DOCTOR: Schema = {"command": str, "findings": [FINDING], "exit_code": int}


def _type_ok(value: Any, spec: Any, path: str) -> list[str]:
    if spec is None:
        return [] if value is None else [f"{path}: expected null, got {value!r}"]
    if isinstance(spec, tuple):
        errors: list[list[str]] = [_type_ok(value, s, path) for s in spec]
        if any(not e for e in errors):
            return []
        return [f"{path}: {value!r} matches none of the allowed types"]
    if isinstance(spec, dict):
        return validate(value, spec, path)
    if isinstance(spec, list):
        if not isinstance(value, list):
            return [f"{path}: expected a list"]
        out: list[str] = []
        for i, item in enumerate(value):
            out += _type_ok(item, spec[0], f"{path}[{i}]")
        return out
    if spec is int and isinstance(value, bool):
        return [f"{path}: expected int, got bool"]
    if spec is float and isinstance(value, bool):
        return [f"{path}: expected float, got bool"]
    if not isinstance(value, spec):
        return [f"{path}: expected {spec.__name__}, got {type(value).__name__}"]
    return []


def validate(doc: Any, schema: Schema, path: str = "$") -> list[str]:
    """Problems with ``doc`` (empty when it matches)."""
    if not isinstance(doc, dict):
        return [f"{path}: expected an object"]
    problems = []
    for key, spec in schema.items():
        if key not in doc:
            problems.append(f"{path}.{key}: missing")
            continue
        problems += _type_ok(doc[key], spec, f"{path}.{key}")
    return problems


def assert_valid(doc: Any, schema: Schema) -> None:
    problems = validate(doc, schema)
    assert not problems, problems
