"""The line grammar of ``orbited.cfg``: sections and entries with their line numbers.

Orbited 0.7 used a home-made line parser rather than ConfigParser, and its
files rely on that: ``[listen]`` lines are bare URLs, ``[access]`` lines are
``SOURCE -> DEST``, ``#`` starts a comment.  This module reproduces that
grammar and keeps the line number of everything so that every later
complaint can name ``FILE:LINE``.  It knows nothing of what a key means.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Sections whose lines are not ``key = value``.
BARE_LINE_SECTIONS = frozenset({"listen"})
ARROW_SECTIONS = frozenset({"access"})


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a config file; fatal ones stop start-up."""

    path: str
    line: int
    message: str
    fatal: bool = True

    def __str__(self) -> str:
        kind = "" if self.fatal else "warning: "
        return f"{self.path}:{self.line}: {kind}{self.message}"


@dataclass(frozen=True)
class Entry:
    key: str
    value: str
    line: int


@dataclass
class Section:
    name: str
    line: int
    entries: list[Entry] = field(default_factory=list)

    def get(self, key: str) -> Entry | None:
        """The last entry for ``key`` (later lines win, as in ConfigParser)."""
        for entry in reversed(self.entries):
            if entry.key == key:
                return entry
        return None

    def as_dict(self) -> dict[str, str]:
        return {entry.key: entry.value for entry in self.entries}


def strip_comment(line: str) -> str:
    """Drop a ``#`` comment.

    0.7 cut at any ``#``; we cut only at a ``#`` that starts the line or
    follows whitespace, which reads every 0.7 file the same way and lets a
    value such as a URL fragment keep its ``#``.
    """
    for index, char in enumerate(line):
        if char == "#" and (index == 0 or line[index - 1] in " \t"):
            return line[:index]
    return line


def parse_ini(text: str, path: str) -> tuple[dict[str, Section], list[Problem]]:
    """Split ``text`` into sections; never raises on bad input."""
    sections: dict[str, Section] = {}
    problems: list[Problem] = []
    current: Section | None = None
    # Lines end at LF (CRLF too), as ConfigParser's do: str.splitlines also splits at a form
    # feed, U+2028 or U+0085, which shifted every later FILE:LINE or read a comment's tail as
    # a line of its own.
    for number, raw in enumerate(text.removeprefix("\ufeff").split("\n"), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith(";"):
            continue
        line = strip_comment(stripped).strip()
        if not line:
            continue
        # '[::1] -> [::1]' (a Host on port 80, a backend on port 80) is an [access] rule: no
        # section name holds '->', and read as one it took every later rule into a section
        # that is ignored
        if line.startswith("[") and line.endswith("]") and "->" not in line:
            name = line[1:-1].strip()
            if not name:
                problems.append(Problem(path, number, "empty section name '[]'"))
                current = None
                continue
            if name in sections:
                problems.append(
                    Problem(
                        path,
                        number,
                        f"section [{name}] appears again (first at line "
                        f"{sections[name].line}); its entries are merged",
                        fatal=False,
                    )
                )
                current = sections[name]
            else:
                current = sections[name] = Section(name, number)
            continue
        if current is None:
            problems.append(
                Problem(path, number, f"'{line}' is outside any [section]")
            )
            continue
        if current.name in BARE_LINE_SECTIONS:
            current.entries.append(Entry(line, "", number))
        elif current.name in ARROW_SECTIONS:
            if "->" not in line:
                problems.append(
                    Problem(
                        path,
                        number,
                        f"[{current.name}] lines look like 'SOURCE -> HOST:PORT', "
                        f"not '{line}'",
                    )
                )
                continue
            source, _, dest = line.partition("->")
            current.entries.append(Entry(source.strip(), dest.strip(), number))
        else:
            # ConfigParser (and so logging.fileConfig) splits at the first '=' or ':'.
            delimiter = min((at for at in (line.find("="), line.find(":")) if at >= 0), default=-1)
            key, sep, value = (line[:delimiter], line[delimiter], line[delimiter + 1:]) if delimiter >= 0 \
                else (line, "", "")
            if not sep or not key.strip():
                problems.append(
                    Problem(
                        path,
                        number,
                        f"expected 'key = value' in [{current.name}], got '{line}'",
                    )
                )
                continue
            current.entries.append(Entry(key.strip(), value.strip(), number))
    return sections, problems
