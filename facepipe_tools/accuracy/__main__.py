"""Recall, precision and false truncations of the face-recognition function on generated material and CSE546.

Exit status: 0 when every target is met, 1 when one is missed, 2 when the run cannot be made."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from facepipe_tools.accuracy import PARTS, cse546_folder, measure, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m facepipe_tools.accuracy", description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path,
                        help="make the material here and keep it (files already there are reused); "
                             "default: a temporary folder, removed at the end")  # fmt: skip
    parser.add_argument("--group", action="append", choices=PARTS,
                        help="only these case groups, or the CSE546 set (repeatable; default: all)")  # fmt: skip
    parser.add_argument("--cse546", type=Path, help="the CSE546 folder (default: $CSE546_DIR or ../shared/cse546)")
    parser.add_argument("--no-cse546", action="store_true", help="leave CSE546 out (classroom from the sample)")
    parser.add_argument("--json", nargs="?", const="-", metavar="FILE",
                        help="write the summary as JSON to FILE, or as one line to stdout "
                             "(the report then goes to stderr)")  # fmt: skip
    args = parser.parse_args(argv)
    out = sys.stderr if args.json == "-" else sys.stdout

    def say(line: str) -> None:
        print(line, file=out, flush=True)

    if args.no_cse546:
        cse546, skipped = None, "left out (--no-cse546)"
    else:
        cse546, skipped = cse546_folder(args.cse546)
        if cse546 is None and args.cse546 is not None:
            print(f"error: {skipped}", file=sys.stderr)
            return 2
    try:
        if args.folder is not None:
            summary = run(args.folder, cse546, skipped, set(args.group) if args.group else None, say)
        else:
            with tempfile.TemporaryDirectory(prefix="facepipe-accuracy-") as folder:
                summary = run(Path(folder), cse546, skipped, set(args.group) if args.group else None, say)
    except (OSError, RuntimeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    say("")
    for line in measure.render(summary):
        say(line)
    say(f"material {summary['seconds']['material']} s, run {summary['seconds']['run']} s")
    if args.json:
        if args.json == "-":
            print(json.dumps(summary))  # one line: the last line of the output
        else:
            Path(args.json).write_text(json.dumps(summary, indent=1) + "\n")
    return 0 if summary["all_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
