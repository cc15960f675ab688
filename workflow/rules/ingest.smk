# Motion sources -> the spine's inputs (docs/ingest.md): C3D files (markers + force plates),
# AMASS-layout SMPL sequences and marker-mapped or frame-selected TRC files become
# {results}/ingest/{subject}/{trial}.trc (+ _grf.mot, _external_loads.xml from force plates) and
# {results}/ingest/{subject}/static/static.trc. Outputs are status records naming the files, so
# a corrupt file fails its trial (recorded) while the others run on.
# Input functions: ingest_file, ingest_static_files (common.smk).


rule ingest:
    """Convert one trial's C3D / SMPL / mapped TRC into the TRC (+ GRF files) the spine reads."""
    input:
        file=ingest_file,
    output:
        status=f"{R}/ingest/{{subject}}/{{trial}}.status.json",
    params:
        config=LABEL_CONFIG,
        trial=lambda wc: PLAN.trial(wc.subject, wc.trial).to_dict(),
    log:
        f"{R}/logs/ingest/{{subject}}/{{trial}}.log",
    conda:
        "../../environment.yml"
    script:
        "../scripts/ingest.py"


rule ingest_static:
    """Convert a subject's static trial (C3D / mapped TRC / SMPL body model at rest) into a TRC."""
    input:
        files=ingest_static_files,
    output:
        status=f"{R}/ingest/{{subject}}/static/static.status.json",
    params:
        config=LABEL_CONFIG,
        subject=lambda wc: PLAN.external_subjects[wc.subject],
    log:
        f"{R}/logs/ingest_static/{{subject}}.log",
    conda:
        "../../environment.yml"
    script:
        "../scripts/ingest_static.py"
