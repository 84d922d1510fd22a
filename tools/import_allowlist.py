"""An import-linter contract type that names what a package MAY import (``type = "allowlist"``).

import-linter's own contracts forbid named modules; "the training core imports only torch,
torchvision, numpy, safetensors and the standard library" is an allow list, and a new dependency
must break it without anyone adding that dependency to a deny list first. Registered in
``pyproject.toml`` (``contract_types``); needs ``include_external_packages = true`` so external
imports are in the graph.

Options: ``source_modules`` (packages checked, descendants included), ``allowed_modules``
(modules, with their descendants, that sources may import directly), ``allow_stdlib`` (default
true). Imports among the sources themselves are always allowed.
"""

from __future__ import annotations

import sys

from grimp import ImportGraph
from importlinter import Contract, ContractCheck, fields, output


class AllowlistContract(Contract):
    type_name = "allowlist"

    source_modules = fields.ListField(subfield=fields.ModuleField())
    allowed_modules = fields.ListField(subfield=fields.ModuleField())
    allow_stdlib = fields.BooleanField(required=False, default=True)

    def check(self, graph: ImportGraph, verbose: bool) -> ContractCheck:
        sources = [module.name for module in self.source_modules]  # type: ignore[attr-defined]
        permitted = sources + [module.name for module in self.allowed_modules]  # type: ignore[attr-defined]
        violations = []
        for source in sources:
            for importer in sorted({source} | graph.find_descendants(source)):
                for imported in sorted(graph.find_modules_directly_imported_by(importer)):
                    if not self._allowed(imported, permitted):
                        details = graph.get_import_details(importer=importer, imported=imported)
                        lines = sorted({detail["line_number"] for detail in details})
                        violations.append({"importer": importer, "imported": imported, "lines": lines})
        return ContractCheck(kept=not violations, metadata={"violations": violations})

    def _allowed(self, imported: str, permitted: list[str]) -> bool:
        if self.allow_stdlib and imported.split(".")[0] in sys.stdlib_module_names:
            return True
        return any(imported == name or imported.startswith(name + ".") for name in permitted)

    def render_broken_contract(self, check: ContractCheck) -> None:
        for violation in check.metadata["violations"]:
            lines = ", ".join(f"l.{line}" for line in violation["lines"])
            output.print_error(f"{violation['importer']} -> {violation['imported']} ({lines})", bold=False)
        output.new_line()
