"""Command line: ``cnn2gnn teacher | distill | evaluate | predict | bench``. Parses arguments, builds the config,
calls the library; computes nothing itself. User mistakes print one line and exit 2; internal errors exit 1
(``--debug`` shows the traceback).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from .errors import UserError
from .policy import POLICIES

EPILOG_CONFIG = """config layering: defaults < --config FILE.yaml < flags below < --set key=value.
Every run folder gets config.yaml (the resolved config), metrics.jsonl, manifest.json and model.safetensors."""


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", action="append", default=[], metavar="FILE.yaml", help="YAML config file(s)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        dest="overrides",
        help="override a config value, e.g. --set optim.lr=0.05 (repeatable)",
    )
    p.add_argument("--seed", type=int, help="random seed (run.seed)")
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N (run.device)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--debug", action="store_true", help="show the full traceback on errors")


def _data_args(p: argparse.ArgumentParser, required: bool = False) -> None:
    p.add_argument(
        "--data",
        required=required,
        metavar="NAME",
        help="dataset: fashion-mnist, digits, cifar10, cifar100, stl10, imagefolder (data.name)",
    )
    p.add_argument("--data-root", metavar="DIR", help="folder with the dataset's files (data.root)")
    p.add_argument("--download", action="store_true", help="allow torchvision to download a missing dataset")
    p.add_argument("--limit-train", type=int, metavar="N", help="use a stratified subset of N training images")
    p.add_argument("--limit-test", type=int, metavar="N", help="use a stratified subset of N test images")


def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--epochs", type=int, help="training epochs (optim.epochs)")
    p.add_argument("--batch-size", type=int, help="training batch size (optim.batch_size)")
    p.add_argument("--lr", type=float, help="peak learning rate (optim.lr)")
    p.add_argument("--out", required=True, metavar="DIR", help="run folder to write (created if needed)")
    p.add_argument("--resume", action="store_true", help="continue from the last complete epoch in --out")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="cnn2gnn",
        description="CNN2GNN: train a CNN teacher, distil it into a two-layer GNN student with a learned sparse "
        "graph head, evaluate both (arXiv 2404.14822).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
        "  cnn2gnn teacher --data fashion-mnist --arch resnet8 --epochs 5 --out runs/teacher\n"
        "  cnn2gnn distill --data fashion-mnist --teacher runs/teacher --out runs/student\n"
        "  cnn2gnn evaluate --model runs/student --graph anchors --seeds 3 --speed\n"
        "  cnn2gnn predict --model runs/student image.png\n"
        "  cnn2gnn bench --data fashion-mnist --preset quick --out runs/bench\n"
        "run 'cnn2gnn COMMAND --help' for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"cnn2gnn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser(
        "teacher",
        help="train a CNN teacher from scratch",
        description="Train a CNN teacher from scratch and report its train/val/test accuracy.",
        epilog=EPILOG_CONFIG,
    )
    _data_args(p)
    p.add_argument(
        "--arch",
        help="resnet8 | resnet20 | resnet56 | resnet18 | resnet34 | resnet50 | resnet101 | resnet152 (model.arch)",
    )
    _train_args(p)
    _common(p)

    p = sub.add_parser(
        "distill",
        help="distil a teacher into the two-layer GNN student",
        description="Distil a trained CNN teacher into the two-layer GNN student with a learned sparse "
        "graph head (CE + T^2 KL). Without --teacher the student is trained with CE only; "
        "--set model.arch=mlp trains the same-width MLP baseline.",
        epilog=EPILOG_CONFIG,
    )
    _data_args(p)
    p.add_argument("--teacher", metavar="DIR", help="teacher model folder from `cnn2gnn teacher` (distill.teacher)")
    p.add_argument("--k", type=int, help="neighbours per node (model.k)")
    p.add_argument("--hidden", type=int, help="hidden width (model.hidden)")
    p.add_argument("--alpha", type=float, help="weight of the KD term (distill.alpha)")
    p.add_argument("--temperature", type=float, help="KD temperature T (distill.temperature)")
    _train_args(p)
    _common(p)

    p = sub.add_parser(
        "evaluate",
        help="accuracy (mean +- std over seeded shuffles) and speed of a model",
        description="Evaluate a teacher or student folder on a dataset's test split: accuracy for "
        "each seeded shuffle of the test set, mean and std; for the batch policy also on "
        "class-sorted batches (how much the graph leaks through batch order); and images/s.",
    )
    p.add_argument("--model", required=True, metavar="DIR", help="model folder (teacher or student)")
    _data_args(p)
    p.add_argument(
        "--graph",
        choices=POLICIES,
        help="student inference policy (default: anchors when the model has a bank, else batch)",
    )
    p.add_argument("--batch-size", type=int, default=256, help="test batch size (default 256)")
    p.add_argument("--seeds", type=int, default=3, metavar="S", help="number of seeded shuffles (default 3)")
    p.add_argument("--split", choices=("test", "val"), default="test", help="split to evaluate (default test)")
    p.add_argument("--speed", action="store_true", help="also measure images/s at batch 1 and 256")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--device", default="cpu", help="cpu | cuda | auto (default cpu)")
    p.add_argument("--debug", action="store_true", help="show the full traceback on errors")

    p = sub.add_parser(
        "predict",
        help="classify image files with a trained model",
        description="Print class and probability for each image file (a student uses its anchor "
        "bank, so every image is classified on its own). Images of another colour mode or size are converted to "
        "the model's mode (grey or RGB) and resized (bilinear) to its input size.",
    )
    p.add_argument("--model", required=True, metavar="DIR", help="model folder (teacher or student)")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (PNG, JPEG, ...)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--debug", action="store_true", help="show the full traceback on errors")

    p = sub.add_parser(
        "bench",
        help="train the teachers and every baseline, write report.md, results.json and plots",
        description="Benchmark CNN2GNN against its baselines on one split and the same seeds:\n"
        "  teachers: resnet8 (it distils every student) and a deeper resnet20, trained from scratch\n"
        "  MLP of the student's width with CE and with KD; the GNN with CE; the GNN on a fixed pixel kNN graph\n"
        "  with KD; CNN2GNN (learned graph + KD); graph students under both inference policies (batch, anchors)\n"
        "Reports test accuracy (mean +- std over seeds, last and best-val epoch), parameters, FLOPs per image,\n"
        "training seconds per epoch, images/s at batch 1 and 256 (graph cost included), accuracy vs test batch\n"
        "size and vs k, and the learned graph's homophily, in OUT/report.md, OUT/results.json and OUT/*.png.\n"
        "Runs go to OUT/runs/<row>-<config hash>-s<seed>/: a run that finished before with the same config hash\n"
        "is reused, an interrupted one continues, so the command can be re-run after a crash or to redo the report.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="presets (YAML files in cnn2gnn/bench/presets/):\n"
        "  tiny   digits-sized smoke test: width-4 teachers, 2 student epochs, 2 seeds (seconds)\n"
        "  quick  resnet8 5 epochs + resnet20 2 epochs, students 8 epochs, 3 seeds (<= 20 min on 2 CPU cores, "
        "Fashion-MNIST)\n"
        "  full   quick's budgets (quick's runs in OUT are reused) plus trained sweeps of k, T, alpha, training batch\n"
        "         size, distance space, detached graph and self-loop, 3 seeds each (about an hour on 2 CPU cores)\n"
        "  long   full's rows and sweeps with resnet8 15 + resnet20 30 epochs (3 teacher seeds) and 30 student\n"
        "         epochs (many hours on a CPU; meant for a GPU)\n"
        "  FILE.yaml  your own preset: the keys of cnn2gnn.bench.Preset; 'base: quick' starts from a shipped\n"
        "         preset and the file's top-level keys replace its keys (unknown keys and wrong types are errors)\n"
        "examples:\n"
        "  cnn2gnn bench --data fashion-mnist --preset quick --out runs/bench\n"
        "  cnn2gnn bench --data fashion-mnist --preset my_preset.yaml --out runs/bench-mine",
    )
    _data_args(p, required=True)
    p.add_argument(
        "--preset",
        default="quick",
        metavar="NAME|FILE.yaml",
        help="budget: tiny | quick | full | long, or a preset YAML file (default quick)",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="folder for runs/, report.md, results.json, *.png")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    p.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="torch CPU threads for training and timing (default: one per core); use 1 when other jobs share the "
        "cores: oversubscribed threads make small matmuls 10-100x slower",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    return parser


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
}


def cmd_teacher(args: argparse.Namespace) -> int:
    from .config import TeacherConfig, build_config
    from .teacher import train_teacher

    overrides = _overrides(args, {**COMMON_KEYS, "arch": "model.arch"})
    if args.quiet:
        overrides.append("run.progress=false")
    cfg = build_config(TeacherConfig, files=args.config, overrides=overrides + args.overrides)
    summary = train_teacher(cfg, args.out, resume=args.resume)
    print(
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
    }
    overrides = _overrides(args, {**COMMON_KEYS, **extra})
    if args.quiet:
        overrides.append("run.progress=false")
    cfg = build_config(StudentConfig, files=args.config, overrides=overrides + args.overrides)
    s = train_student(cfg, args.out, resume=args.resume)
    accs = "  ".join(
        f"{k.removesuffix('_acc_none').replace('_acc_', ' ')} {v:.4f}" for k, v in s.items() if "_acc" in k
    )
    kind = "MLP" if cfg.model.arch == "mlp" else f"GNN ({cfg.model.aggregate})"
    how = f"distilled from {cfg.distill.teacher}" if cfg.distill.teacher else "cross-entropy"
    print(f"student {kind}, {how}: {accs}  ({s['seconds']:.0f}s, {s['parameters']:,} parameters) -> {args.out}")
    return 0


def _load_for_eval(args: argparse.Namespace):
    from .checkpoint import load_model
    from .data import load_dataset
    from .evaluate import check_data
    from .run import resolve_device

    device = resolve_device(args.device)
    model, meta = load_model(args.model, device)
    bundle = load_dataset(args.data or meta["data"], args.data_root, limit_test=args.limit_test, download=args.download)
    check_data(meta, bundle)
    return model, meta, bundle, device


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluate import evaluate_accuracy, measure_speed

    model, meta, bundle, device = _load_for_eval(args)
    split = bundle.test if args.split == "test" else bundle.val
    result = evaluate_accuracy(
        model, meta, split, graph=args.graph, batch_size=args.batch_size, seeds=range(args.seeds), device=device
    )
    result.update(
        {"model": args.model, "kind": meta["kind"], "data": bundle.name, "split": args.split, "n": len(split)}
    )
    if args.speed:
        result["images_per_s"] = measure_speed(model, meta, split, graph=args.graph, device=device)
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
    if "images_per_s" in result:
        ips = result["images_per_s"]
        print(f"  inference: {ips['1']:.0f} images/s at batch 1, {ips['256']:.0f} images/s at batch 256 ({device})")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from .checkpoint import load_model
    from .evaluate import predict_files

    model, meta = load_model(args.model)
    rows = predict_files(model, meta, args.images)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            print(f"{r['file']}\t{r['class']}\t{r['probability']:.4f}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    import shlex

    from .bench import run_bench

    argv = ["cnn2gnn", "bench", "--data", args.data, "--preset", args.preset, "--out", args.out]
    for flag, value in (
        ("--data-root", args.data_root),
        ("--limit-train", args.limit_train),
        ("--limit-test", args.limit_test),
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


COMMANDS = {
    "teacher": cmd_teacher,
    "distill": cmd_distill,
    "evaluate": cmd_evaluate,
    "predict": cmd_predict,
    "bench": cmd_bench,
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
