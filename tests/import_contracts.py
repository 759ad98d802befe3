"""A contract type for import-linter (``.importlinter``): the modules of ``containers``
import only the standard library and the ``allowed`` packages of the project.

``forbidden`` contracts name what may not be imported; this one names what may, so a new
dependency (a third-party package, another part of Pochta) breaks it without anybody
having to list it first. A container that does not exist (yet) keeps the contract.
"""

from __future__ import annotations

import sys

import grimp
from importlinter import Contract, ContractCheck, fields, output


class StdlibOnlyContract(Contract):
    containers = fields.ListField(subfield=fields.StringField())
    allowed = fields.ListField(subfield=fields.StringField(), required=False)
    ignore_imports = fields.ListField(subfield=fields.StringField(), required=False)

    def check(self, graph: grimp.ImportGraph, verbose: bool) -> ContractCheck:
        # the parsed options are instance attributes (the class ones are the fields)
        options = vars(self)
        containers = _strings(options.get("containers"))
        allowed = _strings(options.get("allowed"))
        ignored = {tuple(part.strip() for part in line.split("->"))
                   for line in _strings(options.get("ignore_imports"))}
        bad: list[tuple[str, str, int]] = []
        for container in containers:
            if container not in graph.modules:
                continue
            for module in sorted({container, *graph.find_descendants(container)}):
                for imported in sorted(graph.find_modules_directly_imported_by(module)):
                    if _permitted(imported, allowed) or (module, imported) in ignored:
                        continue
                    details = graph.get_import_details(importer=module, imported=imported)
                    line = details[0]["line_number"] if details else 0
                    bad.append((module, imported, line))
        return ContractCheck(kept=not bad, metadata={"bad": bad})

    def render_broken_contract(self, check: ContractCheck) -> None:
        for module, imported, line in check.metadata["bad"]:
            output.print_error(f"{module} imports {imported} (line {line})", bold=False)
            output.new_line()


def _strings(value: object) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list | set | tuple) else []


def _permitted(imported: str, allowed: list[str]) -> bool:
    if imported.split(".")[0] in sys.stdlib_module_names:
        return True
    return any(imported == a or imported.startswith(a + ".") for a in allowed)
