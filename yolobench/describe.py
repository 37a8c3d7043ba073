"""What a run is, in words, for the MLflow UI: a variant's description (its axes, what was applied by default,
how it compares with the baseline, on the front or not), the parent's front table, a training run's summary,
and the val split as the data set the runs were measured on.

Descriptions are written from what the runs logged (params, metrics, tags), so they cannot disagree with the
figures beside them; `explain_sweep` rewrites them when the sweep ends, once the front is known and the
front's latencies are confirmed."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from yolobench import tracking

if TYPE_CHECKING:
    from mlflow.entities import Run

    from yolobench.measure.harness import EvalData
    from yolobench.spec import SweepSpec

# How an axis value reads in a sentence; an axis not listed reads "name value".
AXIS_WORDS = {
    "scale": "YOLO11{value}", "precision": "{value} weights", "imgsz": "{value}×{value} input",
    "ort_level": "ONNX Runtime graph optimisation `{value}`", "threads": "{value} intra-op thread(s)",
    "width_multiple": "width ×{value}", "depth_multiple": "depth ×{value}", "teacher": "distilled from {value}",
    "shaves": "{value} SHAVE cores", "trt_opt_level": "TensorRT builder optimisation level {value}",
    "inference_threads": "{value} NN thread(s) on the device",
}
BOOL_WORDS = {"on_device_decode": ("YOLO decoding on the device", "YOLO decoding on the host"),
              "sparsity": ("2:4 sparse weights allowed", "dense weights")}
# What the export stage's manifest names as applied by default (stages/export.py), in words.
DEFAULT_WORDS = {
    "batchnorm_folded_into_conv": "BatchNorm folded into the preceding Conv (Ultralytics' exporter, model.fuse())",
    "constant_folding": "constants folded (torch.onnx.export, do_constant_folding)",
    "onnxslim_simplification": "graph simplified (onnxslim)",
}
FRONT_WORDS = {"true": "**yes**", "false": "no"}  # anything else: the sweep has not decided yet


@dataclass(frozen=True)
class SweepContext:
    """What a description needs to know about the sweep beyond the run itself."""

    sweep: str
    target: str
    runtime: str
    axes: tuple[str, ...]  # the sweep's axes, in build order
    defaults: dict[str, Any]  # runtime axes the sweep does not vary, at the runtime's default
    baseline_label: str
    objectives: tuple[tuple[str, str], ...]  # (metric, "minimize" | "maximize")
    variants: int | None
    measure: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_spec(cls, spec: SweepSpec) -> SweepContext:
        from yolobench.runtimes import runtime_info
        from yolobench.space import Space

        space = Space.from_spec(spec)
        info = runtime_info(spec.runtime.name)
        defaults = {k: v for k, v in info.resolve_axes({}).items() if k not in space.axes}
        return cls(spec.name, spec.target or spec.runtime.name, spec.runtime.name, tuple(space.axes), defaults,
                   space.baseline.label, tuple((o.metric, o.resolved_direction) for o in spec.search.objectives),
                   space.count(), {"conf": spec.measure.conf, "iou": spec.measure.iou, "max_det": spec.measure.max_det})


def axis_words(name: str, value: Any) -> str:
    if name in BOOL_WORDS:
        yes, no = BOOL_WORDS[name]
        return yes if str(value).lower() == "true" else no
    return AXIS_WORDS.get(name, name + " {value}").format(value=value)


def _arrows(context: SweepContext) -> str:
    return ", ".join(f"{metric} {'↓' if direction == 'minimize' else '↑'}" for metric, direction in context.objectives)


def _ms(metrics: Mapping[str, float], key: str = "latency_ms_p50") -> str:
    return f"{metrics[key]:.2f} ms" if key in metrics else "-"


def _number(metrics: Mapping[str, float], key: str, fmt: str = "{:.3f}") -> str:
    return fmt.format(metrics[key]) if key in metrics else "-"


def speedup_words(metrics: Mapping[str, float]) -> str:
    """The speed-up as the run's own metric shows it (2 decimals), said as faster or slower."""
    if "speedup_vs_baseline" not in metrics:
        return "not known yet (the baseline is not measured)"
    speedup = metrics["speedup_vs_baseline"]
    side = "faster than" if speedup > 1 else "slower than" if speedup < 1 else "as fast as"
    return f"**{speedup:.2f}×** ({side} the baseline)"


def variant_note(params: Mapping[str, Any], metrics: Mapping[str, float], tags: Mapping[str, str],
                 context: SweepContext, baseline: Mapping[str, float] | None, status: str = "FINISHED") -> str:
    """A variant's description (markdown): what it is, how it compares with the baseline, front or not, and
    what was applied to it that its axes do not show."""
    label = tags.get(tracking.LABEL_TAG, "")
    words = ", ".join(axis_words(axis, params[axis]) for axis in context.axes if axis in params)
    lines = [f"**{label}**: {words}." if label else f"{words}."]
    if label == context.baseline_label:
        lines.append("This is the sweep's **baseline**, the least optimised variant: every speed-up and mAP change "
                     "is measured against it.")
    if status == "FAILED":
        reason = tags.get(tracking.ERROR_TAG, "").strip().splitlines()
        lines += ["", f"**Failed**: {reason[-1][:500] if reason else 'no reason recorded'}"]
        return "\n".join(lines) + "\n"
    reference = baseline or {}
    delta = metrics.get("map50_95_delta_vs_baseline")
    lines += [
        "", f"| | this variant | baseline `{context.baseline_label}` |", "|---|---|---|",
        f"| latency p50 | {_ms(metrics)} | {_ms(reference)} |",
        f"| speed-up | {speedup_words(metrics)} | 1× |",
        f"| mAP50-95 | {_number(metrics, 'map50_95')}"
        + (f" ({delta:+.3f})" if delta is not None else "") + f" | {_number(reference, 'map50_95')} |",
        f"| mAP50 | {_number(metrics, 'map50')} | {_number(reference, 'map50')} |",
        f"| model size | {_number(metrics, 'model_size_mb', '{:.1f} MB')} | {_number(reference, 'model_size_mb', '{:.1f} MB')} |",
        "", f"**On the Pareto front** ({_arrows(context)}): "
            f"{FRONT_WORDS.get(tags.get(tracking.PARETO_TAG, ''), 'not decided yet (the sweep is running)')}",
    ]
    lines += ["", "**Applied by default** (not among the axes):", *(f"- {item}" for item in applied_by_default(
        params, tags, context))]
    lines += ["", "**How it was measured**:", *(f"- {item}" for item in measured(params, metrics, tags, context))]
    return "\n".join(lines) + "\n"


def applied_by_default(params: Mapping[str, Any], tags: Mapping[str, str], context: SweepContext) -> list[str]:
    """What the variant went through that no axis value shows: the exporter's own passes, what the runtime
    fuses by force or at its level, the runtime's defaults for axes the sweep does not vary."""
    items = []
    exported = [name for name in tags.get(tracking.EXPORT_FUSIONS_TAG, "none").split(",") if name and name != "none"]
    items.append("export: " + ("; ".join(DEFAULT_WORDS.get(n, n.replace("_", " ")) for n in exported) or "nothing"))
    if tags.get(tracking.RUNTIME_FUSION_TAG):
        items.append(f"{context.runtime} always fuses: {tags[tracking.RUNTIME_FUSION_TAG]}")
    if tags.get(tracking.ORT_FUSIONS_TAG):
        fused = tags[tracking.ORT_FUSIONS_TAG].replace(",", ", ")
        items.append(f"ONNX Runtime at level `{params.get('ort_level', context.defaults.get('ort_level', '?'))}` "
                     f"fuses: {fused}")
    if tags.get(tracking.INT8_UNFUSED_TAG) == "true":
        items.append("⚠ int8 without integer kernels: the quantised ops run in float with quantise/dequantise on "
                     "top, so this is not int8 speed")
    for axis, value in context.defaults.items():
        items.append(f"{axis_words(axis, params.get(axis, value))} (runtime default; not an axis of this sweep)")
    runtime = f"runtime: {params.get('runtime', context.runtime)}"
    if params.get("providers"):
        runtime += f" on {params['providers']}"
    if params.get("threads") not in (None, ""):
        runtime += f", {params['threads']} thread(s)"
    if params.get("cpu_affinity") not in (None, "", "unknown"):
        runtime += f", pinned to CPUs {params['cpu_affinity']}"
    items.append(runtime)
    items.append(f"model: {params.get('model', '?')}; data: {params.get('data', '?')}")
    return items


def measured(params: Mapping[str, Any], metrics: Mapping[str, float], tags: Mapping[str, str],
             context: SweepContext) -> list[str]:
    items = []
    confirmed = tags.get(tracking.CONFIRMED_TAG) == "true"
    retimed = confirmed or tags.get(tracking.RETIMED_TAG) == "true"
    if "latency_ms_p50_ci_low" in metrics:
        over = " (of the re-timing)" if retimed else (
            f" over {int(metrics['timed_runs'])} timed runs" if "timed_runs" in metrics else "")
        items.append(f"p50 95% interval {metrics['latency_ms_p50_ci_low']:.2f}-{metrics['latency_ms_p50_ci_high']:.2f} ms"
                     + over)
    if tags.get(tracking.LATENCY_REUSED_TAG):
        items.append(f"{'first pass' if retimed else 'latency'} taken from run {tags[tracking.LATENCY_REUSED_TAG]}, "
                     "whose session ran the same graph")
    if confirmed:
        first = f" (first pass {metrics['latency_ms_p50_first']:.2f} ms)" if "latency_ms_p50_first" in metrics else ""
        items.append("latency confirmed at the end of the sweep, re-timed interleaved with the baseline" + first)
        if tags.get(tracking.SAME_GRAPH_TAG):
            items.append(f"the runtime ran the same graph for {tags[tracking.SAME_GRAPH_TAG].replace(',', ', ')}: "
                         "one computation, so it was confirmed once, and its latency is theirs too")
    elif retimed:
        items.append("latency re-timed after the machine's drift reference came back within tolerance")
    # These flags describe the first pass; a re-timed figure replaced its latency.
    when = "first pass: " if retimed else ""
    for tag, warning in ((tracking.UNSTABLE_TAG, "the timed windows never agreed: the latency is unstable"),
                         (tracking.CONTENDED_TAG, "timed while other processes loaded the machine"),
                         (tracking.HIGH_CV_TAG, "high variation between inferences (CV)")):
        if tags.get(tag) == "true":
            items.append(f"⚠ {when}{warning}")
    measure = context.measure
    accuracy = (f"COCO mAP at conf {measure.get('conf')}, NMS IoU {measure.get('iou')}, max_det "
                f"{measure.get('max_det')}, through the session that was timed")
    if tags.get(tracking.ACCURACY_REUSED_TAG):
        accuracy += f"; taken from run {tags[tracking.ACCURACY_REUSED_TAG]}, whose numerics are the same"
    items.append(accuracy)
    return items


def parent_note(runs: Sequence[Run], context: SweepContext, experiment_id: str,
                dataset: tracking.DataSetInput | None = None) -> str:
    """The parent run's description: the sweep in a sentence and its front as a table, fastest first."""
    finished = [r for r in runs if r.info.status == "FINISHED" and "latency_ms_p50" in r.data.metrics]
    failed = [r for r in runs if r.info.status == "FAILED"]
    front = sorted((r for r in finished if r.data.tags.get(tracking.PARETO_TAG) == "true"),
                   key=lambda r: r.data.metrics["latency_ms_p50"])
    lines = [f"**Sweep `{context.sweep}`** on {context.target} ({context.runtime}): "
             f"{context.variants or 'a continuous space of'} variants of {' × '.join(context.axes)}; "
             f"baseline `{context.baseline_label}`. Each variant is a child run of this one (expand this row).",
             f"{len(finished)} measured, {len(failed)} failed."]
    if dataset is not None:
        lines.append(f"Measured on `{dataset.name}` ({dataset.profile.get('images', '?')} images, digest "
                     f"`{dataset.digest}`).")
    lines += ["", f"### Pareto front ({_arrows(context)}): {len(front)} of {len(finished)} variants", ""]
    metrics = [metric for metric, _ in context.objectives]
    extra = [m for m in ("speedup_vs_baseline", "map50_95_delta_vs_baseline") if m not in metrics]
    lines.append("| variant | " + " | ".join(metrics + extra) + " | confirmed |")
    lines.append("|---" * (len(metrics) + len(extra) + 2) + "|")
    for run in front:
        values = [f"{run.data.metrics[m]:.4g}" if m in run.data.metrics else "-" for m in metrics + extra]
        label = run.data.tags.get(tracking.LABEL_TAG, run.info.run_name)
        link = f"[{label}](#/experiments/{experiment_id}/runs/{run.info.run_id})"
        confirmed = "yes" if run.data.tags.get(tracking.CONFIRMED_TAG) == "true" else "no"
        lines.append(f"| {link} | " + " | ".join(values) + f" | {confirmed} |")
    if failed:
        lines += ["", "Failed: " + ", ".join(r.data.tags.get(tracking.LABEL_TAG, r.info.run_id) for r in failed)]
    return "\n".join(lines) + "\n"


def training_note(manifest: Mapping[str, Any], started_ms: int, ended_ms: int) -> str:
    """A training run's description: what was trained on what, for how long, and how well."""
    metrics = manifest.get("metrics") or {}
    scores = ", ".join(f"{k} {float(v):.3f}" for k, v in metrics.items())
    cfg = Path(str(manifest.get("model_cfg", "?"))).name
    when = datetime.fromtimestamp(started_ms / 1000).astimezone().strftime("%Y-%m-%d %H:%M")
    start = f"from weights {manifest['init_weights']}" if manifest.get("init_weights") else "from scratch"
    return (f"Trained `{cfg}` {start} for {manifest.get('epochs_completed', manifest.get('epochs', '?'))} epochs "
            f"(imgsz {manifest.get('imgsz', '?')}) on `{Path(str(manifest.get('data_yaml', '?'))).name}`, "
            f"{(ended_ms - started_ms) / 1000:.0f} s from {when}. Final validation on the val split: "
            f"{scores or 'none recorded'}. The variants built from these weights link here "
            f"(tag `{tracking.TRAINING_RUN_TAG}`).\n")


# --- the val split as the runs' data set input --------------------------------------------------------------
def _split_input(images: tuple[Path, ...], names: tuple[tuple[int, str], ...], data_name: str) -> tracking.DataSetInput:
    from yolobench.data.dataset import label_path
    from yolobench.keys import digest

    root = Path(os.path.commonpath([str(p.parent) for p in images])) if images else Path(".")
    entries, boxes, labelled = [], 0, 0
    for image in images:
        labels = label_path(image)
        text = labels.read_text() if labels.is_file() else ""
        rows = sum(1 for line in text.splitlines() if line.strip())
        boxes, labelled = boxes + rows, labelled + (rows > 0)
        entries.append([os.path.relpath(image, root), image.stat().st_size, digest(text)])
    profile = {"images": len(images), "labelled_images": labelled, "boxes": boxes, "classes": len(names),
               "class_names": [name for _, name in names]}
    stem = Path(data_name).stem or "data"
    # The content, not where it lives: the same split copied elsewhere has the same digest.
    return tracking.DataSetInput(name=f"{stem}-val", digest=digest({"names": names, "images": entries}, 16),
                                 source=root.resolve().as_uri(), profile=profile)


def val_split(data: EvalData, data_name: str) -> tracking.DataSetInput:
    """The images the variants are scored on, as an MLflow data set: name, digest of the images' names and sizes
    and of their labels, source folder, and a profile (images, boxes, classes). Computed each time it is asked
    for (a stat and a small read per image), so labels edited between two sweeps of one process show."""
    return _split_input(tuple(data.val_images), tuple(sorted(data.names.items())), data_name)


# --- when the sweep ends ------------------------------------------------------------------------------------
def explain_sweep(tracker: tracking.Tracker, experiment_id: str, parent_id: str, spec: SweepSpec,
                  data: EvalData | None = None) -> None:
    """Rewrite every child's description from its final figures (front tags, confirmed latencies), link those
    figures to its logged model, and write the parent's front table and data set. Safe to run again (a resumed
    sweep does): what is unchanged is not written twice."""
    context = SweepContext.from_spec(spec)
    runs = list(tracker.child_runs(experiment_id, parent_id).values())
    baseline = next((r.data.metrics for r in runs if r.data.tags.get(tracking.LABEL_TAG) == context.baseline_label
                     and r.info.status == "FINISHED"), None)
    dataset = val_split(data, tracking.data_name(spec)) if data is not None else None
    for run in runs:
        tags = run.data.tags
        note = variant_note(run.data.params, run.data.metrics, tags, context, baseline, run.info.status)
        if tags.get(tracking.NOTE_TAG) != note:
            tracker.set_tag(run.info.run_id, tracking.NOTE_TAG, note)
        if tracking.MODEL_ID_TAG in tags and run.info.status == "FINISHED":
            tracker.link_model_metrics(run, tags[tracking.MODEL_ID_TAG], dataset)
    if dataset is not None:
        tracker.log_dataset(parent_id, dataset)
    tracker.set_tag(parent_id, tracking.NOTE_TAG, parent_note(runs, context, experiment_id, dataset))
