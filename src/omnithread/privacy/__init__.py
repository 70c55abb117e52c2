"""Privacy from the first byte: keyed pseudonymisation, encryption at rest, the secret."""

from omnithread.privacy.crypto import ENCRYPTED_PREFIX, PayloadCipher
from omnithread.privacy.identifiers import (
    IdentifierError,
    IdentifierType,
    Pseudonymiser,
    is_hashed,
    mask,
    normalise_email,
    normalise_phone,
    normalise_token,
)
from omnithread.privacy.payload import REMOVED, personal_data_rule, pseudonymise_payload, reveal_encrypted_values
from omnithread.privacy.secret import SECRET_ENV, Secret, load_secret

__all__ = [
    "ENCRYPTED_PREFIX",
    "IdentifierError",
    "IdentifierType",
    "PayloadCipher",
    "Pseudonymiser",
    "REMOVED",
    "SECRET_ENV",
    "Secret",
    "is_hashed",
    "load_secret",
    "mask",
    "normalise_email",
    "normalise_phone",
    "normalise_token",
    "personal_data_rule",
    "pseudonymise_payload",
    "reveal_encrypted_values",
]
