"""`python -m tl_core explain RUN_ID FILE... [--class NAME] --out DIR [--alpha A] [--workspace DIR] [--json]`.

Writes one Grad-CAM overlay PNG per image into DIR (`<stem>.gradcam.png`) and prints, per image, the
predicted class, its probability, the class explained, the PNG's path and where the heatmap peaks. With
`--json` the last stdout line is

    {"results": [{"path", "predicted", "probability", "class_explained", "heatmap", "peak": [y, x]}]}

where `heatmap` is the PNG's path and `peak` the heatmap's maximum as fractions of height and width. A file
that cannot be read gets a line `error: FILE: ...` on stderr and `null` for predicted, heatmap and peak (with
its `problem`), the others are still explained, and the exit status is 2 (as `predict` does).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from tl_core.cli.common import EXIT_BAD_INPUT, open_store, print_json
from tl_core.config import ConfigError


def cmd_explain(args: argparse.Namespace) -> int:
    from tl_core.results.explain import DEFAULT_ALPHA, FINE_MAP_CELLS, explain_each_file
    from tl_core.results.predict import load_run_classifier

    images = [Path(p) for p in args.files]
    missing = [str(p) for p in images if not p.is_file()]
    if missing:
        raise ConfigError(
            f"Image file not found: {missing[0]}. Check the path (relative paths start from {Path.cwd()})."
        )
    classifier = load_run_classifier(open_store(args), args.run_id)
    alpha = DEFAULT_ALPHA if args.alpha is None else args.alpha
    per_file = explain_each_file(classifier, images, Path(args.out), class_name=args.class_name, alpha=alpha)
    rows: list[dict[str, Any]] = []
    for result in per_file:
        explanation = result.explanation
        if explanation is None:  # the others are still explained; this file's row says why not
            print(f"error: {result.path}: {result.problem}", file=sys.stderr)
            rows.append(
                {
                    "path": str(result.path),
                    "predicted": None,
                    "probability": None,
                    "class_explained": args.class_name,
                    "heatmap": None,
                    "peak": None,
                    "problem": result.problem,
                }
            )
            continue
        rows.append(
            {
                "path": str(result.path),
                "predicted": explanation.predicted,
                "probability": explanation.probability,
                "class_explained": explanation.class_explained,
                "heatmap": str(explanation.overlay_path),
                "peak": [round(explanation.peak[0], 4), round(explanation.peak[1], 4)],
            }
        )
        if not args.json:
            y, x = explanation.peak
            print(
                f"{result.path}: {explanation.predicted} {explanation.probability:.3f}, "
                f"explaining {explanation.class_explained}, peak at y={y:.2f} x={x:.2f} -> {explanation.overlay_path}"
            )
    coarse = next(
        (r.explanation for r in per_file if r.explanation and min(r.explanation.map_cells) < FINE_MAP_CELLS), None
    )
    if coarse is not None:
        height, width = coarse.map_cells
        print(
            f"note: this run's feature map is only {height}x{width} cells at {classifier.image_size} px, so its heatmaps "
            "are coarse and can mislead; a run at a larger image size (or with an earlier cut layer) explains better.",
            file=sys.stderr,
        )
    if args.json:
        print_json({"results": rows})
    return EXIT_BAD_INPUT if any(result.problem for result in per_file) else 0


def add_explain_command(sub: Any, common: argparse.ArgumentParser) -> None:
    """Register `explain` on the CLI's sub-parsers (`common` brings --workspace and --json)."""
    explain = sub.add_parser(
        "explain",
        parents=[common],
        help="Grad-CAM heatmaps: where in each image the evidence for a class lies",
        description=(
            "Explain an image run's predictions with Grad-CAM: for each image, a heatmap of where the evidence for "
            "a class lies (in the last spatial feature map the head sees), drawn over the image and saved as "
            "DIR/<name>.gradcam.png. Runs whose backbone pools inside (TF Hub feature vectors) cannot be explained."
        ),
    )
    explain.add_argument("run_id", metavar="RUN_ID", help="a finished image run (`python -m tl_core runs` lists them)")
    explain.add_argument("files", nargs="+", metavar="FILE", help="image files to explain")
    explain.add_argument(
        "--class",
        dest="class_name",
        default=None,
        metavar="NAME",
        help="explain this class in every image (default: each image's predicted class)",
    )
    explain.add_argument("--out", required=True, metavar="DIR", help="folder for the overlay PNGs (created if needed)")
    explain.add_argument(
        "--alpha",
        type=float,
        default=None,
        metavar="A",
        help="heatmap opacity, 0 (image only) to 1 (heatmap only); default 0.45",
    )
    explain.set_defaults(handler=cmd_explain)
