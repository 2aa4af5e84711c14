"""Configuration: etcdops.toml, then environment variables, then command-line flags.

Precedence, lowest first: built-in defaults, the TOML file, the etcdctl variables operators
already export (ETCDCTL_ENDPOINTS, ...), ETCDOPS_<SECTION>_<KEY> variables, flags. Every error
names the key, where it came from (file and line, or variable) and how to fix it.

The settings are declared in settings, read in loader, and each value is checked in values.
"""

from etcdops.config.loader import DEFAULT_PATHS, find_config_file, load_config
from etcdops.config.settings import (
    CompactionConfig,
    Config,
    DefragConfig,
    EncryptionConfig,
    EtcdConfig,
    HealthConfig,
    LocalConfig,
    RetentionConfig,
    S3Config,
    S3Location,
)

__all__ = [
    "DEFAULT_PATHS",
    "CompactionConfig",
    "Config",
    "DefragConfig",
    "EncryptionConfig",
    "EtcdConfig",
    "HealthConfig",
    "LocalConfig",
    "RetentionConfig",
    "S3Config",
    "S3Location",
    "find_config_file",
    "load_config",
]
