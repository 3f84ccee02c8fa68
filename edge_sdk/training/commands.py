"""``edge-ad train``: the command line over :func:`edge_sdk.training.train.train`.

The CLI wires it in with ``add_train_parser(subparsers)``; ``cmd_train(args)`` returns the
exit code (0 done, 2 usage, 4 failure, 130 interrupted with a checkpoint to resume from).
torch is imported only when the command runs, so ``edge-ad --help`` stays fast.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, get_args

from edge_sdk.errors import EdgeADError
from edge_sdk.runtime.manifest import ResizeMode

if TYPE_CHECKING:
    pass

from edge_sdk.cli_options import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    map_weights,
)

MODELS = {"s": "efficientad-s", "m": "efficientad-m"}
# Without a terminal (a log file, CI) a line per this many seconds, and per phase change.
LINE_INTERVAL_S = 30.0


def add_train_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``train`` to the ``edge-ad`` subcommands; returns its parser."""
    p = subparsers.add_parser(
        "train",
        help="train an EfficientAD bundle on good images",
        description=(
            "Train EfficientAD on good images (DATA/train/good/ of an MVTec-style set, or "
            "every image under DATA) and write a calibrated bundle. A part of the good "
            "images is held out to set the map normalisation and the threshold."
        ),
    )
    p.add_argument("data", metavar="DATA", help="MVTec-style set or folder of good images")
    p.add_argument("--out", required=True, metavar="BUNDLE", help="the *.bundle to write")
    p.add_argument("--model", choices=sorted(MODELS), default="s", help="EfficientAD-S or -M")
    p.add_argument(
        "--teacher",
        metavar="FILE|random",
        help="teacher weights (e.g. teacher_small.pth); 'random' for a weak random "
        "teacher (baselines); default: the project's teacher in models/",
    )
    p.add_argument("--steps", type=int, default=70_000, help="training steps (paper: 70000)")
    p.add_argument(
        "--time-budget",
        type=parse_duration,
        metavar="DURATION",
        help="instead of --steps: as many steps as fit this long on this machine (e.g. 30m, "
        "2h, 90s), measured by a short probe of real steps before training",
    )
    p.add_argument("--penalty", metavar="DIR", help="generic photos for the penalty term")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    add_precision_argument(p)
    p.add_argument("--batch-size", type=int, default=1, help="images per step (paper: 1)")
    p.add_argument(
        "--lr", type=float, default=None, help="Adam's learning rate (default: the paper's 1e-4)"
    )
    p.add_argument("--checkpoint-dir", metavar="DIR", help="default: BUNDLE.ckpt next to --out")
    p.add_argument("--checkpoint-every", type=int, default=1000, metavar="STEPS")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint")
    p.add_argument(
        "--val-fraction",
        type=float,
        default=0.1,
        metavar="F",
        help="share of the good images held out for quantiles and threshold",
    )
    p.add_argument(
        "--target-frr",
        type=float,
        default=0.01,
        metavar="F",
        help="false-reject rate on held-out good images that sets the threshold",
    )
    p.add_argument(
        "--map-weights",
        type=map_weights,
        metavar="ST,AE",
        help="weights of the student's and the autoencoder's maps in a part's map "
        "(default: the paper's 0.5,0.5; 1,0 reads the student map alone; see the README "
        "on what each catches)",
    )
    p.add_argument(
        "--resize",
        choices=get_args(ResizeMode),
        default=None,
        help="how images are resized to the model input, in training and on the line "
        "(default: area_fast, INTER_AREA to within a grey level and several times "
        "faster on camera frames; area to continue a checkpoint written before "
        "area_fast existed)",
    )
    p.add_argument(
        "--tiling",
        metavar="SCALE|FILE",
        help="train and inspect at native resolution: each image cut into overlapping "
        "256 px tiles at SCALE model px per image px (1.0: native; an image too small for "
        "one tile is enlarged to one), or as FILE (YAML: regions, grid) says; the bundle "
        "records it and the runtime tiles alike",
    )
    p.add_argument(
        "--min-defect-px",
        type=float,
        metavar="N",
        help="the smallest defect to catch, in image pixels: train tiled at the scale that "
        "shows it (said at start), or untiled where squeezing the image keeps it visible",
    )
    p.add_argument("--name", help="bundle name (default: the file name)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing bundle")
    p.add_argument(
        "--int8",
        action="store_true",
        help="also add the int8 variant (CPU), calibrated and parity-checked on the "
        "training images (up to 64; a tiled bundle: on its tiles, and fewer images when a "
        "part has many tiles); a refused variant leaves the float32 bundle",
    )
    p.set_defaults(func=cmd_train)
    return p


def parse_tiling(text: str) -> Any:
    """``--tiling``: a scale (the whole image, 256 px tiles, 32 px overlap; an image too
    small for one tile at that scale is enlarged to one) or a YAML file holding a
    ``model.input.tiling`` section.

    >>> parse_tiling("0.5").grid
    TileGrid(size=256, overlap=32, scale=0.5, enlarge_small=True)
    """
    from pydantic import ValidationError

    from edge_sdk.errors import ConfigError
    from edge_sdk.runtime.tiling import TileGrid, Tiling

    try:
        scale = float(text)
    except ValueError:
        scale = None  # not a number: a file
    if scale is not None:
        try:
            return Tiling(grid=TileGrid(scale=scale, enlarge_small=True))
        except ValidationError as exc:
            raise ConfigError(f"--tiling {text}: {exc.errors()[0]['msg']}") from None
    path = Path(text).expanduser()
    try:
        import yaml

        data = yaml.safe_load(path.read_text())
        return Tiling.model_validate(data)
    except OSError as exc:
        raise ConfigError(f"--tiling {text}: neither a scale nor a readable file ({exc})") from None
    except (yaml.YAMLError, ValidationError) as exc:
        raise ConfigError(f"--tiling {path}: not a valid tiling: {exc}") from None


_UNITS = {"s": 1, "m": 60, "h": 3600}


def parse_duration(text: str) -> float:
    """``90s``, ``30m``, ``2h``, ``1h30m`` or plain seconds -> seconds.

    >>> parse_duration("1h30m"), parse_duration("45")
    (5400.0, 45.0)
    """
    value, total, seen = "", 0.0, False
    for char in text.strip().lower():
        if char.isdigit() or char == ".":
            value += char
        elif char in _UNITS and value:
            total += float(value) * _UNITS[char]
            value, seen = "", True
        else:
            raise argparse.ArgumentTypeError(
                f"expected a duration like 30m, 2h or 90s, got {text!r}"
            )
    if value:
        total += float(value)  # a trailing number without unit: seconds
    elif not seen:
        raise argparse.ArgumentTypeError(f"expected a duration like 30m, 2h or 90s, got {text!r}")
    if total <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive duration, got {text!r}")
    return total


def add_precision_argument(p: argparse.ArgumentParser) -> None:
    """``--bf16`` / ``--no-bf16``; unset: bfloat16 where the CPU runs it natively."""
    p.add_argument(
        "--bf16",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="bfloat16 autocast on the CPU (default: on where the CPU runs it natively, "
        "AMX or AVX512-BF16, about 2x faster a step; --no-bf16 for float32); CUDA always "
        "uses mixed precision",
    )


def _usage_error(args: argparse.Namespace) -> str | None:
    if args.time_budget is not None and args.resume:
        return (
            "--time-budget with --resume: pass --steps N instead (N is the step count the "
            "budgeted run printed, and is in its checkpoint's bundle record)"
        )
    if args.steps < 1 or args.batch_size < 1 or args.checkpoint_every < 1:
        return "--steps, --batch-size and --checkpoint-every must be at least 1"
    if not 0.0 < args.val_fraction < 1.0:
        return f"--val-fraction must be between 0 and 1, got {args.val_fraction}"
    if not 0.0 < args.target_frr < 1.0:
        return f"--target-frr must be between 0 and 1, got {args.target_frr}"
    if args.min_defect_px is not None and args.tiling is not None:
        return "--min-defect-px chooses the tiling: give it or --tiling, not both"
    if args.min_defect_px is not None and args.min_defect_px <= 0:
        return f"--min-defect-px must be positive, got {args.min_defect_px}"
    if args.lr is not None and not 0.0 < args.lr < 1.0:
        return f"--lr must be between 0 and 1, got {args.lr}"
    return None


def duration_text(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    s = int(seconds)
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s"


def resume_hint(exc: Any) -> str:
    """What an interrupted run left behind (a TrainingInterrupted) and how to go on."""
    if exc.checkpoint is None:
        return "no checkpoint was written"
    return (
        f"checkpoint of step {exc.step} in {exc.checkpoint}; run the same command with "
        "--resume to continue"
    )


class ProgressPrinter:
    """Renders :class:`Progress` on a stream: one updating line on a terminal, a line every
    :data:`LINE_INTERVAL_S` seconds (and on each phase change) otherwise.
    """

    def __init__(self, stream: TextIO, *, tty: bool | None = None) -> None:
        self.stream = stream
        self.tty = stream.isatty() if tty is None else tty
        self._last = 0.0
        self._phase = ""
        self._width = 0

    def format(self, p: Any) -> str:
        if p.phase == "statistics":
            return f"teacher statistics  {p.step}/{p.total} images"
        if p.phase == "export":
            return "exporting and calibrating" if p.step < p.total else "exported"
        terms = " ".join(f"{k} {v:.4f}" for k, v in p.losses.items() if k != "total")
        return (
            f"train {p.step}/{p.total} {100 * p.step / p.total:5.1f}%  "
            f"loss {p.losses.get('total', float('nan')):.4f} ({terms})  "
            f"{p.steps_per_s:.2f} steps/s  elapsed {duration_text(p.elapsed_s)}  "
            f"left {duration_text(p.eta_s)}"
        )

    def __call__(self, p: Any) -> None:
        now = time.monotonic()
        changed = p.phase != self._phase
        done = p.step >= p.total
        if self.tty:
            if changed and self._phase:
                self.stream.write("\n")
                self._width = 0
            if changed or done or now - self._last >= 0.25:
                line = self.format(p)
                self.stream.write("\r" + line.ljust(self._width))
                self._width = len(line)
                self._last = now
        elif changed or done or now - self._last >= LINE_INTERVAL_S:
            self.stream.write(self.format(p) + "\n")
            self._last = now
        self._phase = p.phase
        self.stream.flush()

    def close(self) -> None:
        if self.tty and self._phase:
            self.stream.write("\n")
            self.stream.flush()
            self._phase = ""


def cmd_train(args: argparse.Namespace) -> int:
    """Run ``edge-ad train``; progress on stderr, the result on stdout."""
    problem = _usage_error(args)
    if problem is not None:
        print(f"edge-ad train: error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    try:
        from edge_sdk.training.train import TrainConfig, TrainingInterrupted, train
    except ImportError as exc:
        print(
            f"edge-ad train: error: training needs PyTorch and onnx ({exc}): "
            f"pip install 'edge-ad[train]'",
            file=sys.stderr,
        )
        return EXIT_FAILED
    config = TrainConfig(
        data=Path(args.data),
        out=Path(args.out),
        architecture=MODELS[args.model],
        teacher=args.teacher,
        steps=args.steps,
        penalty=Path(args.penalty) if args.penalty else None,
        seed=args.seed,
        batch_size=args.batch_size,
        device=args.device,
        bf16=args.bf16,
        val_fraction=args.val_fraction,
        target_frr=args.target_frr,
        map_weights=args.map_weights,
        name=args.name,
        checkpoint_dir=Path(args.checkpoint_dir) if args.checkpoint_dir else None,
        checkpoint_every=args.checkpoint_every,
        resume=args.resume,
        overwrite=args.overwrite,
        int8=args.int8,
    )
    if args.tiling is not None:
        try:
            config = dataclasses.replace(config, tiling=parse_tiling(args.tiling))
        except EdgeADError as exc:
            print(f"edge-ad train: error: {exc}", file=sys.stderr)
            return EXIT_USAGE
    if args.min_defect_px is not None:
        try:
            config = dataclasses.replace(
                config, tiling=_suggested_tiling(Path(args.data), args.min_defect_px)
            )
        except (EdgeADError, ValueError) as exc:
            print(f"edge-ad train: error: {exc}", file=sys.stderr)
            return EXIT_FAILED
    if args.tiling is None and args.min_defect_px is None:
        _print_squeeze_note(Path(args.data))
    if args.lr is not None:  # else the recipe's LEARNING_RATE
        config = dataclasses.replace(config, lr=args.lr)
    if args.resize is not None:  # else the recipe's INPUT_RESIZE
        config = dataclasses.replace(config, resize=args.resize)
    budget = None
    if args.time_budget is not None:
        from edge_sdk.training.train import plan_for_budget

        print(
            f"edge-ad train: measuring the step time for a budget of "
            f"{duration_text(args.time_budget)}...",
            file=sys.stderr,
        )
        try:
            budget = plan_for_budget(config, args.time_budget)
        except EdgeADError as exc:
            print(f"edge-ad train: error: {exc}", file=sys.stderr)
            return EXIT_FAILED
        config = dataclasses.replace(config, steps=budget.steps)
        print(
            f"edge-ad train: {budget.steps} steps fit {duration_text(budget.budget_s)} here "
            f"({budget.step_s:.2f} s a step, teacher statistics about "
            f"{duration_text(budget.statistics_s)}; export and calibration come on top). "
            f"To resume this run, pass --steps {budget.steps} --resume.",
            file=sys.stderr,
        )
    printer = ProgressPrinter(sys.stderr)
    try:
        result = train(config, progress=printer, budget=budget)
    except TrainingInterrupted as exc:
        printer.close()
        print(f"edge-ad train: interrupted: {resume_hint(exc)}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        # After training: the final checkpoint is written, and --resume goes straight to export.
        printer.close()
        print(
            f"edge-ad train: interrupted while exporting; training is complete in "
            f"{config.checkpoint_folder()}; run the same command with --resume to export",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    except EdgeADError as exc:
        printer.close()
        print(f"edge-ad train: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    printer.close()
    record = result.record
    losses = ", ".join(f"{k} {v:.4f}" for k, v in record["losses"].items())
    print(
        f"wrote {result.bundle}: {record['recipe']['architecture']}, {record['steps']} steps "
        f"on {record['device']} in {duration_text(record['wall_time_s'])}; final losses {losses}"
    )
    if "int8" in record:
        print(f"int8 variant: {record['int8']}")
    if config.tiling is not None:
        print(part_latency(result.bundle, result.record["validation_split"]["files"], config))
    print_threshold_notes(result.bundle, sys.stderr)
    return EXIT_OK


def _suggested_tiling(data: Path, min_defect_px: float) -> Any:
    from edge_sdk.images import read_image
    from edge_sdk.training.data import find_good_images
    from edge_sdk.training.layout_choice import suggest_tiling

    sizes = [read_image(path).shape[:2] for path in find_good_images(data).files]
    choice = suggest_tiling(sizes, min_defect_px=min_defect_px)
    print(f"edge-ad train: {choice.message}", file=sys.stderr)
    return choice.tiling


SIZE_SAMPLE = 16  # images read for the squeeze note: a spread, not the whole set


def _print_squeeze_note(data: Path) -> None:
    """Say what squeezing costs on these images, where it costs much. Silent when the
    folder cannot be read: training itself then says what is wrong."""
    from edge_sdk.images import read_image
    from edge_sdk.training.data import find_good_images
    from edge_sdk.training.layout_choice import squeeze_note

    try:
        files = find_good_images(data).files
        step = max(1, len(files) // SIZE_SAMPLE)
        sizes = [read_image(path).shape[:2] for path in files[::step][:SIZE_SAMPLE]]
    except (EdgeADError, OSError):
        return
    note = squeeze_note(sizes)
    if note is not None:
        print(f"edge-ad train: {note}", file=sys.stderr)


def part_latency(bundle: Path, held_out: list[str], config: Any, runs: int = 3) -> str:
    """What a part costs through the tiled bundle on this machine: the median of a few
    inspections of a held-out image (float32, CPU)."""
    from edge_sdk.images import read_image
    from edge_sdk.runtime.inspector import Inspector
    from edge_sdk.training.data import find_good_images

    source = find_good_images(config.data)
    base = source.root / "train" / "good" if source.layout == "mvtec" else source.root
    image = read_image(base / held_out[0])
    with Inspector.open(bundle, device="cpu", variant="fp32") as inspector:
        times = [inspector.inspect(image).latency.total_ms for _ in range(runs)]
        tiling = inspector.manifest.model.input.tiling
    from edge_sdk.runtime.tiling import plan_regions

    assert tiling is not None
    tiles = sum(len(p.tiles) for p in plan_regions(tiling, image.shape))
    h, w = image.shape[:2]
    return (
        f"tiled: {tiles} tiles a {w}x{h} part; one part took {sorted(times)[runs // 2]:.0f} ms "
        f"here (float32 on the CPU, median of {runs}; edge-ad bench and "
        f"benchmarks/tiled_latency.py measure more)"
    )


def print_threshold_notes(bundle: Path, stream: TextIO) -> None:
    """What the calibration says about its own reliability, loudly: a threshold set on too
    few good images is a guess, and the user must hear it before the bundle goes to a line."""
    from edge_sdk.runtime.bundle import Bundle

    policy = Bundle.open(bundle).manifest.threshold.policy
    notes = policy.notes
    if policy.small_sample:
        stream.write("WARNING: too few held-out good images to resolve the target rate\n")
    for note in notes:
        stream.write(f"threshold: {note}\n")
    expected = policy.expected_false_reject_rate_95ci
    if expected is not None:
        stream.write(
            f"threshold: expected false-reject rate on new good parts {expected[0]:.3g} to "
            f"{expected[1]:.3g} (95 %, target {policy.target_false_reject_rate})\n"
        )
