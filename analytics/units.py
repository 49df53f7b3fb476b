"""Administrative units as data: each registry unit code maps up to the configured aggregation level.

Since the 2025 reform Vietnam has provinces and communes only; before it, districts too. The
level (province, district, commune) is configuration, the hierarchy comes from ``admin_units``.
"""

from __future__ import annotations

from dataclasses import dataclass

LEVELS = ("province", "district", "commune")


@dataclass(frozen=True)
class AdminUnit:
    code: str
    name: str
    level: str
    parent_code: str


class UnitHierarchy:
    def __init__(self, units: list[AdminUnit]) -> None:
        self.units = {u.code: u for u in units}

    @classmethod
    def from_rows(cls, rows: list[tuple[str, str, str, str]]) -> UnitHierarchy:
        return cls([AdminUnit(*row) for row in rows])

    def ancestor(self, code: str, level: str) -> str:
        """The unit at ``level`` that contains ``code`` ('' when the code is unknown or above that level)."""
        if level not in LEVELS:
            raise ValueError(f"aggregation level must be one of {', '.join(LEVELS)}, not {level!r}")
        seen: set[str] = set()
        current = self.units.get(code)
        while current is not None and current.code not in seen:
            if current.level == level:
                return current.code
            seen.add(current.code)
            current = self.units.get(current.parent_code)
        return ""

    def mapping(self, level: str) -> tuple[list[str], list[str]]:
        """(codes, ancestors) for ClickHouse's ``transform``: every known code mapped to its ancestor."""
        pairs = [(code, self.ancestor(code, level)) for code in sorted(self.units)]
        return [c for c, _ in pairs], [a for _, a in pairs]

    def name(self, code: str) -> str:
        unit = self.units.get(code)
        return unit.name if unit else code
