"""`python -m tl_core compare RUN_A RUN_B [--workspace DIR] [--json]`: is one run really better than the other?

Prints both test accuracies with their 95% Wilson intervals and, for runs tested on the same examples, McNemar's
exact test and a plain verdict. With `--json` the last stdout line is `{"runs": [{"run_id", "test_accuracy",
"interval": [low, high], ...}, ...], "same_test_split": bool, "p_value", "verdict"}`. Runs tested on different
data are refused: the JSON (when asked for) still comes, the verdict says why, and the exit status is 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

EXIT_NOT_COMPARABLE = 2


def cmd_compare(args: argparse.Namespace) -> int:
    from tl_core.runs.paired import accuracy_label, compare_pair
    from tl_core.runs.store import RunStore

    comparison = compare_pair(RunStore(args.workspace), args.run_a, args.run_b)
    if not args.json:
        for run in comparison.runs:
            print(f"{run.run_id}  {run.name}: test accuracy {accuracy_label(run)}")
        if comparison.p_value is not None:
            print(
                f"paired on {comparison.runs[0].count} test examples: {comparison.only_first_right} right only in "
                f"{comparison.runs[0].run_id}, {comparison.only_second_right} right only in {comparison.runs[1].run_id}"
            )
        print(comparison.verdict)
    else:
        print(json.dumps(comparison.to_dict()))
    if not comparison.comparable:
        print(f"error: {comparison.verdict}", file=sys.stderr)
        return EXIT_NOT_COMPARABLE
    return 0


def add_compare_command(sub: Any, common: argparse.ArgumentParser) -> None:
    """Register `compare` on the CLI's sub-parsers (`common` brings --workspace and --json)."""
    compare = sub.add_parser(
        "compare",
        parents=[common],
        help="two runs' test accuracy with 95%% intervals and a paired test (McNemar) on their shared test split",
    )
    compare.add_argument("run_a", metavar="RUN_A")
    compare.add_argument("run_b", metavar="RUN_B")
    compare.set_defaults(handler=cmd_compare)
