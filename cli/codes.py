"""Exit codes of every ``journey`` command, in one place (shown by ``journey --help``).

Kept free of imports: ``journey --help`` and shell completion load this module and Typer only.
"""

from __future__ import annotations

OK = 0
"""Success, and also a long-running command stopped by SIGTERM or SIGINT after a graceful stop."""
ERROR = 1
"""Anything unexpected: one line on stderr starting with ``error:``, never a traceback."""
BAD_INPUT = 2
"""Bad input or usage: a malformed option, an invalid clinic file, a field that breaks a rule."""
NOT_FOUND = 3
"""No such journey or patient."""
REFUSED = 4
"""Refused by the journey, with every rule the request breaks."""
UNAVAILABLE = 5
"""Temporal or PostgreSQL cannot be reached."""
INTERRUPTED = 130
"""Ctrl-C during a short command (long-running ones stop gracefully and exit 0)."""

EXIT_CODES_HELP = (
    "Exit codes: 0 success (long-running commands also after SIGTERM/SIGINT: graceful stop); "
    "1 unexpected error (one line on stderr); 2 bad input or usage; 3 no such journey or "
    "patient; 4 refused by the journey (every broken rule listed); 5 Temporal or PostgreSQL "
    "unavailable; 130 interrupted."
)
