"""Every task a config can name, in one place: built-in, your own, public.

  built-in  the corpus's tasks (tasks.BUILTIN), from its TFDS build in data.data_dir
  own       config.own_tasks entries, then the tasks `refinedweb prepare --task` recorded in
            data.data_dir's own_tasks.json (read once per process and file version)
  public    config.public_tasks, public TFDS datasets by name (datasets/public.py)

Config validation (configs.task_names), the training pipeline, evaluation, the API and
the command line all ask `for_config(config)`. Names are known without reading data;
a task's source is opened when first asked for. TFDS loads only then.
"""

import functools
import json
import os

import numpy as np
from etils import epath

from refinedweb_jax.data import tasks

# In data.data_dir: the own tasks `refinedweb prepare --task` built, by name (their
# config.own_tasks entries), so a mixture can name them without an experiment file.
PREPARED = "own_tasks.json"


def prepared(data_dir: str) -> dict:
  """Name -> config.own_tasks entry of every own task prepared in data_dir."""
  path = epath.Path(data_dir) / PREPARED
  if not path.exists():
    return {}
  if "://" in str(path):
    return _read_prepared.__wrapped__(str(path), None)  # a bucket's object: read each time
  st = os.stat(path)  # each write renames a new file into place: a new inode
  return _read_prepared(str(path), (st.st_ino, st.st_mtime_ns, st.st_size))


@functools.lru_cache(maxsize=16)
def _read_prepared(path: str, stamp) -> dict:
  del stamp  # part of the cache key: a file rewritten by prepare is read again
  try:
    return json.loads(epath.Path(path).read_text(encoding="utf-8"))
  except json.JSONDecodeError as e:
    raise ValueError(f"{path} is not valid JSON ({e}); remove it and prepare the own tasks "
                     "again with: refinedweb prepare --task NAME ...") from None


def record_prepared(data_dir: str, spec: dict):
  """Records a prepared own task (its config.own_tasks entry) in data_dir's own_tasks.json."""
  entries = dict(prepared(data_dir))
  entries[spec["task"]] = spec
  path = epath.Path(data_dir) / PREPARED
  text = json.dumps(entries, indent=2, ensure_ascii=False, sort_keys=True) + "\n"
  if "://" in str(path):
    path.write_text(text, encoding="utf-8")
    return
  tmp = f"{path}.tmp{os.getpid()}"  # renamed into place: a reader never sees half a file
  with open(tmp, "w", encoding="utf-8") as f:
    f.write(text)
  os.replace(tmp, path)


def public_names(config) -> tuple[str, ...]:
  """config.public_tasks ("wmt14_en_de,xsum") as names."""
  return tuple(n.strip() for n in config.get("public_tasks", "").split(",") if n.strip())


def own_entries(config) -> dict:
  """Name -> own-task entry: config.own_tasks first, then data_dir's prepared ones."""
  entries = {}
  for spec in config.get("own_tasks", ()) or ():
    entries[spec["task"]] = _plain(spec)
  for name, spec in prepared(config.data.data_dir).items():
    entries.setdefault(name, spec)
  return entries


def _plain(value):
  """A frozen config's entry as plain dicts and lists (own_data reads those)."""
  if hasattr(value, "to_dict"):
    value = value.to_dict()
  if isinstance(value, dict):
    return {k: _plain(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return type(value)(_plain(v) for v in value)
  return value


class Registry:
  """The tasks one config can name, by name."""

  def __init__(self, config):
    d = config.data
    self._corpus = dict(data_dir=d.data_dir, num_train=d.num_train,
                        num_validation=d.num_validation, num_test=d.num_test,
                        seed=d.corpus_seed, long_fraction=d.long_fraction)
    self._own = own_entries(config)
    self._public, self._public_dir = public_names(config), d.public_data_dir
    self._tasks, self._splits = {}, {}

  def names(self) -> tuple[str, ...]:
    return tasks.BUILTIN + tuple(self._own) + self._public

  def __contains__(self, name: str) -> bool:
    return name in self.names()

  def own_entry(self, name: str) -> dict | None:
    return self._own.get(name)

  def get(self, name: str, where: str = "config.mixture.tasks") -> tasks.Task:
    """The Task of a name; an unknown one is an error naming the allowed ones."""
    if name not in self._tasks:
      if name in tasks.BUILTIN:
        self._tasks[name] = self._builtin(name)
      elif name in self._own:
        self._tasks[name] = self._own_task(name, dict(self._own[name]))
      elif name in self._public:
        self._tasks[name] = self._public_task(name)
      else:
        raise ValueError(f"unknown task {name!r} in {where}; allowed: {', '.join(self.names())}")
    return self._tasks[name]

  def builtin_source(self, split: str):
    """The built-in corpus's split, every task mixed."""
    from refinedweb_jax.data.datasets import builtin  # TFDS: only when data is read
    return builtin.data_source(self._corpus["data_dir"], split, **{
        k: v for k, v in self._corpus.items() if k != "data_dir"})

  def _builtin(self, name: str) -> tasks.Task:
    def source(split):
      if split not in self._splits:
        whole = self.builtin_source(split)
        self._splits[split] = (whole, np.asarray([whole[i]["task"] for i in range(len(whole))]))
      whole, names = self._splits[split]
      return tasks.Subset(whole, np.flatnonzero(names == name))
    return tasks.Task(name, source, tasks.metrics(name), tasks.language(name), tasks.prefix(name))

  def _own_task(self, name: str, spec: dict) -> tasks.Task:
    from refinedweb_jax.data.datasets import own_data  # TFDS: only when data is read
    metrics = tuple(spec.pop("metrics", None) or tasks.default_metrics(spec["format"]))
    language = spec.pop("language", "en")
    for metric in metrics:
      if metric not in tasks.METRICS:
        raise ValueError(f"unknown metric {metric!r} for own task {name!r}; allowed: "
                         f"{', '.join(tasks.METRICS)}")
    data_dir = self._corpus["data_dir"]
    source = lambda split: own_data.data_source(data_dir, split, **spec)
    return tasks.Task(name, source, metrics, language, spec.get("prefix", tasks.own_prefix(name)))

  def _public_task(self, name: str) -> tasks.Task:
    from refinedweb_jax.data.datasets import public  # TFDS: only when data is read
    if name not in public.PUBLIC:
      raise ValueError(f"unknown public task {name!r} in config.public_tasks; allowed: "
                       f"{', '.join(public.PUBLIC)}")
    spec = public.PUBLIC[name]
    source = lambda split: public.data_source(name, split, self._public_dir)
    return tasks.Task(name, source, spec.metrics, spec.language, spec.prefix)


def for_config(config) -> Registry:
  """The registry of a config's tasks."""
  return Registry(config)
