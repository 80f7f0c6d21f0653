"""The README's shortest kit test is the example project's, word for word (one source of truth)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_readme_shows_a_test_of_the_example_project_as_it_is() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("\n## Testing your integration\n") :]
    shown = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert shown is not None, "the section shows no test"
    example = (ROOT / "examples" / "back-office-integration" / "tests" / "test_back_office.py").read_text()
    assert shown[1].strip() in example
