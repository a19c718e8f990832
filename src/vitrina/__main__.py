"""Vitrina file for ensuring the package is executable as `vitrina` and `python -m vitrina`."""

import sys
from pathlib import Path
from typing import Any


def main(*args, **kwargs) -> Any:
    """The package's console entry point: ``vitrina review ...`` runs the review commands
    (:mod:`vitrina.review.cli`); anything else is the project's ``kedro run``."""
    interactive = hasattr(sys, "ps1")
    kwargs["standalone_mode"] = not interactive
    argv = list(kwargs.get("args") or (args[0] if args else sys.argv[1:]))
    if argv[:1] == ["review"]:
        from vitrina.review.cli import review

        kwargs.pop("args", None)
        return review.main(args=argv[1:], prog_name="vitrina review", **kwargs)

    from kedro.framework.cli.utils import find_run_command
    from kedro.framework.project import configure_project

    package_name = Path(__file__).parent.name
    configure_project(package_name)
    run = find_run_command(package_name)
    return run(*args, **kwargs)


if __name__ == "__main__":
    main()
