"""The OpenAPI 3 document served at /api/openapi.json.

The routes of this package are described in `receiver/openapi.json`. A
feature blueprint that adds API routes describes them next to its own code
with `add_paths(app, {...})`, so the document keeps matching the routes.
"""

from __future__ import annotations

import copy
import json
from functools import cache
from importlib import resources
from typing import Any

from flask import Flask

import receiver

EXTENSION = "receiver_openapi"


@cache
def _base() -> dict[str, Any]:
    text = resources.files(receiver).joinpath("openapi.json").read_text(encoding="utf-8")
    doc: dict[str, Any] = json.loads(text)
    return doc


def add_paths(app: Flask, paths: dict[str, Any], schemas: dict[str, Any] | None = None) -> None:
    """Describe more routes (OpenAPI path items, and component schemas they refer to)."""
    extra = app.extensions.setdefault(EXTENSION, {"paths": {}, "schemas": {}})
    for path, item in paths.items():
        extra["paths"].setdefault(path, {}).update(copy.deepcopy(item))
    extra["schemas"].update(copy.deepcopy(schemas or {}))


def document(app: Flask) -> dict[str, Any]:
    """The whole document: the packaged description plus what blueprints added."""
    doc = copy.deepcopy(_base())
    extra = app.extensions.get(EXTENSION)
    if extra:
        for path, item in extra["paths"].items():
            doc["paths"].setdefault(path, {}).update(copy.deepcopy(item))
        doc["components"]["schemas"].update(copy.deepcopy(extra["schemas"]))
    doc["info"]["version"] = receiver.__version__
    return doc
