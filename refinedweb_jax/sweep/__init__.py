"""Ablation sweeps: arms of config overrides over seeds, a resumable runner, reports with intervals.

An experiment file's get_sweep(arg) returns Sweep(arms=[Arm(...), ...], baseline=NAME,
seeds=N); axis / product / zipped build arms. `refinedweb sweep` (command.py) runs them
(runner.py) and writes the report (report.py, stats.py, plots.py).
"""

from refinedweb_jax.sweep.arms import Arm, Sweep, axis, product, zipped

__all__ = ["Arm", "Sweep", "axis", "product", "zipped"]
