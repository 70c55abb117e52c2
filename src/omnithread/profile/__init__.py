"""Understand: the unified profile of each person."""

from omnithread.profile.build import build_profiles, get_profile, skipped_rows

__all__ = ["build_profiles", "get_profile", "skipped_rows"]
