"""One error hierarchy, caught once at the CLI boundary (exit code 2).

Every error carries its English message (``str(error)``) and, optionally, the same message in
Chinese (``error.zh``), which the CLI prints under ``--lang zh`` or a Chinese locale; where no
Chinese text was given, :meth:`DrillError.text` falls back to the English one.
"""

from __future__ import annotations


class DrillError(Exception):
    """A problem the user can fix; the message says what was wrong and what to do."""

    def __init__(self, message: str = "", zh: str | None = None):
        super().__init__(message)
        self.zh = zh if zh is not None else self._default_zh(message)

    def _default_zh(self, message: str) -> str | None:
        """The Chinese text of an error raised without one (None: there is none)."""
        return None

    def text(self, lang: str = "en") -> str:
        """The message in ``lang`` ("en" or "zh"), English where there is no Chinese."""
        return self.zh if lang == "zh" and self.zh else str(self)


class UnknownExercise(DrillError):
    pass


class WorkspaceError(DrillError):
    pass


class ContentError(DrillError):
    """The catalog or the question bank does not match its schema."""

    def _default_zh(self, message: str) -> str | None:
        # The general sentence in Chinese; the file, entry and field stay as the English names them.
        return f"attn-drill 的内容文件（练习目录或题库）不符合格式：{message}" if message else None


class DeviceUnavailable(DrillError):
    """--device cuda where no CUDA device is available."""

    def _default_zh(self, message: str) -> str | None:
        return "--device cuda：这里没有可用的 CUDA 设备。请改用 --device cpu 或 --device auto。"


class StoreError(DrillError):
    pass
