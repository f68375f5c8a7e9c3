"""The language everything is shown in: ``--lang en|zh``, else the locale, else English."""

from __future__ import annotations

import os
from typing import Mapping

LANGS = ("en", "zh")


def default_lang(environ: Mapping[str, str] | None = None) -> str:
    """The language the locale asks for: the first of LC_ALL, LC_MESSAGES, LANG that is set
    (POSIX order) decides; "zh..." gives Chinese, anything else English."""
    env = os.environ if environ is None else environ
    for name in ("LC_ALL", "LC_MESSAGES", "LANG"):
        value = env.get(name, "")
        if value:
            return "zh" if value.lower().startswith("zh") else "en"
    return "en"


QUIZ_TOPICS = (  # the question bank's topics, in teaching order (its file stems)
    "self-attention", "scaled-dot-product", "multi-head", "cross-attention", "positional-encoding",
    "masking", "information-leakage", "efficient-attention", "inference", "architecture",
)
TOPICS_ZH = {   # topic names as shown in Chinese (docs/glossary.md)
    "self-attention": "自注意力", "scaled-dot-product": "缩放点积注意力", "multi-head": "多头注意力",
    "cross-attention": "交叉注意力", "positional-encoding": "位置编码", "masking": "掩码",
    "information-leakage": "信息泄漏", "efficient-attention": "高效注意力", "inference": "推理",
    "architecture": "模型结构", "math": "数学推导", "debugging": "调试",
}


def topic_name(topic: str, lang: str) -> str:
    return TOPICS_ZH.get(topic, topic) if lang == "zh" else topic
