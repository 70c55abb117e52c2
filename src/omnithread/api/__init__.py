"""The service: a Segment-compatible collector, the read API, keys, roles and the audit log."""

from omnithread.api.keys import ROLES, ApiKey, KeyStore

__all__ = ["ROLES", "ApiKey", "KeyStore", "create_app"]


def create_app(settings, *args, **kwargs):
    # deferred: the key store is used by commands that should not load the web framework
    from omnithread.api.app import create_app as make

    return make(settings, *args, **kwargs)
