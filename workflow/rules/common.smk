# Input functions shared by the rules (paths come from the plan built from the config).


def source_trc(wc):
    """The trial's markers: its TRC, or its ingest record when the trial is converted (rule ingest)."""
    return PLAN.trial(wc.subject, wc.trial).marker_input


def subject_sheet(wc):
    return PLAN.subject_sheet(wc.subject)


def static_trc(wc):
    """The subject's static TRC, or its static ingest record (rule ingest_static)."""
    return PLAN.static_input(wc.subject)


def render_input(wc):
    """The trial's render record when rendering is enabled (else nothing)."""
    if not config["render"]["enabled"]:
        return []
    return f"{R}/render/{wc.subject}/{wc.trial}.status.json"


def subject_ik_statuses(wc):
    """IK records of every trial of the subject (the surrogate's box spans all of them)."""
    return [f"{R}/ik/{t.subject}/{t.trial}.status.json" for t in PLAN.trials if t.subject == wc.subject]


def activation_inputs(wc):
    """Upstream records of the activations step; batched_so also needs the subject's surrogate."""
    base = f"{wc.subject}/{wc.trial}.status.json"
    ins = {"scale": f"{R}/scale/{wc.subject}/scale.status.json", "ik": f"{R}/ik/{base}",
           "grf": f"{R}/grf/{base}", "id": f"{R}/id/{base}"}
    if config["activation_solver"] == "batched_so":
        ins["surrogate"] = f"{R}/surrogate/{wc.subject}/surrogate.status.json"
    return ins


def ingest_file(wc):
    """The motion file to convert for the ingest step (TRC, C3D or AMASS .npz)."""
    return PLAN.trial(wc.subject, wc.trial).file


def ingest_static_files(wc):
    """Files the static ingest reads: the static trial, or the body model and the sequence giving the betas."""
    s = PLAN.external_subjects[wc.subject]
    return [p for p in (s.get("static"), s.get("body_model"), s.get("betas_from")) if p]
