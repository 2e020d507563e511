"""The two source trees of ``convbench ab``: given as folders, or checked out from a repository."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path


def check_tree(path: str | Path, label: str) -> Path:
    """``path`` as an absolute tree with a ``convbench`` package at its top.

    Raises
    ------
    FileNotFoundError
        No such folder, or it has no ``convbench/__init__.py``.
    """
    tree = Path(path).resolve()
    if not tree.is_dir():
        raise FileNotFoundError(f"{label} {path!r} is not a folder; give a source tree of "
                                "convbench (a checkout or git worktree), or --repo DIR with "
                                "two revisions")
    if not (tree / "convbench" / "__init__.py").is_file():
        raise FileNotFoundError(f"{label} {tree} has no convbench/__init__.py: a source tree "
                                "of convbench has the convbench package at its top")
    return tree


def commit_of(tree: Path) -> str | None:
    """The tree's commit (10 digits; ``+dirty`` with uncommitted changes), or None."""
    try:
        head = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short=10", "HEAD"],
                              capture_output=True, text=True, timeout=10, check=False)
        if head.returncode != 0 or not head.stdout.strip():
            return None
        dirty = subprocess.run(["git", "-C", str(tree), "status", "--porcelain",
                                "--untracked-files=no"],
                               capture_output=True, text=True, timeout=30, check=False)
        return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


@contextlib.contextmanager
def checked_out(repo: str | Path, revisions: list[str]) -> Iterator[list[Path]]:
    """Detached ``git worktree``s of ``revisions`` in ``repo``, removed afterwards.

    Raises
    ------
    ValueError
        ``repo`` is not a git repository or a revision does not exist (git's message).
    """
    repo = Path(repo).resolve()
    top = subprocess.run(["git", "-C", str(repo), "rev-parse", "--show-toplevel"],
                         capture_output=True, text=True, check=False)
    if top.returncode != 0:
        raise ValueError(f"--repo {repo} is not a git repository: {top.stderr.strip()}")
    where = Path(tempfile.mkdtemp(prefix="convbench-ab-"))
    made: list[Path] = []
    try:
        for i, rev in enumerate(revisions):
            path = where / f"{i}-{rev.replace('/', '_')}"
            out = subprocess.run(["git", "-C", str(repo), "worktree", "add", "--detach",
                                  str(path), rev], capture_output=True, text=True, check=False)
            if out.returncode != 0:
                raise ValueError(f"cannot check out revision {rev!r} of {repo}: "
                                 f"{out.stderr.strip()}")
            made.append(path)
        yield made
    finally:
        for path in made:
            subprocess.run(["git", "-C", str(repo), "worktree", "remove", "--force", str(path)],
                           capture_output=True, check=False)
        shutil.rmtree(where, ignore_errors=True)
