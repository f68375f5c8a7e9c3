"""The forbidden variants of ``docs/glossary.md``, as patterns over the bank's Chinese text.

Each :class:`Rule` names a variant that drifts from the glossary's term (``forbidden``, the
words the glossary's Forbidden column lists), the regular expression that finds it, and
what to write instead. :func:`drift` scans Chinese texts; ``tests/test_glossary.py`` fails
on what it finds in the built-in bank and ``attn-drill validate`` warns about it.

Not checked: code spans (`` `...` ``), titles in 《》, and, for English words, a gloss in
full-width parentheses (多头注意力（multi-head attention）). English words are matched as words: a
letter, digit, underscore, dot or dash next to them makes them part of an identifier
(``key_padding_mask``, ``is_causal``, ``nn.Embedding``, ``head_dim``), which is kept; a Chinese
character next to them does not (``的decoder`` is found).
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Rule:
    forbidden: str       # as the glossary's Forbidden column writes it
    pattern: re.Pattern
    use: str             # what to write instead
    english: bool = False   # an English word: a parenthesised gloss is allowed


def _zh(forbidden: str, pattern: str, use: str) -> Rule:
    return Rule(forbidden, re.compile(pattern), use)


def _en(forbidden: str, words: str, use: str) -> Rule:
    """An English word in Chinese text, not part of an identifier."""
    return Rule(forbidden, re.compile(rf"(?<![A-Za-z0-9_.\-/]){words}(?![A-Za-z0-9_])", re.IGNORECASE), use, True)


RULES: tuple[Rule, ...] = (
    # Chinese variants
    _zh("泄露", r"泄露", "泄漏"),
    _zh("因果 mask", r"因果\s*mask", "因果掩码"),
    _zh("被 mask", r"被\s*mask(?![A-Za-z0-9_])", "被屏蔽"),
    _zh("mask 掉", r"(?<![A-Za-z0-9_])mask\s*掉", "屏蔽"),
    _zh("遮罩", r"遮罩|遮蔽|遮挡", "掩码 (noun) / 屏蔽 (verb)"),
    _zh("目标右移", r"目标[^。；，,;]{0,8}右移", "目标与输入错开一位"),
    _zh("乱码", r"乱码", "无意义的文本"),
    # 注意 as a verb: not 注意力, and not "note" (注意：, 需要注意, 要注意, 值得注意, 请注意, 应注意);
    # 主要注意自己 is the verb again
    _zh("注意 as a verb", r"(?<!值得)(?<![请应])(?<![^主]要)注意(?![力：:])", "关注 (or attend 到)"),
    _zh("自我注意力", r"自我注意力", "自注意力"),
    _zh("教师强迫", r"教师强迫", "教师强制"),
    _zh("层归一化", r"层归一化", "LayerNorm"),
    _zh("随机失活", r"随机失活", "dropout"),
    _zh("前向网络", r"前向网络", "前馈网络"),
    _zh("时延", r"时延", "延迟"),
    _zh("吞吐 without 量", r"吞吐(?!量)", "吞吐量"),
    _zh("KV 缓存", r"KV\s*缓存|键值缓存", "KV cache"),
    _zh("词元", r"词元|令牌", "token"),
    _zh("软最大", r"软最大", "softmax"),
    _zh("查询向量", r"查询向量|键向量|值向量", "query 向量 / key 向量 / value 向量"),
    # English words that have a Chinese term
    _en("self-attention", r"self-attention", "自注意力"),
    _en("cross-attention", r"cross-attention", "交叉注意力"),
    _en("multi-head", r"multi-head", "多头 / 多头注意力"),
    _en("head", r"heads?", "头"),
    _en("causal", r"causal", "因果 (因果掩码, 因果注意力)"),
    _en("look-ahead", r"look-ahead", "因果掩码"),
    _en("padding", r"padding", "填充 (填充掩码)"),
    _en("encoder", r"encoders?(?!-only)", "编码器"),
    _en("decoder", r"decoders?(?!-only)", "解码器 (decoder-only is kept)"),
    _en("embedding", r"embeddings?", "嵌入"),
    _en("residual", r"residual", "残差连接 / 残差流"),
    _en("teacher forcing", r"teacher[\s-]forcing", "教师强制"),
    _en("positional encoding", r"positional encodings?", "位置编码"),
    _en("feed-forward", r"feed[\s-]forward", "前馈网络"),
    _en("gradient", r"gradients?", "梯度"),
    _en("backward pass", r"backward pass", "反向传播"),
    _en("sequence length", r"sequence lengths?", "序列长度"),
    _en("sliding window", r"sliding[\s-]window", "滑动窗口"),
    _en("sparse attention", r"sparse attention", "稀疏注意力"),
    _en("latency", r"latency", "延迟"),
    _en("throughput", r"throughput", "吞吐量"),
)

_CODE_SPAN = re.compile(r"`[^`]*`")
_GLOSS = re.compile(r"（[\x20-\x7e]+）")   # full-width parentheses around English only
_TITLE = re.compile(r"《[^》]*》")            # a paper's or book's title is a name


@dataclass(frozen=True)
class Drift:
    where: str       # e.g. "mask-03 prompt"
    rule: Rule
    excerpt: str

    def __str__(self) -> str:
        return f"{self.where}: '{self.excerpt}' uses {self.rule.forbidden}; write {self.rule.use} (docs/glossary.md)"


def drift_in(text: str, where: str = "") -> list[Drift]:
    """Every forbidden variant in one Chinese text."""
    found = []
    plain = _TITLE.sub(" ", _CODE_SPAN.sub(" ", text))
    unglossed = _GLOSS.sub(" ", plain)
    for rule in RULES:
        target = unglossed if rule.english else plain
        for match in rule.pattern.finditer(target):
            start, end = max(0, match.start() - 6), min(len(target), match.end() + 6)
            found.append(Drift(where, rule, target[start:end].strip()))
    return found


def zh_texts(question) -> list[tuple[str, str]]:
    """(field, Chinese text) for every text of a loaded Question."""
    texts = [("prompt", question.prompt.zh), ("explanation", question.explanation.zh)]
    texts += [(f"choices[{i}]", c.zh) for i, c in enumerate(question.choices)]
    if question.model_answer is not None:
        texts.append(("model_answer", question.model_answer.zh))
    if question.unit is not None:
        texts.append(("unit", question.unit.zh))
    return texts


def drift(questions) -> list[Drift]:
    """Every forbidden variant in the Chinese text of ``questions``."""
    return [d for q in questions for name, text in zh_texts(q) for d in drift_in(text, f"{q.id} {name}")]
