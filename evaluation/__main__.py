"""`python -m evaluation` (`make eval`): the closed-loop servo benchmark; see evaluation.runner."""

import sys

from evaluation.runner import main

sys.exit(main())
