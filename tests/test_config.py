"""Configuration read before a Kedro session: which environment, which parameters."""

from __future__ import annotations

import pytest

from vitrina.config import UnknownEnvironmentError, cli_env, project_parameters, resolve_conf


def test_the_run_environment_comes_from_the_argument_then_kedro_env_then_the_command_line(
    tmp_path, monkeypatch
):
    for folder, text in {
        "base": "a: {x: 1, y: [1, 2]}\nb: ${globals:z}\n",
        "hm": "a: {y: [3]}\n",
    }.items():
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "parameters.yml").write_text(text)
    monkeypatch.delenv("KEDRO_ENV", raising=False)
    monkeypatch.setattr("sys.argv", ["/venv/bin/kedro", "run", "--env", "hm"])
    assert cli_env() == "hm"
    assert resolve_conf(tmp_path) == (str(tmp_path), "hm")
    # merged key by key (the project's soft merge), lists replaced, interpolations left
    assert project_parameters(tmp_path) == {"a": {"x": 1, "y": [3]}, "b": "${globals:z}"}

    monkeypatch.setenv("KEDRO_ENV", "nowhere")  # KEDRO_ENV wins; a missing folder is an error
    with pytest.raises(UnknownEnvironmentError, match=r"'nowhere' does not exist.*: hm;"):
        resolve_conf(tmp_path)
    assert resolve_conf(tmp_path, "hm")[1] == "hm"  # an explicit env wins over both
    assert resolve_conf(tmp_path, "local") == (str(tmp_path), "base")  # local may be absent

    assert cli_env(["/venv/bin/kedro", "run", "--env=er"]) == "er"
    assert cli_env(["/venv/bin/kedro", "run", "-e", "er"]) == "er"
    assert cli_env(["/venv/bin/kedro", "viz", "--env=er"]) is None  # not a run
    assert cli_env(["/venv/bin/pytest", "run", "--env=er"]) is None  # not kedro


def test_pipelines_are_built_from_the_running_sessions_parameters(tmp_path, monkeypatch):
    """``run_parameters``: the session's parameters (``--params`` included) once the hook
    has recorded them, else ``conf/`` read here; an explicit conf source reads ``conf/``."""
    from vitrina.config import remember_run_parameters, run_parameters

    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "parameters.yml").write_text("tuning: {target: probing_mlp}\n")
    monkeypatch.setattr(
        "vitrina.config.resolve_conf", lambda c=None, e=None: (str(tmp_path), "base")
    )
    try:
        remember_run_parameters(None)
        assert run_parameters()["tuning"]["target"] == "probing_mlp"
        remember_run_parameters({"tuning": {"target": "captioning"}})
        assert run_parameters()["tuning"]["target"] == "captioning"
        assert run_parameters(tmp_path, "base")["tuning"]["target"] == "probing_mlp"
    finally:
        remember_run_parameters(None)
