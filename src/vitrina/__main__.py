"""``vitrina`` and ``python -m vitrina``: ``kedro run``, or one of Vitrina's commands.

``vitrina classify ...`` and ``vitrina models download ...`` are in :mod:`vitrina.cli`;
anything else is passed to the project's ``kedro run`` command.
"""

import sys
from pathlib import Path
from typing import Any

from kedro.framework.cli.utils import find_run_command
from kedro.framework.project import configure_project


def run_pipelines(argv: list[str] | None = None) -> Any:
    """Run the project's ``kedro run`` command with ``argv``."""
    package_name = Path(__file__).parent.name
    configure_project(package_name)
    interactive = hasattr(sys, "ps1")
    run = find_run_command(package_name)
    return run(args=argv, standalone_mode=not interactive)


def main(argv: list[str] | None = None) -> Any:
    """The package's console entry point (see the module docstring); ``argv`` defaults
    to the command line."""
    from vitrina.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    main()
