"""Job documents: a run's settings as one versioned TOML / JSON document, the same for the CLI
(``haq search --config job.toml``) and the service (``POST /jobs``), and the one code path that
runs them (:func:`haq.jobs.execute.run_job`); and the search problem built from a job's names
(:func:`haq.jobs.problems.make_problem`, this machine's table in :mod:`haq.jobs.machine`), which
the commands and the service's jobs share."""

from haq.jobs.document import JOB_FORMAT, JOB_VERSION, KINDS, RUN_KINDS, Job, parse_job, sections
from haq.jobs.files import read_job_file, stored_job, to_toml, write_job

__all__ = [
    "JOB_FORMAT",
    "JOB_VERSION",
    "KINDS",
    "RUN_KINDS",
    "Job",
    "parse_job",
    "read_job_file",
    "sections",
    "stored_job",
    "to_toml",
    "write_job",
]
