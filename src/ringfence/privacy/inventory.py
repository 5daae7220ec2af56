"""The data inventory: every service's declarations together, checked and printed.

`ringfence.inventory` says how a service declares what it keeps; the composition root
(`runtime.data_inventory`) gathers the declarations of every component. `check` compares
them with the tables that exist, so that a table or a column nobody declared fails the test
suite, and `render` is `ringfence privacy inventory`.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from ringfence.inventory import Category, Declaration, NotPersonal, Stored


@dataclass(frozen=True)
class Inventory:
    declarations: tuple[Declaration, ...]

    @classmethod
    def of(cls, *groups: Iterable[Declaration]) -> Inventory:
        return cls(tuple(declaration for group in groups for declaration in group))

    @property
    def stored(self) -> list[Stored]:
        return [d for d in self.declarations if isinstance(d, Stored)]

    def categories(self) -> list[Category]:
        """Each category once, in the order first declared."""
        seen: dict[str, Category] = {}
        for stored in self.stored:
            seen.setdefault(stored.category.name, stored.category)
        return list(seen.values())

    def stores(self, category: Category) -> list[Stored]:
        return [s for s in self.stored if s.category.name == category.name]


def check(inventory: Inventory, tables: Mapping[str, Collection[str]]) -> list[str]:
    """What is wrong with the declarations, given each table's columns; empty when nothing.

    Every table is declared (personal data in some columns, or none at all); every column of
    a table with personal data belongs to a declaration; declarations name only tables and
    columns that exist; a category has one definition.
    """
    problems = []
    personal: dict[str, set[str]] = {}
    impersonal: set[str] = set()
    definitions: dict[str, Category] = {}
    for declaration in inventory.declarations:
        if isinstance(declaration, NotPersonal):
            impersonal.add(declaration.table)
            if declaration.table not in tables:
                problems.append(f"declared table {declaration.table} does not exist")
            continue
        category = declaration.category
        if definitions.setdefault(category.name, category) != category:
            problems.append(f"category {category.name!r} is defined twice, differently")
        if declaration.table is None:
            if not declaration.where:
                problems.append(f"{category.name}: memory store without a component named")
            continue
        if declaration.table not in tables:
            problems.append(f"declared table {declaration.table} does not exist")
            continue
        problems += [
            f"declared column {declaration.table}.{column} does not exist"
            for column in declaration.columns
            if column not in tables[declaration.table]
        ]
        personal.setdefault(declaration.table, set()).update(declaration.columns)
    for table, columns in sorted(tables.items()):
        if table in personal and table in impersonal:
            problems.append(f"table {table} is declared both personal and not personal")
        elif table in personal:
            undeclared = sorted(set(columns) - personal[table])
            problems += [f"column {table}.{column} is not declared" for column in undeclared]
        elif table not in impersonal:
            problems.append(f"table {table} is not declared by any service")
    return problems


def render(inventory: Inventory) -> str:
    lines = []
    for category in inventory.categories():
        lines.append(f"{category.name}: {category.holds}")
        lines.append(f"    purpose:   {category.purpose}")
        lines.append(f"    basis:     {category.basis.value}")
        lines.append(f"    retention: {category.retention}")
        if category.kept_after_closure_days:
            lines.append(f"    after the account closes: {category.kept_after_closure_days} days")
        for stored in inventory.stores(category):
            where = f"table {stored.table}" if stored.table else f"memory, {stored.where}"
            sealed = ", sealed with the subject's key" if stored.sealed else ""
            lines.append(f"    kept in:   {where} ({', '.join(stored.columns)}){sealed}")
    impersonal = [d for d in inventory.declarations if isinstance(d, NotPersonal)]
    if impersonal:
        lines.append("no personal data:")
        lines += [f"    table {d.table}: {d.reason}" for d in impersonal]
    return "\n".join(lines)
