"""Encryption at rest for what cannot be pseudonymised field by field.

A payload that does not parse (broken JSON, bytes that are not UTF-8) may still
hold an email or a phone; it is kept encrypted so it can be replayed after a fix
without ever lying in the data directory in the clear. A single value that fails
normalisation (a malformed email) is encrypted in place as ``enc1:<token>``.
"""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken

from omnithread.errors import ConfigError
from omnithread.privacy.secret import Secret

__all__ = ["PayloadCipher", "ENCRYPTED_PREFIX"]

ENCRYPTED_PREFIX = "enc1:"


class PayloadCipher:
    """Authenticated encryption (Fernet) under a key derived from the secret.

    >>> c = PayloadCipher(Secret(b"0123456789abcdef0123"))
    >>> c.decrypt(c.encrypt(b"raw bytes"))
    b'raw bytes'
    >>> c.decrypt_value(c.encrypt_value("bob@"))
    'bob@'
    """

    def __init__(self, secret: Secret):
        self._fernet = Fernet(secret.fernet_key("omnithread payloads v1"))

    def encrypt(self, data: bytes) -> bytes:
        return self._fernet.encrypt(data)

    def decrypt(self, token: bytes) -> bytes:
        try:
            return self._fernet.decrypt(token)
        except InvalidToken:
            raise ConfigError("secret", "<hidden>", "the secret that encrypted this payload") from None

    def encrypt_value(self, value: object) -> str:
        import orjson

        return ENCRYPTED_PREFIX + self.encrypt(orjson.dumps(value)).decode()

    def decrypt_value(self, value: str) -> object:
        import orjson

        return orjson.loads(self.decrypt(value[len(ENCRYPTED_PREFIX) :].encode()))

    @staticmethod
    def is_encrypted(value: object) -> bool:
        return isinstance(value, str) and value.startswith(ENCRYPTED_PREFIX)
