"""Config fields from the command line, one way for both scripts.

Size flags are dataclass fields made by `config_field`: `None` unless given, their help text taken from the
`ConceptEncoderConfig` docstring and default, so nothing here repeats the config. `--config_overrides` goes through
transformers' `PretrainedConfig.update_from_string` (each value typed like the field's current value, booleans as
`true`/`false`), after a check that every key is a field of the config, and the result passes the config's own
validation. A field's name or value of 0.1 (`RENAMED_FIELDS`, `RENAMED_VALUES`), as a key or as a size flag, still
works, with a warning naming the new one.
"""

import logging
import re
import warnings
from dataclasses import field, fields

from transformers import PretrainedConfig

from concept_encoder.configuration_concept_encoder import RENAMED_FIELDS, ConceptEncoderConfig

logger = logging.getLogger(__name__)
_CONFIG_FIELDS = []  # every dataclass field made by `config_field` (argparse takes no extra metadata keys)


def config_help(name: str) -> str:
    """The `Args:` entry of `name` in the ConceptEncoderConfig docstring, e.g. `number of encoder layers`."""
    match = re.search(rf"^ +{name}: (.+?)(?=^ +\w[\w /]*: |\Z)", ConceptEncoderConfig.__doc__, re.M | re.S)
    if match is None:
        raise ValueError(f"ConceptEncoderConfig.{name} is not documented in the config's Args: document it there.")
    return " ".join(match.group(1).split())


def config_field(name: str):
    """A dataclass field for the ConceptEncoderConfig field `name`: `None` (the config's default) unless given."""
    help_text = f"{config_help(name).rstrip('.')} (config default: {ConceptEncoderConfig().to_dict()[name]})."
    made = field(default=None, metadata={"help": help_text})
    _CONFIG_FIELDS.append(made)
    return made


def config_flags(arguments) -> list[str]:
    """Names of the config fields among a dataclass's fields (those made by `config_field`)."""
    return [f.name for f in fields(arguments) if any(f is made for made in _CONFIG_FIELDS)]


def given_config_flags(arguments) -> dict:
    """`{name: value}` of the config fields given on the command line (not `None`)."""
    return {name: getattr(arguments, name) for name in config_flags(arguments) if getattr(arguments, name) is not None}


def warn_typed(message: str):
    """A deprecated name typed on the command line: logged (a script's user sees it) and a `DeprecationWarning`."""
    logger.warning(message)
    warnings.warn(message, DeprecationWarning, stacklevel=2)


def current_flag(name: str) -> str:
    """A config flag's current name: 0.1's name of a renamed config field that is a flag (`--token_read_layers`)
    warns, naming the new one."""
    new = RENAMED_FIELDS.get(name)
    if new is None or new not in {made.name for made in _CONFIG_FIELDS}:
        return name
    warn_typed(f"--{name} is deprecated (renamed in 0.2, removed in 0.3): use --{new}, which does the same.")
    return new


def override_items(
    overrides: str | None, config: PretrainedConfig, flag: str = "--config_overrides", warn=warn_typed
) -> dict:
    """`"hidden_size=64, concept_num=16"` → `{"hidden_size": "64", "concept_num": "16"}` (values still text), every
    key checked against the fields of `config`; a concept encoder's names and values of 0.1 are translated, each
    passed to `warn` (`ConceptEncoderConfig.current_settings`; `None` for a look that `apply_config_overrides`
    repeats)."""
    known = set(config.to_dict())
    items = {}
    for item in filter(None, (part.strip() for part in (overrides or "").split(","))):
        key, separator, value = (part.strip() for part in item.partition("="))
        if not separator:
            raise ValueError(f"{flag} item {item!r} is not key=value (e.g. 'hidden_size=512').")
        items[key] = value
    current_settings = getattr(config, "current_settings", None)  # a checkpoint's own code of 0.1 has none
    if current_settings is not None:
        items = current_settings(items, warn)
    unknown = [key for key in items if key not in known]
    if unknown:
        raise ValueError(
            f"{flag} key {unknown[0]!r} is not a {type(config).__name__} field: known fields are {sorted(known)}."
        )
    return items


def apply_config_overrides(config: PretrainedConfig, overrides: str | None, flag: str = "--config_overrides"):
    """Set the `key=value,...` fields of `overrides` on `config` with `update_from_string`, then validate it."""
    items = override_items(overrides, config, flag)
    if not items:
        return config
    try:
        config.update_from_string(",".join(f"{key}={value}" for key, value in items.items()))
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"{flag} {overrides!r}: {error}. Values must match the field's type (numbers, true/false or text; list "
            "and unset fields have their own flags)."
        ) from error
    validate = getattr(config, "validate_concept_encoder", None)
    if validate is not None:
        validate()
    return config


def merge_overrides(*overrides: str) -> str:
    """`key=value,...` lists merged into one `--config_overrides` string: a later list's value of a key wins, and keys
    keep the order they first appear in (shared sizes first, then a recipe's own fields)."""
    values = {}
    for text in overrides:
        for item in filter(None, (part.strip() for part in text.split(","))):
            key, _, value = item.partition("=")
            values[key.strip()] = value.strip()
    return ",".join(f"{key}={value}" for key, value in values.items())


def with_merged_overrides(flags: list[str], base: str) -> list[str]:
    """`flags` with their `--config_overrides` (if any) merged over `base` (`merge_overrides`: the flags' values win),
    as one `--config_overrides` flag placed first, so the overrides of `base` are never dropped by a second flag."""
    rest, overrides = list(flags), base
    if "--config_overrides" in rest:
        at = rest.index("--config_overrides")
        overrides = merge_overrides(base, rest[at + 1])
        del rest[at : at + 2]
    return ["--config_overrides", overrides, *rest]
