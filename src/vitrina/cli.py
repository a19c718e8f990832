"""``vitrina`` commands besides ``kedro run``: ``classify``, ``export``, ``models download``,
``review``.

``vitrina`` alone (or with ``kedro run`` options) runs the project's pipelines, as before;
``vitrina classify ...`` and ``vitrina models ...`` are the commands below. They run in the
project directory and read the data catalogue of ``--env`` (default: ``KEDRO_ENV`` or
``local``), so they find what ``kedro run`` wrote.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click


@contextlib.contextmanager
def project_context(env: str | None) -> Iterator[Any]:
    """A loaded Kedro context of the project in the working directory."""
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    root = Path.cwd()
    if not (root / "pyproject.toml").is_file() or not (root / "conf").is_dir():
        raise click.ClickException(
            f"{root} is not the Vitrina project directory (no pyproject.toml and conf/)"
        )
    bootstrap_project(root)
    with KedroSession.create(project_path=root, env=env or os.environ.get("KEDRO_ENV")) as session:
        yield session.load_context()


@click.group(name="vitrina")
def cli() -> None:
    """Vitrina's commands (``vitrina`` alone runs ``kedro run``)."""


@cli.command()
@click.argument("paths", nargs=-1)
@click.option(
    "--task", help="classification task whose trained model classifies (classification.tasks)"
)
@click.option(
    "--model",
    "model_dir",
    type=click.Path(file_okay=False),
    help="a classifier folder instead of --task's",
)
@click.option(
    "--group",
    help="classify a catalogue group instead of PATHS: COLUMN=VALUE, e.g. group_id=0108775",
)
@click.option(
    "--top-k", default=5, show_default=True, help="labels or gallery neighbours per image"
)
@click.option("--batch-size", default=64, show_default=True)
@click.option(
    "--output",
    type=click.Path(dir_okay=False),
    help="write the predictions CSV here (default: print)",
)
@click.option(
    "--backend",
    type=click.Choice(["onnxruntime", "torch"]),
    default=None,
    help="default: onnxruntime when the task's export holds this model, else torch",
)
@click.option("--env", default=None, help="Kedro environment (default KEDRO_ENV or local)")
def classify(
    paths: tuple[str, ...],
    task: str | None,
    model_dir: str | None,
    group: str | None,
    top_k: int,
    batch_size: int,
    output: str | None,
    backend: str | None,
    env: str | None,
) -> None:
    """Classify images, folders (recursively) or a catalogue group with a trained model.

    Unreadable images are reported in the output's status/error columns; the rest are
    still classified. A catalogue group is read as ``classification_inference.review``
    says (approved images only, masks applied), as the pipeline does.
    """
    from vitrina.pipelines.classification_inference.nodes import classify_images, select_images

    if bool(task) == bool(model_dir):
        raise click.UsageError("give exactly one of --task TASK or --model DIR")
    if bool(paths) == bool(group):
        raise click.UsageError("give image PATHS or --group COLUMN=VALUE (one of them)")
    params: dict[str, Any] = {"top_k": top_k, "batch_size": batch_size, "backend": backend}
    with project_context(env) as context:
        try:
            if model_dir:
                from vitrina.models.classifiers.artefact import ImageClassifier

                classifier = ImageClassifier.load(model_dir)
            else:
                from vitrina.config import classification_tasks

                tasks = classification_tasks(env=context.env)
                if task not in tasks:
                    raise click.UsageError(f"unknown task {task!r}; the tasks are {sorted(tasks)}")
                classifier = context.catalog.load(f"{task}.classifier")
            if group:
                column, sep, value = group.partition("=")
                if not sep:
                    raise click.UsageError(f"--group must be COLUMN=VALUE, got {group!r}")
                params["source"] = {"group": {column: value}}
                products, manifest = (
                    context.catalog.load("products"),
                    context.catalog.load("image_manifest"),
                )
                review = (context.params.get("classification_inference") or {}).get("review")
                if review and (review.get("approved_only") or review.get("mask")):
                    from vitrina.pipelines.classification.review import apply_review

                    manifest, _ = apply_review(
                        manifest, context.catalog.load("review_store"), review
                    )
            else:
                params["source"] = {"paths": list(paths)}
                products = manifest = None
            images = select_images(products, manifest, params)
            export = (context.params.get("classification") or {}).get("export")
            predictions = classify_images(classifier, images, params, export)
        except (ValueError, FileNotFoundError) as exc:
            raise click.ClickException(str(exc)) from exc
        except Exception as exc:  # Kedro's DatasetError carries the command that makes the model
            if type(exc).__name__ == "DatasetError":
                raise click.ClickException(str(exc)) from exc
            raise
    if output:
        from vitrina.utils import atomic_path

        with atomic_path(output) as tmp:
            predictions.to_csv(tmp, index=False)
        click.echo(f"{len(predictions)} predictions written to {output}")
    else:
        click.echo(predictions.to_string(index=False, max_colwidth=60))


@cli.command(name="export")
@click.argument("model_dir", required=False, type=click.Path(file_okay=False))
@click.option(
    "--task", help="export the classification task's trained model (instead of MODEL_DIR)"
)
@click.option("--output", type=click.Path(file_okay=False),
              help="export folder (default <classification.export.output_dir>/<task>)")  # fmt: skip
@click.option("--formats", help="comma-separated subset of onnx,pt2,torchscript,int8")
@click.option("--items", type=click.Path(dir_okay=False),
              help="items parquet (split, target, image_path) for int8 calibration and test; "
              "default: the task's classification_items")  # fmt: skip
@click.option("--triton-repo", type=click.Path(file_okay=False), help="Triton repository folder")
@click.option("--env", default=None, help="Kedro environment (default KEDRO_ENV or local)")
def export_command(
    model_dir: str | None, task: str | None, output: str | None, formats: str | None,
    items: str | None, triton_repo: str | None, env: str | None,
) -> None:  # fmt: skip
    """Export a saved classifier: ONNX, .pt2, TorchScript and int8, each checked against
    eager PyTorch, a model card and a Triton repository version (settings from
    ``classification.export``; int8 needs the items its validation and test splits come from)."""
    import pandas as pd

    from vitrina.export import export_classifier, read_config
    from vitrina.hooks import git_commit
    from vitrina.models.classifiers.artefact import ImageClassifier
    from vitrina.pipelines.classification.export import split_images

    if bool(task) == bool(model_dir):
        raise click.UsageError("give exactly one of MODEL_DIR or --task TASK")
    with project_context(env) as context:
        classification = dict(context.params.get("classification") or {})
        settings = dict(classification.get("export") or {})
        if formats:
            settings["formats"] = [f.strip() for f in formats.split(",") if f.strip()]
        if triton_repo:
            settings["triton"] = {**(settings.get("triton") or {}), "repository": triton_repo}
        try:
            if model_dir:
                task = str(read_config(model_dir).get("task"))
                classifier = ImageClassifier.load(model_dir)
            else:
                classifier = context.catalog.load(f"{task}.classifier")
            frame = pd.read_parquet(items) if items else None
            needs = "int8" in (settings.get("formats") or ["int8"])
            if frame is None and needs:
                name = f"{task}.classification_items"
                if not context.catalog.exists(name):
                    raise click.ClickException(
                        f"int8 needs validation and test images: pass --items PARQUET, run "
                        f"`kedro run --pipeline=classification --namespaces={task}`, or leave "
                        "int8 out of --formats"
                    )
                frame = context.catalog.load(name)
            data = {}
            if needs:
                calib, _ = split_images(classifier, frame, "validation", classification)
                test, targets = split_images(classifier, frame, "test", classification)
                data = {"calibration": calib, "test_images": test, "test_targets": targets}
            out = Path(output or Path(settings.get("output_dir") or "export") / task)
            report = export_classifier(classifier, out, settings, source=str(model_dir or task),
                                       git_commit=git_commit(Path.cwd()), **data)  # fmt: skip
        except (ValueError, FileNotFoundError) as exc:
            raise click.ClickException(str(exc)) from exc
    for fmt, path in report["artefacts"].items():
        click.echo(f"{fmt}: {path}")
    if report["int8"]:
        r = report["int8"]
        state = "accepted" if r["accepted"] else "REJECTED (written, not for serving)"
        click.echo(f"int8 {r['metric']}: {r['fp32']:.2f} -> {r['int8']:.2f} points: {state}")
    if report["triton"]:
        t = report["triton"]
        same = " (unchanged: the latest version holds this model)" if t.get("unchanged") else ""
        click.echo(f"triton: {t['model_dir']} version {t['version']}{same}")
    click.echo(f"model card: {out / 'model_card.md'}")


@cli.group()
def models() -> None:
    """Models in the MLflow model registry."""


@models.command()
@click.argument("uri")
@click.option(
    "--dst",
    type=click.Path(file_okay=False),
    default="data/06_models/downloaded",
    show_default=True,
    help="folder the model version is downloaded into",
)
@click.option(
    "--env", default=None, help="Kedro environment (its mlflow.yml gives the tracking store)"
)
def download(uri: str, dst: str, env: str | None) -> None:
    """Download a registered model version (``models:/<name>/<version>``) into a folder
    (seed 001's "download from the tracker")."""
    if not uri.startswith("models:/"):
        raise click.UsageError(f"URI must look like models:/<name>/<version>, got {uri!r}")
    with project_context(env):
        import mlflow
        from mlflow.exceptions import MlflowException

        target = Path(dst) / uri.removeprefix("models:/").replace("/", "-")
        target.mkdir(parents=True, exist_ok=True)
        try:
            local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(target))
        except MlflowException as exc:
            raise click.ClickException(
                f"cannot download {uri} from {mlflow.get_tracking_uri()}: {exc}"
            ) from exc
    click.echo(local)
    artefact = Path(local) / "artifacts" / "model"
    if (artefact / "config.json").is_file():
        click.echo(f"classifier folder: {artefact}  (vitrina classify --model {artefact} PATH...)")


def _add_review_commands() -> None:
    from vitrina.review.cli import review

    cli.add_command(review, name="review")


_add_review_commands()


def main(argv: list[str] | None = None) -> Any:
    """Dispatch ``vitrina``: a subcommand of :data:`cli`, else ``kedro run`` options."""
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in cli.commands:
        return cli.main(args=argv, prog_name="vitrina")
    from vitrina.__main__ import run_pipelines

    return run_pipelines(argv)
