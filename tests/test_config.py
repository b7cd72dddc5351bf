import pytest

from tl_core.config import ConfigError, DataConfig, ModelConfig, RunConfig, TrainConfig


def test_defaults_and_round_trip_through_json():
    config = RunConfig(data=DataConfig(source="data/"), model=ModelConfig(head_hidden_units=[128]), name="x")
    assert config.model.head_hidden_units == (128,)
    restored = RunConfig.from_json(config.to_json())
    assert restored == config
    assert hash(restored) == hash(config)


def test_fine_tune_rate_defaults_to_a_tenth():
    assert TrainConfig(learning_rate=1e-3).effective_fine_tune_learning_rate == pytest.approx(1e-4)
    assert TrainConfig(fine_tune_learning_rate=5e-5).effective_fine_tune_learning_rate == 5e-5


@pytest.mark.parametrize(
    ("factory", "fragment"),
    [
        (lambda: DataConfig(source=""), "source is empty"),
        (lambda: DataConfig(source="d", val_fraction=0.5, test_fraction=0.45), "keep their sum below 0.9"),
        (lambda: ModelConfig(image_size=8), "between 16 and 1024"),
        (lambda: ModelConfig(pooling="median"), "choose 'avg' or 'max'"),
        (lambda: ModelConfig(head_hidden_units=(0,)), "positive integers"),
        (lambda: TrainConfig(mode="transfer"), "choose one of feature-extraction, fine-tune, full, progressive"),
        (lambda: TrainConfig(epochs=0), "epochs=0 must be at least 1"),
        (lambda: TrainConfig(learning_rate=3.0), "e.g. 1e-3"),
        (lambda: TrainConfig(early_stopping_patience=0), "or None to disable"),
    ],
)
def test_invalid_values_say_how_to_fix(factory, fragment):
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        factory()


def test_unknown_fields_are_rejected_by_name():
    with pytest.raises(ConfigError, match="Unknown TrainConfig field"):
        RunConfig.from_dict({"data": {"source": "d"}, "train": {"epoch": 3}})


def test_text_modality_and_sequence_length():
    config = RunConfig(
        data=DataConfig(source="docs/", modality="text"),
        model=ModelConfig(backbone="glove_6b_50d", weights="glove", sequence_length=128),
    )
    assert RunConfig.from_json(config.to_json()) == config
    assert ModelConfig().sequence_length == 256 and DataConfig(source="d").modality == "image"
    with pytest.raises(ConfigError, match="choose one of"):
        DataConfig(source="d", modality="audio")
    with pytest.raises(ConfigError, match="e.g. 256"):
        ModelConfig(sequence_length=100_000)
