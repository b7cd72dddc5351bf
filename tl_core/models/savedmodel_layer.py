"""A Keras 3 layer around a TensorFlow SavedModel (a TF Hub model or any `tf.saved_model` folder).

Keras 3 cannot use `hub.KerasLayer`, and `keras.layers.TFSMLayer` breaks Adam (its variable names
keep TF's `:0` suffix, which ends up in the optimizer's slot names). `SavedModelLayer` loads the folder
with `tf.saved_model.load`, wraps each variable the chosen function uses as a Keras variable (sharing
the same storage, names cleaned), so freezing, unfreezing and fine-tuning with any optimizer work, and
a saved `.keras` model restores fine-tuned values. The `.keras` file stores the folder path, not the
folder: the SavedModel must still be there when the model is loaded.

Example:
    >>> folder = resolve_hub_handle("/models/mobilenet_v2_feature_vector")  # or a TF Hub URL
    >>> features = SavedModelLayer(folder, trainable=False)(keras.Input((224, 224, 3)))

Text-embedding SavedModels (a batch of strings in, one vector per string out, e.g. TF Hub's nnlm or
Universal Sentence Encoder) work the same way on `keras.Input(shape=(), dtype="string")`; their
lookup tables are tracked with the loaded object, so `model.export(dir)` carries them (see
`tl_core.models.text_backbones` and tests/test_text_savedmodel.py).
"""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import keras
import tensorflow as tf

from tl_core.errors import BackboneError, WeightsUnavailableError

HUB_HANDLE_PREFIXES = ("https://", "http://", "gs://")
SAVED_MODEL_FILE = "saved_model.pb"
REACHABILITY_TIMEOUT_S = 3.0
OFFLINE_SOCKET_TIMEOUT_S = 3.0
ONLINE_SOCKET_TIMEOUT_S = 60.0

# socket.setdefaulttimeout is process-wide: one timeout-bounded network section at a time.
_SOCKET_TIMEOUT_LOCK = threading.Lock()


@contextmanager
def network_timeout(seconds: float) -> Iterator[None]:
    """Bound every blocking operation of sockets opened inside (connect, each read) to `seconds`.

    Library downloads (Keras `get_file`, TF Hub) open sockets without a timeout and can hang for
    minutes where packets are dropped; inside this block they fail within `seconds` instead.
    """
    with _SOCKET_TIMEOUT_LOCK:
        previous = socket.getdefaulttimeout()
        socket.setdefaulttimeout(seconds)
        try:
            yield
        finally:
            socket.setdefaulttimeout(previous)


def host_reachable(host: str, port: int = 443, timeout: float = REACHABILITY_TIMEOUT_S) -> bool:
    """Whether a TCP connection to `host:port` opens within `timeout` seconds (name lookup included).

    Args:
        host: a host name such as `storage.googleapis.com`.
        port: TCP port.
        timeout: the longest this check may take, in seconds.

    Returns:
        True if the connection opened.
    """
    outcome: list[bool] = []

    def connect() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                outcome.append(True)
        except OSError:
            outcome.append(False)

    # A thread bounds the name lookup too, which socket timeouts do not cover.
    worker = threading.Thread(target=connect, name=f"reachability-{host}", daemon=True)
    worker.start()
    worker.join(timeout)
    return bool(outcome and outcome[0])


def is_hub_handle(value: str) -> bool:
    """True for URL-style model handles (https://tfhub.dev/..., https://www.kaggle.com/models/..., gs://...)."""
    return value.strip().lower().startswith(HUB_HANDLE_PREFIXES)


def resolve_hub_handle(handle_or_dir: str) -> str:
    """The local SavedModel folder for a TF Hub handle, or the folder itself.

    Args:
        handle_or_dir: a local SavedModel folder, or a handle such as
            `https://tfhub.dev/google/imagenet/mobilenet_v2_100_224/feature_vector/5`.

    Returns:
        A local folder holding `saved_model.pb`.

    Raises:
        BackboneError: a local path that is not a SavedModel folder.
        WeightsUnavailableError: the handle is not in the TF Hub cache and cannot be downloaded here.
    """
    if not is_hub_handle(handle_or_dir):
        folder = Path(handle_or_dir).expanduser()
        if not folder.is_dir():
            raise BackboneError(
                f"'{handle_or_dir}' is neither a SavedModel folder nor a TF Hub handle: pass an existing folder "
                "holding saved_model.pb, or a handle starting with https:// (tfhub.dev, kaggle.com/models)."
            )
        if not (folder / SAVED_MODEL_FILE).is_file():
            raise BackboneError(
                f"{folder} has no {SAVED_MODEL_FILE}: pass the SavedModel folder itself (the one holding {SAVED_MODEL_FILE} and variables/)."
            )
        return str(folder)

    handle = handle_or_dir.strip()
    import tensorflow_hub as hub  # imported here: slow, and only handles need it

    host = urlsplit(handle).hostname or ""
    # Offline, a cached handle still resolves (no network); an uncached one must fail in seconds.
    timeout = ONLINE_SOCKET_TIMEOUT_S if host and host_reachable(host) else OFFLINE_SOCKET_TIMEOUT_S
    try:
        with network_timeout(timeout):
            return str(hub.resolve(handle))
    except (OSError, ValueError, tf.errors.OpError) as exc:
        raise WeightsUnavailableError(
            f"Cannot download the TF Hub model {handle} from this machine ({exc}). On a machine with internet, "
            f"download it (e.g. `tensorflow_hub.resolve('{handle}')`, or the model page's Download button, then "
            "extract the archive), copy the SavedModel folder here, and pass that folder's path as the weights."
        ) from exc


def _variables_used_by(function: Any) -> list[tf.Variable]:
    """The variables captured by a restored tf.function or concrete function, trainable ones first."""
    concrete_functions = getattr(function, "concrete_functions", None) or [function]
    variables: dict[int, tf.Variable] = {}
    for concrete in concrete_functions:
        for variable in list(concrete.trainable_variables) + list(concrete.variables):
            variables.setdefault(id(variable), variable)
    return sorted(variables.values(), key=lambda v: not v.trainable)


def _keras_variable_name(variable: tf.Variable) -> str:
    # TF names look like "module/dense/kernel:0"; Keras names allow neither "/" nor ":".
    return re.sub(r"[^A-Za-z0-9_.-]", "_", variable.name.split(":")[0]) or "variable"


@keras.saving.register_keras_serializable(package="transferlab")
class SavedModelLayer(keras.layers.Layer):
    """Calls a SavedModel function; its variables are this layer's Keras weights.

    Args:
        saved_model_dir: local SavedModel folder (use `resolve_hub_handle` for TF Hub handles).
        signature: the function to call: a name in the SavedModel's `signatures` (called with its single
            input by keyword, returns a dict), or an attribute holding a tf.function such as `encode`.
            None: the object's `__call__` if saved, else the `serving_default` signature.
        output_key: which entry to return when the function returns a dict (needed if it has several).
        trainable: whether the SavedModel's trainable variables train.
        arguments: extra keyword arguments for every call, e.g. `{"training": False}`.
        **kwargs: Keras layer arguments (`name`, `dtype`; the dtype defaults to float32 because the
            SavedModel's functions are traced for fixed dtypes).

    Where the function accepts `training`, the layer passes `training=True` only while the layer is
    trainable and Keras calls it in training mode (the `hub.KerasLayer` rule), unless `arguments` fixes it.
    """

    def __init__(
        self,
        saved_model_dir: str,
        signature: str | None = None,
        output_key: str | None = None,
        trainable: bool = False,
        arguments: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.saved_model_dir = str(saved_model_dir)
        self.signature = signature
        self.output_key = output_key
        self.call_arguments = dict(arguments or {})
        if not (Path(self.saved_model_dir) / SAVED_MODEL_FILE).is_file():
            raise BackboneError(
                f"No SavedModel at {self.saved_model_dir} (no {SAVED_MODEL_FILE}): pass the SavedModel folder; it must still exist when a model using it is loaded."
            )
        self._loaded = tf.saved_model.load(self.saved_model_dir)
        self._function, self._signature_input = self._resolve_function()
        self._accepts_training = self._signature_input is None and self._function_accepts("training")
        with keras.name_scope(self.name, caller=self):
            for variable in _variables_used_by(self._function):
                keras_variable = keras.Variable(
                    initializer=variable,  # a tf.Variable: the Keras variable shares its storage
                    trainable=variable.trainable,
                    dtype=variable.dtype,
                    shape=variable.shape,
                    name=_keras_variable_name(variable),
                )
                self._track_variable(keras_variable)
        self.built = True
        # Only now: the trainable setter updates the flags of variables that already exist.
        self.trainable = trainable

    def _resolve_function(self) -> tuple[Any, str | None]:
        """The callable to run and, for a signature, the keyword its single input goes under."""
        signatures = dict(getattr(self._loaded, "signatures", {}) or {})
        if self.signature is None:
            own_call = getattr(self._loaded, "__call__", None)  # noqa: B004 (the restored tf.function itself, not callability)
            if own_call is not None and hasattr(own_call, "concrete_functions"):
                return own_call, None
            name = "serving_default"
        else:
            name = self.signature
        if name in signatures:
            signature_function = signatures[name]
            inputs = list(signature_function.structured_input_signature[1])
            if len(inputs) != 1:
                raise BackboneError(
                    f"Signature '{name}' of {self.saved_model_dir} takes {len(inputs)} inputs ({', '.join(inputs)}); SavedModelLayer passes exactly one."
                )
            return signature_function, inputs[0]
        attribute = getattr(self._loaded, name, None)
        if attribute is not None and hasattr(attribute, "concrete_functions"):
            return attribute, None
        raise BackboneError(
            f"{self.saved_model_dir} has no function '{name}'. Signatures: {', '.join(sorted(signatures)) or 'none'}; "
            "pass one of them as `signature`, or the name of a saved tf.function attribute."
        )

    def _function_accepts(self, parameter: str) -> bool:
        for concrete in getattr(self._function, "concrete_functions", []):
            if parameter in concrete.function_type.parameters:
                return True
        return False

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        if self._signature_input is not None:
            outputs = self._function(**{self._signature_input: inputs})
        else:
            arguments = dict(self.call_arguments)
            if self._accepts_training and "training" not in arguments:
                arguments["training"] = bool(training) and self.trainable
            outputs = self._function(inputs, **arguments)
        return self._select_output(outputs)

    def _select_output(self, outputs: Any) -> Any:
        if not isinstance(outputs, dict):
            return outputs
        if self.output_key is not None:
            if self.output_key not in outputs:
                raise BackboneError(
                    f"{self.saved_model_dir} returns {sorted(outputs)}, not '{self.output_key}': pass one of those as `output_key`."
                )
            return outputs[self.output_key]
        if len(outputs) == 1:
            return next(iter(outputs.values()))
        raise BackboneError(
            f"{self.saved_model_dir} returns several outputs {sorted(outputs)}: pass the one to use as `output_key`."
        )

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "saved_model_dir": self.saved_model_dir,
            "signature": self.signature,
            "output_key": self.output_key,
            "arguments": dict(self.call_arguments),
        }
