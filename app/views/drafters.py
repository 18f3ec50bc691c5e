"""The "Drafters" tab: what is being compared, side by side, from the cards ``core.card`` makes."""
from __future__ import annotations

from core.card import DrafterCard

from app.views.style import method_label

NOTE = (
    "<small>Parameters count the drafter's own weights; both drafters share the target's frozen embedding and "
    "lm_head, which are not counted. Held-out agreement: how often the drafter's top token equals the target's "
    "next token on answers it never trained on, reading the target's true features (depth 1 of a tree); the "
    "contrastive head predicts two tokens ahead. Shipped releases, their recipes and measured speed: "
    "<code>assets/drafters/RESULTS.md</code>.</small>"
)


def drafters_markdown(cards: list[DrafterCard]) -> str:
    """A table with one column per drafter and one row per property."""
    if not cards:
        return "No drafter loaded: plain decoding only, or a replayed trace."
    rows: list[tuple[str, list[str]]] = [
        ("weights", ["trained" if c.trained else "**random** (lossless, but its speed means nothing)" for c in cards]),
        ("feed-forward layer", [_ffn(c) for c in cards]),
        ("attention layers", [str(c.layers) for c in cards]),
        ("input from the target", [_inputs(c) for c in cards]),
        ("draft vocabulary", [f"{c.draft_vocab:,} tokens" for c in cards]),
        ("parameters", [f"{c.parameters / 1e6:.2f} M" for c in cards]),
        ("weights while drafting", [_precision(c) for c in cards]),
        ("last training run", [_run(c) for c in cards]),
        ("held-out agreement (depth 1)", [_heldout(c) for c in cards]),
    ]
    header = "| | " + " | ".join(method_label(c.name) for c in cards) + " |"
    rule = "|---|" + "---|" * len(cards)
    body = [f"| {label} | " + " | ".join(values) + " |" for label, values in rows]
    return "\n".join([header, rule, *body]) + f"\n\n{NOTE}"


def _ffn(card: DrafterCard) -> str:
    if card.ffn == "moe":
        return (f"Mixture of Experts: {card.experts} SwiGLU experts × {card.ffn_units:,} units, both active; "
                "MoE and contrastive routing heads")
    return f"one dense SwiGLU MLP × {card.ffn_units:,} units"


PRECISION = {
    "int8": "int8, one scale per row, its head included (half the bytes a bfloat16 "
            "forward reads, a quarter of a float32 one",
    "int4": "int4, a scale and an offset per 64 inputs, its head included (a quarter of the "
            "bytes a bfloat16 forward reads, an eighth of a float32 one",
    "w8a8": "int8, one scale per row, its head included, and each matrix's inputs rounded to 8 bits too, "
            "their channels evened out by the ranges measured while drafting a fixed text (integer matrix "
            "products: a drafter forward 1.3-2.4x faster than with int8 weights alone on this CPU",
}


def _precision(card: DrafterCard) -> str:
    if card.weights in PRECISION:
        return PRECISION[card.weights] + "; the target still verifies every token, so the output is unchanged)"
    return "the target's dtype"


def _inputs(card: DrafterCard) -> str:
    if not card.feature_layers:
        return "last hidden state"
    layers = ", ".join(str(layer) for layer in card.feature_layers)
    return f"last hidden state fused with layers {layers}"


def _run(card: DrafterCard) -> str:
    t = card.training
    if t is None:
        return "–"
    start = "warm start from an earlier drafter" if t.warm_start else "from random weights"
    if t.upcycled:
        start = "warm start from a dense (EAGLE-2) drafter, its MLP split into the two experts"
    passes = f", {t.unroll} training-time-test passes" if t.unroll > 1 else ""
    data = (f" on {t.data_tokens / 1e6:.2f} M recorded tokens ({t.answer_tokens / 1e6:.2f} M in answers, the "
            "loss's)") if t.data_tokens else ""  # a training run's folder: the data is recorded at export
    return f"{t.steps:,} steps × {t.tokens_per_step:,} tokens{data}, lr {t.lr:g}{passes}; {start}"


def _heldout(card: DrafterCard) -> str:
    t = card.training
    if t is None or t.heldout_top1 is None:
        return "–"
    text = f"{t.heldout_top1:.1%} of {t.heldout_positions:,} positions"
    if t.heldout_contrastive is not None:
        text += f" (contrastive, t+2: {t.heldout_contrastive:.1%})"
    return text
