"""Count distinct canonical NB201 cells and check them against the benchmark's isomorphism keys.

Usage: python benchmarks/nb201_canonical.py --truth PATH/TO/nb201.csv

Prints the number of canonical forms over every cell in the file (NAS-Bench-201 reports 6,466),
how many canonical groups coincide exactly with a group of the file's ``isomorphism_key`` column,
and, for context, the class counts under two stricter readings of "same function".
"""

from __future__ import annotations

import itertools
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from graphs.cli import UsageParser  # noqa: E402 - one-line usage errors, exit 2
from tools.spaces.nb201 import EDGES, OP_NAMES, NB201Space, parse  # noqa: E402
from tools.truth import TruthError, load_truth  # noqa: E402


def strict_key(ops: tuple[str, ...], flatten: bool) -> str:
    """Return a key like NATS-Bench's but with zero terms dropped from every sum.

    Without ``flatten`` this is NATS-Bench's string with ``#`` terms removed (the 5,390 reading);
    with it, a sum passed through ``skip_connect`` merges into the receiving sum as a multiset,
    so only the function's expression tree matters.
    """
    nodes: list[tuple[str, ...]] = [("0",)]
    for j in (1, 2, 3):
        terms: list[str] = []
        for op, (to, i) in zip(ops, EDGES, strict=True):
            if to != j or op == "none" or not nodes[i]:
                continue
            source = "+".join(nodes[i])
            if op != "skip_connect":
                terms.append(f"({source})@{op}")
            elif flatten:
                terms.extend(nodes[i])
            else:
                terms.append(source)
        nodes.append(tuple(sorted(terms)))
    return "+".join(nodes[3])


def main(argv: list[str] | None = None) -> int:
    """Run the count and the agreement check; return the exit status."""
    parser = UsageParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--truth", required=True, help="NB201 CSV with arch_str and isomorphism_key"
    )
    args = parser.parse_args(argv)
    try:
        truth = load_truth(args.truth)
    except TruthError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    space = NB201Space()
    start = time.perf_counter()
    canonical = {arch: space.canonical(arch) for arch in truth.archs()}
    elapsed = time.perf_counter() - start
    ours: dict[str, set[str]] = defaultdict(set)
    theirs: dict[str, set[str]] = defaultdict(set)
    for arch, canon in canonical.items():
        ours[canon].add(arch)
        key = truth.isomorphism_key(arch)
        if key is not None:
            theirs[key].add(arch)
    print(f"cells in {args.truth}: {len(canonical)}")
    print(
        f"distinct canonical forms: {len(ours)} (NAS-Bench-201 reports 6466); "
        f"canonical() over all cells took {elapsed:.2f} s"
    )
    not_valid = sum(space.validate(c) != c for c in ours)
    print(f"representatives that are not valid standard strings: {not_valid}")
    if theirs:
        their_groups = {frozenset(g) for g in theirs.values()}
        matching = sum(frozenset(g) in their_groups for g in ours.values())
        print(
            f"isomorphism_key groups in file: {len(theirs)}; canonical groups identical to one: "
            f"{matching}/{len(ours)}"
        )
    else:
        print("file has no isomorphism_key column; agreement not checked")
    every = list(itertools.product(OP_NAMES, repeat=len(EDGES)))
    print("for context, over all 15625 cells:")
    dropped = len({strict_key(o, False) for o in every})
    print(f"  zero terms dropped from sums (NATS string otherwise): {dropped} classes")
    print(f"  ... and skip-fed sums flattened: {len({strict_key(o, True) for o in every})} classes")
    missing = len(every) - len({parse(a) for a in canonical})
    if missing:
        print(f"note: the file lacks {missing} of the 15625 cells")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
