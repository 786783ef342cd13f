"""Whole workflows over the stages: the quick start, lesson mode, the self-test, the doctor and
the memory planner."""
