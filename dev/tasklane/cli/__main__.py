"""``python -m tasklane.cli``: the same as the ``tasklane`` command."""

from tasklane.cli import main

raise SystemExit(main())
