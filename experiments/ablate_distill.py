"""Ablation: teacher vs distilled students (distill_table.py's table, as a sweep).

  refinedweb sweep --config experiments/ablate_distill.py --workdir runs/ablate_distill
      per seed: the `small` teacher (19.6M), its logit dump, the 7.4M student from
      scratch, four KD students (alpha 0 / 0.5 x T 1 / 2) and the sequence-level KD
      student; 3 seeds. Full run: not measured as a sweep yet. One seed of these stages
      took about 90 minutes here (distill_table.py), so 3 seeds need about 4.5 hours on 2
      CPU cores, or --shard i/3 on three machines.
  refinedweb sweep --config experiments/ablate_distill.py:smoke --workdir runs/kd_smoke
      tiny teacher and student, 1 seed, teacher, dump, scratch, one KD and the
      sequence-level student: the pipeline end to end (about 2 minutes on 2 CPU cores).

The configs are experiments/distill_small_builtin.py's: the teacher's get_config, and
each student arm its student sizes and KD settings as overrides. Distillation has
stages, so arms say their command and what they wait for (sweep.Arm's command, flags
and after): `dump` runs `refinedweb distill dump --teacher <root>/teacher/seed_<k>
--out <root>/dump/seed_<k> --sequence-kd` after the teacher of its seed, the KD
students `refinedweb distill train --logits <root>/dump/seed_<k>` after the dump;
the dump is a stage, not a row of the report. The baseline is the student from
scratch: Δ says what distillation adds, the teacher's row what it keeps. Metrics come
from each run's final evaluation (train.decode_examples_per_task decoded examples per
task); distill_table.py evaluates whole splits and times decoding on top.
"""

import importlib.util
import os

from refinedweb_jax import sweep

_path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "distill_small_builtin.py")
_spec = importlib.util.spec_from_file_location("distill_small_builtin", _path)
builtin = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(builtin)

SMOKE_ARMS = ("teacher", "dump", "scratch", "kd_a05_t1", "seqkd")
DUMP = "{root}/dump/seed_{seed}"


def get_config(arg: str = ""):
  if arg not in ("", "smoke"):
    raise ValueError(f"unknown argument {arg!r} for {__file__}; allowed: '' or 'smoke'")
  config = builtin.get_config("teacher,smoke" if arg == "smoke" else "teacher")
  if arg == "smoke":
    config.data.update(dict(num_train=300, num_validation=40, num_test=20, vocab_size=600))
    config.train.update(dict(num_steps=6, log_every=2, eval_every=6, checkpoint_every=6,
                             eval_examples=16, decode_examples_per_task=2, max_decode_length=8,
                             progress_bar=False))
    config.distill.shard_examples = 128
  return config


def get_sweep(arg: str = ""):
  student = builtin.SMOKE_STUDENT if arg == "smoke" else builtin.STUDENT
  student = {f"model.{k}": v for k, v in student.items()}
  kd_flags = ("--logits", DUMP, "--workdir", "{run}")
  arms = [
      sweep.Arm("teacher"),
      sweep.Arm("dump", command=("distill", "dump"), after=("teacher",), report=False,
                flags=("--teacher", "{root}/teacher/seed_{seed}", "--out", "{run}",
                       "--sequence-kd")),
      sweep.Arm("scratch", student),
      *[sweep.Arm(role, {**student, "distill.alpha": alpha, "distill.temperature": t},
                  command=("distill", "train"), flags=kd_flags, after=("dump",))
        for role, (alpha, t) in builtin.KD.items() if not role.startswith("online")],
      sweep.Arm("seqkd", {**student, "distill.sequence_kd": True},
                command=("distill", "train"), flags=kd_flags, after=("dump",)),
  ]
  if arg == "smoke":
    arms = [a for a in arms if a.name in SMOKE_ARMS]
  return sweep.Sweep(arms=arms, baseline="scratch", seeds=1 if arg == "smoke" else 3,
                     metrics=("eval/loss", "eval/score", "eval/translate_en_de/chrf",
                              "eval/summarize/rougeL", "eval/qa/f1", "eval/code/pass@1",
                              "eval/chat/chrf"))
