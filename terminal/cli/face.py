"""`presensi enroll-photos`, `presensi identify` and `presensi scan` (thin wrappers over terminal.face)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from terminal.cli.common import CommandError, add_command, emit, load_config


def register(sub) -> None:
    p = add_command(sub, "enroll-photos", cmd_enrol_photos,
                    "enrol employees from DIR/<employee-id>/*.jpg|png (replaces their face templates)")
    p.add_argument("dir", metavar="DIR")
    p.add_argument("--add", action="store_true", help="add to the employees' templates instead of replacing")

    p = add_command(sub, "identify", cmd_identify, "identify the faces in still images")
    p.add_argument("images", nargs="+", metavar="IMAGE")

    p = add_command(sub, "scan", cmd_scan, "run the live face pipeline on a camera, video file or frame folder")
    p.add_argument("--camera", required=True, metavar="SOURCE",
                   help="device index, /dev/videoN, GStreamer pipeline, video file or folder of frames")
    p.add_argument("--kind", default="auto", metavar="KIND",
                   help="source kind as [camera] kind (default auto: from the spelling of SOURCE)")
    p.add_argument("--record", action="store_true",
                   help="record accepted decisions as face punches (through the punch service, as the daemon: "
                        "roster, schedule kind, repeat interval)")
    p.add_argument("--seconds", type=float, default=None, metavar="S",
                   help="stop after S seconds (default: run until the file ends or Ctrl-C)")
    p.add_argument("--fps", type=float, default=None, help="replay rate of a file source (default [camera] fps)")


def _face_errors():
    from terminal.face.detect import DetectorError
    from terminal.face.enrol import EnrolError
    from terminal.face.store import TemplateStoreError
    from terminal.punch.roster import RosterError
    return (DetectorError, EnrolError, TemplateStoreError, RosterError)


def _queue_for_central(cfg, results) -> int | None:
    """The accepted templates go to the central server with the next `presensi sync now`, for every
    terminal's roster (terminal/punch/enrolments.py); the same ones the local store kept. None on a state
    directory without `presensi init` (no punch database, no device key: nothing could be sent)."""
    from terminal.face.store import MAX_TEMPLATES_PER_EMPLOYEE
    from terminal.log import punchlog
    from terminal.punch import enrolments

    if not punchlog.db_path(cfg.state_dir).exists():
        return None
    queued = 0
    for employee in sorted({r.employee for r in results}):
        accepted = [r.embedding for r in results if r.employee == employee and r.result == "accepted"]
        queued += enrolments.record_in(cfg.state_dir, employee, "face", accepted[:MAX_TEMPLATES_PER_EMPLOYEE])
    return queued


def cmd_enrol_photos(args) -> int:
    from terminal.face import detect, enrol, quality, store

    cfg = load_config(args)
    try:
        results = enrol.enrol_photos(Path(args.dir), store.TemplateStore(cfg.state_dir),
                                      detect.from_config(cfg.face), quality.QualityLimits.from_config(cfg.face),
                                      replace=not args.add)
    except _face_errors() as e:
        raise CommandError(str(e)) from None
    queued = _queue_for_central(cfg, results)
    for r in results:
        note = "" if r.result == "accepted" else r.message
        emit(args, r.as_json(), f"{r.result:<13} {r.employee:<20} {r.path}  {note}".rstrip())
    accepted = sum(r.result == "accepted" for r in results)
    employees = len({r.employee for r in results if r.result == "accepted"})
    emit(args, {"queued_for_central": queued},
         f"{queued} templates queued for the central server (sent by `presensi sync now`)" if queued is not None
         else "not queued for the central server: run `presensi init` first (no punch database)")
    summary = {"summary": {"photos": len(results), "accepted": accepted, "rejected": len(results) - accepted,
                           "employees_enrolled": employees}}
    emit(args, summary, f"{accepted} of {len(results)} photos accepted; {employees} employees enrolled")
    if not accepted:
        raise CommandError("no photo was accepted; use sharp, frontal photos with one face of at least "
                           f"{cfg.face.min_face_px} pixels")
    return 0


def cmd_identify(args) -> int:
    from terminal.face import detect, stills, store
    from terminal.face.gallery import Gallery, Rule

    cfg = load_config(args)
    try:
        gallery = Gallery(store.all_templates(cfg.state_dir))
        detector = detect.from_config(cfg.face)
    except _face_errors() as e:
        raise CommandError(str(e)) from None
    if not len(gallery):
        raise CommandError("nobody is enrolled; run `presensi enroll-photos DIR` first")
    rule, failed = Rule.from_config(cfg.face), 0
    from terminal.face import embed
    embed.warm()  # so each line's "ms" is that image's work, not model loading
    for path in args.images:
        t0 = time.perf_counter()
        try:
            found = stills.analyse(stills.read_image(path), detector)
        except stills.ImageError as e:
            failed += 1
            line = {"image": path, "error": str(e)}
            emit(args, line, f"{path}: ERROR {e}")
            continue
        matches = gallery.identify([f.embedding for f in found], rule) if found else []
        faces = [{**m.as_dict(), "box": list(map(int, f.face.box))} for f, m in zip(found, matches, strict=True)]
        line = {"image": path, "faces": faces, "ms": round((time.perf_counter() - t0) * 1000, 1)}
        emit(args, line, _identify_text(line))
    if failed:
        print(f"presensi: {failed} of {len(args.images)} images could not be read (see the error lines)",
              file=sys.stderr)
        return 1
    return 0


def _identify_text(line: dict) -> str:
    if not line["faces"]:
        return f"{line['image']}: no face"
    parts = [f"{f['employee'] or 'unknown'} (distance {f['distance']}, margin {f['margin']})" for f in line["faces"]]
    return f"{line['image']}: " + "; ".join(parts)


def _liveness(cfg):
    if cfg.liveness.mode == "off":
        from terminal.liveness.off import OffLiveness
        return OffLiveness()
    from terminal.liveness import from_config

    return from_config(cfg.liveness)


def cmd_scan(args) -> int:
    from drivers import camera as cam
    from terminal import face

    cfg = load_config(args)
    log = _open_log(cfg) if args.record else None
    punches = _punch_service(cfg, log) if log is not None else None
    try:
        source = cam.open_source(args.camera, cfg.camera.width, cfg.camera.height, args.fps or cfg.camera.fps,
                                 kind=args.kind, options=cfg.camera.source_options())
        pipeline = face.build_pipeline(cfg, liveness=_liveness(cfg))
    except (cam.SourceError, *_face_errors()) as e:
        raise CommandError(str(e)) from None
    if not len(pipeline.gallery):
        pipeline.close()
        raise CommandError("nobody is enrolled; run `presensi enroll-photos DIR` first")
    is_file = source.paced  # a recording: analyse every frame, stop at its end
    settings = cam.CameraSettings(stall_seconds=cfg.camera.stall_seconds, stop_at_end=is_file,
                                  lossless=is_file, fps=args.fps or cfg.camera.fps)
    camera = cam.Camera(source, settings, on_fault=_print_fault, on_recover=_print_recover)
    try:
        with camera:
            _scan_loop(args, cfg, camera, pipeline, punches)
    finally:
        pipeline.close()
        if log is not None:
            log.close()
    return 0


def _scan_loop(args, cfg, camera, pipeline, punches) -> None:
    deadline = time.monotonic() + args.seconds if args.seconds else None
    seq = 0
    while deadline is None or time.monotonic() < deadline:
        frame = camera.latest(after_seq=seq, timeout=0.5)
        if frame is None:
            if camera.ended and not camera.running:
                break
            continue
        seq = frame.seq
        # a recording is analysed frame by frame, each frame's embeddings before the next: the same
        # recording gives the same decisions on a busy machine as on an idle one
        for decision in pipeline.process(frame.image, frame.t, wait=camera.settings.lossless):
            _report(args, cfg, decision, punches)
    for decision in pipeline.finish():
        _report(args, cfg, decision, punches)


def _report(args, cfg, decision, punches) -> None:
    line = decision.as_json()
    text = (f"{'ACCEPTED' if decision.accepted else 'refused '} {decision.employee or '-':<20} "
            f"{decision.reason:<16} frames {decision.frames}  {decision.ms:.0f} ms")
    if punches is not None and decision.accepted:
        outcome = punches.punch(decision.employee, "face", details=decision.punch_details(cfg.face),
                                photo_jpeg=decision.best_frame_jpeg())
        line = {**line, "punch": _punch_summary(outcome)}
        text += f"  -> {_punch_text(outcome)}"
    emit(args, line, text)


def _punch_service(cfg, log):
    from terminal.punch.service import PunchService

    return PunchService(cfg, log)


def _punch_summary(outcome) -> dict:
    """The `punch` field of a recorded scan line: what the punch service did with the decision."""
    rec = outcome.record or {}
    return {"recorded": outcome.recorded, "acknowledged": outcome.acknowledged, "refused": outcome.refused,
            "seq": rec.get("seq"), "kind": outcome.kind, "message": outcome.message, "error": outcome.error}


def _punch_text(outcome) -> str:
    if outcome.recorded:
        return f"recorded seq {outcome.record['seq']} {outcome.kind}: {outcome.message}"
    if outcome.acknowledged:
        return f"already recorded (seq {(outcome.record or {}).get('seq', '?')}): {outcome.message}"
    return f"NOT recorded: {outcome.error or outcome.message}"


def _open_log(cfg):
    from terminal.log import punchlog
    return punchlog.PunchLog(cfg.state_dir, checkpoint_every=cfg.log.checkpoint_every)


def _print_fault(fault) -> None:
    print(json.dumps({"camera_fault": fault.kind, "message": fault.message}), file=sys.stderr, flush=True)


def _print_recover(kind: str) -> None:
    print(json.dumps({"camera_recovered": kind}), file=sys.stderr, flush=True)
