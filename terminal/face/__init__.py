"""Face identification: detect -> quality gate -> embed -> 1:N gallery -> agreement across frames.

Modules: types (Face, C1), detect (detector registry), embed (landmarks, alignment, embedding, worker
pool), quality (the gate), gallery (templates, scores, the decision rule), consensus (across frames),
store (encrypted templates), stills (images), enrol, pipeline (live), evaluation (LFW), liveness_off.
"""

from __future__ import annotations


def build_pipeline(cfg, liveness=None, workers: int | None = None):
    """The live pipeline for a loaded Config, with the stored gallery."""
    from terminal.face import detect, embed, gallery, pipeline, quality, store

    return pipeline.FacePipeline(
        detector=detect.from_config(cfg.face),
        gallery=gallery.Gallery(store.all_templates(cfg.state_dir)),
        rule=gallery.Rule.from_config(cfg.face),
        limits=quality.QualityLimits.from_config(cfg.face),
        settings=pipeline.PipelineSettings.from_config(cfg.face),
        pool=embed.EmbeddingPool(cfg.face.workers if workers is None else workers),
        liveness=liveness,
    )


def status_part(cfg) -> dict:
    """`presensi status` part: how many employees and templates are enrolled (never the templates)."""
    from terminal.face import store

    templates = store.TemplateStore(cfg.state_dir).load()
    n = sum(len(t) for t in templates.values())
    return {"ok": True, "employees": len(templates), "templates": n,
            "summary": f"{len(templates)} employees, {n} templates enrolled"}
