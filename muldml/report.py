"""The one writer of markdown reports (a run's evaluation, cross-validation, the demo, studies)."""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from muldml import io as atomic


class Report:
    """A markdown document built section by section, written atomically.

    >>> r = Report("title"); r.paragraph("text"); r.table(["a", "b"], [[1, 2]]); r.write(path)
    """

    def __init__(self, title: str) -> None:
        self.lines: list[str] = [f"# {title}", ""]

    def heading(self, text: str, level: int = 2) -> "Report":
        self.lines += ["#" * level + " " + text, ""]
        return self

    def paragraph(self, text: str) -> "Report":
        self.lines += [text, ""]
        return self

    def table(self, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> "Report":
        self.lines.append("| " + " | ".join(map(str, header)) + " |")
        self.lines.append("|" + "---|" * len(header))
        self.lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
        self.lines.append("")
        return self

    def image(self, alt: str, path: str) -> "Report":
        """A PNG beside the report, by relative path."""
        self.lines += [f"![{alt}]({path})", ""]
        return self

    def settings(self, values: dict[str, Any], title: str = "Configuration") -> "Report":
        """A heading and the settings as a JSON block."""
        self.heading(title)
        self.lines += ["```json", json.dumps(values, indent=1), "```", ""]
        return self

    def text(self) -> str:
        return "\n".join(self.lines)

    def write(self, path: str | Path) -> Path:
        return atomic.write_text(path, self.text())
