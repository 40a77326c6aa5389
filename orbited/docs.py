"""Regenerate the generated parts of docs/ from the code (``make docs``)."""

from __future__ import annotations

import re
from pathlib import Path

from orbited.config import global_keys_markdown, keys_markdown

BEGIN = "<!-- global-keys:begin (generated from orbited/config.py GLOBAL_KEYS by `make docs`) -->"
END = "<!-- global-keys:end -->"
STOMP_BEGIN = "<!-- stomp-keys:begin (generated from orbited/stomp/settings.py STOMP_KEYS by `make docs`) -->"
STOMP_END = "<!-- stomp-keys:end -->"
DOCS = Path(__file__).resolve().parents[1] / "docs"


def render(text: str) -> str:
    return _replace(text, BEGIN, END, global_keys_markdown())


def render_stomp(text: str) -> str:
    from orbited.stomp.settings import STOMP_KEYS

    return _replace(text, STOMP_BEGIN, STOMP_END, keys_markdown(STOMP_KEYS))


def _replace(text: str, begin: str, end: str, table: str) -> str:
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.DOTALL)
    return pattern.sub(lambda _: f"{begin}\n{table}{end}", text)


def main() -> None:
    for name, rendering in (("configuration.md", render), ("stomp.md", render_stomp)):
        path = DOCS / name
        path.write_text(rendering(path.read_text()))
        print(f"updated {path}")


if __name__ == "__main__":
    main()
