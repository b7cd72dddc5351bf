"""What every command module of `python -m tl_core` shares: exit statuses, JSON output, the run store, the
data's modality and default backbone.

Imports nothing from the other `tl_core.cli` modules, so each of them can import it.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

EXIT_BAD_INPUT = 2
EXIT_RUN_FAILED = 1


def print_json(value: Any) -> None:
    """Print `value` as one JSON line on stdout (the `--json` contract: the last stdout line)."""
    print(json.dumps(value, default=str))


def open_store(args: argparse.Namespace) -> Any:
    """The run store in `--workspace` (default ./workspace or $TRANSFERLAB_WORKSPACE)."""
    from tl_core.runs.store import RunStore

    return RunStore(args.workspace)


def modality_and_backbone(args: argparse.Namespace) -> tuple[str, str, str]:
    """The data's modality (`--modality`, else detected) and the backbone and weights, defaulting per modality."""
    from tl_core.modalities import get_modality, resolve_modality
    from tl_core.models.registry import get_backbone_spec

    modality = get_modality(resolve_modality(args.data, args.modality))
    if not args.backbone:
        return modality.name, modality.default_backbone, args.weights or modality.default_weights
    return modality.name, args.backbone, args.weights or get_backbone_spec(args.backbone).pretrained_weights
