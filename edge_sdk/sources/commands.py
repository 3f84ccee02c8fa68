"""``edge-ad cameras``: list the GenICam cameras of every GenTL producer found.

Wired into the CLI by ``add_cameras_parser(subparsers)``; `cmd_cameras` prints (the only
printing in this package) and returns the exit code: 0 ok, 4 failure.

    edge-ad cameras                                   table of every camera
    edge-ad cameras --json                            the same as JSON
    edge-ad cameras --camera cam0 --alias cam0=serial:1       which camera cam0 opens
    edge-ad cameras --camera 1 --profile calibration/viky-mono8.yaml --grab
                                                      apply the profile, grab one frame
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from edge_sdk.errors import ConfigError, EdgeADError

__all__ = ["EXIT_FAILED", "EXIT_OK", "add_cameras_parser", "cmd_cameras"]

from edge_sdk.cli_options import EXIT_FAILED, EXIT_OK, EXIT_USAGE


def add_cameras_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``cameras`` command to an argparse subparsers object."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "cameras",
        help="list GenICam devices",
        description="List every device of every GenTL producer (GENICAM_GENTL64_PATH, "
        "--producer, and the simulator in the genicam wheel).",
    )
    p.add_argument(
        "--producer",
        action="append",
        default=[],
        metavar="CTI_OR_DIR",
        help="an extra GenTL producer file or folder (absolute path; repeatable)",
    )
    p.add_argument("--no-simulator", action="store_true", help="leave out the simulator viky.cti")
    p.add_argument(
        "--camera",
        metavar="SELECTOR",
        help="show the camera this selects: alias, serial, user name, id or index",
    )
    p.add_argument(
        "--alias",
        action="append",
        default=[],
        metavar="NAME=SELECTOR",
        help="a camera alias, e.g. cam0=serial:21345678 (repeatable)",
    )
    p.add_argument("--profile", metavar="YAML", help="camera profile to apply with --grab")
    p.add_argument(
        "--grab",
        action="store_true",
        help="open the selected camera, apply --profile, read one frame",
    )
    p.add_argument("--timeout-s", type=float, default=5.0, help="--grab waits this long")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_cameras)
    return p


class _UsageError(ConfigError):
    """Options that do not go together: exit 2, as argparse's own usage errors."""


def cmd_cameras(args: argparse.Namespace) -> int:
    """Run ``edge-ad cameras``; print the result; return 0, 2 for a wrong command line,
    or 4 on failure."""
    try:
        report = _report(args)
    except EdgeADError as exc:
        if getattr(args, "json", False):
            print(json.dumps({"error": str(exc), "type": type(exc).__name__}, indent=2))
        print(f"edge-ad cameras: error: {exc}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, _UsageError) else EXIT_FAILED
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        print(_human(report))
    return EXIT_OK


def _report(args: argparse.Namespace) -> dict[str, Any]:
    from edge_sdk.sources.discovery import list_cameras, select_camera
    from edge_sdk.sources.producers import find_producers

    aliases = _aliases(args.alias)
    producers = find_producers(args.producer, include_simulator=not args.no_simulator)
    cameras = list_cameras(args.producer, include_simulator=not args.no_simulator)
    report: dict[str, Any] = {
        "producers": [{"path": str(p.path), "origin": p.origin} for p in producers],
        "cameras": [c.to_dict() for c in cameras],
    }
    if args.camera is None and (args.grab or args.profile):
        raise _UsageError("--grab and --profile need --camera SELECTOR")
    if args.camera is not None:
        selected = select_camera(cameras, args.camera, aliases=aliases)
        report["selected"] = selected.to_dict()
        if args.grab:
            report["grab"] = _grab(args, selected.index, aliases)
    return report


def _grab(args: argparse.Namespace, index: int, aliases: dict[str, str]) -> dict[str, Any]:
    from edge_sdk.sources.genicam import GenICamSource
    from edge_sdk.sources.profiles import load_profile

    profile = load_profile(Path(args.profile).expanduser().absolute()) if args.profile else None
    source = GenICamSource(
        f"index:{index}",
        profile=profile,
        aliases=aliases,
        producer_paths=args.producer,
        include_simulator=not args.no_simulator,
        camera_id=args.camera,
    )
    with source:
        if source.profile.trigger.mode == "software":
            source.trigger()
        start = time.perf_counter()
        frame = source.read(timeout_s=args.timeout_s)
        waited_ms = (time.perf_counter() - start) * 1e3
        pixel_format = source.node_map.PixelFormat.value
    return {
        "profile": source.profile.name or None,
        "pixel_format_setting": pixel_format,
        "shape": list(frame.image.shape),
        "frame_id": frame.frame_id,
        "timestamp_source": source.timestamp_source,
        "waited_ms": round(waited_ms, 2),
    }


def _aliases(pairs: list[str]) -> dict[str, str]:
    aliases: dict[str, str] = {}
    for pair in pairs:
        name, sep, selector = pair.partition("=")
        if not sep or not name.strip() or not selector.strip():
            raise ConfigError(f"--alias {pair!r}: expected NAME=SELECTOR, e.g. cam0=serial:123")
        aliases[name.strip()] = selector.strip()
    return aliases


def _human(report: dict[str, Any]) -> str:
    from edge_sdk.sources.discovery import CameraInfo, format_cameras

    lines = ["GenTL producers:"]
    lines += [f"  {p['path']}  ({p['origin']})" for p in report["producers"]] or ["  (none)"]
    cameras = [CameraInfo(**c) for c in report["cameras"]]
    lines.append(f"cameras: {len(cameras)}")
    if cameras:
        lines.append(format_cameras(cameras))
    if "selected" in report:
        lines.append(
            f"selected: #{report['selected']['index']} {CameraInfo(**report['selected']).label}"
        )
    if "grab" in report:
        g = report["grab"]
        lines.append(
            f"grabbed frame {g['frame_id']}: {'x'.join(map(str, g['shape']))} "
            f"(PixelFormat {g['pixel_format_setting']}, profile {g['profile'] or '-'}, "
            f"{g['waited_ms']} ms, timestamps from {g['timestamp_source']})"
        )
    return "\n".join(lines)
