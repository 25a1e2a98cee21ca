"""The documentation: the MkDocs site builds strictly, and README.md stays a landing page.

``mkdocs.yml`` sets ``strict`` and its ``validation`` settings, so a broken link, a missing anchor or a
page left out of ``nav`` fails the build. README.md is read on GitHub and in the package metadata, where
MkDocs does not check it: its relative links are checked here.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
README_MAX_BYTES = 10 * 1024
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
"""Inline markdown links ``[text](target "title")`` (images excluded); the target is group 1."""


def _mkdocs_build(site_dir: Path, config: Path = ROOT / "mkdocs.yml") -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # material's end-of-life banner, not a build warning
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config),
                           "-d", str(site_dir)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_site_builds_strictly(tmp_path: Path):
    result = _mkdocs_build(tmp_path / "site")
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "site" / "index.html").is_file()
    assert (tmp_path / "site" / "measurements" / "index.html").is_file()


def test_page_missing_from_nav_fails_the_build(tmp_path: Path):
    """The strict settings are what make CI fail: a copy of the docs with one page not in nav must not build."""
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    (tmp_path / "docs" / "orphan.md").write_text("# Not in nav\n")
    config = tmp_path / "mkdocs.yml"
    config.write_text((ROOT / "mkdocs.yml").read_text())
    result = _mkdocs_build(tmp_path / "site", config)
    assert result.returncode != 0
    assert "orphan.md" in result.stdout + result.stderr


def test_readme_is_a_landing_page():
    size = README.stat().st_size
    assert size <= README_MAX_BYTES, f"README.md is {size} bytes; move detail into docs/ (at most {README_MAX_BYTES})"


def _relative_links(text: str) -> list[str]:
    targets = [m.group(1) for m in LINK.finditer(text)]
    return [t for t in targets if not re.match(r"^[a-z][a-z0-9+.-]*:", t) and not t.startswith("#")]


def test_readme_links_point_to_files_in_the_repository():
    links = _relative_links(README.read_text())
    assert any(link.startswith("docs/") for link in links), "README.md should link into docs/"
    for link in links:
        target = (ROOT / link.split("#", 1)[0]).resolve()
        assert target.is_relative_to(ROOT), f"README.md links outside the repository: {link}"
        assert target.exists(), f"README.md links to a missing file: {link}"


def test_link_pattern_finds_what_it_should():
    """The README check is only as good as its pattern: relative links found, URLs, anchors, images left."""
    text = ('[a](docs/x.md#y) [b](https://e.org/z) ![i](img.png) [c](#top) [d](faap/ "title") '
            '[e](mailto:a@b.c)')
    assert _relative_links(text) == ["docs/x.md#y", "faap/"]


def test_docs_stay_inside_the_repository():
    """Facts from outside the repository are copied into the docs, never linked to."""
    for path in [README, *(ROOT / "docs").glob("*.md")]:
        assert "../shared" not in path.read_text(), f"{path.name} refers to ../shared"


def test_the_example_spec_in_the_docs_is_valid():
    """docs/sweeps.md shows a spec a reader will copy: it must pass the same validation as a shipped one."""
    import yaml

    from ablations.spec import parse_spec

    text = (ROOT / "docs" / "sweeps.md").read_text()
    block = re.search(r"```yaml\n(study:.*?)```", text, re.S).group(1)
    spec = parse_spec(yaml.safe_load(block), "docs/sweeps.md")
    assert spec.study == "temperature" and spec.reference_seeds == [42, 43, 44, 45, 46]
