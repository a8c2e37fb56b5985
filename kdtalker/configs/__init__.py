"""The Hydra configs of every entry point: each setting's value and default is written once, in these YAML files.

The folders are the config groups (`audio/`, `crop/`, `model/`, ...); each group's file builds its object through
`_target_`. The Python API composes the same files (`kdtalker.config.compose_config`, `kdtalker.config.CONFIG_DIR`),
so a default read from Python is the YAML's.
"""
