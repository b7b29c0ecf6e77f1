"""mkdocs hooks (mkdocs.yml): the README, the project's guide, becomes the site's front page.

Its links point into docs/ from the repository's root (``docs/fitting.md``); on the site the page lives in
docs/ itself, so they lose that prefix. The README stays the one copy of the guide.
"""

import re
from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parent.parent


def front_page(readme: str) -> str:
    """The README's text with links into docs/ made relative to docs/."""
    return re.sub(r"\]\(docs/", "](", readme)


def on_files(files, config):
    files.append(File.generated(config, "index.md", content=front_page((ROOT / "README.md").read_text())))
    return files
