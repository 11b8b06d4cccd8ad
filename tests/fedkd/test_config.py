"""FDConfig: run-config round trips, validation messages that name the key, registry sync."""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import tomllib
from pathlib import Path

import pytest

from fedkd import config as C
from fedkd.config import (
    ConfigError,
    FDConfig,
    check_unknown_keys,
    config_keys,
    from_run_config,
    to_run_config,
)

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"

# A config that differs from the defaults in every field type, so a round trip that dropped or
# re-defaulted a field would show.
NON_DEFAULT = dict(
    strategy="fd",
    num_rounds=3,
    num_clients=7,
    fraction_train=0.5,
    min_train_nodes=3,
    min_replies=2,
    seed=11,
    dataset="synthetic",
    partition="pathological",
    alpha=0.25,
    public_subset=40,
    client_models="mlp,cnn,resnet8",
    student_model="mlp",
    lr=0.02,
    optimizer="adam",
    temperature=3.5,
    aggregation="median",
    divergence="mse",
    t2_scaling=False,
    co_distillation=True,
    codec="topk",
    topk=2,
    separate_query=True,
    run_dir="/tmp/somewhere",
)


# ----------------------------------------------------------------------------- round trips
def _toml_line(key: str, value: object) -> str:
    # JSON literals of bool/int/float/str are valid TOML values.
    return f"{key} = {json.dumps(value)}"


@pytest.mark.parametrize(
    "cfg", [FDConfig(), FDConfig(**NON_DEFAULT)], ids=["defaults", "non-default"]
)
def test_run_config_round_trip(cfg: FDConfig) -> None:
    flat = to_run_config(cfg)
    assert list(flat) == config_keys()
    assert all(isinstance(v, bool | int | float | str) for v in flat.values())
    assert all("_" not in k for k in flat)
    assert from_run_config(flat) == cfg


def test_round_trip_through_toml_text() -> None:
    cfg = FDConfig(**NON_DEFAULT)
    text = "\n".join(_toml_line(k, v) for k, v in to_run_config(cfg).items())
    assert from_run_config(tomllib.loads(text)) == cfg


def test_toml_ints_for_float_fields_are_widened() -> None:
    cfg = from_run_config(tomllib.loads("lr = 1\ntemperature = 3\nround-timeout = 60"))
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float)
    assert cfg.temperature == 3.0 and isinstance(cfg.temperature, float)
    assert isinstance(cfg.round_timeout, float)


def test_flower_run_config_override_string_parses() -> None:
    """What a user types after ``flwr run . --run-config`` reaches FDConfig typed."""
    from flwr.common.config import parse_config_args

    flat = parse_config_args(['num-rounds=3 lr=1 codec="fp16" co-distillation=true alpha=0.1'])
    cfg = from_run_config(flat)
    assert (cfg.num_rounds, cfg.lr, cfg.codec, cfg.co_distillation, cfg.alpha) == (
        3,
        1.0,
        "fp16",
        True,
        0.1,
    )


def test_overrides_win_over_mapping() -> None:
    cfg = from_run_config({"num-rounds": 4}, num_rounds=9)
    assert cfg.num_rounds == 9


def test_from_run_config_ignores_foreign_keys_but_check_unknown_keys_rejects_them() -> None:
    flat = {**to_run_config(FDConfig(num_rounds=4)), "num-supernodes": 10, "num-round": 99}
    assert from_run_config(flat).num_rounds == 4
    with pytest.raises(ConfigError) as err:
        check_unknown_keys(flat)
    assert "num-round" in str(err.value) and "num-supernodes" in str(err.value)
    check_unknown_keys(to_run_config(FDConfig()))  # our own keys pass


def test_replace_revalidates() -> None:
    cfg = FDConfig()
    assert C.replace(cfg, num_rounds=2).num_rounds == 2
    with pytest.raises(ConfigError, match="'num-rounds'"):
        C.replace(cfg, num_rounds=0)


# ----------------------------------------------------------------------------- validation
# (field changes, the run-config key the message must name)
INVALID = [
    ({"temperature": 0.0}, "temperature"),
    ({"temperature": -1.0}, "temperature"),
    ({"temperature": math.nan}, "temperature"),
    ({"fraction_train": 0.0}, "fraction-train"),
    ({"fraction_train": 1.5}, "fraction-train"),
    ({"fraction_train": -0.1}, "fraction-train"),
    ({"public_fraction": 1.0}, "public-fraction"),
    ({"dataset": "imagenet"}, "dataset"),
    ({"client_models": "mlp,transformer"}, "client-models"),
    ({"client_models": " , "}, "client-models"),
    ({"student_model": "vgg"}, "student-model"),
    ({"aggregation": "krum"}, "aggregation"),
    ({"codec": "zip"}, "codec"),
    ({"partition": "random"}, "partition"),
    ({"optimizer": "lbfgs"}, "optimizer"),
    ({"divergence": "js"}, "divergence"),
    ({"strategy": "fedprox"}, "strategy"),
    ({"device": "tpu"}, "device"),
    ({"min_train_nodes": 11, "num_clients": 10}, "min-train-nodes"),
    ({"min_replies": 5, "num_clients": 4, "min_train_nodes": 2}, "min-replies"),
    ({"num_rounds": 0}, "num-rounds"),
    ({"batch_size": -3}, "batch-size"),
    ({"lr": 0.0}, "lr"),
    ({"alpha": -0.5}, "alpha"),
    ({"trim_ratio": 0.5}, "trim-ratio"),
    ({"public_subset": -1}, "public-subset"),
    ({"client_distill_epochs": -1}, "client-distill-epochs"),
    # wrong types: what a hand-edited TOML or a sloppy Python caller produces
    ({"num_rounds": "5"}, "num-rounds"),
    ({"num_rounds": 2.0}, "num-rounds"),
    ({"num_rounds": True}, "num-rounds"),
    ({"lr": "0.1"}, "lr"),
    ({"lr": True}, "lr"),
    ({"t2_scaling": 1}, "t2-scaling"),
    ({"co_distillation": "yes"}, "co-distillation"),
    ({"dataset": 3}, "dataset"),
]


@pytest.mark.parametrize(("changes", "key"), INVALID, ids=[f"{k}:{c}" for c, k in INVALID])
def test_invalid_value_names_its_key(changes: dict, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        FDConfig(**changes)
    assert f"'{key}'" in str(err.value)


@pytest.mark.parametrize(("changes", "key"), INVALID[:6], ids=[k for _, k in INVALID[:6]])
def test_invalid_run_config_value_names_its_key(changes: dict, key: str) -> None:
    flat = to_run_config(FDConfig())
    flat.update({k.replace("_", "-"): v for k, v in changes.items()})
    with pytest.raises(ConfigError, match=f"'{key}'"):
        from_run_config(flat)


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)


def test_fedavg_uses_the_student_for_every_client() -> None:
    cfg = FDConfig(strategy="fedavg", client_models="mlp,cnn", student_model="resnet8")
    assert {cfg.model_for_partition(i) for i in range(5)} == {"resnet8"}


def test_heterogeneous_models_round_robin() -> None:
    cfg = FDConfig(client_models="mlp, cnn ,resnet8")
    assert [cfg.model_for_partition(i) for i in range(6)] == ["mlp", "cnn", "resnet8"] * 2


@pytest.mark.parametrize("name", ["lr", "server_lr", "temperature", "dp_noise_multiplier"])
@pytest.mark.parametrize("value", [math.inf, math.nan])
def test_non_finite_numbers_are_rejected(name: str, value: float) -> None:
    with pytest.raises(ConfigError, match=f"'{name.replace('_', '-')}'.*finite"):
        FDConfig(**{name: value})


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"fault_crash_train": 1.5}, "fault-crash-train"),
        ({"fault_straggle": -0.1}, "fault-straggle"),
        ({"byzantine_fraction": 2.0}, "byzantine-fraction"),
        ({"byzantine_attack": "sybil"}, "byzantine-attack"),
        ({"dp_delta": 0.0}, "dp-delta"),
        ({"dp_clip": 0.0}, "dp-clip"),
        ({"dp_noise_multiplier": -1.0}, "dp-noise-multiplier"),
        ({"dp_mechanism": "laplace"}, "dp-mechanism"),
        ({"dp_mechanism": "central"}, "dp-noise-multiplier"),  # a mechanism needs noise
        ({"dp_noise_multiplier": 1.0}, "dp-mechanism"),  # and noise a mechanism
        ({"dp_labels_per_round": 0}, "dp-labels-per-round"),
        ({"dp_max_epsilon": -1.0}, "dp-max-epsilon"),
        (
            {"dp_mechanism": "central", "dp_noise_multiplier": 1.0, "explain_teacher": True},
            "explain-teacher",
        ),
        ({"outlier_threshold": 0.0}, "outlier-threshold"),
    ],
)
def test_fault_privacy_and_robustness_keys_are_validated(changes: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=f"'{key}'"):
        FDConfig(**changes)


# ----------------------------------------------------------------------------- sync and docs
def test_aggregation_rules_in_sync_with_strategies() -> None:
    from strategies.aggregation import STATEFUL_RULES, available_rules

    assert sorted(C.AGGREGATION_RULES) == sorted([*available_rules(), *STATEFUL_RULES])


def test_codec_list_in_sync_with_compression() -> None:
    from fedkd.compression import CODECS

    for codec in CODECS:
        assert FDConfig(codec=codec).codec == codec


def test_every_field_has_help_text() -> None:
    for f in dataclasses.fields(FDConfig):
        assert f.metadata.get("help", "").strip(), f"{f.name} has no help text"


def _pyproject_app_config() -> dict:
    app = tomllib.loads(PYPROJECT.read_text()).get("tool", {}).get("flwr", {}).get("app", {})
    if "config" not in app:
        pytest.skip("pyproject.toml has no [tool.flwr.app.config] table")
    return app["config"]


def test_pyproject_app_config_is_a_valid_fdconfig() -> None:
    flat = _pyproject_app_config()
    check_unknown_keys(flat)
    cfg = from_run_config(flat)
    for key, value in flat.items():
        assert to_run_config(cfg)[key] == value


def test_pyproject_defaults_equal_fdconfig_defaults() -> None:
    """Every key is declared (Flower refuses a ``--run-config`` key the table lacks), and
    ``flwr run .`` without overrides runs what ``FDConfig()`` describes."""
    assert _pyproject_app_config() == to_run_config(FDConfig())


def test_flwr_run_overrides_merge_into_a_valid_fdconfig() -> None:
    from flwr.common.config import get_fused_config_from_dir

    _pyproject_app_config()
    fused = get_fused_config_from_dir(PYPROJECT.parent, {"num-rounds": 3, "aggregation": "median"})
    cfg = from_run_config(fused)
    assert (cfg.num_rounds, cfg.aggregation) == (3, "median")


def test_config_docs_list_every_key() -> None:
    """docs/config.md is generated by docs/gen_config_table.py; a new field must reach it."""
    page = (PYPROJECT.parent / "docs" / "config.md").read_text()
    missing = [key for key in config_keys() if f"| `{key}` |" not in page]
    assert missing == [], "regenerate the table with docs/gen_config_table.py"
    # and exactly the generated table: defaults (fedkd-sim's where they differ), types, help
    sys.path.insert(0, str(PYPROJECT.parent / "docs"))
    try:
        from gen_config_table import config_table
    finally:
        sys.path.pop(0)
    assert config_table() in page, "regenerate the table: python docs/gen_config_table.py"


def test_a_population_larger_than_the_synthetic_pool_is_a_config_error() -> None:
    # Was a traceback from the partitioner ("num_partitions must be in [1, 3000]") after the
    # run had started; now one line naming the key and the fix, before any work.
    with pytest.raises(ConfigError, match=r"'num-clients'.*synthetic-train="):
        FDConfig(dataset="synthetic", num_clients=10_000)
    cfg = FDConfig(dataset="synthetic", num_clients=100_000, synthetic_train=1_200_000)
    assert cfg.num_clients == 100_000
