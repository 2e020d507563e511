"""A HEAD with a real, known slowdown for ``convbench ab``: im2col's GEMMs do an eighth twice.

``python benchmarks/ab_slowdown.py --commit REV DEST`` makes ``DEST`` a
detached git worktree of ``REV`` (of this repository, or ``--repo``) and
patches its ``kernels/cpu/im2col.py``: every ``np.matmul`` of the kernel is
followed by the same GEMM again over the first eighth of its output rows
(:data:`HELPER`). The result stays within rounding of the plain one -- those
rows are computed twice, the second time by a GEMM of fewer rows, which BLAS
may block differently -- and each call does 12.5% more GEMM work, about 12%
more work in all where the GEMM dominates the lowering. ``--aa DEST2`` also makes a
plain worktree of the same commit, for an A/A comparison.

The patch is left uncommitted: the worktree's commit then reads ``+dirty``
in ``convbench ab``'s records.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

TARGET = Path("kernels/cpu/im2col.py")
MARKER = "# convbench ab planted slowdown"
HELPER = f'''

{MARKER}: an eighth of every GEMM's output rows computed twice.
def _matmul_an_eighth_twice(a, b, out=None):
    """``np.matmul(a, b, out=out)``, then its first eighth of rows again (same values)."""
    out = np.matmul(a, b, out=out)
    rows = max(1, a.shape[-2] // 8)
    np.matmul(a[..., :rows, :], b, out=out[..., :rows, :])
    return out
'''


def patch_im2col(text: str) -> str:
    """``text`` (im2col.py) with each ``np.matmul(`` call made to do an eighth twice.

    Raises
    ------
    ValueError
        The file has no ``np.matmul(`` call (not an im2col this patch knows), or
        it is patched already.
    """
    if MARKER in text:
        raise ValueError("im2col.py is patched already")
    patched, calls = re.subn(r"\bnp\.matmul\(", "_matmul_an_eighth_twice(", text)
    if calls == 0:
        raise ValueError("im2col.py has no np.matmul( call to slow down")
    # At the end of the module: the calls look it up when they run, after the import.
    return patched.rstrip("\n") + "\n" + HELPER


def worktree(repo: Path, commit: str, dest: Path) -> None:
    out = subprocess.run(["git", "-C", str(repo), "worktree", "add", "--detach", str(dest),
                          commit], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"git worktree add {dest} {commit} failed: {out.stderr.strip()}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dest", type=Path, help="the slowed-down worktree to create")
    parser.add_argument("--commit", default="HEAD", help="revision to check out (default HEAD)")
    parser.add_argument("--repo", type=Path, default=Path(__file__).resolve().parents[1])
    parser.add_argument("--aa", type=Path, metavar="DEST2",
                        help="also a plain worktree of the same commit")
    args = parser.parse_args(argv)
    worktree(args.repo, args.commit, args.dest)
    path = args.dest / TARGET
    path.write_text(patch_im2col(path.read_text()))
    print(f"{args.dest}: {args.commit} with im2col's GEMMs doing an eighth twice")
    if args.aa:
        worktree(args.repo, args.commit, args.aa)
        print(f"{args.aa}: {args.commit} as it is")
    return 0


if __name__ == "__main__":
    sys.exit(main())
