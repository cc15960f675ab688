# Input functions shared by the rules (paths come from the plan built from the config).


def source_trc(wc):
    return PLAN.trial(wc.subject, wc.trial).trc


def subject_sheet(wc):
    return PLAN.subject_sheet(wc.subject)


def static_trc(wc):
    return PLAN.static_trc(wc.subject)


def render_input(wc):
    """The trial's render record when rendering is enabled (else nothing)."""
    if not config["render"]["enabled"]:
        return []
    return f"{R}/render/{wc.subject}/{wc.trial}.status.json"
