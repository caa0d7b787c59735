"""The command line's arguments: one ``argparse`` parser with a sub-parser per command, and the flags that map onto
config keys. Building it imports nothing heavy, so ``--help`` is instant; cli.py runs the commands.
"""

from __future__ import annotations

import argparse

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
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last complete epoch")
    p.add_argument("--overwrite", action="store_true", help="replace the run that --out holds (refused otherwise)")
    p.add_argument("--compile", action="store_true", help="torch.compile the trained model (run.compile)")
    p.add_argument(
        "--keep-checkpoints", action="store_true", help="keep OUT/ckpt/ after the run (run.keep_checkpoints)"
    )


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
        help="train a CNN teacher, or wrap your own (torchvision:/timm: with --weights)",
        description="Train a CNN teacher (from scratch, or fine-tuned from --weights / --pretrained) and report its "
        "train/val/test accuracy. With --epochs 0 the given weights are only wrapped and evaluated: a model you "
        "fine-tuned elsewhere becomes a teacher folder in one command.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EPILOG_CONFIG
        + "\nexample (your fine-tuned torchvision model as a teacher):\n  cnn2gnn teacher --data imagefolder "
        "--data-root pets --arch torchvision:resnet18 --weights resnet18_pets.pth --epochs 0 --out runs/teacher",
    )
    _data_args(p)
    p.add_argument(
        "--arch",
        help="resnet8 | resnet20 | resnet56 | resnet18 ... resnet152 (small-image stem), or any torchvision:NAME "
        "(e.g. torchvision:resnet18) or timm:NAME (e.g. timm:convnext_tiny) classifier (model.arch)",
    )
    p.add_argument(
        "--weights",
        metavar="FILE",
        help="start from these weights: a .safetensors file or a torch.save'd state dict (read with weights_only); a "
        "head of another class count is replaced (model.weights)",
    )
    p.add_argument(
        "--pretrained", action="store_true", help="the library's pretrained weights (needs a network; model.pretrained)"
    )
    p.add_argument(
        "--input-size", type=int, metavar="S", help="side the teacher sees (default: its own; model.input_size)"
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
    p.add_argument(
        "--image-size",
        type=int,
        metavar="S",
        help="the student's input side; the teacher keeps its own resolution (model.image_size)",
    )
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
    p.add_argument(
        "--search",
        choices=("torch", "faiss", "faiss-ivf"),
        help="how a student finds its nearest anchors (default: as trained, bank.search)",
    )
    p.add_argument("--batch-size", type=int, default=256, help="test batch size (default 256)")
    p.add_argument("--seeds", type=int, default=3, metavar="S", help="number of seeded shuffles (default 3)")
    p.add_argument("--seed", type=int, default=0, metavar="N", help="first shuffle seed: shuffles N..N+S-1 (default 0)")
    p.add_argument("--split", choices=("test", "val"), default="test", help="split to evaluate (default test)")
    p.add_argument("--speed", action="store_true", help="also measure images/s at batch 1 and 256")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--device", default="cpu", help="cpu | cuda | auto (default cpu)")
    p.add_argument("--debug", action="store_true", help="show the full traceback on errors")

    p = sub.add_parser(
        "predict",
        help="classify image files and folders with a trained model",
        description="Classify image files, and the image files under folders (searched recursively), in batches:\n"
        "the K most probable classes of each image. A student uses its anchor bank, so every image is classified\n"
        "on its own (its result does not depend on the batch size, the order or the other files). Images of another\n"
        "colour mode or size are converted to the model's mode (grey or RGB) and resized (bilinear) to its input\n"
        "size. Unreadable files are skipped with a warning each; no readable file at all is an error.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="output formats (one row per image, the most probable class first):\n"
        "  stdout       PATH<TAB>CLASS<TAB>PROBABILITY[<TAB>CLASS_2<TAB>PROBABILITY_2 ...], no header\n"
        "  --json       a JSON array of the records of FILE.jsonl, on stdout\n"
        "  FILE.csv     header path,class,probability[,class_2,probability_2,...,class_K,probability_K]\n"
        '  FILE.jsonl   one record a line: {"path", "class", "index", "probability",\n'
        '               "top_k": [{"class", "index", "probability"}, ... K of them]}\n'
        "examples:\n"
        "  cnn2gnn predict --model runs/student shoe.png shirt.png\n"
        "  cnn2gnn predict --model runs/student photos/ --top-k 3 --output predictions.csv",
    )
    p.add_argument("--model", required=True, metavar="DIR", help="model folder (teacher or student)")
    p.add_argument(
        "images",
        nargs="+",
        metavar="PATH",
        help="image files (any format Pillow reads) and folders; a folder stands for its .png .jpg .jpeg .bmp .gif "
        ".tif .tiff .webp files (any case, recursively, sorted)",
    )
    p.add_argument(
        "--batch-size", type=int, default=256, metavar="N", help="images read and classified at a time (default 256)"
    )
    p.add_argument(
        "--search",
        choices=("torch", "faiss", "faiss-ivf"),
        help="how a student finds its nearest anchors (default: as trained, bank.search)",
    )
    p.add_argument(
        "--top-k",
        type=int,
        default=1,
        metavar="K",
        help="the K most probable classes per image (default 1; more than the model's classes gives them all)",
    )
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps (default auto)")
    out = p.add_mutually_exclusive_group()
    out.add_argument(
        "--output", metavar="FILE.csv|FILE.jsonl", help="write the predictions to a CSV or JSON-lines file"
    )
    out.add_argument("--json", action="store_true", help="print the predictions as one JSON array")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--debug", action="store_true", help="show the full traceback on errors")

    p = sub.add_parser(
        "export",
        help="export a trained student (or teacher) for deployment: ONNX or torch.export",
        description="Export a model folder as one self-contained graph: input a float batch N x C x H x W of pixel "
        "values in [0, 1] at the model's image size (any N), output logits; the input normalisation and the "
        "anchor bank are inside. The class names, input shape and policy go to OUT with the suffix .json.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  cnn2gnn export --model runs/student --format onnx --out student.onnx\n"
        "  cnn2gnn export --model runs/student --format torch-export --out student.pt2\n"
        "serve: onnxruntime.InferenceSession('student.onnx').run(None, {'images': x})[0]  (x: float32, [0, 1])",
    )
    p.add_argument("--model", required=True, metavar="DIR", help="model folder (student with a bank, MLP, teacher)")
    p.add_argument("--format", choices=("onnx", "torch-export"), default="onnx", help="(default onnx)")
    p.add_argument("--out", required=True, metavar="FILE", help="file to write (e.g. student.onnx, student.pt2)")
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
        "  regimes  for --labels-per-class / --label-noise: one resnet8 teacher, the baselines, CNN2GNN and two graph\n"
        "         variants (zero-initialised neighbour weights, anchor labels as messages), 3 seeds (~15 min)\n"
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
        help="budget: tiny | quick | full | long | regimes, or a preset YAML file (default quick)",
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
    p.add_argument(
        "--labels-per-class",
        type=int,
        metavar="N",
        help="regime: only N labelled training (and validation) images per class; teachers train on those, students "
        "get CE on them and the teacher's soft targets on every training image (data.labels_per_class)",
    )
    p.add_argument(
        "--label-noise",
        type=float,
        metavar="P",
        help="regime: a seeded fraction P of training and validation labels flipped to another class; the test split "
        "stays clean (data.label_noise)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    return parser
