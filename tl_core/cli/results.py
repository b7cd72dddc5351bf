"""Commands of `python -m tl_core` that use a finished run (registered by `tl_core.cli.main.build_parser`):

    evaluate RUN_ID [--json]                          the run's saved evaluation
    predict RUN_ID FILE... | RUN_ID --text TEXT | --pretrained NAME IMAGE...   top-k labels [--top K] [--json]
    export RUN_ID --out DIR                           write the export bundle, one path per line

The flags, output lines and exit statuses are part of the contract in `tl_core.cli.main`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from tl_core.cli.common import EXIT_BAD_INPUT, open_store, print_json
from tl_core.config import ConfigError


def cmd_evaluate(args: argparse.Namespace) -> int:
    from tl_core.errors import RunNotFoundError
    from tl_core.layout import EVALUATION_FILE
    from tl_core.results.evaluate import Evaluation

    store = open_store(args)
    record = store.get(args.run_id)
    path = store.run_dir(record.id) / EVALUATION_FILE
    if not path.is_file():
        raise RunNotFoundError(
            f"Run {record.id} ({record.status}) has no evaluation: only finished runs with validation or test images have one."
        )
    evaluation = Evaluation.load(path)
    if args.json:
        print_json({"run_id": record.id, **evaluation.to_dict()})
    else:
        print(evaluation.format_text())
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    targets, refused = list(args.targets), False
    if args.pretrained:
        from tl_core.models.weights.pretrained import predict_pretrained

        images = [Path(p) for p in targets]
        _check_images(images)
        results = [
            [{"label": label, "probability": p} for label, p in row]
            for row in predict_pretrained(args.pretrained, images, top_k=args.top)
        ]
    elif args.text:
        from tl_core.modalities import get_modality
        from tl_core.results.predict import load_run_classifier, predict_texts

        if len(targets) != 1:
            raise ConfigError(
                'predict --text takes exactly one RUN_ID: `predict RUN_ID --text "some text" [--text ...]`.'
            )
        classifier = load_run_classifier(open_store(args), targets[0])
        modality = get_modality(classifier.modality)
        if not modality.takes_typed_text:
            raise ConfigError(
                f"Run {targets[0]} classifies {modality.noun}s: pass {modality.noun} files instead of --text."
            )
        images = [
            text if len(text) <= 40 else text[:37] + "..." for text in args.text
        ]  # how each is named in the output
        results = [
            [{"label": p.label, "probability": p.probability} for p in row]
            for row in predict_texts(classifier, args.text, top_k=args.top)
        ]
    else:
        from tl_core.results.predict import load_run_classifier, predict_each_file

        if len(targets) < 2:
            raise ConfigError(
                "predict needs a RUN_ID and at least one IMAGE or text FILE (or --pretrained NAME IMAGE..., or RUN_ID --text TEXT)."
            )
        run_id, images = targets[0], [Path(p) for p in targets[1:]]
        _check_images(images)
        classifier = load_run_classifier(open_store(args), run_id)
        per_file = predict_each_file(classifier, images, top_k=args.top)
        for result in per_file:
            if result.problem:  # the others are still predicted; this file's row stays empty
                print(f"error: {result.path}: {result.problem}", file=sys.stderr)
        results = [
            [{"label": p.label, "probability": p.probability} for p in result.predictions] for result in per_file
        ]
        refused = any(result.problem for result in per_file)
    if args.json:
        print_json(results)
    else:
        for image, row in zip(images, results):
            if row:
                print(f"{image}: " + ", ".join(f"{item['label']} {item['probability']:.3f}" for item in row))
    return EXIT_BAD_INPUT if refused else 0


def _check_images(images: list[Path]) -> None:
    missing = [str(p) for p in images if not p.is_file()]
    if missing:
        raise ConfigError(
            f"Image file not found: {missing[0]}. Check the path (relative paths start from {Path.cwd()})."
        )


def cmd_export(args: argparse.Namespace) -> int:
    from tl_core.results.bundle import export_run

    bundle = export_run(open_store(args), args.run_id, Path(args.out))
    for path in bundle.files():
        print(path)
    if bundle.tflite_note:
        print(bundle.tflite_note, file=sys.stderr)
    return 0


def add_results_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    """Register `evaluate`, `predict` and `export` on the CLI's sub-parsers (`common` brings --workspace and --json)."""
    evaluate = sub.add_parser("evaluate", parents=[common], help="show a run's evaluation")
    evaluate.add_argument("run_id")
    evaluate.set_defaults(handler=cmd_evaluate)

    predict = sub.add_parser("predict", parents=[common], help="top-k labels for images")
    predict.add_argument(
        "targets", nargs="+", metavar="RUN_ID IMAGE", help="RUN_ID then images, or only images with --pretrained"
    )
    predict.add_argument(
        "--pretrained", default=None, metavar="NAME", help="use a pretrained backbone's ImageNet head as-is"
    )
    predict.add_argument("--top", type=int, default=3)
    predict.add_argument(
        "--text",
        action="append",
        default=[],
        metavar="TEXT",
        help="a document to classify with a text run (repeatable)",
    )
    predict.set_defaults(handler=cmd_predict)

    export = sub.add_parser("export", parents=[common], help="write the export bundle of a run")
    export.add_argument("run_id")
    export.add_argument("--out", required=True)
    export.set_defaults(handler=cmd_export)
