"""Command line: ``cnn2gnn teacher | distill | evaluate | predict | bench``. Parses arguments, builds the config,
calls the library; computes nothing itself. User mistakes print one line and exit 2; internal errors exit 1
(``--debug`` shows the traceback).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from .errors import UserError
from .parser import build_parser


def _overrides(args: argparse.Namespace, mapping: dict[str, str]) -> list[str]:
    """Turn the convenience flags that were given into ``key=value`` overrides (before explicit ``--set``)."""
    out = []
    for attr, key in mapping.items():
        value = getattr(args, attr, None)
        if value is None or value is False:
            continue
        out.append(f"{key}={json.dumps(value, ensure_ascii=False)}")  # quoted: --data-root 2024 stays a str
    return out


COMMON_KEYS = {
    "seed": "run.seed",
    "device": "run.device",
    "data": "data.name",
    "data_root": "data.root",
    "download": "data.download",
    "limit_train": "data.limit_train",
    "limit_test": "data.limit_test",
    "epochs": "optim.epochs",
    "batch_size": "optim.batch_size",
    "lr": "optim.lr",
    "keep_checkpoints": "run.keep_checkpoints",
    "compile": "run.compile",
}


def _main_process_print(text: str) -> None:
    """Print once: under torchrun only the process of rank 0 speaks."""
    if os.environ.get("RANK", "0") == "0":
        print(text)


def cmd_teacher(args: argparse.Namespace) -> int:
    from .config import TeacherConfig, build_config
    from .teacher import train_teacher

    teacher_keys = {"arch": "model.arch", "weights": "model.weights", "pretrained": "model.pretrained"}
    overrides = _overrides(args, {**COMMON_KEYS, **teacher_keys, "input_size": "model.input_size"})
    if args.quiet:
        overrides.append("run.progress=false")
    cfg = build_config(TeacherConfig, files=args.config, overrides=overrides + args.overrides)
    summary = train_teacher(cfg, args.out, resume=args.resume, overwrite=args.overwrite)
    _main_process_print(
        f"teacher {cfg.model.arch} on {cfg.data.name}: train {summary['train_acc']:.4f}  val "
        f"{_fmt(summary['val_acc'])}  test {_fmt(summary['test_acc'])}  ({summary['seconds']:.0f}s, "
        f"{summary['parameters']:,} parameters) -> {args.out}"
    )
    return 0


def cmd_distill(args: argparse.Namespace) -> int:
    from .config import StudentConfig, build_config
    from .student import train_student

    extra = {
        "teacher": "distill.teacher",
        "k": "model.k",
        "hidden": "model.hidden",
        "alpha": "distill.alpha",
        "temperature": "distill.temperature",
        "image_size": "model.image_size",
    }
    overrides = _overrides(args, {**COMMON_KEYS, **extra})
    if args.quiet:
        overrides.append("run.progress=false")
    cfg = build_config(StudentConfig, files=args.config, overrides=overrides + args.overrides)
    s = train_student(cfg, args.out, resume=args.resume, overwrite=args.overwrite)
    accs = "  ".join(
        f"{k.removesuffix('_acc_none').replace('_acc_', ' ')} {v:.4f}" for k, v in s.items() if "_acc" in k
    )
    kind = "MLP" if cfg.model.arch == "mlp" else f"GNN ({cfg.model.aggregate})"
    how = f"distilled from {cfg.distill.teacher}" if cfg.distill.teacher else "cross-entropy"
    _main_process_print(
        f"student {kind}, {how}: {accs}  ({s['seconds']:.0f}s, {s['parameters']:,} parameters) -> {args.out}"
    )
    return 0


def _use_search(model, search: str | None) -> None:
    """``--search``: search a student's anchors with another backend than the one it was trained with."""
    if search and getattr(model, "bank", None) is not None:
        model.bank.use_search(search)


def _load_for_eval(args: argparse.Namespace):
    from .checkpoint import load_model
    from .data import load_dataset
    from .evaluate import check_data
    from .run import resolve_device

    device = resolve_device(args.device)
    model, meta = load_model(args.model, device)
    _use_search(model, args.search)
    name = args.data or meta["data"]
    root = args.data_root or (meta.get("data_root") if name == meta["data"] else None)  # where it was trained
    side = meta["image_size"][0] if len(set(meta["image_size"])) == 1 else None  # the model's own input size
    bundle = load_dataset(name, root, limit_test=args.limit_test, download=args.download, image_size=side)
    check_data(meta, bundle)
    return model, meta, bundle, device


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluate import evaluate_accuracy, measure_speed

    model, meta, bundle, device = _load_for_eval(args)
    split = bundle.test if args.split == "test" else bundle.val
    result = evaluate_accuracy(
        model,
        meta,
        split,
        graph=args.graph,
        batch_size=args.batch_size,
        seeds=range(args.seed, args.seed + args.seeds),
        device=device,
    )
    result.update(
        {"model": args.model, "kind": meta["kind"], "data": bundle.name, "split": args.split, "n": len(split)}
    )
    if args.speed:
        result["images_per_s"] = measure_speed(model, meta, split, graph=args.graph, device=device)
    bank = getattr(model, "bank", None)
    if result["policy"] == "anchors" and bank is not None and (search := bank.describe_search()):
        result["search"] = f"{search}, bank of {len(bank):,}"
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    accs = " ".join(f"{a:.4f}" for a in result["accs"])
    print(
        f"{args.model} ({meta['kind']}, graph={result['policy']}, batch {args.batch_size}) on {bundle.name} "
        f"{args.split} ({len(split)} images): accuracy {result['mean']:.4f} +- {result['std']:.4f} over "
        f"{len(result['accs'])} shuffles [{accs}]"
    )
    if "class_sorted_acc" in result:
        print(
            f"  class-sorted batches: {result['class_sorted_acc']:.4f} ({result['sorted_minus_shuffled']:+.4f} "
            "vs shuffled: the batch graph leaks labels through batch order; report the shuffled figure)"
        )
    if "search" in result:
        print(f"  anchor search: {result['search']}")
    if "images_per_s" in result:
        ips = result["images_per_s"]
        print(f"  inference: {ips['1']:.0f} images/s at batch 1, {ips['256']:.0f} images/s at batch 256 ({device})")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from .checkpoint import load_model
    from .predict import find_images, output_format, predict, text_line, write_predictions
    from .run import resolve_device

    if args.output:
        output_format(args.output)  # an unknown extension fails before anything runs
    files, warnings = find_images(args.images)
    for warning in warnings:
        print(f"cnn2gnn predict: warning: {warning}", file=sys.stderr)
    device = resolve_device(args.device)
    model, meta = load_model(args.model, device)
    _use_search(model, args.search)
    rows, skipped = predict(
        model, meta, files, batch_size=args.batch_size, top_k=args.top_k, device=device, progress=not args.quiet
    )
    for path, reason in skipped:
        print(f"cnn2gnn predict: warning: {path}: {reason}", file=sys.stderr)
    if args.output:
        write_predictions(rows, args.output)
        print(f"{len(rows)} images predicted, {len(skipped)} skipped -> {args.output}")
    elif args.json:
        print(json.dumps(rows, indent=2))
    else:
        for row in rows:
            print(text_line(row))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    import shlex

    from .bench import run_bench

    argv = ["cnn2gnn", "bench", "--data", args.data, "--preset", args.preset, "--out", args.out]
    for flag, value in (
        ("--data-root", args.data_root),
        ("--limit-train", args.limit_train),
        ("--limit-test", args.limit_test),
        ("--labels-per-class", args.labels_per_class),
        ("--label-noise", args.label_noise),
    ):
        if value is not None:
            argv += [flag, str(value)]
    argv += ["--download"] * args.download + ([] if args.device == "auto" else ["--device", args.device])
    argv += [] if args.threads is None else ["--threads", str(args.threads)]
    results = run_bench(
        args.preset,
        args.out,
        data=args.data,
        data_root=args.data_root,
        download=args.download,
        limit_train=args.limit_train,
        limit_test=args.limit_test,
        labels_per_class=args.labels_per_class,
        label_noise=args.label_noise,
        device=args.device,
        threads=args.threads,
        command=shlex.join(argv),
        progress=not args.quiet,
    )
    print(
        f"bench {args.preset} on {args.data}: {results['trained']} runs trained, {results['reused']} reused, "
        f"{results['seconds']['total']:.0f}s -> {args.out}/report.md"
    )
    return 0


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.4f}"


def cmd_export(args: argparse.Namespace) -> int:
    import contextlib
    import io

    from .checkpoint import load_model
    from .export import export_model

    model, meta = load_model(args.model)
    with contextlib.redirect_stdout(io.StringIO()):  # the ONNX exporter's progress lines
        info = export_model(model, meta, args.out, args.format)
    print(f"{args.model} ({meta['kind']}, policy {info['policy']}) -> {args.out} ({args.format}), classes in "
          f"{Path(args.out).with_suffix('.json')}")  # fmt: skip
    return 0


COMMANDS = {
    "teacher": cmd_teacher,
    "distill": cmd_distill,
    "evaluate": cmd_evaluate,
    "predict": cmd_predict,
    "bench": cmd_bench,
    "export": cmd_export,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    try:
        return COMMANDS[args.command](args)
    except UserError as err:
        if args.debug:
            raise
        print(f"cnn2gnn {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"cnn2gnn {args.command}: interrupted (continue with --resume)", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - the top of the program: one line unless --debug
        if args.debug:
            raise
        first = str(err).splitlines()[0] if str(err) else ""
        print(
            f"cnn2gnn {args.command}: internal error: {type(err).__name__}: {first} "
            "(run with --debug for the traceback and report it)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
