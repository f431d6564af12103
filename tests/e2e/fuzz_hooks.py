"""Schemathesis hooks of the fuzz run in ``test_api_fuzz.py`` (its CLI imports this module).

Ids in the path, ``?avatar_id=``, ``?token=`` and a body's ``avatar_id`` are either the
generated values or real ones of the fuzzing user, read from the environment, so that the
answers about existing objects get checked too, not only 404s. A DELETE gets ids of its own,
so that it cannot remove what the other operations are checked against.
"""

from __future__ import annotations

import json
import os
from typing import Any

import schemathesis
from hypothesis import strategies as st

KNOWN_ENV = "MUSETALK_FUZZ_KNOWN"


def _known(context: Any) -> dict[str, list[str]]:
    known = json.loads(os.environ.get(KNOWN_ENV, "{}"))
    operation = getattr(context, "operation", None)
    if operation is not None and operation.method.upper() == "DELETE":
        return {**known.get("ids", {}), **known.get("disposable", {})}
    return known.get("ids", {})


def _declares_query(context: Any, name: str) -> bool:
    operation = getattr(context, "operation", None)
    parameters = operation.definition.raw.get("parameters", []) if operation else []
    return any(p.get("in") == "query" and p.get("name") == name for p in parameters)


def with_known(values: Any, known: dict[str, list[str]]) -> st.SearchStrategy:
    """``values`` as generated (one time in three), or with each of its known keys set to
    one real value."""
    if not isinstance(values, dict):
        return st.just(values)
    choices = {key: known[key] for key in values if known.get(key)}
    if not choices:
        return st.just(values)
    real = st.fixed_dictionaries({key: st.sampled_from(ids) for key, ids in choices.items()})
    with_real = real.map(lambda picked: {**values, **picked})
    return st.one_of(st.just(values), with_real, with_real)


@schemathesis.hook
def flatmap_path_parameters(context: Any, path_parameters: Any) -> st.SearchStrategy:
    return with_known(path_parameters, _known(context))


@schemathesis.hook
def flatmap_query(context: Any, query: Any) -> st.SearchStrategy:
    # An optional ?token= is often left out; the players need one to get past their 401.
    if _declares_query(context, "token") and isinstance(query, dict) and "token" not in query:
        query = {**query, "token": ""}
    return with_known(query, _known(context))


@schemathesis.hook
def flatmap_body(context: Any, body: Any) -> st.SearchStrategy:
    return with_known(body, {"avatar_id": _known(context).get("avatar_id", [])})
