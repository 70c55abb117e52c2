"""Destinations: what omnithread learns, sent to the tools a retailer already uses (webhooks for events and
audience changes; audience export files for ad platforms)."""
