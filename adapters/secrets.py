"""Secrets in adapter settings: given inline (usually from the environment) or in a file.

A setting ``password`` may instead be given as ``password_file``, a path whose contents,
stripped of surrounding whitespace, are the secret (Docker and Kubernetes mount secrets this
way). Secrets are held as :class:`pydantic.SecretStr` so they never appear in logs or reprs.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr

__all__ = ["resolve_secret"]


def resolve_secret(name: str, inline: SecretStr | None, path: Path | None, *, required: bool) -> SecretStr | None:
    """The secret ``name`` from its inline value or its ``<name>_file``.

    Raises ``ValueError`` when both are given, when the file cannot be read or is empty,
    or when neither is given and ``required`` is true.
    """
    if inline is not None and path is not None:
        raise ValueError(f"give {name} or {name}_file, not both")
    if path is not None:
        try:
            text = path.read_text(encoding="utf-8").strip()
        except OSError as error:
            raise ValueError(f"{name}_file {str(path)!r} cannot be read: {error.strerror or error}") from None
        if not text:
            raise ValueError(f"{name}_file {str(path)!r} is empty")
        return SecretStr(text)
    if inline is None and required:
        raise ValueError(f"missing {name} (or {name}_file)")
    return inline
