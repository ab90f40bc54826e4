"""The training stage's keys: the seed, the optimizer (train/optim.py), the loss and the loop."""

from refinedweb_jax.config_keys.key import INT_MAX, Key, Section

# The optimizers and schedules train/optim.py builds.
OPTIMIZERS = ("adamw", "adafactor")
SCHEDULES = ("cosine", "rsqrt", "constant")

SEED = Section("", (
    Key("seed", 0, "the random seed of the run (parameter initialisation, dropout)",
        f"[0, {INT_MAX}]"),
))

# A resumed run may change its optimizer's settings but not the structure of its state.
OPTIMIZER = Section("optimizer", (
    Key("name", "adamw", "the optimizer (its state's structure is the checkpoint's)",
        OPTIMIZERS, resume=False),
    Key("learning_rate", 2e-3, "the peak learning rate", "(0, inf)"),
    Key("schedule", "cosine", "the learning rate after warmup", SCHEDULES),
    Key("warmup_steps", 20, "steps of linear warmup from 0", "[0, inf)"),
    Key("b1", 0.9, "Adam's first-moment decay", "[0, 1)"),
    Key("b2", 0.98, "Adam's second-moment decay", "[0, 1)"),
    Key("weight_decay", 0.01, "decoupled weight decay of the matrices", "[0, inf)"),
    Key("grad_clip_norm", 1.0, "the global gradient norm is clipped to this (0 = no clipping)",
        "[0, inf)"),
), resume=True)

LOSS = Section("loss", (
    Key("label_smoothing", 0.0, "the target distribution's mass spread over the vocabulary",
        "[0, 1)"),
    Key("z_loss", 1e-4, "weight of log(Z)^2, which keeps the logits' normaliser near 1",
        "[0, inf)"),
), resume=True)

# Cadence, steps and decoding: a resumed run may change every one but its start.
TRAIN = Section("train", (
    Key("num_steps", 800, "steps to train (more continue a finished run)", "(0, inf)"),
    Key("log_every", 20, "steps between log lines and metrics rows", "(0, inf)"),
    Key("eval_every", 400, "steps between evaluations", "(0, inf)"),
    Key("checkpoint_every", 200, "steps between checkpoints", "(0, inf)"),
    Key("keep_checkpoints", 3, "the newest checkpoints kept", "[1, inf)"),
    Key("schedule_steps", 0, "the learning-rate schedule's length (0 = num_steps; a run "
        "continued with more num_steps stretches its schedule unless this keeps the length)",
        "[0, inf)"),
    Key("eval_examples", 32, "examples per task scored teacher-forced at each evaluation",
        "[1, inf)"),
    Key("eval_batch_size", 32, "examples per evaluation batch", "(0, inf)"),
    Key("decode_examples_per_task", 8, "examples decoded per task for the decoded metrics",
        "[0, inf)"),
    Key("max_decode_length", 64, "tokens decoded at most per example", "[1, inf)"),
    Key("async_checkpointing", True, "write checkpoints in the background"),
    Key("progress_bar", True, "show a progress bar when stderr is a terminal"),
    Key("init_from", "", "start from another run's parameters and tokenizer (a workdir of ours "
        "or one import-hf wrote): fresh optimizer, step 0; a resumed run ignores it",
        resume=False, example="runs/pretrained"),
    Key("microbatches", 1, "gradient accumulation: the batch runs as this many microbatches in "
        "a lax.scan (the loss stays the token-weighted mean over the batch)", "(0, inf)"),
    Key("on_nonfinite", "halt", "a step whose loss or gradient norm is not finite is never "
        "applied: halt stops the run (exit 1) at the next log or checkpoint step, skip goes on",
        ("halt", "skip")),
    Key("max_nonfinite_skips", 10, "with on_nonfinite=skip: stop after this many such steps in "
        "a row", "[1, inf)"),
), resume=True)
