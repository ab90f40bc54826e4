"""README is a front door and docs/ holds a page per topic: every relative link in them resolves
to a file that exists, and every `#anchor` to a heading of its target (GitHub's slugs)."""

import collections
import os
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent
FILES = [ROOT / "README.md"] + sorted((ROOT / "docs").rglob("*.md"))
FENCE_RE = re.compile(r"^```.*?^```", re.S | re.M)
LINK_RE = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
README_MAX_LINES = 300


def _prose(text: str) -> str:
  """The text outside fenced code blocks and inline code spans."""
  return re.sub(r"`[^`]*`", "", FENCE_RE.sub("", text))


def slug(heading: str) -> str:
  """GitHub's anchor for a heading: markup dropped, lowercase, punctuation other than hyphens,
  underscores and spaces dropped, spaces to hyphens."""
  text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "")
  return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(path: pathlib.Path) -> set:
  """The anchors of a markdown file's headings, repeated ones numbered as GitHub does."""
  seen, found = collections.Counter(), set()
  for line in FENCE_RE.sub("", path.read_text(encoding="utf-8")).splitlines():
    m = re.match(r"#{1,6} +(.*?)\s*#*$", line)
    if m:
      base = slug(m.group(1))
      found.add(base if not seen[base] else f"{base}-{seen[base]}")
      seen[base] += 1
  return found


def broken_links(path: pathlib.Path, root: pathlib.Path = ROOT) -> list:
  """`file: target (why)` for each relative link of a markdown file that does not resolve."""
  bad = []
  for target in LINK_RE.findall(_prose(path.read_text(encoding="utf-8"))):
    if re.match(r"[a-z][a-z0-9+.-]*:", target, re.I):  # https:, mailto:
      continue
    file, _, anchor = target.partition("#")
    dest = (path.parent / file).resolve() if file else path
    where = f"{os.path.relpath(path, root)}: {target}"
    if not dest.exists():
      bad.append(f"{where} (no such file)")
    elif anchor and (dest.suffix != ".md" or anchor not in anchors(dest)):
      bad.append(f"{where} (no heading with that anchor in {os.path.relpath(dest, root)})")
  return bad


def test_every_relative_link_resolves():
  links = sum(len(LINK_RE.findall(_prose(p.read_text(encoding="utf-8")))) for p in FILES)
  assert links >= 30, links  # README's table of pages and the pages' links to each other
  bad = [line for path in FILES for line in broken_links(path)]
  assert not bad, "\n".join(bad)


def test_a_broken_link_or_anchor_is_found(tmp_path):
  """The check finds a missing file and a missing heading, here or in another page, and leaves
  what code spans and blocks hold alone."""
  page = tmp_path / "page.md"
  (tmp_path / "other.md").write_text("# Other page\n\n## Which kernel runs where (dispatch.py)\n")
  page.write_text("# A page\n\n[ok](other.md#which-kernel-runs-where-dispatchpy) [ok](#a-page)\n"
                  "[gone](missing.md) [no heading](other.md#whch-kernel) [self](#nowhere)\n"
                  "`[code](not-a-link.md)`\n```\n[block](not-a-link-either.md)\n```\n")
  bad = broken_links(page, root=tmp_path)
  assert [line.split(" (")[0] for line in bad] == [
      "page.md: missing.md", "page.md: other.md#whch-kernel", "page.md: #nowhere"], bad


def test_slugs_follow_github():
  assert slug("Quick start (fresh Linux machine, Python 3.11)") == (
      "quick-start-fresh-linux-machine-python-311")
  assert slug("On an accelerator (benchmarks/accelerator_check.sh)") == (
      "on-an-accelerator-benchmarksaccelerator_checksh")
  assert slug("Public datasets (`refinedweb fetch`)") == "public-datasets-refinedweb-fetch"
  assert slug("Multi-task learning: tasks, mixtures, your own data, metrics") == (
      "multi-task-learning-tasks-mixtures-your-own-data-metrics")


def test_readme_is_a_front_door():
  """README stays short; each topic page it lists exists and is linked from it."""
  text = (ROOT / "README.md").read_text(encoding="utf-8")
  assert len(text.splitlines()) <= README_MAX_LINES, len(text.splitlines())
  linked = {t.partition("#")[0] for t in LINK_RE.findall(_prose(text))}
  pages = {f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")}
  assert pages <= linked, sorted(pages - linked)
