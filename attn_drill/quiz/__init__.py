"""The quiz: a question bank in plain TOML, an engine that parses and grades answers, and FSRS
spaced repetition kept in the progress store.

No terminal code lives here (the CLI passes in an object that asks and shows), and nothing
here imports torch: `attn-drill quiz`, `stats` and the status line start fast.
"""
