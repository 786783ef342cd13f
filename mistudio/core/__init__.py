"""The headless core of miStudio: pure Python, numpy and torch, never Qt.

Every long operation here is a plain function that takes a :class:`~mistudio.core.runtime.tasks.TaskState`
(progress, status, cancel), so the CLI and the desktop app drive the same code.
"""
