"""Allow ``python -m twinforge``."""

from twinforge.cli import app

app(prog_name="twinforge")
