"""`rtctl diagnose`: what an operator looks at first (placeholder: status only)."""

from __future__ import annotations

from typing import Any


def diagnose(status: dict[str, Any], alerts: list[dict[str, Any]], since_ns: int) -> dict[str, Any]:
    return {"since_ns": since_ns, "status": status, "alerts": alerts, "items": []}
