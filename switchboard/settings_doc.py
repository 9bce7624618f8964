"""Markdown tables of every service's settings, for the README (``python -m switchboard.settings_doc``)."""

from __future__ import annotations

import json

from switchboard.services import SERVICES
from switchboard.settings import ServiceSettings


def env_name(field: str) -> str:
    return f"SWITCHBOARD_{field.upper()}"


def table(cls: type[ServiceSettings], skip: set[str]) -> str:
    rows = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for name, f in cls.model_fields.items():
        if name in skip:
            continue
        default = f.default
        # a dict or list setting is given as JSON in the environment, so its default is shown as JSON too
        shown = "(empty)" if default in ("", None) else json.dumps(default) if isinstance(default, dict | list) \
            else str(default)
        if hasattr(default, "get_secret_value"):
            shown = "(secret, unset)"
        rows.append(f"| `{env_name(name)}` | `{shown}` | {f.description or ''} |")
    return "\n".join(rows)


def render() -> str:
    base = set(ServiceSettings.model_fields)
    parts = ["### Every service", "", table(ServiceSettings, set())]
    for service in SERVICES:
        parts += ["", f"### `{service.name}`", "", table(service.settings_class(), base)]
    return "\n".join(parts)


if __name__ == "__main__":
    print(render())
