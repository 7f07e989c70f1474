"""``python -m ilinkbot``: the ``ilinkbot`` command."""

from ilinkbot.bot.cli import main

raise SystemExit(main())
