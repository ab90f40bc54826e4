"""Distilling the `small` model (19.6M) into a 7.4M student on the built-in corpus.

Every run uses the default data and mixture and 300 steps of 16 packed rows (the default
job's 200 steps leave the teacher too weak to teach: see docs/distillation.md), so the rows
differ only in where the student's targets come from. Roles (the arg):

  teacher     the `small` preset
  scratch     the student trained on the labels alone
  kd_aA_tT    the student on alpha * CE + (1 - alpha) * T^2 * KL(teacher top-32 + tail):
              kd_a0_t1, kd_a0_t2, kd_a05_t1, kd_a05_t2 (alpha 0 or 0.5, T 1 or 2)
  seqkd       the student on the teacher's greedy outputs (sequence-level KD)
  online_a05_t1
              kd_a05_t1 with the teacher run inside the step instead of read from disk

Append ",smoke" for a tiny teacher and student on a small corpus. The distillation
sweep runs every role (but the online one) over 3 seeds and reports them in one table:

  refinedweb sweep --config experiments/ablate_distill.py:small --workdir runs/ablate_distill_small
  refinedweb sweep --config experiments/ablate_distill.py:smoke --workdir runs/kd_smoke

Single steps by hand:

  refinedweb train --workdir runs/distill/teacher --config experiments/distill_small_builtin.py:teacher
  refinedweb distill dump --teacher runs/distill/teacher --out runs/distill/logits --sequence-kd \
      --config experiments/distill_small_builtin.py:kd_a05_t1
  refinedweb distill train --logits runs/distill/logits --workdir runs/distill/kd_a05_t1 \
      --config experiments/distill_small_builtin.py:kd_a05_t1
"""

from refinedweb_jax import configs

# 256d, 4 heads x 64, FFN 640, 3+3 layers: 7,360,768 parameters, 37.6% of the teacher's.
STUDENT = dict(d_model=256, num_heads=4, head_dim=64, d_ff=640, num_encoder_layers=3,
               num_decoder_layers=3)
SMOKE_STUDENT = dict(d_model=16, num_heads=2, head_dim=8, d_ff=32, num_encoder_layers=1,
                     num_decoder_layers=2)
KD = {"kd_a0_t1": (0.0, 1.0), "kd_a0_t2": (0.0, 2.0), "kd_a05_t1": (0.5, 1.0),
      "kd_a05_t2": (0.5, 2.0), "online_a05_t1": (0.5, 1.0)}
ROLES = ("teacher", "scratch", *KD, "seqkd")


def get_config(arg: str = "teacher"):
  role, _, variant = arg.partition(",")
  if role not in ROLES or variant not in ("", "smoke"):
    raise ValueError(f"unknown argument {arg!r} for {__file__}; allowed: ROLE or ROLE,smoke "
                     f"with ROLE one of {', '.join(ROLES)}")
  config = configs.default_config()
  config.model.preset = "small"
  config.distill.top_k = 32
  config.train.update(dict(num_steps=300, log_every=10, eval_every=100, checkpoint_every=100))
  if variant == "smoke":
    config.model.preset = "tiny"
    config.data.update(dict(num_train=1000, num_validation=100, num_test=100, vocab_size=1000,
                            input_length=64, target_length=32, batch_size=8))
    config.train.update(dict(num_steps=20, eval_every=20, checkpoint_every=10, eval_examples=32,
                             decode_examples_per_task=4, max_decode_length=16))
    config.distill.update(dict(shard_examples=256, top_k=16))
  if role != "teacher":
    config.model.update(SMOKE_STUDENT if variant == "smoke" else STUDENT)
  if role in KD:
    config.distill.alpha, config.distill.temperature = KD[role]
    config.distill.online = role.startswith("online")
  elif role == "seqkd":
    config.distill.sequence_kd = True
  return config
