#!/usr/bin/env bash
# scripts/docker-context-check.sh - builds the release binary the way the
# Dockerfile's build stage would, from exactly the files the Docker build
# context holds, without a Docker engine.
#
# 1. The context: every file under the repository that .dockerignore lets
#    through (Docker's rules: patterns are matched from the context root with
#    Go's filepath.Match plus `**`, a matched directory excludes all below it,
#    `!pattern` re-includes, the last matching pattern wins).
# 2. The build stage: the `COPY` instructions of the Dockerfile's first stage
#    are replayed from that context into a scratch directory standing for its
#    WORKDIR.
# 3. `cargo build --release --locked` runs there, with CARGO_TARGET_DIR set
#    to the repository's own target/ so dependencies are reused.
#
# The scratch directory is outside target/ and its files get fresh times, so
# cargo compiles devicehub from the copy (not from a fingerprint of the
# repository's own build), and the repository's next build, seeing its own
# files, is not mistaken for fresh.
#
#   scripts/docker-context-check.sh          # check and build
#   LIST_ONLY=1 scripts/docker-context-check.sh   # print the context's files, build nothing
#
# Exit 0 when the build succeeds; otherwise the failing step's message.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STAGE=$(mktemp -d "${TMPDIR:-/tmp}/devicehub-docker-context.XXXXXX")
trap 'rm -rf "$STAGE"' EXIT

python3 - "$ROOT" "$STAGE" "${LIST_ONLY:-0}" <<'PY'
import os
import re
import shlex
import shutil
import sys

root, stage, list_only = sys.argv[1], sys.argv[2], sys.argv[3] == "1"


def fail(message):
    print(f"docker-context-check: {message}", file=sys.stderr)
    sys.exit(1)


# --- .dockerignore, as Docker reads it (moby/patternmatcher) -----------------
def read_patterns(path):
    patterns = []
    if not os.path.exists(path):
        return patterns
    for line in open(path, encoding="utf-8"):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        exclusion = line.startswith("!")
        if exclusion:
            line = line[1:].strip()
        line = os.path.normpath(line).replace(os.sep, "/").lstrip("/")
        if line in ("", "."):
            continue
        patterns.append((exclusion, line, glob_regex(line)))
    return patterns


def glob_regex(pattern):
    """Go filepath.Match syntax plus `**`, as one anchored regular expression."""
    out, i, n = ["^"], 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*":
            if pattern.startswith("**", i):
                i += 2
                if pattern.startswith("/", i):  # `**/`: any number of directories, even none
                    out.append("(?:.*/)?")
                    i += 1
                else:
                    out.append(".*")
                continue
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "\\" and i + 1 < n:
            i += 1
            out.append(re.escape(pattern[i]))
        elif c == "[":
            j = pattern.find("]", i + 1)
            if j < 0:
                fail(f".dockerignore: bad pattern {pattern!r} (unclosed [)")
            body = pattern[i + 1:j]
            if body.startswith("^") or body.startswith("!"):
                body = "^" + body[1:]
            out.append("[" + body.replace("\\", "\\\\") + "]")
            i = j
        else:
            out.append(re.escape(c))
        i += 1
    out.append("$")
    return re.compile("".join(out))


def excluded(path, patterns):
    """Whether `path` (relative, with /) is left out: the last pattern that
    matches it or one of its parent directories decides."""
    parents = []
    parts = path.split("/")
    for k in range(1, len(parts)):
        parents.append("/".join(parts[:k]))
    result = False
    for exclusion, _, regex in patterns:
        hit = regex.match(path) or any(regex.match(p) for p in parents)
        if hit:
            result = not exclusion
    return result


patterns = read_patterns(os.path.join(root, ".dockerignore"))
has_exceptions = any(e for e, _, _ in patterns)
context = []
for dirpath, dirnames, filenames in os.walk(root):
    rel_dir = os.path.relpath(dirpath, root)
    rel_dir = "" if rel_dir == "." else rel_dir.replace(os.sep, "/")
    keep = []
    for d in sorted(dirnames):
        rel = f"{rel_dir}/{d}" if rel_dir else d
        # A directory left out is not walked, unless an exception could
        # bring something below it back (as Docker does).
        if excluded(rel, patterns) and not (
            has_exceptions and any(e and p.startswith(rel + "/") for e, p, _ in patterns)
        ):
            continue
        if os.path.islink(os.path.join(dirpath, d)):
            if not excluded(rel, patterns):
                context.append(rel)
            continue
        keep.append(d)
    dirnames[:] = keep
    for f in sorted(filenames):
        rel = f"{rel_dir}/{f}" if rel_dir else f
        if not excluded(rel, patterns):
            context.append(rel)

if list_only:
    print("\n".join(context))
    sys.exit(0)

# --- the Dockerfile's build stage: WORKDIR and COPY --------------------------
lines, current = [], ""
for raw in open(os.path.join(root, "Dockerfile"), encoding="utf-8"):
    line = raw.rstrip("\n")
    if not current and (not line.strip() or line.lstrip().startswith("#")):
        continue
    if line.endswith("\\"):
        current += line[:-1] + " "
        continue
    lines.append(current + line)
    current = ""

workdir, copies, stages = "/", [], 0
for line in lines:
    words = shlex.split(line)
    op = words[0].upper()
    if op == "FROM":
        stages += 1
        if stages > 1:
            break
    elif op == "WORKDIR":
        workdir = os.path.normpath(os.path.join(workdir, words[1]))
    elif op in ("COPY", "ADD"):
        args = [w for w in words[1:] if not w.startswith("--")]
        if any(w.startswith("--from") for w in words[1:]):
            continue
        if len(args) < 2:
            fail(f"Dockerfile: cannot read {line!r}")
        copies.append((args[:-1], args[-1], workdir))
if not copies:
    fail("Dockerfile: the build stage copies nothing from the context")

shutil.rmtree(stage, ignore_errors=True)
os.makedirs(stage)
context_set = set(context)


def stage_path(dest, wd):
    absolute = os.path.normpath(os.path.join(wd, dest))
    return os.path.join(stage, absolute.lstrip("/"))


for sources, dest, wd in copies:
    for src in sources:
        src = os.path.normpath(src).lstrip("/")
        if any(ch in src for ch in "*?["):
            fail(f"Dockerfile: COPY with a wildcard ({src}) is not emulated")
        if src == ".":
            chosen = [(p, p) for p in context]
        elif src in context_set:
            target = dest.endswith("/") or len(sources) > 1
            name = os.path.basename(src) if target else ""
            chosen = [(src, name)]
        else:
            chosen = [(p, p[len(src) + 1:]) for p in context if p.startswith(src + "/")]
            if not chosen:
                fail(f"Dockerfile: COPY {src}: not in the build context (left out by .dockerignore, or missing)")
        for origin, rel in chosen:
            out = os.path.join(stage_path(dest, wd), rel) if rel else stage_path(dest, wd)
            os.makedirs(os.path.dirname(out), exist_ok=True)
            # Contents and mode, but a fresh modification time (see above).
            shutil.copy(os.path.join(root, origin), out, follow_symlinks=False)

build_dir = stage_path(".", workdir)
print(f"docker-context-check: {len(context)} files in the context, build stage in {build_dir}")
with open(os.path.join(stage, ".build-dir"), "w") as f:
    f.write(build_dir)
PY

[[ ${LIST_ONLY:-0} == 1 ]] && exit 0
BUILD_DIR=$(cat "$STAGE/.build-dir")
cd "$BUILD_DIR"
CARGO_TARGET_DIR=$ROOT/target cargo build --release --locked
echo "docker-context-check: the release binary builds from the Docker context"
