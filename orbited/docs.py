"""Regenerate the generated parts of docs/ from the code (``make docs``)."""

from __future__ import annotations

import re
from pathlib import Path

from orbited.config import global_keys_markdown

BEGIN = "<!-- global-keys:begin (generated from orbited/config.py GLOBAL_KEYS by `make docs`) -->"
END = "<!-- global-keys:end -->"


def render(text: str) -> str:
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.DOTALL)
    return pattern.sub(lambda _: f"{BEGIN}\n{global_keys_markdown()}{END}", text)


def main() -> None:
    path = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"
    path.write_text(render(path.read_text()))
    print(f"updated {path}")


if __name__ == "__main__":
    main()
