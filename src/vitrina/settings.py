"""Project settings (Kedro defaults unless stated).

See https://docs.kedro.org/en/stable/configure/configuration_basics/ for the defaults.
"""

import warnings

from kedro.config import OmegaConfigLoader

from vitrina.hooks import ProjectHooks, RunChecks

# kedro-mlflow registers its own hooks through its entry point. Ours check the run before
# its first node (environment, parameters, missing inputs; atomic saves, stale temporaries
# removed) and add run tags.
HOOKS = (RunChecks(), ProjectHooks())

# kedro-telemetry may be pulled in by kedro-viz; the project's `.telemetry` file says
# `consent: false`, and the plugin's hooks are disabled here as well.
DISABLE_HOOKS_FOR_PLUGINS = ("kedro-telemetry",)

CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    # An environment (and `--params`) overrides parameters key by key, recursively: with
    # Kedro's default destructive merge, `--env=hm --params=probing.test_size=0.3` would
    # replace the whole `probing` block by `{test_size: 0.3}`.
    "merge_strategy": {"parameters": "soft"},
    "config_patterns": {
        "parameters": ["parameters*", "parameters*/**", "**/parameters*"],
    },
}

# Kedro 1.7 calls OmegaConf's deprecated register_new_resolver on every config load; the
# warning is Kedro's own, not actionable here, and drowns the run log.
warnings.filterwarnings(
    "ignore", message=r"register_new_resolver\(\) is deprecated", category=UserWarning
)
