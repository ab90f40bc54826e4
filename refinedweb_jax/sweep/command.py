"""`refinedweb sweep`: run an experiment file's sweep, or write the report of a sweep's workdir.

  refinedweb sweep --config experiments/ablate_X.py[:arg] --workdir runs/ablate_X
                   [--arms a,b] [--dry-run] [--shard i/n] [--config.key=value ...]
  refinedweb sweep report runs/ablate_X

Bad input (an unknown arm, an override key the config lacks, a malformed --shard, a
folder that is no sweep's) raises a one-line ValueError before any arm runs.
"""

import argparse

USAGE = __doc__.split("\n\n")[1]


class _Parser(argparse.ArgumentParser):
  def error(self, message):
    raise ValueError(f"{message} (usage: refinedweb sweep --config FILE[:arg] --workdir DIR "
                     "[--arms a,b] [--dry-run] [--shard i/n], or refinedweb sweep report DIR)")


def _parser(report: bool) -> argparse.ArgumentParser:
  p = _Parser(prog="refinedweb sweep" + (" report" if report else ""), allow_abbrev=False)
  if report:
    p.add_argument("workdir", help="the sweep's --workdir")
    return p
  p.add_argument("--config", required=True, help="experiment file with get_sweep: FILE[:arg]")
  p.add_argument("--workdir", required=True, help="the sweep's folder (one sub-folder per run)")
  p.add_argument("--arms", default=None, help="comma-separated arm names (default: all)")
  p.add_argument("--dry-run", action="store_true", help="print each run's command and overrides")
  p.add_argument("--shard", default=None, help="i/n: run every n-th run, from the i-th")
  return p


def main(argv: list) -> int:
  """Runs `sweep ...` (argv without 'sweep'); returns the exit status."""
  if not argv or argv[0] in ("-h", "--help"):
    print(USAGE)
    return 0 if argv else 2
  if argv[0] == "report":
    args = _parser(report=True).parse_args(argv[1:])
    from refinedweb_jax.sweep import report
    print(report.write_report(args.workdir))
    return 0
  args, extra = _parser(report=False).parse_known_args(argv)
  common = {}  # --config.key=value for every run, e.g. a bigger preset on TPU
  for item in extra:
    key, eq, value = item[len("--config."):].partition("=")
    if not item.startswith("--config.") or not eq:
      raise ValueError(f"unknown flag {item!r} for 'refinedweb sweep'; overrides for every run "
                       "are --config.key=VALUE")
    common[key] = value
  if args.shard is not None:
    from refinedweb_jax.sweep import arms
    arms.parse_shard(args.shard)  # before the experiment file loads
  from refinedweb_jax.sweep import runner
  return runner.run_sweep(args.config, args.workdir, arms=args.arms, shard=args.shard,
                          dry_run=args.dry_run, common=common,
                          out=lambda text: print(text, flush=True))
