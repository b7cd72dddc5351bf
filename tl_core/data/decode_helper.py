"""Decoding a run's images in a helper process while the run's own process builds the model.

Building a backbone is single-threaded Python: EfficientNet-Lite0 keeps one core busy for ~0.8 s while
the other waits. Decoding in threads at the same time was no faster than one after the other (both need
the GIL for much of their work; bench/README.md finding 9). In a second process the two do overlap:
600 JPEGs and Lite0 at 128 px took 0.87-1.34 s together against 1.30-1.74 s one after the other
(finding 26), and the helper imports no TensorFlow, so it starts in ~0.15 s.

The helper does exactly what the run would do next: `build_image_cache` for each split not cached yet,
into the workspace's image cache, each split written atomically. The run then opens those caches as
it would an earlier run's. Nothing depends on the helper but speed: if it cannot start or fails, the
run decodes what is missing itself, and its failure is logged.

Its progress (`progress<TAB>split<TAB>done<TAB>total` and `cached<TAB>split` lines on stdout) is read
once the model is built, so decoding progress and stop requests are handled in the run's thread as
before, only later. If the run's process goes away, the helper's next progress line fails and it stops.

Helper side: `python -m tl_core.data.decode_helper SPEC.json`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO

from tl_core.data.image_cache import build_image_cache, has_image_cache
from tl_core.data.types import SPLIT_NAMES, DatasetSplit, Example
from tl_core.events import ProgressThrottle
from tl_core.modalities import LogFunction, SplitProgress

PROGRESS_INTERVAL_S = 0.1  # the run's reporter throttles further; this only bounds the lines in the pipe
STOP_GRACE_S = 10.0  # after SIGTERM the helper removes its partial file and exits; then it is killed
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


class DecodingHelper:
    """A helper process filling the image cache of some splits; `finish` follows it to its end, `close` ends it early."""

    def __init__(
        self, process: subprocess.Popen, splits: Sequence[str], cache_dir: Path, spec_path: Path, errors: IO[bytes]
    ) -> None:
        self.process = process
        self.splits = tuple(splits)
        self.cache_dir = cache_dir
        self._spec_path = spec_path
        self._errors = errors

    @classmethod
    def start(cls, split: DatasetSplit, image_size: int, cache_dir: Path) -> DecodingHelper | None:
        """A helper for every split of `split` whose images at `image_size` are not cached yet; None when all are, or it cannot start."""
        pending = {
            name: split.examples(name)
            for name in SPLIT_NAMES
            if split.examples(name) and not has_image_cache(split.examples(name), image_size, cache_dir)
        }
        if not pending:
            return None
        cache_dir.mkdir(parents=True, exist_ok=True)
        spec = {
            "image_size": image_size,
            "cache_dir": str(cache_dir),
            "splits": [
                [name, [dataclasses.asdict(example) for example in examples]] for name, examples in pending.items()
            ],
        }
        handle, spec_name = tempfile.mkstemp(prefix=".decode-helper-", suffix=".json", dir=cache_dir)
        with os.fdopen(handle, "w") as spec_file:
            json.dump(spec, spec_file)
        errors = (
            tempfile.TemporaryFile()
        )  # a file, not a pipe: warnings about many bad images cannot fill it and block the helper
        environment = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [_PACKAGE_ROOT, os.environ.get("PYTHONPATH")])),
        }
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", "tl_core.data.decode_helper", spec_name],
                stdout=subprocess.PIPE,
                stderr=errors,
                stdin=subprocess.DEVNULL,
                env=environment,
                text=True,
            )
        except OSError:
            errors.close()
            Path(spec_name).unlink(missing_ok=True)
            return None
        return cls(process, list(pending), cache_dir, Path(spec_name), errors)

    def finish(self, progress: SplitProgress | None, log: LogFunction) -> frozenset[str]:
        """Follow the helper to its end, reporting its progress; returns the splits it cached.

        `progress` callbacks may raise (a stop request): the helper is then stopped by `close`.
        A helper that fails is logged, and the splits it did not finish are left to the run.
        """
        cached: set[str] = set()
        reporters: dict[
            str, Callable[[int, int], None]
        ] = {}  # one per split, so the run's own throttling holds across lines
        assert self.process.stdout is not None
        for line in self.process.stdout:
            kind, *fields = line.rstrip("\n").split("\t")
            if kind == "progress" and len(fields) == 3 and progress is not None:
                if fields[0] not in reporters:
                    reporters[fields[0]] = progress(fields[0])
                reporters[fields[0]](int(fields[1]), int(fields[2]))
            elif kind == "cached" and fields:
                cached.add(fields[0])
        if self.process.wait() != 0:
            self._errors.seek(0)
            detail = self._errors.read().decode(errors="replace").strip().splitlines()
            left = [name for name in self.splits if name not in cached]
            log(
                "warning",
                f"Decoding in a helper process failed (exit {self.process.returncode}: {detail[-1] if detail else 'no message'}); "
                f"decoding {', '.join(left)} in this process instead.",
            )
        return frozenset(cached)

    def close(self) -> None:
        """Stop the helper if it still runs (it removes its partial file), and clean up after it."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
        for partial in self.cache_dir.glob(f".*.{self.process.pid}.partial.npy"):  # only left if it had to be killed
            partial.unlink(missing_ok=True)
        self._errors.close()
        self._spec_path.unlink(missing_ok=True)


@contextlib.contextmanager
def decoding_in_helper(
    split: DatasetSplit, image_size: int, cache_dir: Path, *, enabled: bool = True
) -> Iterator[DecodingHelper | None]:
    """A `DecodingHelper` for the block (None when disabled, nothing is left to decode, or it cannot start), always ended after it."""
    helper = DecodingHelper.start(split, image_size, cache_dir) if enabled else None
    try:
        yield helper
    finally:
        if helper is not None:
            helper.close()


def _reporter(split_name: str) -> Callable[[int, int], None]:
    """Progress lines for the run. When the run's process is gone, so is the pipe's reader, and the next line
    raises `BrokenPipeError`: the helper stops there, removing its partial file, instead of decoding for nobody."""
    throttle = ProgressThrottle(PROGRESS_INTERVAL_S)

    def report(done: int, total: int) -> None:
        if throttle.due(done, total):
            print(f"progress\t{split_name}\t{done}\t{total}", flush=True)

    return report


def _exit_on_terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds `build_image_cache`, which removes its partial file


def main(argv: Sequence[str] | None = None) -> int:
    """The helper: decode every split of the spec file into the cache, reporting progress on stdout."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if len(arguments) != 1:
        print(
            "usage: python -m tl_core.data.decode_helper SPEC.json (started by a run; see tl_core/data/decode_helper.py)",
            file=sys.stderr,
        )
        return 2
    signal.signal(signal.SIGTERM, _exit_on_terminate)
    spec = json.loads(Path(arguments[0]).read_text())
    for split_name, rows in spec["splits"]:
        examples = [Example(**row) for row in rows]
        build_image_cache(examples, spec["image_size"], Path(spec["cache_dir"]), progress=_reporter(split_name))
        print(f"cached\t{split_name}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
