"""The default configuration and helpers that turn a ConfigDict into typed settings."""

import importlib.util
import json
import math
import os

import ml_collections

from refinedweb_jax import backend, config_keys, sharding
from refinedweb_jax.config_keys import INT_MAX
from refinedweb_jax.data import registry, tasks
from refinedweb_jax.model.config import ModelConfig


def default_config() -> ml_collections.ConfigDict:
  """The built-in default: the `mini` model on the built-in corpus, ~12 minutes on 2 CPU cores.

  Every key, its default, type, range and help are declared by the stage that owns it
  (config_keys/); every ModelConfig field may be overridden, unset (None) ones come from
  the preset.
  """
  return config_keys.default_config()


def check_integers(config, prefix: str = "config"):
  """Every integer setting (at any depth) lies within +-INT_MAX: larger ones overflow the
  int32 steps, shapes and seeds they become."""
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      check_integers(value, f"{prefix}.{key}")
    elif isinstance(value, int) and not isinstance(value, bool) and abs(value) > INT_MAX:
      raise ValueError(f"{prefix}.{key}={value} is out of range; allowed: integers up to "
                       f"{INT_MAX:,} in size")


def check_sections(config, where: str):
  """A config holds every section of the default one (an experiment file's get_config()
  starts from default_config() and changes it)."""
  missing = [key for key in default_config() if key not in config]
  if missing:
    raise ValueError(f"{where} has no {', '.join(missing)} (section(s) of the default config); "
                     "build it from refinedweb_jax.configs.default_config() and change what "
                     "differs")


def model_config(config, vocab_size: int | None = None) -> ModelConfig:
  """The typed ModelConfig: the preset, then every field set in config.model.

  `vocab_size` (the tokenizer's) replaces the preset's unless config.model sets
  one, which must then be at least the tokenizer's.
  """
  overrides = {k: v for k, v in config.model.items()
               if k not in ("preset", "attention") and v is not None}
  if overrides.get("dtype") == "auto":
    overrides["dtype"] = backend.auto_dtype()
  overrides.setdefault("scan_layers", backend.auto_scan_layers())
  overrides["attention"] = {k: v for k, v in config.model.get("attention", {}).items()
                            if v is not None}
  if vocab_size is not None:
    if overrides.get("vocab_size", vocab_size) < vocab_size:
      raise ValueError(f"config.model.vocab_size={overrides['vocab_size']} is smaller than the "
                       f"tokenizer's vocabulary ({vocab_size})")
    overrides.setdefault("vocab_size", vocab_size)
  return ModelConfig.from_preset(config.model.preset, **overrides)


def from_saved(saved: dict) -> ml_collections.ConfigDict:
  """A saved config (a checkpoint's or config.json) over the defaults, so keys added since
  it was saved have their default values, except where a default would misdescribe the
  saved run: a run saved before layers were scanned has unrolled layers."""
  config = default_config()
  config.update(ml_collections.ConfigDict(saved))
  if "model" in saved and "scan_layers" not in saved["model"]:
    config.model.scan_layers = False
  return config


def load_config(spec: str | None) -> ml_collections.ConfigDict:
  """Loads `path/to/config.py[:arg]` (its get_config(arg)), or the default when spec is None.

  Any error inside the file (syntax, an exception, a missing import, an argument
  get_config does not take, a result that is no ConfigDict) is one ValueError naming
  the file and line.
  """
  if not spec:
    return default_config()
  path, _, arg = spec.partition(":")
  if not os.path.isfile(path):
    raise ValueError(f"config file {path!r} not found (from --config {spec})")
  module_spec = importlib.util.spec_from_file_location("experiment_config", path)
  module = importlib.util.module_from_spec(module_spec)
  try:
    module_spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
      raise ValueError(f"config file {path!r} defines no get_config()")
    config = module.get_config(arg) if arg else module.get_config()
  except ValueError as e:
    if str(e).startswith(f"config file {path!r}"):
      raise
    raise ValueError(f"config file {_where(path, e)}: {e}") from None
  except SystemExit as e:  # exit() at import: the file ends the program instead of configuring it
    raise ValueError(f"config file {_where(path, e)}: it calls exit({e.code!r}) while loading; "
                     "a config file defines get_config() and returns its config") from None
  except Exception as e:  # pylint: disable=broad-except  (the file's own errors, in one line)
    raise ValueError(f"config file {_where(path, e)}: {type(e).__name__}: {e}") from None
  if not isinstance(config, ml_collections.ConfigDict):
    raise ValueError(f"config file {path!r}: get_config({arg!r}) returned "
                     f"{type(config).__name__}, not an ml_collections.ConfigDict")
  check_sections(config, f"config file {path!r}: its config")
  return config


def _where(path: str, error: Exception) -> str:
  """'path:line' of the deepest traceback frame inside the config file (or its syntax error)."""
  if isinstance(error, SyntaxError) and error.lineno:
    return f"{path}:{error.lineno}"
  line = None
  tb = error.__traceback__
  while tb is not None:
    if os.path.abspath(tb.tb_frame.f_code.co_filename) == os.path.abspath(path):
      line = tb.tb_lineno
    tb = tb.tb_next
  return f"{path}:{line}" if line else path


def _field(config, dotted: str):
  """(parent ConfigDict, key) of config.<dotted>; an unknown part is an error naming it."""
  parts = dotted.split(".")
  node = config
  for i, part in enumerate(parts):
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      where = ".".join(parts[:i]) or "config"
      allowed = sorted(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
      raise ValueError(f"unknown config key {'config.' + dotted!r}: {where} has no {part!r}; "
                       f"allowed: {', '.join(allowed)}")
    if i < len(parts) - 1:
      node = node[part]
  return node, parts[-1]


def set_value(config, dotted: str, value):
  """Sets config.<dotted> to a Python value (ConfigDict checks its type)."""
  node, key = _field(config, dotted)
  node[key] = value


def apply_override(config, dotted: str, raw: str):
  """Sets config.<dotted> from a command-line string, keeping the field's type."""
  node, key = _field(config, dotted)
  current = node.get_ref(key) if hasattr(node, "get_ref") else None
  kind = current.get_type() if current is not None else type(node[key])
  try:
    node[key] = _parse_value(raw, kind)
  except (TypeError, ValueError) as e:
    raise ValueError(
        f"bad value {raw!r} for config.{dotted} (expects {kind.__name__}): {e}") from None


def _parse_value(raw: str, kind):
  if kind is bool:
    if raw.lower() in ("true", "1", "yes"):
      return True
    if raw.lower() in ("false", "0", "no"):
      return False
    raise ValueError("use true or false")
  if kind is int:
    return int(raw)
  if kind is float:
    return float(raw)
  if kind is str or kind is object or kind is type(None):
    return raw
  raise TypeError(f"cannot set a {kind.__name__} from the command line")


def known_tasks(config) -> tuple[str, ...]:
  """Every task a config can name (registry.py: built-in, own, public)."""
  return registry.for_config(config).names()


def resolve(config):
  """Fills in what the config leaves to its tasks, so the saved config says it outright:
  the entries of prepared own tasks the mixture names (config.own_tasks), the
  tokenizer "auto" (builtin when a mixture or eval task is built-in, else mixture) and
  the compute dtype "auto" (backend.auto_dtype: bfloat16 on GPU and TPU, else float32) and
  an unset model.scan_layers (backend.auto_scan_layers: scanned on GPU and TPU, else not)."""
  own = {t["task"] for t in config.get("own_tasks", []) or []}
  prepared = registry.prepared(config.data.data_dir)
  named = [n.strip() for key in ("tasks", "eval_tasks")
           for n in config.mixture.get(key, "").split(",") if n.strip()]
  with config.unlocked():
    for name in dict.fromkeys(named):
      if name not in own and name not in tasks.BUILTIN and name in prepared:
        config.own_tasks = list(config.own_tasks) + [prepared[name]]
    if config.data.tokenizer == "auto":
      builtin = not named or any(n in tasks.BUILTIN for n in named)
      config.data.tokenizer = "builtin" if builtin else "mixture"
    if config.model.get("dtype") == "auto":
      config.model.dtype = backend.auto_dtype()
    if config.model.get("scan_layers") is None:
      config.model.scan_layers = backend.auto_scan_layers()
  return config


def tokenizer_vocab_size(config) -> tuple[int, bool]:
  """(pieces of a trained tokenizer, whether fewer may do): data.vocab_size when set (exact),
  else model.vocab_size or the preset's, as many as the training text holds."""
  if config.data.get("vocab_size") is not None:
    return config.data.vocab_size, False
  if config.model.get("vocab_size") is not None:
    return config.model.vocab_size, True
  return ModelConfig.from_preset(config.model.preset).vocab_size, True


def task_names(config, key: str = "tasks") -> tuple[str, ...]:
  """config.mixture.tasks ("" = every built-in task), each a known task name."""
  names = tuple(t.strip() for t in config.mixture[key].split(",") if t.strip())
  known = known_tasks(config)
  for name in names:
    if name not in known:
      raise ValueError(f"unknown task {name!r} in config.mixture.{key}; allowed: "
                       f"{', '.join(known)}")
  return names or tasks.BUILTIN


def freeze(config) -> ml_collections.ConfigDict:
  """The settled config, locked: no key can be added, and nothing changes it after this
  (a run's config.json says what ran; commands and the API pass changes to resume.settle)."""
  config.lock()
  return config


def to_dict(config) -> dict:
  """A (frozen) ConfigDict as a plain JSON dict (lists, not tuples)."""
  return json.loads(config.to_json())


def eval_task_names(config) -> tuple[str, ...]:
  """config.mixture.eval_tasks, or the trained tasks when it is empty."""
  if not config.mixture.get("eval_tasks", "").strip():
    return task_names(config)
  return task_names(config, "eval_tasks")


def validate(config):
  """Fails early, naming the bad value, before any data or checkpoint is touched."""
  check_sections(config, "the config")
  check_integers(config)
  config_keys.check(config)  # each key's type, range or choices, as its stage declares them
  cfg = model_config(config)
  cfg.check_lengths(config.data.input_length, config.data.target_length)
  for spec in config.get("own_tasks", ()) or ():
    name = spec.get("task")
    if name in tasks.BUILTIN:
      raise ValueError(f"config.own_tasks names a task {name!r}, the name of a built-in task; "
                       "give it another name")
    if "pass@1" in (spec.get("metrics") or ()):
      raise ValueError(f"config.own_tasks task {name!r} asks for metrics pass@1, which runs "
                       "each example's tests, and own files carry none; use bleu, chrf, rouge "
                       "or exact_match")
  task_names(config)
  eval_task_names(config)
  if registry.public_names(config):
    from refinedweb_jax.data.datasets import public  # TFDS: only for configs that name one
    for name in registry.public_names(config):
      if name not in public.PUBLIC:
        raise ValueError(f"unknown public task {name!r} in config.public_tasks; allowed: "
                         f"{', '.join(public.PUBLIC)}")
  # Rates on unit sizes: checks the method, cap, temperature and weights before any data.
  weights = tasks.parse_weights(config.mixture.weights)
  for name, weight in weights.items():
    if not math.isfinite(weight) or weight < 0:
      raise ValueError(f"config.mixture.weights gives {name!r} the weight {weight}; a weight "
                       "must be a finite number >= 0")
  unknown = sorted(set(weights) - set(task_names(config)))
  if unknown:
    raise ValueError(f"config.mixture.weights names {', '.join(map(repr, unknown))}, not a task "
                     f"of config.mixture.tasks; allowed: {', '.join(task_names(config))}")
  tasks.mixture_rates({n: 1 for n in task_names(config)}, method=config.mixture.rate,
                      cap=config.mixture.cap, temperature=config.mixture.temperature,
                      weights=weights)
  if config.data.batch_size % config.train.microbatches:
    raise ValueError(f"config.data.batch_size={config.data.batch_size} must be divisible by "
                     f"config.train.microbatches={config.train.microbatches}")
  mesh = config.mesh
  sharding.check_mesh_sizes(mesh.data, mesh.fsdp, mesh.tensor)
  sharding.check_model_fits(cfg, dict(data=mesh.data, fsdp=mesh.fsdp, tensor=mesh.tensor))
  if config.distill.online and config.distill.sequence_kd:
    raise ValueError("config.distill.online and config.distill.sequence_kd exclude each other: "
                     "sequence-level KD trains on dumped teacher outputs; set one of them")
