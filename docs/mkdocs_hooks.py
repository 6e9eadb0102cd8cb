"""MkDocs hook: links from a page to files outside ``docs/`` point at the repository.

The pages link to ``../examples/profile.toml`` or ``../CHANGELOG.md`` with plain relative
links, which work when the Markdown is read on GitHub. The built site does not contain those
files, so on the site they become links to the same file in the repository (``repo_url``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

LINK = re.compile(r"\]\((?P<target>[^)\s#]+)(?P<anchor>#[^)\s]*)?\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
BRANCH = "main"


def repository_link(target: str, page_dir: Path, docs_dir: Path, repo_url: str) -> str | None:
    """The repository URL for a relative link that leaves ``docs/``, else ``None``."""
    if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("/"):
        return None
    resolved = (page_dir / target).resolve()
    root = docs_dir.parent.resolve()
    if resolved.is_relative_to(docs_dir.resolve()) or not resolved.is_relative_to(root):
        return None
    if not resolved.exists():
        return None
    kind = "tree" if resolved.is_dir() else "blob"
    return f"{repo_url.rstrip('/')}/{kind}/{BRANCH}/{resolved.relative_to(root).as_posix()}"


def _rewrite(text: str, page_dir: Path, docs_dir: Path, repo_url: str) -> str:
    def replace(match: re.Match[str]) -> str:
        url = repository_link(match["target"], page_dir, docs_dir, repo_url)
        return match[0] if url is None else f"]({url}{match['anchor'] or ''})"

    return LINK.sub(replace, text)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """Rewrite links outside code fences; fenced examples stay exactly as written."""
    repo_url = config.get("repo_url")
    if not repo_url:
        return markdown
    page_dir = Path(page.file.abs_src_path).parent
    docs_dir = Path(config["docs_dir"])
    pieces: list[str] = []
    position = 0
    for fence in FENCE.finditer(markdown):
        pieces.append(_rewrite(markdown[position : fence.start()], page_dir, docs_dir, repo_url))
        pieces.append(fence.group(0))
        position = fence.end()
    pieces.append(_rewrite(markdown[position:], page_dir, docs_dir, repo_url))
    return "".join(pieces)
