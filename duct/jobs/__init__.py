"""Jobs: commands run through named queues, on a schedule or on demand.

A `duct.jobs.job.Job` is one run of a command: it waits in a
`duct.jobs.queue.JobQueue` (which holds its ``concurrency`` and kills a job
past its ``max_exec_time``), runs, numbers each line of its output, and ends
with a `duct.jobs.job.JobResult` that tells apart a check that ran (and
passed or failed), one that could not run where it was sent, one killed
for running too long and one cancelled.  `duct.jobs.registry.Jobs` holds
an agent's queues and its recent jobs; `duct.jobs.resource` serves them
under ``/api/jobs``.
"""
