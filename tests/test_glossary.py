"""The bank's Chinese follows docs/glossary.md: no forbidden variant in any topic file's zh
text, and the patterns find what they should and nothing else."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from attn_drill.quiz import glossary
from attn_drill.quiz.bank import MISTAKES_FILE, QUESTIONS_DIR, Question, Text

ROOT = Path(__file__).resolve().parents[1]
GLOSSARY = ROOT / "docs" / "glossary.md"
TOPIC_FILES = sorted(p for p in QUESTIONS_DIR.glob("*.toml") if p.name != MISTAKES_FILE)


def _zh_texts(node, where: str):
    """Every zh text in a raw TOML entry, with where it sits (read raw: a file that does not
    pass the schema yet is still checked)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "zh" and isinstance(value, str):
                yield where, value
            else:
                yield from _zh_texts(value, f"{where}.{key}" if where else key)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _zh_texts(value, f"{where}[{i}]")


@pytest.mark.parametrize("path", TOPIC_FILES, ids=lambda p: p.stem)
def test_topic_file_follows_the_glossary(path):
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    found = []
    for raw in data.get("questions", []):
        qid = raw.get("id", "?")
        for where, text in _zh_texts(raw, ""):
            found += glossary.drift_in(text, f"{path.name}: {qid} {where}")
    if found:
        pytest.fail(f"{len(found)} glossary drifts:\n" + "\n".join(map(str, found)), pytrace=False)


def test_every_forbidden_variant_is_in_the_glossary():
    doc = GLOSSARY.read_text(encoding="utf-8")
    for rule in glossary.RULES:
        assert rule.forbidden in doc, f"{rule.forbidden!r} is not in the Forbidden column of docs/glossary.md"


def _hits(text: str) -> list[str]:
    return [d.rule.forbidden for d in glossary.drift_in(text)]


@pytest.mark.parametrize("text, forbidden", [
    ("否则目标 token 会泄露未来的信息", "泄露"),
    ("交叉注意力需要因果 mask", "因果 mask"),
    ("因果mask", "因果 mask"),
    ("被 mask 的 key 权重为零", "被 mask"),
    ("把目标右移一个 token", "目标右移"),
    ("目标没有右移", "目标右移"),
    ("目标是输入右移一位", "目标右移"),
    ("生成的样本全是乱码", "乱码"),
    ("位置 i 只能注意位置 ≤ i", "注意 as a verb"),
    ("True 表示“可以注意”", "注意 as a verb"),
    ("token 会主要注意自己", "注意 as a verb"),
    ("解码器第 i 层注意的是编码器第 i 层的输出", "注意 as a verb"),
    ("每个 query 注意到所有 key", "注意 as a verb"),
    ("8 个 head 不增加参数", "head"),
    ("每组 query head 共享一个 key head", "head"),
    ("使用 causal mask", "causal"),
    ("右侧 padding 的句子", "padding"),
    ("key padding mask", "padding"),
    ("一个 Transformer decoder block", "decoder"),
    ("“NoPE”decoder 能够学到位置信息", "decoder"),
    ("encoder-decoder 模型", "encoder"),
    ("token embedding", "embedding"),
    ("写入 residual stream", "residual"),
    ("标准 multi-head 是 G = H", "multi-head"),
    ("标准 self-attention", "self-attention"),
    ("teacher forcing 要求", "teacher forcing"),
    ("吞吐会上升", "吞吐 without 量"),
    ("KV 缓存的大小", "KV 缓存"),
])
def test_a_forbidden_variant_is_found(text, forbidden):
    assert forbidden in _hits(text)


@pytest.mark.parametrize("text", [
    "注意力权重之和为 1",
    "多头注意力、自注意力和交叉注意力",
    "注意：这里的 mask 约定是 True = 可以关注",
    "需要注意的是，softmax 沿 key 维计算",
    "值得注意的是 LayerNorm 的位置",
    "请注意 dtype",
    "泄漏只能靠因果掩码防止",
    "目标与输入错开一位",
    "传入 key_padding_mask 和 is_causal=True",
    "nn.Embedding 和 head_dim，num_heads = 8",
    "nn.TransformerDecoder 与 nn.TransformerEncoder",
    "一个 decoder-only 模型",
    "多头注意力（multi-head attention）",
    "教师强制（teacher forcing）",
    "代码 `padding = 0` 与 `is_causal`",
    "8 个头，每个 query 头，KV cache 以 FLOPs 计",
    "吞吐量几乎线性上升，延迟由显存带宽决定",
    "被屏蔽的位置",
    "见论文《Sigmoid Self-Attention》与《Attention Is All You Need》",
])
def test_correct_text_is_not_flagged(text):
    assert _hits(text) == []


def test_drift_reads_loaded_questions():
    q = Question(id="x-01", topic="masking", kind="bool", difficulty=1, tags=("leakage",),
                 prompt=Text("Leak?", "会泄露吗？"), explanation=Text("No.", "不会泄漏。"), answer=False)
    found = glossary.drift([q])
    assert [(d.where, d.rule.forbidden) for d in found] == [("x-01 prompt", "泄露")]
    assert "泄漏" in str(found[0])


def _cli_zh_texts():
    """(where, text) for the Chinese the CLI shows besides the bank: every statement, hint and
    check title, the mistakes table, the help, and the rendered lines."""
    import importlib

    from attn_drill import helptext, render
    from attn_drill.catalog import load_catalog
    from attn_drill.checks.harness import mistake_table
    from attn_drill.practice import statement

    for exercise in load_catalog():
        yield f"{exercise.id} statement", statement(exercise.id, "zh").text
        for i, hint in enumerate(exercise.hints_zh):
            yield f"{exercise.id} hints_zh[{i}]", hint
        checks = importlib.import_module(f"attn_drill.checks.{exercise.checks_path.stem}")
        for name in dir(checks):
            title = getattr(getattr(checks, name), "__check_title_zh__", None)
            if name.startswith("check_") and title:
                yield f"{exercise.id} {name}", title
    for key, known in mistake_table().items():
        yield f"mistakes.toml {key}", known.says_zh
    texts = helptext.zh_texts()
    for command, entry in texts["commands"].items():
        yield f"help_zh.toml {command}", entry["help"]
        yield from ((f"help_zh.toml {command}.{p}", t) for p, t in entry.get("params", {}).items())
    for table in (render.WORDS["zh"], render.WATCH_TEXT["zh"]):
        yield from ((f"render {key}", text) for key, text in table.items() if isinstance(text, str))


def test_the_cli_chinese_follows_the_glossary():
    found = [d for where, text in _cli_zh_texts() for d in glossary.drift_in(text, where)]
    assert not found, "\n".join(map(str, found))
