"""`python -m refinedweb_jax.cli ...`: the same as the `refinedweb` command."""

import sys

from refinedweb_jax.cli import main

sys.exit(main())
