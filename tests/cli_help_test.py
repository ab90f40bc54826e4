"""Every command and command group answers --help with its help and exit status 0."""

import re

import pytest

from refinedweb_jax import cli
from refinedweb_jax.cli import parser

HELPS = [[*c.name.split(), "--help"] for c in parser.COMMANDS] + [
    [group, "--help"] for group in parser.GROUPS] + [["--help"]]


@pytest.mark.parametrize("argv", HELPS, ids=[" ".join(a) for a in HELPS])
def test_help_prints_usage_and_exits_zero(argv, capsys):
  assert cli.main(argv) == 0
  out = capsys.readouterr().out
  assert out.startswith("usage: refinedweb"), out
  if len(argv) == 2 and argv[0] in parser.GROUPS:  # a group lists its subcommands
    for command in parser.COMMANDS:
      if command.name.startswith(argv[0] + " "):
        assert command.name.split()[1] in out


@pytest.mark.parametrize("command", ["import-hf", "export-hf"])
def test_conversion_help_says_what_config_changes(command, capsys):
  assert cli.main([command, "--help"]) == 0
  out = " ".join(re.sub(r"-\n\s*", "-", capsys.readouterr().out).split())  # wrapped at "-"
  assert "--config" in out
  if command == "import-hf":
    assert "the settings of later fine-tuning" in out and "comes from the Hugging Face" in out
  else:
    assert "not taken: this command uses the run's own config" in out
