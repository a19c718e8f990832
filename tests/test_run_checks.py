"""Checks before the first node: pipeline names, environments, parameters, missing inputs."""

from __future__ import annotations

import logging

import pytest
from kedro.config import OmegaConfigLoader
from kedro.io import DataCatalog
from pydantic import BaseModel, Field

from tests.conftest import REPO
from vitrina import settings
from vitrina.config import UnknownEnvironmentError, check_environment
from vitrina.run_checks import MissingInputsError, check_inputs_exist, run_command
from vitrina.validation import PARAMETER_SCHEMAS, ParameterError, validate_parameters


@pytest.fixture
def requested():
    """Ask Kedro's pipeline registry for some pipelines, as ``kedro run --pipelines`` does."""
    from kedro.framework.project import configure_project, pipelines

    configure_project("vitrina")
    yield pipelines.set_requested
    pipelines.set_requested(None)


def config(project, env="test"):
    return OmegaConfigLoader(str(project / "conf"), env=env, **settings.CONFIG_LOADER_ARGS)


def test_embeddings_alone_includes_the_fine_tuning_that_writes_its_model(requested):
    """Kedro 1.7 loads only the requested pipelines; the registry still adds clip_finetune."""
    from vitrina.pipeline_registry import register_pipelines

    requested(["embeddings"])
    built = register_pipelines()
    assert "tiny_ruclip_finetuned.checkpoint" in built["embeddings"].all_outputs()
    assert "tiny_ruclip_finetuned.embeddings" in built["embeddings"].all_outputs()
    assert "ingestion" not in built  # only what was asked for (and what it includes)


def test_an_unknown_pipeline_is_answered_with_the_list_of_pipelines(requested):
    from vitrina.pipeline_registry import register_pipelines

    requested(["nope"])
    with pytest.raises(ValueError, match=r"No pipeline named 'nope'.*ingestion.*probing"):
        register_pipelines()


def test_an_unknown_environment_lists_the_environments(tmp_path, monkeypatch):
    with pytest.raises(UnknownEnvironmentError) as info:
        check_environment(REPO / "conf", "prod")
    assert "Environment 'prod' does not exist" in str(info.value)
    assert "er_magellan, hm, local" in str(info.value)
    check_environment(REPO / "conf", "hm")  # exists
    check_environment(tmp_path, "local")  # Kedro's default may be absent


def test_missing_inputs_name_the_dataset_and_the_command_that_makes_them(kedro_project):
    from vitrina.pipeline_registry import build_pipelines

    loader = config(kedro_project)
    catalog = DataCatalog.from_config(loader["catalog"], credentials=loader["credentials"])
    run_params = {
        "project_path": str(kedro_project),
        "env": "test",
        "pipeline_names": ["probing"],
        "runtime_params": {"probing": {"test_size": 0.3}},
    }
    with pytest.raises(MissingInputsError) as info:
        check_inputs_exist(build_pipelines(["probing"])["probing"], catalog, run_params)
    message = str(info.value)
    assert "products (data/03_primary/test/products.parquet), written by the 'ingestion'" in message
    assert "tiny_ruclip.embeddings (data/04_feature/test/embeddings/tiny_ruclip)" in message
    assert (
        "Run `kedro run --pipelines=ingestion,image_processing,embeddings --env=test "
        "--params=probing.test_size=0.3` first" in message
    )
    assert run_command(["probing"], {"env": "local"}) == "kedro run --pipelines=probing"
    spaced = run_command(["ingestion"], {"runtime_params": {"hm_dir": "/my data"}})
    assert spaced == "kedro run --pipelines=ingestion '--params=hm_dir=/my data'"


def test_the_shipped_parameters_of_every_environment_are_valid(kedro_project, caplog):
    for env in ("test", "hm", "er_magellan"):
        parameters = config(kedro_project, env)["parameters"]
        with caplog.at_level(logging.WARNING, logger="vitrina.validation"):
            models = validate_parameters(parameters, list(parameters))
        assert set(PARAMETER_SCHEMAS) <= set(models), env
    assert "not known" not in caplog.text  # every shipped key is declared by its schema


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ({"probing": {"test_size": 2}}, "probing.test_size = 2: Input should be less than 1"),
        ({"probing": {"test_size": 0}}, "probing.test_size = 0: Input should be greater than 0"),
        (
            {"embeddings": {"precision": "fp8"}},
            "embeddings.precision = 'fp8': Input should be 'fp32', 'bf16', 'fp16', 'int8' or 'auto'",
        ),
        ({"image_processing": {"mode": "stretch"}}, "image_processing.mode = 'stretch'"),
        ({"clip_finetune": {"train": {"max_epochs": 0}}}, "max_epochs=0 must be >= 1"),
        (
            {"clip_finetune": {"train": {"epochs": 3}}},
            "clip_finetune.train.epochs is no longer a setting: use max_epochs",
        ),
        ({"clip_finetune": {"state_dir": "x"}}, "use output_dir"),
        ({"captioning": {"model": "huge"}}, "captioning.model 'huge' is not in captioning.models"),
        (
            {"captioning": {"training": {"epochs": 3}}},
            "captioning.training.epochs was renamed: use max_epochs",
        ),
        ({"pair_matching": {"source": "csv"}}, "pair_matching.source = 'csv'"),
        (
            {"pair_matching": {"classifiers": {"mlp": {"type": "mlp", "train": {"lr": 0.1}}}}},
            "classifiers.mlp: pair MLP train.lr is now train.learning_rate",
        ),
        ({"tuning": {"target": "everything"}}, "Unknown tuning target 'everything'"),
    ],
)
def test_invalid_parameters_name_key_value_and_what_is_allowed(kedro_project, override, expected):
    parameters = config(kedro_project)["parameters"]
    for key, block in override.items():
        merged = dict(parameters[key])
        for name, value in block.items():
            merged[name] = {**merged[name], **value} if isinstance(value, dict) else value
        parameters[key] = merged
    with pytest.raises(ParameterError) as info:
        validate_parameters(parameters, list(override))
    assert expected in str(info.value)


def test_the_output_folder_must_lie_in_the_processed_images_dataset(kedro_project):
    loader = config(kedro_project)
    parameters = loader["parameters"]
    parameters["image_processing"] = {**parameters["image_processing"], "output_dir": "/tmp/x"}
    catalog = DataCatalog.from_config(loader["catalog"], credentials=loader["credentials"])
    with pytest.raises(ParameterError, match="must lie inside the processed_images dataset's"):
        validate_parameters(parameters, ["image_processing"], {"catalog": catalog})


def test_a_new_pipeline_adds_its_schema_with_one_line(monkeypatch, caplog):
    class ClassificationParams(BaseModel, extra="allow"):
        epochs: int = Field(ge=1)

    monkeypatch.setitem(PARAMETER_SCHEMAS, "classification", ClassificationParams)
    with pytest.raises(ParameterError, match=r"classification.epochs = 0: Input should be"):
        validate_parameters({"classification": {"epochs": 0}}, ["classification"])
    with caplog.at_level(logging.WARNING):
        validate_parameters({"classification": {"epochs": 2, "epohcs": 3}}, ["classification"])
    assert "classification.epohcs" in caplog.text  # a likely typo is reported
