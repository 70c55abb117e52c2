"""Understand: the unified profile of each person."""

from omnithread.profile.build import build_profiles, get_profile, profile_columns, skipped_rows

__all__ = ["build_profiles", "get_profile", "profile_columns", "skipped_rows"]
