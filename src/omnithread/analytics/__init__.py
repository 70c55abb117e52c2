"""The understand stage: lifetime value, analytics, audiences."""
