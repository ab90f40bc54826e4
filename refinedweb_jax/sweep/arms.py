"""Sweep definitions: arms (a name + config overrides), their products and zips, seeds, checks.

An experiment file defines get_config(arg) as always, plus get_sweep(arg) returning a
Sweep: its arms, the name of the baseline arm and the seeds. Every arm runs once per
seed, as run `<arm>/seed_<k>` with `seed=k` (every key in Sweep.seed_keys) added to
its overrides. The helpers are plain Python, in the spirit of kauldron's and fiddle's
sweeps:

  def get_sweep(arg):
    kinds = sweep.axis("model.encoder_attention", ["dense", "local", "bigbird"], name="")
    return sweep.Sweep(arms=kinds, baseline="dense", seeds=3)

  sweep.product(sweep.axis("distill.alpha", [0.0, 0.5]), sweep.axis("distill.temperature",
                [1.0, 2.0]))  # 4 arms: alpha0.0_temperature1.0, ...
  sweep.zipped(...)                               # arms paired one to one
"""

import dataclasses
import importlib.util
import itertools
import re

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.=+-]*$")
TRAIN_FLAGS = ("--workdir", "{run}")


@dataclasses.dataclass(frozen=True)
class Arm:
  """One configuration of a sweep: config overrides on top of the experiment's get_config.

  command: the `refinedweb` command words (("distill", "train") for a student);
  flags: its flags, with {run} (this run's directory), {root} (the sweep's workdir) and
  {seed} filled in; after: arms whose run of the same seed must finish first (a teacher
  before its dump); report: False for a stage that yields no metrics (a logit dump).
  """
  name: str
  overrides: dict = dataclasses.field(default_factory=dict)
  command: tuple = ("train",)
  flags: tuple = TRAIN_FLAGS
  after: tuple = ()
  report: bool = True

  @property
  def trains(self) -> bool:
    """Whether the command trains (it then checkpoints up to train.num_steps)."""
    return self.command[-1] == "train"


@dataclasses.dataclass(frozen=True)
class Sweep:
  """The arms, the baseline's name, the seeds (a count n = 0..n-1, or a list) and the
  config keys each seed sets; `metrics` names the table's and plots' main metrics
  (empty: eval/loss and each task's main metric)."""
  arms: list
  baseline: str
  seeds: object = 1
  seed_keys: tuple = ("seed",)
  metrics: tuple = ()

  @property
  def seed_list(self) -> list:
    return list(range(self.seeds)) if isinstance(self.seeds, int) else list(self.seeds)


@dataclasses.dataclass(frozen=True)
class Run:
  """One arm at one seed; `name` is also its directory under the sweep's workdir."""
  arm: Arm
  seed: int
  overrides: dict

  @property
  def name(self) -> str:
    return f"{self.arm.name}/seed_{self.seed}"


def _value_name(value) -> str:
  return f"{value:g}" if isinstance(value, float) else str(value)


def axis(key: str, values, name: str | None = None) -> list:
  """One arm per value of config key `key`, named `<name><value>` (name: the key's last part)."""
  prefix = key.rsplit(".", 1)[-1] if name is None else name
  return [Arm(f"{prefix}{_value_name(v)}", {key: v}) for v in values]


def _join(arms) -> Arm:
  overrides = {}
  for arm in arms:
    clash = sorted(set(overrides) & set(arm.overrides))
    if clash:
      raise ValueError(f"arms {' and '.join(a.name for a in arms)} both set {clash[0]}")
    overrides.update(arm.overrides)
  return Arm("_".join(a.name for a in arms if a.name), overrides)


def product(*axes) -> list:
  """Every combination of one arm from each axis: names joined by '_', overrides merged."""
  return [_join(combo) for combo in itertools.product(*axes)]


def zipped(*axes) -> list:
  """The i-th arms of every axis combined (axes of one length)."""
  lengths = sorted({len(a) for a in axes})
  if len(lengths) > 1:
    raise ValueError(f"zipped axes need one length, got lengths {lengths}")
  return [_join(combo) for combo in zip(*axes)]


def runs(sweep: Sweep) -> list:
  """Every run in sweep order: arm by arm, seeds within an arm."""
  return [Run(arm, seed, {**arm.overrides, **{k: seed for k in sweep.seed_keys}})
          for arm in sweep.arms for seed in sweep.seed_list]


def load(spec: str):
  """(config, Sweep) of an experiment file `path.py[:arg]`: its get_config(arg), get_sweep(arg)."""
  from refinedweb_jax import configs
  config = configs.load_config(spec)
  path, _, arg = spec.partition(":")
  module_spec = importlib.util.spec_from_file_location("experiment_sweep", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)  # get_config ran it already: it imports cleanly
  if not hasattr(module, "get_sweep"):
    raise ValueError(f"config file {path!r} defines no get_sweep(); a sweep's file returns "
                     "sweep.Sweep(arms=[...], baseline=NAME) from get_sweep(arg)")
  try:
    sweep = module.get_sweep(arg) if arg else module.get_sweep()
  except Exception as e:  # pylint: disable=broad-except  (the file's own error, in one line)
    raise ValueError(f"config file {path!r}: get_sweep({arg!r}): {type(e).__name__}: "
                     f"{e}") from None
  if not isinstance(sweep, Sweep):
    raise ValueError(f"config file {path!r}: get_sweep({arg!r}) returned "
                     f"{type(sweep).__name__}, not a sweep.Sweep")
  check_sweep(sweep, path)
  return config, sweep


def check_sweep(sweep: Sweep, where: str):
  """Names, baseline, seeds and stage order: each error names the arm and the file."""
  names = [a.name for a in sweep.arms]
  if not names:
    raise ValueError(f"{where}: the sweep has no arms")
  for arm in sweep.arms:
    if not isinstance(arm, Arm):
      raise ValueError(f"{where}: sweep arms must be sweep.Arm, got {type(arm).__name__}")
    if not NAME.match(arm.name):
      raise ValueError(f"{where}: bad arm name {arm.name!r}; use letters, digits and _.=+- "
                       "(it names a directory)")
    seeded = sorted(set(arm.overrides) & set(sweep.seed_keys))
    if seeded:
      raise ValueError(f"{where}: arm {arm.name!r} sets {seeded[0]}, which each seed sets "
                       f"(Sweep.seed_keys); drop it from the arm")
    for before in arm.after:
      if before not in names[:names.index(arm.name)]:
        raise ValueError(f"{where}: arm {arm.name!r} runs after {before!r}, which is no arm "
                         f"before it; earlier arms: {', '.join(names[:names.index(arm.name)])}")
  dupes = sorted({n for n in names if names.count(n) > 1})
  if dupes:
    raise ValueError(f"{where}: arm name {dupes[0]!r} is used twice")
  reported = [a.name for a in sweep.arms if a.report]
  if sweep.baseline not in reported:
    raise ValueError(f"{where}: baseline {sweep.baseline!r} is no reported arm; allowed: "
                     f"{', '.join(reported)}")
  seeds = sweep.seed_list
  if not seeds or len(set(seeds)) != len(seeds) or not all(isinstance(s, int) for s in seeds):
    raise ValueError(f"{where}: seeds must be a count >= 1 or distinct ints, got {sweep.seeds!r}")


def as_text(value) -> str:
  """An override's value as its --config.key=VALUE text."""
  if isinstance(value, bool):
    return "true" if value else "false"
  return repr(value) if isinstance(value, float) else str(value)


def arm_config(config, run: Run, where: str):
  """The config `run` trains with: overrides applied as the command line will, then validated.

  Errors name the arm and the key, before any arm runs.
  """
  import copy
  from refinedweb_jax import configs
  config = copy.deepcopy(config)
  for key, value in run.overrides.items():
    try:
      configs.apply_override(config, key, as_text(value))
    except ValueError as e:
      raise ValueError(f"{where}: arm {run.arm.name!r}, override {key!r}: {e}") from None
  try:
    configs.validate(config)
  except ValueError as e:
    raise ValueError(f"{where}: arm {run.arm.name!r}: {e}") from None
  return config


def select(all_runs: list, arms: str | None, shard: str | None, names: list) -> list:
  """The runs of `--arms a,b` (all when None), then of `--shard i/n` (run j is shard j % n)."""
  picked = all_runs
  if arms is not None:
    wanted = [a.strip() for a in arms.split(",") if a.strip()]
    unknown = [a for a in wanted if a not in names]
    if unknown or not wanted:
      raise ValueError(f"unknown arm {unknown[0] if unknown else arms!r} in --arms; allowed: "
                       f"{', '.join(names)}")
    picked = [r for r in all_runs if r.arm.name in wanted]
  if shard is not None:
    i, n = parse_shard(shard)
    picked = [r for j, r in enumerate(picked) if j % n == i]
  return picked


def parse_shard(text: str) -> tuple:
  """'i/n' -> (i, n) with 0 <= i < n."""
  match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
  if not match or not int(match[1]) < int(match[2]):
    raise ValueError(f"bad --shard {text!r}; use i/n with 0 <= i < n, e.g. --shard 0/2")
  return int(match[1]), int(match[2])
