#!/usr/bin/env bash
# scripts/check-links.sh - every relative link in README.md and docs/*.md must
# name a file inside this repository (and, for a Markdown file, an anchor that
# exists in it). Links that leave the repository (../shared/…, absolute paths,
# file: URLs) are errors. Web links (https:, mailto:) are not fetched.
#
#   scripts/check-links.sh              # checks README.md and docs/*.md
#   scripts/check-links.sh FILE.md…     # checks the given files
#
# Exit 0 when every link resolves, 1 (listing each bad link) otherwise.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
if (($# == 0)); then
    set -- README.md docs/*.md
fi

exec python3 - "$ROOT" "$@" <<'PY'
import os
import re
import sys

root = os.path.realpath(sys.argv[1])
files = sys.argv[2:]

# [text](target "title") and ![alt](target); reference definitions [x]: target
INLINE = re.compile(r"!?\[(?:[^\]\\]|\\.)*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
REFDEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$")
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def strip_code(text):
    """Blank out fenced code blocks and inline code spans, keeping line numbers."""
    out, fence = [], None
    for line in text.split("\n"):
        marker = re.match(r"^\s{0,3}(`{3,}|~{3,})", line)
        if fence is None and marker:
            fence = marker.group(1)[0] * len(marker.group(1))
            out.append("")
            continue
        if fence is not None:
            if line.strip().startswith(fence):
                fence = None
            out.append("")
            continue
        out.append(re.sub(r"(`+)(?:(?!\1).)+?\1", lambda m: " " * len(m.group(0)), line))
    return out


def slug(heading):
    """GitHub's anchor for a heading."""
    text = re.sub(r"`|\*\*|__", "", heading.strip().lower())
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path):
    found, seen = set(), {}
    for line in strip_code(open(path, encoding="utf-8").read()):
        m = re.match(r"^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        base = slug(m.group(1))
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return found


errors = []
checked = 0
for name in files:
    path = os.path.join(root, name)
    if not os.path.isfile(path):
        errors.append(f"{name}: no such file")
        continue
    here = os.path.dirname(os.path.realpath(path))
    for lineno, line in enumerate(strip_code(open(path, encoding="utf-8").read()), 1):
        targets = INLINE.findall(line)
        ref = REFDEF.match(line)
        if ref:
            targets.append(ref.group(1))
        for target in targets:
            checked += 1
            where = f"{name}:{lineno}: ({target})"
            if not target:
                errors.append(f"{where} empty link")
                continue
            if target.lower().startswith("file:"):
                errors.append(f"{where} points outside the repository (file: URL)")
                continue
            if SCHEME.match(target) or target.startswith("//"):
                continue  # a web link: not checked here
            file_part, _, anchor = target.partition("#")
            if file_part.startswith("/"):
                errors.append(f"{where} is an absolute path; use a path relative to {name}")
                continue
            resolved = os.path.realpath(os.path.join(here, file_part)) if file_part else os.path.realpath(path)
            if resolved != root and not resolved.startswith(root + os.sep):
                errors.append(f"{where} points outside the repository")
                continue
            if not os.path.exists(resolved):
                errors.append(f"{where} names a file that does not exist")
                continue
            if anchor and resolved.endswith(".md") and os.path.isfile(resolved):
                if anchor.lower() not in anchors(resolved):
                    errors.append(f"{where} names an anchor #{anchor} that {os.path.relpath(resolved, root)} does not have")

for e in errors:
    print(f"broken link: {e}", file=sys.stderr)
print(f"check-links: {checked} links in {len(files)} files, {len(errors)} broken")
sys.exit(1 if errors else 0)
PY
