"""``build_demo``: the explorer's Gradio Blocks. Wiring only; drawing is in ``views``, running in ``session``."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr

from core.bench_read import ReportError
from core.config import ConfigError, advisories
from core.target import PromptError
from core.trace import TraceError

from app.examples import load_examples
from app.measure import MAX_PROMPTS, measure, save_report
from app.views import bench, drafters, stats, style, text, tree
from app.session import (
    UPLOAD_LIMIT_BYTES, Engines, Session, Settings, delete_session, engine_config, export_files, load_session,
    run_all,
)

DEFAULTS = Settings()
EXAMPLES = load_examples()
EXAMPLES_NOTE = (
    "<small>Answers that copy from the prompt (a summary, facts picked out of a text) or follow a set form (a list, "
    "JSON, code) let the drafters run ahead; short or unusual answers leave little to speculate. The answers are the "
    "target's own: a small one (the default has 135M parameters) is often wrong, and speculative "
    "decoding makes its answers neither better nor worse, only faster.</small>"
)
CSS = """
#counters table { font-size: 0.92em; }
#counters td, #counters th { padding: 3px 8px; }
.token-text .textfield { max-height: 240px; overflow-y: auto; }
#drafter-cards td:first-child { min-width: 9em; word-break: normal; }
"""
INTRO = (
    "## Jakiro explorer: MoE vs single-head speculative decoding\n"
    "Each prompt runs three times on the same target and settings: with the **Jakiro** MoE drafter, with the "
    "single-head **EAGLE-2** drafter, and with **plain decoding** as the speed baseline. Coloured tokens were "
    "drafted and accepted (colour = the branch that proposed them; for the MoE head, whose two experts always "
    "both contribute, the expert whose own distribution gives the token the higher probability); grey tokens are "
    "the target's own "
    "(bonus token after a cycle, or plain decoding). The three take turns step by step, so they stream side by "
    "side and the speedup is live. **Click a token** to inspect the step that produced it."
)
TREE_NOTE = (
    "<small>Left to right: the root (last accepted token) and the drafted candidates by depth. Black outline and "
    "thick edges: the accepted path. Faded: scored candidates never verified (cut by the rerank, or by the adaptive "
    "tree size). Hover a node for its draft probability, cumulative score, target probability and routing "
    "weights (w = MoE head, v = contrastive head). Drag to pan, scroll or box-select to zoom, double-click to reset.</small>"
)
MASK_NOTE = (
    "<small>Tree attention mask over the verified nodes (rows attend to columns): each node sees the root and its "
    "own ancestors only. Dark rows: the accepted path.</small>"
)
STATS_NOTE = (
    "<small>α_d = P(depth d accepted | depth d−1 accepted). With context lookup on, looked-up chains count in "
    "acceptance by depth and accept lengths (they may reach below the tree depth); set Context lookup to 0 to "
    "compare the drafters alone. Sibling diversity counts distinct tokens among every "
    "candidate drafted at one depth (1.0 = no two branches proposed the same token); hover a bar for the distinct "
    "tokens among siblings (children of one node: 1.0 unless two experts' candidates meet, as decoupled ones may); "
    "the dashed lines are the "
    "experts' top-k overlap (1.0 = both experts alone would propose the same children). Routing confidence is the "
    "larger weight of the gate head that produced a node (w for MoE nodes, v for contrastive ones).</small>"
)


QUEUE_SIZE = 16  # requests that may wait; one generation runs at a time


def enable_queue(demo: gr.Blocks, max_size: int = QUEUE_SIZE) -> gr.Blocks:
    """Mutates ``demo``: a bounded queue. Beyond ``max_size`` waiting requests gradio refuses new ones
    ("Queue is full" through the API, "This application is currently busy" in the browser)."""
    return demo.queue(max_size=max_size, default_concurrency_limit=1)


def launch_options() -> dict[str, Any]:
    """Keyword arguments for ``demo.launch`` shared by app.py and the tests."""
    return {"css": CSS, "footer_links": ["api", "settings"], "max_file_size": UPLOAD_LIMIT_BYTES,
            "run_history": False}  # no copy of every run's large outputs kept in the browser


def slot_names(names: list[str]) -> tuple[str | None, str | None, str | None]:
    """The methods shown in the first drafter, second drafter and plain-decoding places."""
    drafters = [n for n in names if n != "none"]
    return (drafters[0] if drafters else None, drafters[1] if len(drafters) > 1 else None,
            "none" if "none" in names else None)


def build_demo(engines: Engines | None) -> gr.Blocks:
    """The app; ``engines=None`` gives a viewer that only loads saved traces."""
    names = list(engines.decoders) if engines else ["jakiro", "eagle", "none"]
    first, second, _ = slot_names(names)
    device = engines.device if engines else ""
    dtypes = engines.dtype_choices() if engines else ["float32"]

    with gr.Blocks(title="Jakiro explorer", delete_cache=(3600, 3600)) as demo:
        session = gr.State(Session(), time_to_live=6 * 3600, delete_callback=delete_session)
        gr.Markdown(INTRO)
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=300):
                prompt = gr.Textbox(label="Prompt", lines=3, value=EXAMPLES[0].prompt, elem_id="prompt")
                gr.Examples([[e.prompt] for e in EXAMPLES], inputs=[prompt], label="Examples",
                            example_labels=[e.label for e in EXAMPLES], examples_per_page=len(EXAMPLES))
                gr.Markdown(EXAMPLES_NOTE)
                with gr.Row():
                    run = gr.Button("Generate", variant="primary", elem_id="generate", interactive=engines is not None)
                    stop = gr.Button("Stop", variant="stop", elem_id="stop")
                status = gr.Markdown(
                    "" if engines else "No model loaded: load a saved trace in the **Export / load** tab.",
                    elem_id="status",
                )
                with gr.Accordion("Settings", open=False, elem_id="settings"):
                    max_new_tokens = _slider(1, 256, value=DEFAULTS.max_new_tokens, step=1, label="Max new tokens",
                                             elem_id="max-new-tokens")
                    temperature = _slider(0, 2, value=DEFAULTS.temperature, step=0.05,
                                          label="Temperature (0 = greedy)")
                    top_p = _slider(0.05, 1, value=DEFAULTS.top_p, step=0.05, label="Top-p (sampling only)")
                    tree_top_k = _slider(1, 16, value=DEFAULTS.tree_top_k, step=1,
                                         label="Tree top-k (children per node, frontier width)")
                    depth = _slider(1, 12, value=DEFAULTS.depth, step=1, label="Tree depth (draft layers)")
                    total_tokens = _slider(1, 128, value=DEFAULTS.total_tokens, step=1,
                                           label="Total tokens (most nodes verified per cycle)",
                                           elem_id="total-tokens")
                    adaptive = gr.Checkbox(value=DEFAULTS.adaptive, label="Adaptive tree size (verify only the "
                                           "nodes whose draft confidence pays for their measured cost here)")
                    lookup = _slider(0, 32, value=DEFAULTS.lookup, step=1, label="Context lookup (tokens)",
                                     info="Also verify the tokens that followed the last 3 tokens earlier in the "
                                          "prompt or answer (fewer after a shorter match). 0 = off.",
                                     elem_id="lookup")
                    lookup_max = _slider(0, 64, value=DEFAULTS.lookup_max, step=1, label="Lookup while copying",
                                         info="After a cycle accepted a whole looked-up run, the next is twice as "
                                              "long, up to this many tokens (at most the above: no growth).",
                                         elem_id="lookup-max")
                    lookup_runs = _slider(1, 8, value=DEFAULTS.lookup_runs, step=1, label="Lookup runs",
                                          info="After a 3-token match, verify what followed up to this many of "
                                               "its earlier occurrences, the most recent first.",
                                          elem_id="lookup-runs")
                    schedule = gr.Radio(["hybrid", "standard"], value=DEFAULTS.schedule,
                                        label="Jakiro schedule (hybrid: last layer from the contrastive head)")
                    decoupled = gr.Checkbox(value=DEFAULTS.decoupled,
                                            label="Jakiro decoupled siblings (children from either expert)")
                    fallback = gr.Checkbox(value=DEFAULTS.fallback, elem_id="fallback",
                                           label="Fall back to plain decoding while speculation does not pay",
                                           info="After every few cycles the drafters compare their measured "
                                                "speed with a plain step's, priced from their own verifications "
                                                "at this context; the steps they decode plainly say why in the "
                                                "step inspector.")
                    dtype = gr.Dropdown(dtypes, value=dtypes[0], label="dtype (target and drafters)",
                                        interactive=len(dtypes) > 1, elem_id="dtype", info=_dtype_info(engines))
                    seed = gr.Number(value=DEFAULTS.seed, precision=0, minimum=0, label="Seed (sampling)")
                settings_note = gr.Markdown(elem_id="settings-note")
            with gr.Column(scale=3):
                with gr.Row():
                    text_a = _token_box(first, "tokens-a")
                    text_b = _token_box(second, "tokens-b")
                text_plain = _token_box("none", "tokens-plain")
                counters = gr.Markdown(
                    text.counters_markdown({n: None for n in names}, device=device), elem_id="counters"
                )
                with gr.Accordion("API summary (what /generate returns)", open=False):
                    summary_json = gr.JSON(label="Summary")

        with gr.Tabs() as tabs:
            with gr.Tab("Inspect a step", id="inspect"):
                with gr.Row():
                    prev_btn = gr.Button("◀ Previous", scale=0, min_width=110, elem_id="prev-step")
                    step = gr.Slider(0, 1, value=0, step=1, label="Step (0 = prefill)", elem_id="step", scale=5)
                    next_btn = gr.Button("Next ▶", scale=0, min_width=110, elem_id="next-step")
                align = gr.Radio(
                    [ALIGN_POSITION, ALIGN_STEP], value=ALIGN_POSITION, show_label=False, elem_id="align",
                    info="Both trees at the same place in the answer (the right one at the step that produced the "
                         "token where the left one's step starts), or both at the same step number.",
                )
                with gr.Row(equal_height=False):
                    with gr.Column():
                        info_a = gr.Markdown(elem_id="info-a")
                        tree_a = gr.Plot(label=f"Draft tree: {style.method_label(first or '')}", elem_id="tree-a")
                    with gr.Column():
                        info_b = gr.Markdown(elem_id="info-b")
                        tree_b = gr.Plot(label=f"Draft tree: {style.method_label(second or '')}", elem_id="tree-b")
                gr.Markdown(TREE_NOTE)
                with gr.Accordion("Tree attention masks", open=False):
                    with gr.Row():
                        mask_a = gr.Plot(label=f"Mask: {style.method_label(first or '')}")
                        mask_b = gr.Plot(label=f"Mask: {style.method_label(second or '')}")
                    gr.Markdown(MASK_NOTE)
            with gr.Tab("Statistics", id="stats"):
                with gr.Row():
                    acc_depth = gr.Plot(label="Acceptance by depth")
                    acc_hist = gr.Plot(label="Accept-length histogram", elem_id="acc-hist")
                with gr.Row():
                    usage = gr.Plot(label="Expert usage per depth (verified nodes)")
                    expert_acc = gr.Plot(label="Acceptance per expert / branch")
                with gr.Row():
                    diversity = gr.Plot(label="Sibling diversity (distinct tokens per layer; experts' top-k overlap)")
                    share = gr.Plot(label="Share of candidates per expert")
                with gr.Row():
                    confidence = gr.Plot(label="Routing confidence vs acceptance")
                    gr.Markdown(STATS_NOTE)
            with gr.Tab("Export / load", id="export"):
                with gr.Row():
                    with gr.Column():
                        export_btn = gr.Button("Export this session (JSONL traces + CSV summary)", elem_id="export")
                        exported = gr.File(label="Exported files", file_count="multiple", interactive=False,
                                           elem_id="exported")
                    with gr.Column():
                        upload = gr.File(label="Load saved traces (.jsonl, replayed without a model)",
                                         file_count="multiple", file_types=[".jsonl"], elem_id="upload")
                        load_status = gr.Markdown(elem_id="load-status")
            with gr.Tab("Benchmarks", id="benchmarks") as bench_tab:
                reports = bench.shipped_reports()
                with gr.Row():
                    report_pick = gr.Dropdown(list(reports), value=bench.default_label(reports), scale=3,
                                              label="A committed run (benchmarks/results)", elem_id="report-pick")
                    report_upload = gr.File(label="…or your own run (python -m core bench --json FILE)", scale=2,
                                            file_types=[".json"], elem_id="report-upload")
                with gr.Accordion("Measure on your own prompts", open=False, elem_id="measure"):
                    measure_prompts = gr.Textbox(
                        lines=5, label=f"Prompts, one per line (at most {MAX_PROMPTS})", elem_id="measure-prompts",
                        placeholder="Write a limerick about a cat.\nExplain what a hash table is.\n…",
                        info="Every method runs every prompt, taking turns, with the settings panel's values (max "
                             "new tokens, temperature, tree, dtype): the same run as python -m core bench, shown "
                             "below like a committed one. A few prompts of 128 tokens take minutes on a CPU.")
                    measure_peers = gr.Checkbox(
                        False, label="Also transformers' own generate and its prompt-lookup decoding (the peers a "
                                     "user would otherwise reach for), on the same target", elem_id="measure-peers")
                    with gr.Row():
                        measure_btn = gr.Button("Measure", variant="primary", elem_id="measure-run",
                                                interactive=engines is not None)
                        measure_stop = gr.Button("Stop", variant="stop", elem_id="measure-stop")
                    measure_status = gr.Markdown(elem_id="measure-status")
                    measure_file = gr.File(label="This run's report (JSON; load it above to see it again)",
                                           interactive=False, elem_id="measure-file")
                report_plot = gr.Plot(label="Tokens/s and speedup over plain decoding, per category",
                                      elem_id="report-plot")
                report_depth = gr.Plot(label="Acceptance by depth over the whole run (α_d = P(depth d accepted | "
                                             "depth d−1 accepted); looked-up chains included)", elem_id="report-depth")
                report_text = gr.Markdown(elem_id="report-text")
                gr.Markdown(bench.NOTE)
            with gr.Tab("Drafters", id="drafters"):
                gr.Markdown(drafters.drafters_markdown(engines.cards) if engines else
                            "No model loaded: a replayed trace records what each drafter did, not what it is.",
                            elem_id="drafter-cards")

        text_boxes = [text_a, text_b, text_plain]
        inspect_outputs = [info_a, info_b, tree_a, tree_b, mask_a, mask_b]
        stats_outputs = [acc_depth, acc_hist, usage, expert_acc, diversity, share, confidence]

        def generate(prompt, max_new_tokens, temperature, top_p, tree_top_k, depth, total_tokens, schedule,
                     decoupled, seed, session, adaptive=DEFAULTS.adaptive, lookup=DEFAULTS.lookup,
                     lookup_runs=DEFAULTS.lookup_runs, lookup_max=DEFAULTS.lookup_max, fallback=DEFAULTS.fallback,
                     dtype=None):
            """Run Jakiro, EAGLE-2 and plain decoding on one prompt; stream tokens and counters."""
            fresh = Session(folder=session.folder if session else None)
            try:
                if engines is None:
                    raise ConfigError("no model is loaded: this server only replays saved traces (app.py --viewer)")
                settings = _settings(max_new_tokens, temperature, top_p, tree_top_k, depth, total_tokens, schedule,
                                     decoupled, seed, adaptive, lookup, lookup_runs, lookup_max, fallback)
                notes = " ".join(f"Note: {n}" for n in advisories(*_tree_and_sampling(settings)))
                chosen = str(dtype or dtypes[0])
                if not engines.is_loaded(chosen):
                    yield _outputs(fresh, names, device, (), f"Loading the models in **{chosen}** (once)…")
                running_engines = engines.for_dtype(chosen)
                where = running_engines.device
                for running in run_all(running_engines, prompt, settings, fresh):
                    doing = ", ".join(style.method_label(n) for n in running)
                    yield _outputs(fresh, names, where, running, f"Running **{doing}**, a step each in turn… {notes}")
            except (ConfigError, PromptError, ValueError, TypeError) as err:
                gr.Warning(str(err))
                yield _outputs(fresh, names, device, (), f"⚠️ {err}", error=str(err))
                return
            yield _outputs(fresh, names, where, (), f"Done. Inspect steps below, or export the traces. {notes}")

        def finish(session, alignment):
            return _slider_for(session), *render_step(1, session, alignment), *render_stats(session)

        def render_step(value, session, alignment=ALIGN_POSITION, position=None):
            """The two drafters' steps: ``value`` is the left one's (the slider); with ``position`` (a clicked
            token), both show the step that produced the token at that place in the answer."""
            a, b, _ = slot_names(list(session.traces)) if session and session.traces else (first, second, None)
            traces = session.traces if session else {}
            shown = text.inspected_steps(traces.get(a, []), traces.get(b, []), int(value or 0),
                                         by_position=alignment == ALIGN_POSITION, position=position)
            steps = {a: shown[0], b: shown[1]}
            place = position if position is not None else text.first_position(traces.get(a, []), int(value or 0))
            out = []
            for name in (a, b):
                records = traces.get(name) if name else None
                info = text.step_markdown(name, records, steps[name]) if records else ""
                if records and alignment == ALIGN_POSITION and place >= len(text.token_steps(records)):
                    info += " _(This answer ends before that place in the other one: its last step is shown.)_"
                out.append(info)
            for name in (a, b):
                out.append(tree.tree_figure(text.step_at(traces.get(name, []), steps[name])))
            for name in (a, b):
                out.append(tree.mask_figure(text.step_at(traces.get(name, []), steps[name])))
            return out

        def render_stats(session):
            traces = session.traces if session else {}
            summaries = {n: s for n, s in session.summaries().items()} if session else {}
            return (
                stats.acceptance_by_depth_figure(summaries), stats.accept_length_figure(summaries),
                stats.expert_usage_figure(summaries), stats.expert_acceptance_figure(summaries),
                stats.sibling_diversity_figure(traces), stats.expert_share_figure(traces),
                stats.routing_confidence_figure(traces),
            )

        def shift(value, delta, session, alignment):
            top = max((text.last_step(r) for r in session.traces.values()), default=0) if session else 0
            value = min(max(int(value or 0) + delta, 0), top)
            return value, *render_step(value, session, alignment)

        def jump_to_token(slot: int):
            def handler(evt: gr.SelectData, session, alignment):
                names_now = slot_names(list(session.traces)) if session else (None, None, None)
                index = max(0, evt.index if isinstance(evt.index, int) else (evt.index or [0])[0])
                # aligned by place, both trees show the step that produced the token at this place in the answer
                # and the slider follows the left drafter's; by number, the clicked method's own step
                by_position = alignment == ALIGN_POSITION and names_now[0] is not None
                name = names_now[0] if by_position else names_now[slot]
                records = session.traces.get(name, []) if name else []
                value = text.step_at_position(records, index)
                position = index if by_position else None
                return value, *render_step(value, session, alignment, position), gr.Tabs(selected="inspect")
            return handler

        def check_settings(*values):
            """The live line under the settings: what stops them, or what they do not do as they seem to."""
            try:
                notes = advisories(*_tree_and_sampling(_settings(*values)))
            except (ConfigError, ValueError, TypeError) as err:
                return f"⚠️ {err}"
            return "\n".join(f"ℹ️ {n}" for n in notes)

        def export(session):
            if not session or not session.traces:
                gr.Warning("Nothing to export yet: generate or load a trace first.")
                return None
            return export_files(session)

        def load(files, session):
            paths = [f if isinstance(f, str) else getattr(f, "name", str(f)) for f in (files or [])]
            try:
                loaded = load_session(paths)
            except (TraceError, OSError) as err:
                gr.Warning(str(err))
                return (*_texts(session or Session(), names), gr.skip(), gr.skip(), f"⚠️ {err}", session)
            loaded.folder = session.folder if session else None
            shown = list(loaded.traces)
            note = f"Loaded {', '.join(style.method_label(n) for n in shown)} from {loaded.source}."
            return (*_texts(loaded, shown), _counters(loaded, shown, ""), text.api_summary(loaded.texts, loaded.summaries()),
                    note, loaded)

        settings_inputs = [prompt, max_new_tokens, temperature, top_p, tree_top_k, depth, total_tokens, schedule,
                           decoupled, seed, session, adaptive, lookup, lookup_runs, lookup_max, fallback, dtype]
        gen = run.click(
            generate, settings_inputs, [*text_boxes, counters, summary_json, status, session],
            api_name="generate", concurrency_limit=1, concurrency_id="model", show_progress="minimal",
        )
        after = [step, *inspect_outputs, *stats_outputs]
        gen.then(finish, [session, align], after, api_visibility="private", concurrency_limit=None)
        stop.click(None, None, None, cancels=[gen], api_visibility="private").then(
            finish, [session, align], after, api_visibility="private", concurrency_limit=None)
        for event in (step.input, align.change):
            event(render_step, [step, session, align], inspect_outputs, api_visibility="private",
                  concurrency_limit=None, trigger_mode="always_last", show_progress="hidden")
        prev_btn.click(lambda v, s, a: shift(v, -1, s, a), [step, session, align], [step, *inspect_outputs],
                       api_visibility="private", concurrency_limit=None, show_progress="hidden")
        next_btn.click(lambda v, s, a: shift(v, 1, s, a), [step, session, align], [step, *inspect_outputs],
                       api_visibility="private", concurrency_limit=None, show_progress="hidden")
        for slot, box in enumerate(text_boxes):
            box.select(jump_to_token(slot), [session, align], [step, *inspect_outputs, tabs],
                       api_visibility="private", concurrency_limit=None, show_progress="hidden")
        checked = [max_new_tokens, temperature, top_p, tree_top_k, depth, total_tokens, schedule, decoupled, seed,
                   adaptive, lookup, lookup_runs, lookup_max, fallback]
        for box in checked:
            box.change(check_settings, checked, settings_note, api_visibility="private", concurrency_limit=None,
                       show_progress="hidden", trigger_mode="always_last")
        export_btn.click(export, session, exported, api_visibility="private", concurrency_limit=None)

        def show_report(label):
            """A committed report, picked by its label (never a path the browser sends)."""
            path = reports.get(label)
            if path is None:
                return gr.skip(), gr.skip(), f"⚠️ {label!r} is not one of the committed reports"
            return _report_outputs(path, path.name)

        def load_report(file):
            if not file:
                return gr.skip(), gr.skip(), gr.skip()
            path = file if isinstance(file, str) else getattr(file, "name", str(file))
            return _report_outputs(path, f"your file {Path(path).name}")

        report_outputs = [report_plot, report_depth, report_text]

        def run_measure(prompts_text, peers, _prompt, max_new_tokens, temperature, top_p, tree_top_k, depth, total_tokens,
                        schedule, decoupled, seed, session, adaptive, lookup, lookup_runs, lookup_max, fallback,
                        dtype):
            """Every method on every prompt of ``prompts_text``; stream the progress, then show the report."""
            session = session or Session()
            waiting = (gr.skip(),) * 3
            try:
                if engines is None:
                    raise ConfigError("no model is loaded: this server only replays saved traces (app.py --viewer)")
                settings = _settings(max_new_tokens, temperature, top_p, tree_top_k, depth, total_tokens, schedule,
                                     decoupled, seed, adaptive, lookup, lookup_runs, lookup_max, fallback)
                chosen = str(dtype or dtypes[0])
                if not engines.is_loaded(chosen):
                    yield *waiting, f"Loading the models in **{chosen}** (once)…", gr.skip(), session
                for progress, report in measure(engines.for_dtype(chosen), prompts_text, settings, bool(peers)):
                    if report is None:
                        yield (*waiting, f"Measuring… {progress.done} of {progress.total} generations done (last: "
                               f"{style.method_label(progress.method)}, prompt {progress.prompt}).", gr.skip(), session)
            except (ConfigError, PromptError, ValueError, TypeError) as err:
                gr.Warning(str(err))
                yield *waiting, f"⚠️ {err}", gr.skip(), session
                return
            path = save_report(report, session)
            yield (*_report_outputs(path, "your prompts, measured here"),
                   f"Done: {progress.total} generations on {chosen}. The report is below and in the file.",
                   str(path), session)

        report_pick.change(show_report, report_pick, report_outputs, api_visibility="private",
                           concurrency_limit=None)
        measuring = measure_btn.click(
            run_measure, [measure_prompts, measure_peers, *settings_inputs], [*report_outputs, measure_status, measure_file, session],
            api_visibility="private", concurrency_limit=1, concurrency_id="model", show_progress="minimal")
        measure_stop.click(None, None, None, cancels=[measuring], api_visibility="private")
        report_upload.upload(load_report, report_upload, report_outputs, api_visibility="private",
                             concurrency_limit=None)
        # the first time the tab opens, the picked run (later it keeps what the user measured or loaded)
        bench_tab.select(lambda label, shown: show_report(label) if label and not shown else (gr.skip(),) * 3,
                         [report_pick, report_text], report_outputs, api_visibility="private", concurrency_limit=None)
        upload.upload(load, [upload, session], [*text_boxes, counters, summary_json, load_status, session],
                      api_visibility="private", concurrency_limit=None).then(
            finish, [session, align], after, api_visibility="private", concurrency_limit=None)
    return demo


ALIGN_POSITION = "Same place in the answer"
ALIGN_STEP = "Same step number"


def _report_outputs(path: str | Path, source: str) -> tuple[Any, Any, str]:
    """(speed figure, acceptance figure, Markdown) of a benchmark report, or no figures and the reason the file
    was refused."""
    try:
        markdown, speed, acceptance = bench.report_view(path, source)
    except ReportError as err:
        gr.Warning(str(err))
        return None, None, f"⚠️ {source}: {err}"
    return speed, acceptance, markdown


def _dtype_info(engines: Engines | None) -> str:
    if engines is None:
        return "no model loaded"
    if len(engines.dtype_choices()) == 1:
        return "the dtype the app was started with (app.py --dtype)"
    return ("Another dtype loads the models again the first time it is picked (seconds), then stays loaded. "
            "bfloat16 is fast only where the hardware computes it natively (app.py --dtype auto picks it there).")


def _settings(max_new_tokens, temperature, top_p, tree_top_k, depth, total_tokens, schedule, decoupled, seed,
              adaptive, lookup, lookup_runs, lookup_max, fallback) -> Settings:
    """The settings panel's values as ``Settings``; raises ValueError for a value of the wrong kind."""
    return Settings(
        max_new_tokens=_as_int(max_new_tokens, "max_new_tokens"), temperature=_as_float(temperature, "temperature"),
        top_p=_as_float(top_p, "top_p"), tree_top_k=_as_int(tree_top_k, "tree_top_k"), depth=_as_int(depth, "depth"),
        total_tokens=_as_int(total_tokens, "total_tokens"), schedule=str(schedule), decoupled=bool(decoupled),
        adaptive=bool(adaptive), seed=_as_int(seed, "seed"), lookup=_as_int(lookup, "lookup"),
        lookup_runs=_as_int(lookup_runs, "lookup_runs"), lookup_max=_as_int(lookup_max, "lookup_max"),
        fallback=bool(fallback),
    )


def _tree_and_sampling(settings: Settings) -> tuple[Any, Any]:
    """The tree and sampling configs ``settings`` give an MoE drafter (the superset); raises ConfigError."""
    cfg = engine_config(settings, moe=True)
    return cfg.tree, cfg.sampling


def _slider(*args: Any, **kwargs: Any) -> gr.Slider:
    """A settings slider whose refusal of an out-of-range value (through the API; the browser clamps) names the
    setting: gradio's own message says only "Value 99 is greater than maximum value 12.". (Wrapped, not subclassed:
    gradio writes a .pyi stub next to the module of any component subclass.)"""
    slider = gr.Slider(*args, **kwargs)
    plain = slider.preprocess

    def preprocess(payload: float) -> float:
        try:
            return plain(payload)
        except gr.Error as err:
            raise gr.Error(f"{slider.label}: {err.message}") from None

    slider.preprocess = preprocess
    return slider


def _token_box(name: str | None, elem_id: str) -> gr.HighlightedText:
    return gr.HighlightedText(
        label=style.method_label(name or "–"), combine_adjacent=False, show_legend=True, show_inline_category=False,
        color_map=text.legend_for(None, name or ""), elem_id=elem_id, elem_classes=["token-text"], visible=name is not None,
    )


def _texts(session: Session, names: list[str]) -> list[Any]:
    out = []
    for name in slot_names(names):
        records = session.traces.get(name) if name else None
        label = style.method_label(name) if name else "–"
        out.append(gr.HighlightedText(value=text.highlighted_tokens(records) if records else [], label=label,
                                      visible=name is not None, color_map=text.legend_for(records, name or "")))
    return out


def _counters(session: Session, names: list[str], device: str, running: tuple[str, ...] = ()) -> str:
    summaries = session.summaries()
    return text.counters_markdown({n: summaries.get(n) for n in names}, running=running, device=device)


def _outputs(session: Session, names: list[str], device: str, running: tuple[str, ...], status: str,
             error: str | None = None) -> tuple[Any, ...]:
    summaries = session.summaries()
    finished = {n: s for n, s in summaries.items() if n in session.texts}
    summary = {"error": error} if error else text.api_summary(session.texts, finished)
    return (*_texts(session, names), _counters(session, names, device, running), summary, status, session)


def _slider_for(session: Session | None) -> Any:
    top = max((text.last_step(r) for r in session.traces.values()), default=0) if session else 0
    return gr.update(maximum=max(top, 1), value=1 if top >= 1 else 0)


def _as_float(value: Any, name: str) -> float:
    """A setting as a number; raises ValueError naming the setting (the API parameter) otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a number, got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None


def _as_int(value: Any, name: str) -> int:
    """Sliders and numbers arrive as floats; reject fractions instead of silently rounding them."""
    number = _as_float(value, name)
    if not number.is_integer():
        raise ValueError(f"{name} must be a whole number, got {value!r}")
    return int(number)
