"""Django's ``makemessages``, writing sorted .po files without file locations, so that several people adding
strings to ``kulipa/locale/en/LC_MESSAGES/django.po`` get small, stable diffs.

Usage: ``manage.py makemessages -l en``, translate the new entries, then
``manage.py compilemessages -l en --ignore=.venv`` (needs gettext; without ``--ignore`` it also recompiles
Django's catalogues inside .venv), and commit both django.po and django.mo.
"""

from __future__ import annotations

from django.core.management.commands import makemessages


class Command(makemessages.Command):
    msgmerge_options = [
        *makemessages.Command.msgmerge_options,
        "--sort-output",
        "--no-location",
        "--no-fuzzy-matching",  # a guessed translation is worse than none
    ]
    msguniq_options = [*makemessages.Command.msguniq_options, "--sort-output", "--no-location"]
    xgettext_options = [*makemessages.Command.xgettext_options, "--sort-output", "--no-location"]
