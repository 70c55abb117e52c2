"""omnithread: one thread from sensing to service for retailers with shops and stores.

The stages, in the order data flows through them, are subpackages: ``sensing`` (checkout-free stores),
``events`` and ``ingest`` (collect), ``identity`` (connect), ``profile`` (understand), ``recommend`` (serve);
``privacy`` and ``engine`` are the primitives every stage uses, ``flows`` the work that spans stages, and
``api`` and ``cli`` the edges. ``docs/architecture.md`` draws the layers and the rules between them.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
