"""The documentation holds together: a small README front page, links that resolve, one design document in the
repository, and the README's test command equal to what CI runs."""
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
LINK = re.compile(r"(?<!\!)\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^\s*(```|~~~)")


def prose_lines(text: str):
    """The lines of a markdown text outside fenced code blocks, with inline code spans blanked."""
    inside = False
    for line in text.splitlines():
        if FENCE.match(line):
            inside = not inside
        elif not inside:
            yield re.sub(r"`[^`]*`", "``", line)


def heading_anchors(path: Path) -> set[str]:
    """GitHub's anchors for the headings of a markdown file: lower case, punctuation dropped, spaces to '-',
    '-1', '-2', ... appended to repeats."""
    anchors, seen, inside = set(), {}, False
    for line in path.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            inside = not inside
        m = None if inside else re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            slug = re.sub(r"[^\w\- ]", "", m[1].lower()).replace(" ", "-")
            n = seen.get(slug, 0)
            seen[slug] = n + 1
            anchors.add(slug if n == 0 else f"{slug}-{n}")
    return anchors


def relative_links(path: Path):
    for line in prose_lines(path.read_text(encoding="utf-8")):
        for target in LINK.findall(line):
            if re.match(r"[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):  # http:, https:, mailto:
                continue
            yield target


def test_readme_is_a_front_page():
    size = len(README.read_bytes())
    assert size <= 12 * 1024, f"README.md is {size} bytes; move sections to docs/ (limit 12 KB)"


@pytest.mark.parametrize("doc", [README, *DOCS], ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(doc):
    broken = []
    for target in relative_links(doc):
        file_part, _, anchor = target.partition("#")
        dest = (doc.parent / file_part).resolve() if file_part else doc
        if not dest.exists():
            broken.append(f"{target}: no file {dest.relative_to(ROOT) if dest.is_relative_to(ROOT) else dest}")
        elif anchor and dest.suffix == ".md" and anchor not in heading_anchors(dest):
            broken.append(f"{target}: no heading #{anchor} in {dest.relative_to(ROOT)}")
    assert not broken, f"{doc.relative_to(ROOT)}: broken links: {broken}"


def test_every_doc_is_linked_from_the_readme_or_the_index():
    linked = set()
    for doc in (README, ROOT / "docs" / "index.md"):
        linked |= {(doc.parent / t.partition("#")[0]).resolve() for t in relative_links(doc) if t.partition("#")[0]}
    missing = [str(d.relative_to(ROOT)) for d in DOCS if d.resolve() not in linked and d.name != "index.md"]
    assert not missing, f"docs not linked from README.md or docs/index.md: {missing}"


def repository_files():
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
        return [ROOT / p for p in out.decode().split("\0") if p]
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: walk the tree
        skip = {".git", "results", ".snakemake", "__pycache__"}
        return [p for p in ROOT.rglob("*") if p.is_file() and not (skip & set(p.relative_to(ROOT).parts))
                and not any(part.endswith(".egg-info") for part in p.parts)]


def test_design_document_is_the_one_in_docs():
    """Every mention of a design document names docs/design.md (files inside docs/ may link it relatively)."""
    name = "design" + ".md"
    bad = []
    for path in repository_files():
        if not path.is_file():  # listed by git but deleted in this working tree
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        for m in re.finditer(re.escape(name), text, re.IGNORECASE):
            before = text[max(0, m.start() - 5):m.start()]
            in_docs = path.parent == ROOT / "docs"
            if m[0] != name or not (before == "docs/" or in_docs):
                line = text.count("\n", 0, m.start()) + 1
                bad.append(f"{path.relative_to(ROOT)}:{line}")
    assert not bad, f"references to a design document other than docs/design.md: {bad}"
    assert (ROOT / "docs" / name).is_file()


def ci_commands() -> list[str]:
    """The command lines of .ci/run (comments, `set` and `cd` lines aside)."""
    lines = [ln.strip() for ln in (ROOT / ".ci" / "run").read_text().splitlines()]
    commands = [ln for ln in lines if ln and not ln.startswith(("#", "set ", "cd "))]
    assert commands, ".ci/run runs no command"
    return commands


def test_readme_test_command_is_what_ci_runs():
    readme_lines = {ln.strip() for ln in README.read_text(encoding="utf-8").splitlines()}
    missing = [c for c in ci_commands() if c not in readme_lines]
    assert not missing, f"README.md does not show what .ci/run runs: {missing}"
    assert "pip install -e . && snakemake --cores 2" in readme_lines


def test_config_reference_is_current():
    """docs/config.md's table is what the schema generates (docs/config.md says how to regenerate it)."""
    from diffunlearn.config import config_reference_markdown

    text = (ROOT / "docs" / "config.md").read_text(encoding="utf-8")
    m = re.search(r"<!-- BEGIN config-doc -->\n(.*?)<!-- END config-doc -->", text, re.DOTALL)
    assert m, "docs/config.md lost its <!-- BEGIN config-doc --> / <!-- END config-doc --> markers"
    assert m[1] == config_reference_markdown(), (
        "docs/config.md's key table is stale: regenerate it with the snippet under 'Regenerating the table' there")


def test_readme_dag_table_lists_every_rule():
    rules = set()
    for smk in [ROOT / "Snakefile", *(ROOT / "workflow" / "rules").glob("*.smk")]:
        rules |= set(re.findall(r"^rule (\w+):", smk.read_text(encoding="utf-8"), re.MULTILINE))
    listed = set(re.findall(r"^\| `(\w+)` \|", README.read_text(encoding="utf-8"), re.MULTILINE))
    missing = sorted(rules - {"all"} - listed)
    assert not missing, f"rules missing from README.md's DAG table: {missing}"
