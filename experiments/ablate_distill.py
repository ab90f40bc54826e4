"""Ablation: teacher vs distilled students, as a sweep (the distillation table).

  refinedweb sweep --config experiments/ablate_distill.py --workdir runs/ablate_distill
      per seed: an 8.1M teacher (256 wide, 3 + 3 layers), its logit dump, a 1.7M student
      (128 wide, 2 + 2 layers, 21% of the teacher) from scratch, four KD students
      (alpha 0 / 0.5 x T 1 / 2) and the sequence-level KD student; 300 steps of 8 packed
      rows each on six tasks (en<->de, summarize, qa, code, chat; 6,000 train examples),
      3 seeds. Full run: measured 57.6 minutes on 2 CPU cores (2026-12-01, with other work
      on the machine); the table is in docs/ablations.md.
  refinedweb sweep --config experiments/ablate_distill.py:small --workdir runs/ablate_distill_small
      the same arms with experiments/distill_small_builtin.py's models: the `small` teacher
      (19.6M) and its 7.4M student on the whole built-in corpus. One seed took about 90
      minutes here, so 3 seeds need about 4.5 hours on 2 CPU cores (or --shard i/3 on three
      machines).
  refinedweb sweep --config experiments/ablate_distill.py:smoke --workdir runs/kd_smoke
      tiny teacher and student, 1 seed, teacher, dump, scratch, one KD and the
      sequence-level student: the pipeline end to end (about 2 minutes on 2 CPU cores).
  refinedweb sweep report runs/ablate_distill     # results.md, results.csv, plots

Distillation has stages, so arms say their command and what they wait for (sweep.Arm's
command, flags and after): `dump` runs `refinedweb distill dump --teacher
<root>/teacher/seed_<k> --out <root>/dump/seed_<k> --sequence-kd` after the teacher of its
seed, the KD students `refinedweb distill train --logits <root>/dump/seed_<k>` after the
dump; the dump is a stage, not a row of the report. Every run sees the same data, mixture
and steps, so the students differ only in where their targets come from. The baseline is
the student from scratch: Δ says what distillation adds, the teacher's row what it keeps.
Metrics come from each run's final evaluation (train.decode_examples_per_task decoded
examples per task). Scale up by overrides on the sweep's command line; the student arms
set only the model's sizes, so e.g. --config.train.num_steps=3000
--config.data.num_train=200000 change every arm, and `:small` (or a student of your own
in STUDENTS) changes the models.
"""

import importlib.util
import os

from refinedweb_jax import sweep

_path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "distill_small_builtin.py")
_spec = importlib.util.spec_from_file_location("distill_small_builtin", _path)
builtin = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(builtin)

ARGS = ("", "small", "smoke")
# The teacher's sizes on top of the `small` preset, and the student's, per argument.
TEACHERS = {"": dict(d_model=256, num_heads=4, head_dim=64, d_ff=1024, num_encoder_layers=3,
                     num_decoder_layers=3),
            "small": {}, "smoke": {}}
STUDENTS = {"": dict(d_model=128, num_heads=2, head_dim=64, d_ff=512, num_encoder_layers=2,
                     num_decoder_layers=2),
            "small": builtin.STUDENT, "smoke": builtin.SMOKE_STUDENT}
TASKS = ("translate_en_de", "translate_de_en", "summarize", "qa", "code", "chat")
SMOKE_ARMS = ("teacher", "dump", "scratch", "kd_a05_t1", "seqkd")
DUMP = "{root}/dump/seed_{seed}"


def _check(arg: str):
  if arg not in ARGS:
    raise ValueError(f"unknown argument {arg!r} for {__file__}; allowed: '', 'small' or 'smoke'")


def get_config(arg: str = ""):
  _check(arg)
  config = builtin.get_config("teacher,smoke" if arg == "smoke" else "teacher")
  config.model.update(TEACHERS[arg])
  if arg == "":
    config.mixture.tasks = ",".join(TASKS)
    config.data.update(dict(num_train=6000, num_validation=500, num_test=500, vocab_size=4000,
                            batch_size=8))
    config.train.update(dict(eval_every=150, checkpoint_every=150, decode_examples_per_task=16,
                             progress_bar=False))
  if arg == "smoke":
    config.data.update(dict(num_train=300, num_validation=40, num_test=20, vocab_size=600))
    config.train.update(dict(num_steps=6, log_every=2, eval_every=6, checkpoint_every=6,
                             eval_examples=16, decode_examples_per_task=2, max_decode_length=8,
                             progress_bar=False))
    config.distill.shard_examples = 128
  return config


def get_sweep(arg: str = ""):
  _check(arg)
  student = {f"model.{k}": v for k, v in STUDENTS[arg].items()}
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
