"""Secrets at rest: one Fernet key in a file of the controller's, and random bearer tokens stored as hashes.

Secret values are encrypted before they reach the state machine, so the database (and every
snapshot, backup or copy of it) holds only ciphertext. Tokens are 256 random bits: a single
SHA-256 is enough to store them, because nobody can guess a preimage of a random 256-bit value
(slow password hashes exist for low-entropy human passwords, which these are not), and a fast hash
keeps the per-call check at about a microsecond.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path

__all__ = ["SecretBox", "hash_token", "new_token", "new_token_id", "write_private"]

_TOKEN_PREFIX = "corral_"


def new_token() -> str:
    """A fresh bearer token (shown once to its creator, then only its hash exists)."""
    return _TOKEN_PREFIX + secrets.token_urlsafe(32)


def new_token_id() -> str:
    """A short public id to list, audit and revoke a token by."""
    return secrets.token_hex(6)


def hash_token(token: str) -> str:
    """The stored form of a token: hex SHA-256 (see the module docstring for why that suffices)."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def write_private(path: Path, data: bytes) -> None:
    """Create ``path`` with mode 0600 (never readable by others, not even for an instant) and write it."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
    finally:
        os.close(fd)


class SecretBox:
    """Encrypts and decrypts secret values with the controller's Fernet key."""

    def __init__(self, key: bytes) -> None:
        # Imported here: cryptography costs ~8 MiB of RSS, and a box exists only with --secret-key-file.
        from cryptography.fernet import Fernet, InvalidToken

        self._fernet = Fernet(key)
        self._invalid = InvalidToken

    @classmethod
    def from_key_file(cls, path: Path) -> SecretBox:
        """Load the key, creating the file (mode 0600) with a new key when it does not exist."""
        if not path.exists():
            from cryptography.fernet import Fernet

            write_private(path, Fernet.generate_key() + b"\n")
        mode = path.stat().st_mode & 0o077
        if mode:
            raise PermissionError(f"{path} is readable by other users (mode {oct(mode)}); chmod 600 it")
        try:
            return cls(path.read_bytes().strip())
        except ValueError as exc:
            raise ValueError(f"{path} does not hold a Fernet key: {exc}") from None

    def encrypt(self, value: str) -> bytes:
        return self._fernet.encrypt(value.encode())

    def decrypt(self, ciphertext: bytes) -> str:
        """The plain value; ValueError when it was not encrypted with this key."""
        try:
            return self._fernet.decrypt(ciphertext).decode()
        except (self._invalid, UnicodeDecodeError) as exc:
            raise ValueError("secret does not decrypt with this controller's key") from exc
