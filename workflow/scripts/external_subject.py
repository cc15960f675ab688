"""Adapter: rule external_subject -> biohuman.pipeline.write_subject_sheet."""
from biohuman.pipeline import write_subject_sheet
from biohuman.workflow import logged

sm = snakemake  # type: ignore[name-defined] # noqa: F821
with logged(sm.log[0]):
    write_subject_sheet(sm.output.sheet, sm.wildcards.subject, sm.params.subject["mass_kg"],
                        sm.params.subject["height_m"], source="external")
