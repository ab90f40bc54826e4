"""The distillation stage's keys: the teacher's logit dump and the student's loss.

Loss: alpha * CE(labels) + (1 - alpha) * T^2 * KL(teacher_T || student_T) over the teacher's
top_k tokens + tail. A student's teacher is `logits` (a `distill dump` directory) or, with
`online`, the run in `teacher` evaluated inside the step; both empty: no student.
"""

from refinedweb_jax.config_keys.key import Key, Section
from refinedweb_jax.data import logit_store

DISTILL = Section("distill", (
    Key("alpha", 0.5, "the weight of the labels' cross-entropy (1 - alpha: the teacher's KL)",
        "[0, 1]", resume=True),
    Key("temperature", 1.0, "the softmax temperature T of teacher and student in the KL",
        "(0, inf)", resume=True),
    Key("top_k", 32, "teacher log-probabilities stored per token (the rest as one tail)",
        "(0, inf)"),
    Key("value_dtype", "bfloat16", "the stored log-probabilities' dtype",
        tuple(logit_store.VALUE_DTYPES)),
    Key("shard_examples", 2048, "examples per shard of the logit store", "(0, inf)",
        resume=True),
    Key("dump_batch_size", 32, "examples per teacher batch of distill dump", "(0, inf)",
        resume=True),
    Key("sequence_kd", False, "also store the teacher's decoded outputs and train on them "
        "(sequence-level KD)"),
    Key("sequence_kd_beam", 1, "the beam of those decoded outputs", "(0, inf)"),
    Key("online", False, "evaluate the teacher run in distill.teacher inside each step "
        "instead of reading stored logits"),
    Key("logits", "", "the student's teacher: a distill dump directory", resume=True,
        example="runs/teacher_logits"),
    Key("teacher", "", "with online: the teacher's run directory", resume=True,
        example="runs/teacher"),
))
