"""Dataset-insight commands of `python -m tl_core` (registered by `tl_core.cli.main.build_parser`):

    label-issues DATA [--backbone NAME] [--image-size S] [--workspace DIR] [--json]
                 [--modality auto|image|text] [--weights W] [--folds K] [--seed N]

`label-issues` lists the examples whose given label looks wrong (`tl_core.insight.label_issues`), most likely first.
With `--json` the last stdout line is `{"checked": N, "issues": [{"path", "given_label", "suggested_label", "score"}]}`,
`score` being the out-of-fold probability of the given label (lower: more likely wrong), so issues come in
ascending score. Steps and notes (e.g. fewer folds for a small class) go to stderr. A class with too few examples
for K-fold exits with status 2 and a line saying how many each class needs.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from tl_core.cli.common import modality_and_backbone, open_store, print_json


def cmd_label_issues(args: argparse.Namespace) -> int:
    from tl_core.config import DataConfig, ModelConfig
    from tl_core.insight.label_issues import check_labels

    modality, backbone, weights = modality_and_backbone(args)
    check = check_labels(
        DataConfig(source=args.data, seed=args.seed, modality=modality),
        ModelConfig(backbone=backbone, weights=weights, image_size=args.image_size),
        open_store(args),
        **({"folds": args.folds} if args.folds else {}),
        seed=args.seed,
        progress=lambda text: print(f"label-issues: {text}", file=sys.stderr),
    )
    for note in check.notes:
        print(f"note: {note}", file=sys.stderr)
    print(f"label-issues: {check.checked} examples checked in {check.elapsed_s:.1f}s", file=sys.stderr)
    if args.json:
        print_json(check.to_dict())
    else:
        print(check.format_text())
    return 0


def add_insight_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    """Register `label-issues` on the CLI's sub-parsers (`common` brings --workspace and --json)."""
    issues = sub.add_parser(
        "label-issues", parents=[common], help="list examples whose label looks wrong, most likely first"
    )
    issues.add_argument("data", help="folder, archive or CSV, as for `train`")
    issues.add_argument(
        "--backbone",
        default=None,
        help="registry name (default: the data's offline backbone, efficientnet_lite0 or glove_6b_50d)",
    )
    issues.add_argument(
        "--image-size", type=int, default=None, help="images: pixels per side (default: the backbone's)"
    )
    issues.add_argument(
        "--modality", choices=("auto", "image", "text"), default="auto", help="default: detected from the files"
    )
    issues.add_argument("--weights", default=None, help="default: the backbone's offline weights (imagenet, glove)")
    issues.add_argument(
        "--folds", type=int, default=None, help="K of the K-fold probes (default 5; fewer when a class is smaller)"
    )
    issues.add_argument("--seed", type=int, default=42, help="the split and folds (as `train --seed`)")
    issues.set_defaults(handler=cmd_label_issues)
