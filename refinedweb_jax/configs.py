"""The default configuration and helpers that turn a ConfigDict into typed settings."""

import dataclasses
import importlib.util
import json
import math
import os

import ml_collections
from ml_collections import config_dict

from refinedweb_jax import backend, sharding
from refinedweb_jax.data import logit_store, registry, tasks, tokenizer
from refinedweb_jax.model.config import AttentionConfig, ModelConfig


def default_config() -> ml_collections.ConfigDict:
  """The built-in default: the `mini` model on the built-in corpus, ~12 minutes on 2 CPU cores."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.model = ml_collections.ConfigDict({"preset": "mini"})
  # Every ModelConfig field may be overridden; unset (None) fields come from the preset.
  # model.attention holds the sparse kinds' sizes (model/attention/kinds.py).
  for field in dataclasses.fields(ModelConfig):
    if field.name == "attention":
      c.model.attention = ml_collections.ConfigDict({
          f.name: config_dict.placeholder(_field_type(f))
          for f in dataclasses.fields(AttentionConfig)})
    else:
      c.model[field.name] = config_dict.placeholder(_field_type(field))
  # The compute dtype: "auto" is bfloat16 on GPU and TPU, float32 on CPU (backend.py);
  # parameters, optimizer state, logits and the loss stay float32 whatever it is.
  c.model.dtype = "auto"
  c.data = ml_collections.ConfigDict(dict(
      data_dir=os.environ.get("REFINEDWEB_DATA", os.path.expanduser("~/.cache/refinedweb_jax")),
      num_train=20_000, num_validation=1_000, num_test=1_000, corpus_seed=0,
      long_fraction=0.02, vocab_size=config_dict.placeholder(int), input_length=256,
      target_length=64, pack=True, batch_size=16, shuffle_seed=0,
      # Threads that read, tokenize and pack this process's rows, and batches built ahead
      # (0: by platform, a few on CPU, more on accelerators; train/setup.py).
      workers=0, prefetch=0,
      # The tokenizer is trained on the built-in corpus ("builtin") or on the mixture's train
      # texts ("mixture"), or is a SentencePiece file ("path/spiece.model", e.g. a T5's);
      # "auto": builtin when the mixture has a built-in task, else mixture. A trained one
      # has data.vocab_size pieces; unset, the model preset's vocabulary, or as many as
      # the training text holds when that is fewer.
      tokenizer="auto", public_data_dir=os.path.expanduser("~/tensorflow_datasets")))
  # Which tasks to train on and how often each is sampled (see tasks.mixture_rates).
  # tasks: comma-separated names ("" = every built-in corpus task); rate: proportional,
  # temperature or explicit (weights "task=w,..."); cap: T5's K (0 = none); eval_tasks:
  # the tasks evaluated ("" = the trained ones), e.g. a translation direction never trained.
  c.mixture = ml_collections.ConfigDict(dict(
      tasks="", rate="proportional", cap=0, temperature=1.0, weights="", eval_tasks=""))
  # Tasks from your own files: dicts of datasets.own_data.build arguments plus optional
  # "metrics" (tasks.METRICS) and "language" (of the targets), e.g. in an experiment file:
  # dict(task="multi30k_en_de", format="text", train=[("train.en.gz", "train.de.gz")], ...).
  c.own_tasks = []
  # Public TFDS datasets by name (datasets.public.PUBLIC), prepared as array_record in
  # data.public_data_dir (a local folder or gs:// bucket), e.g. "wmt14_en_de,xsum".
  c.public_tasks = ""
  c.optimizer = ml_collections.ConfigDict(dict(
      name="adamw", learning_rate=2e-3, schedule="cosine", warmup_steps=20, b1=0.9, b2=0.98,
      weight_decay=0.01, grad_clip_norm=1.0))
  c.loss = ml_collections.ConfigDict(dict(label_smoothing=0.0, z_loss=1e-4))
  c.train = ml_collections.ConfigDict(dict(
      num_steps=800, log_every=20, eval_every=400, checkpoint_every=200, keep_checkpoints=3,
      # The learning-rate schedule's length (0 = num_steps). A run continued with more
      # num_steps stretches its schedule unless this keeps the original length.
      schedule_steps=0,
      eval_examples=32, eval_batch_size=32, decode_examples_per_task=8, max_decode_length=64,
      async_checkpointing=True, progress_bar=True,
      # Start from another run's parameters (and tokenizer): a workdir of ours or one that
      # `refinedweb import-hf` wrote. Fresh optimizer, step 0; a resumed run ignores it.
      init_from="",
      # Gradient accumulation: the batch is split into this many microbatches, run in a
      # lax.scan; the loss stays the token-weighted mean over the whole batch.
      microbatches=1,
      # A step whose loss or gradient norm is not finite is never applied; "halt" stops
      # the run (exit 1) at the next log or checkpoint step, "skip" goes on and stops
      # after max_nonfinite_skips such steps in a row. No checkpoint ever holds one.
      on_nonfinite="halt", max_nonfinite_skips=10))
  # Device mesh: data and fsdp split the batch, fsdp also the parameters and optimizer
  # state, tensor the heads, FFN and vocabulary; one size may be -1 (the remaining devices).
  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
  # Multi-process runs on CPU/GPU clusters (unset: JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES,
  # JAX_PROCESS_ID, else one process; Cloud TPU VMs find each other by themselves).
  c.distributed = ml_collections.ConfigDict(dict(
      coordinator_address=config_dict.placeholder(str),
      num_processes=config_dict.placeholder(int), process_id=config_dict.placeholder(int)))
  # Knowledge distillation (refinedweb distill, distill.py): loss alpha * CE(labels) +
  # (1 - alpha) * T^2 * KL(teacher_T || student_T) over the teacher's top_k tokens + tail.
  # A student's teacher: `logits`, a `distill dump` directory, or with `online` the run in
  # `teacher` evaluated inside the step (train/teacher.py); both empty: no student.
  c.distill = ml_collections.ConfigDict(dict(
      alpha=0.5, temperature=1.0, top_k=32, value_dtype="bfloat16", shard_examples=2048,
      dump_batch_size=32, sequence_kd=False, sequence_kd_beam=1, online=False, logits="",
      teacher=""))
  return c


# The allowed range of every numeric key whose range is known: "(" / ")" exclude an end,
# "[" / "]" include it. validate() checks them all before any data or checkpoint is touched.
INT_MAX = 2**31 - 1  # every integer setting is at most this (steps, sizes and seeds are int32)
# The optimizers and schedules train/optim.py builds.
OPTIMIZERS = ("adamw", "adafactor")
SCHEDULES = ("cosine", "rsqrt", "constant")

RANGES = {
    "data.input_length": "(0, inf)", "data.target_length": "(0, inf)",
    "data.batch_size": "(0, inf)", "data.num_train": "(0, inf)",
    "data.num_validation": "(0, inf)", "data.num_test": "(0, inf)",
    "data.vocab_size": "(0, inf)", "data.long_fraction": "[0, 1]",
    "optimizer.learning_rate": "(0, inf)", "optimizer.warmup_steps": "[0, inf)",
    "optimizer.b1": "[0, 1)", "optimizer.b2": "[0, 1)", "optimizer.weight_decay": "[0, inf)",
    "optimizer.grad_clip_norm": "[0, inf)",
    "loss.label_smoothing": "[0, 1)", "loss.z_loss": "[0, inf)",
    "mixture.cap": "[0, inf)", "mixture.temperature": "(0, inf)",
    "train.num_steps": "(0, inf)", "train.log_every": "(0, inf)",
    "train.schedule_steps": "[0, inf)",
    "train.eval_every": "(0, inf)", "train.checkpoint_every": "(0, inf)",
    "train.keep_checkpoints": "[1, inf)", "train.eval_examples": "[1, inf)",
    "train.eval_batch_size": "(0, inf)", "train.decode_examples_per_task": "[0, inf)",
    "train.max_decode_length": "[1, inf)", "train.microbatches": "(0, inf)",
    "train.max_nonfinite_skips": "[1, inf)",
    "distill.alpha": "[0, 1]", "distill.temperature": "(0, inf)", "distill.top_k": "(0, inf)",
    "distill.shard_examples": "(0, inf)", "distill.dump_batch_size": "(0, inf)",
    "distill.sequence_kd_beam": "(0, inf)",
    "data.workers": "[0, 256]", "data.prefetch": "[0, 1024]",
    "seed": f"[0, {INT_MAX}]", "data.corpus_seed": f"[0, {INT_MAX}]",
    "data.shuffle_seed": f"[0, {INT_MAX}]",
}


def check_range(key: str, value, interval: str):
  """Raises naming config.<key> unless value lies in the interval ('[0, 1)', '(0, inf)', ...)."""
  low, high = (float(x) for x in interval[1:-1].split(","))
  ok = (value >= low if interval[0] == "[" else value > low) and (
      value <= high if interval[-1] == "]" else value < high)
  if not ok:
    if high == float("inf"):
      allowed = f"{'>=' if interval[0] == '[' else '>'} {low:g}"
    else:
      allowed = f"in {interval}"
    raise ValueError(f"config.{key} must be {allowed}, got {value}")


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


def _field_type(field):
  kinds = {"int": int, "float": float, "str": str, "bool": bool}
  return kinds.get(field.type if isinstance(field.type, str) else field.type.__name__, object)


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


def choices() -> dict:
  """The allowed values of every key that names one of a few things, from the stage defining them."""
  return {"optimizer.name": OPTIMIZERS, "optimizer.schedule": SCHEDULES,
          "train.on_nonfinite": ("halt", "skip"),
          "distill.value_dtype": tuple(logit_store.VALUE_DTYPES)}


def validate(config):
  """Fails early, naming the bad value, before any data or checkpoint is touched."""
  check_sections(config, "the config")
  check_integers(config)
  for key, interval in RANGES.items():
    section, _, name = key.rpartition(".")
    node = config[section] if section else config
    if node.get(name) is not None:  # unset: a default that follows other keys
      check_range(key, node[name], interval)
  for key, allowed in choices().items():
    section, name = key.split(".")
    if config[section][name] not in allowed:
      raise ValueError(f"unknown config.{key} {config[section][name]!r}; allowed: "
                       f"{', '.join(allowed)}")
  trained = tokenizer.TRAINED + ("auto",)
  if config.data.tokenizer not in trained and not str(config.data.tokenizer).endswith(".model"):
    raise ValueError(f"unknown config.data.tokenizer {config.data.tokenizer!r}; allowed: "
                     f"{', '.join(trained)} or a SentencePiece model file (*.model)")
  if not str(config.data.data_dir).strip():
    raise ValueError("config.data.data_dir is empty; give a folder (or gs:// path) for the "
                     "prepared data, e.g. --config.data.data_dir=~/.cache/refinedweb_jax")
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
  m = config.mesh
  sharding.check_mesh_sizes(m.data, m.fsdp, m.tensor)
  sharding.check_model_fits(cfg, dict(data=m.data, fsdp=m.fsdp, tensor=m.tensor))
  if config.distill.online and config.distill.sequence_kd:
    raise ValueError("config.distill.online and config.distill.sequence_kd exclude each other: "
                     "sequence-level KD trains on dumped teacher outputs; set one of them")
