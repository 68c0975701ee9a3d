"""Account portability: aliases and moves, exports, imports (relationships and posts).

`job_handlers()` is the table of job kinds (fedi.jobs) this package runs; the app
factory hands it to the job runner. Modules load when the table is built, not at import.
"""

from __future__ import annotations

from fedi.jobs import JobHandler


def job_handlers() -> dict[str, JobHandler]:
    """Job kind -> handler, for fedi.jobs.JobRunner."""
    from fedi.portability import archive_export, archive_import, import_jobs

    return {
        archive_export.KIND: archive_export.run_job,
        archive_import.KIND: archive_import.import_archive_step,
        import_jobs.KIND: import_jobs.run_import_step,
    }
